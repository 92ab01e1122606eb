/* Image chain stages, for models that take pictures:
 *
 *   b64        BYTES elements of base64 text (a "data:...;base64," prefix and whitespace allowed)
 *              -> BYTES elements of the decoded bytes.
 *   image      BYTES elements holding JPEG (libjpeg-turbo) or PNG (libpng) files -> UINT8 [n,H,W,C],
 *              one image per item; params: channels "rgb" (default), "bgr" or "gray"; max_pixels
 *              (default 16777216, so a small file cannot unpack into gigabytes); at_least [h, w]:
 *              decode JPEGs at the smallest DCT scale (1/2, 1/4, 1/8) that keeps at least h x w,
 *              several times faster before a resize to that size (slightly different pixels).
 *   resize     UINT8 or FP32 [n,H,W,C] -> the same type [n,h,w,C], bilinear with half-pixel centres
 *              (as PIL and OpenCV's INTER_LINEAR); resize(h,w) or params {height, width}.
 *   normalise  UINT8 or FP32 [...,C] -> FP32 (x * scale - mean[c]) / std[c]; params scale (default
 *              1/255), mean and std (one value or one per channel; default 0 and 1);
 *              normalise(imagenet) uses ImageNet's mean and std. Also called `normalize`.
 *   chw        [n,H,W,C] -> [n,C,H,W], the layout PyTorch models take.
 *
 * Every stage works on the tensor named by params {"tensor": "name"}, or else on every tensor it can
 * take (BYTES for b64 and image, rank-4 UINT8/FP32 for the others), and passes the rest on unchanged.
 * A stage that finds nothing to work on fails the request: the chain and the request disagree.
 * Pure: no I/O (libjpeg's messages are kept, not printed), no threads, no clock. */
#include "mlp_image_stages.h"

#include "mlp_base64.h"
#include "mlp_plugin_util.h"

#include <jansson.h>
#include <math.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#include <png.h>

static const mlp_host_api *g_host;
MLP_DEFINE_FAIL(static)

enum stage_kind { STAGE_B64, STAGE_IMAGE, STAGE_RESIZE, STAGE_NORMALISE, STAGE_CHW };

typedef struct stage {
    enum stage_kind kind;
    char *tensor; /* owned; NULL = every tensor the stage can take */
    /* image */
    int channels; /* 1 or 3 */
    bool bgr;
    uint64_t max_pixels;
    uint32_t at_least_h, at_least_w; /* 0: full-size JPEG decoding */
    /* resize */
    int64_t height, width;
    /* normalise */
    float scale;
    float mean[4], std[4];
    uint32_t channel_params; /* 1, or the number of channels mean/std were given for */
    float lut[4][256];       /* normalise: the result for each UINT8 value and channel */
} stage;

static const char *const k_stage_names[] = {"b64", "image", "resize", "normalise", "chw"};

/* ---------------------------------------------------------------------------------------------
 * Configuration.
 * ------------------------------------------------------------------------------------------- */

/* Reads a number or a list of 1..4 numbers into `out`; returns how many, or 0 when malformed. */
static uint32_t read_floats(const json_t *v, float *out) {
    if (json_is_number(v)) {
        out[0] = (float)json_number_value(v);
        return 1;
    }
    if (!json_is_array(v) || json_array_size(v) == 0 || json_array_size(v) > 4) return 0;
    for (size_t i = 0; i < json_array_size(v); i++) {
        if (!json_is_number(json_array_get(v, i))) return 0;
        out[i] = (float)json_number_value(json_array_get(v, i));
    }
    return (uint32_t)json_array_size(v);
}

/* normalise of one value of channel c; the UINT8 table and the FP32 path both use it. */
static float normalised(const stage *s, float x, uint32_t c) {
    return (x * s->scale - s->mean[c]) / s->std[c];
}

static void fill_lut(stage *s) {
    for (uint32_t c = 0; c < s->channel_params; c++)
        for (int v = 0; v < 256; v++) s->lut[c][v] = normalised(s, (float)v, c);
}

static mlp_status configure(stage *s, mlp_call *call, const json_t *cfg) {
    const char *name = k_stage_names[s->kind];
    const json_t *args = json_object_get(cfg, "args");
    if (args && !json_is_array(args)) return fail(call, MLP_ERR_CONFIG, "%s: args must be a list", name);
    size_t nargs = json_array_size(args);
    const json_t *tensor = json_object_get(cfg, "tensor");
    if (tensor) {
        if (!json_is_string(tensor)) return fail(call, MLP_ERR_CONFIG, "%s: tensor must be a tensor name", name);
        size_t n = json_string_length(tensor);
        s->tensor = malloc(n + 1);
        if (!s->tensor) return fail(call, MLP_ERR_NOMEM, "out of memory");
        memcpy(s->tensor, json_string_value(tensor), n + 1);
    }
    switch (s->kind) {
    case STAGE_B64:
    case STAGE_CHW:
        if (nargs) return fail(call, MLP_ERR_CONFIG, "%s takes no arguments", name);
        return MLP_OK;
    case STAGE_IMAGE: {
        s->channels = 3;
        s->max_pixels = 16777216;
        const json_t *ch = nargs ? json_array_get(args, 0) : json_object_get(cfg, "channels");
        if (ch) {
            const char *c = json_is_string(ch) ? json_string_value(ch) : "";
            if (strcmp(c, "rgb") == 0)
                s->channels = 3;
            else if (strcmp(c, "bgr") == 0) {
                s->channels = 3;
                s->bgr = true;
            } else if (strcmp(c, "gray") == 0 || strcmp(c, "grey") == 0)
                s->channels = 1;
            else
                return fail(call, MLP_ERR_CONFIG, "image: channels must be \"rgb\", \"bgr\" or \"gray\"");
        }
        const json_t *al = json_object_get(cfg, "at_least");
        if (al) {
            const json_t *h = json_array_get(al, 0), *w = json_array_get(al, 1);
            if (json_array_size(al) != 2 || !json_is_integer(h) || !json_is_integer(w) || json_integer_value(h) < 1 ||
                json_integer_value(w) < 1 || json_integer_value(h) > 65536 || json_integer_value(w) > 65536)
                return fail(call, MLP_ERR_CONFIG, "image: at_least must be [height, width] in pixels");
            s->at_least_h = (uint32_t)json_integer_value(h);
            s->at_least_w = (uint32_t)json_integer_value(w);
        }
        const json_t *mp = json_object_get(cfg, "max_pixels");
        if (mp) {
            if (!json_is_integer(mp) || json_integer_value(mp) < 1)
                return fail(call, MLP_ERR_CONFIG, "image: max_pixels must be a positive integer");
            s->max_pixels = (uint64_t)json_integer_value(mp);
        }
        return MLP_OK;
    }
    case STAGE_RESIZE: {
        const json_t *h = nargs ? json_array_get(args, 0) : json_object_get(cfg, "height");
        const json_t *w = nargs ? json_array_get(args, nargs > 1 ? 1 : 0) : json_object_get(cfg, "width");
        if (nargs > 2 || !json_is_integer(h) || !json_is_integer(w) || json_integer_value(h) < 1 ||
            json_integer_value(w) < 1 || json_integer_value(h) > 65536 || json_integer_value(w) > 65536)
            return fail(
                call, MLP_ERR_CONFIG,
                "resize needs a height and width in pixels: resize(224,224) or params {height: 224, width: 224}");
        s->height = json_integer_value(h);
        s->width = json_integer_value(w);
        return MLP_OK;
    }
    case STAGE_NORMALISE: {
        s->scale = 1.0f / 255.0f;
        s->mean[0] = 0.0f;
        s->std[0] = 1.0f;
        s->channel_params = 1;
        if (nargs == 1 && json_is_string(json_array_get(args, 0)) &&
            strcmp(json_string_value(json_array_get(args, 0)), "imagenet") == 0) {
            static const float m[3] = {0.485f, 0.456f, 0.406f}, d[3] = {0.229f, 0.224f, 0.225f};
            memcpy(s->mean, m, sizeof m);
            memcpy(s->std, d, sizeof d);
            s->channel_params = 3;
            fill_lut(s);
            return MLP_OK;
        }
        if (nargs)
            return fail(call, MLP_ERR_CONFIG,
                        "normalise: the only argument is imagenet; use params {scale, mean, std}");
        const json_t *sc = json_object_get(cfg, "scale");
        if (sc) {
            if (!json_is_number(sc)) return fail(call, MLP_ERR_CONFIG, "normalise: scale must be a number");
            s->scale = (float)json_number_value(sc);
        }
        uint32_t nm = 1, ns = 1;
        if (json_object_get(cfg, "mean") && !(nm = read_floats(json_object_get(cfg, "mean"), s->mean)))
            return fail(call, MLP_ERR_CONFIG, "normalise: mean must be a number or a list of 1 to 4 numbers");
        if (json_object_get(cfg, "std") && !(ns = read_floats(json_object_get(cfg, "std"), s->std)))
            return fail(call, MLP_ERR_CONFIG, "normalise: std must be a number or a list of 1 to 4 numbers");
        if (nm != ns && nm != 1 && ns != 1)
            return fail(call, MLP_ERR_CONFIG, "normalise: mean has %u values and std %u", nm, ns);
        /* Spread a single value over the channels the other list names. */
        s->channel_params = nm > ns ? nm : ns;
        for (uint32_t c = 1; c < s->channel_params; c++) {
            if (nm == 1) s->mean[c] = s->mean[0];
            if (ns == 1) s->std[c] = s->std[0];
        }
        for (uint32_t c = 0; c < s->channel_params; c++)
            if (s->std[c] == 0.0f) return fail(call, MLP_ERR_CONFIG, "normalise: std must not be 0");
        fill_lut(s);
        return MLP_OK;
    }
    }
    return MLP_ERR_INTERNAL;
}

static mlp_status create_kind(enum stage_kind kind, mlp_call *call, mlp_bytes config, void **out) {
    json_error_t err;
    json_t *cfg = config.len ? json_loadb((const char *)config.ptr, config.len, 0, &err) : json_object();
    if (!json_is_object(cfg)) {
        json_decref(cfg);
        return fail(call, MLP_ERR_CONFIG, "%s: params must be a JSON object", k_stage_names[kind]);
    }
    const char *key;
    const json_t *unused;
    static const char *const known[] = {"args",  "tensor", "channels", "max_pixels", "at_least", "height",
                                        "width", "scale",  "mean",     "std",        NULL};
    json_object_foreach(cfg, key, unused) {
        bool ok = false;
        for (const char *const *k = known; *k && !ok; k++) ok = strcmp(*k, key) == 0;
        if (!ok) {
            mlp_status st = fail(call, MLP_ERR_CONFIG, "%s: unknown param '%s'", k_stage_names[kind], key);
            json_decref(cfg);
            return st;
        }
    }
    stage *s = calloc(1, sizeof *s);
    if (!s) {
        json_decref(cfg);
        return fail(call, MLP_ERR_NOMEM, "out of memory");
    }
    s->kind = kind;
    mlp_status st = configure(s, call, cfg);
    json_decref(cfg);
    if (st != MLP_OK) {
        free(s->tensor);
        free(s);
        return st;
    }
    *out = s;
    return MLP_OK;
}

static void stage_destroy(void *instance) {
    stage *s = instance;
    if (s) free(s->tensor);
    free(s);
}

static bool is_named(const stage *s, const mlp_tensor *t) {
    return s->tensor && strlen(s->tensor) == t->name.len && memcmp(s->tensor, t->name.ptr, t->name.len) == 0;
}

/* Whether the stage works on `t`: the named tensor, or every tensor that `fits` when none is named. */
static bool wants(const stage *s, const mlp_tensor *t, bool fits) {
    return s->tensor ? is_named(s, t) : fits;
}

static mlp_status nothing_to_do(mlp_call *call, const stage *s, const char *what) {
    if (s->tensor)
        return fail(call, MLP_ERR_INVALID_INPUT, "%s: the request has no tensor '%s'", k_stage_names[s->kind],
                    s->tensor);
    return fail(call, MLP_ERR_INVALID_INPUT, "%s: the request has no %s tensor to work on", k_stage_names[s->kind],
                what);
}

static uint8_t *add(mlp_call *call, const mlp_tensor *like, uint32_t dt, const int64_t *shape, uint32_t rank,
                    size_t size) {
    mlp_tensor_desc d = {
        .struct_size = sizeof d, .datatype = dt, .name = like->name, .shape = shape, .rank = rank, .byte_size = size};
    return g_host->add_tensor(call, &d);
}

/* The next BYTES element at *p (before end), or false at the end or on truncated data. */
static bool next_element(const uint8_t **p, const uint8_t *end, const uint8_t **data, size_t *len) {
    if (end - *p < 4) return false;
    uint32_t n = (uint32_t)(*p)[0] | (uint32_t)(*p)[1] << 8 | (uint32_t)(*p)[2] << 16 | (uint32_t)(*p)[3] << 24;
    if ((size_t)(end - *p - 4) < n) return false;
    *data = *p + 4;
    *len = n;
    *p += 4 + n;
    return true;
}

static size_t element_count(const mlp_tensor *t) {
    size_t n = 1;
    for (uint32_t d = 0; d < t->rank; d++) n *= (size_t)t->shape[d];
    return n;
}

/* Runs `one` on each tensor the stage works on (the named one, or each that `fits` when none is
 * named), passes the others on unchanged, and fails the request when there was none. */
static mlp_status each_tensor(const stage *s, mlp_call *call, const mlp_stage_input *in,
                              bool (*fits)(const mlp_tensor *),
                              mlp_status (*one)(const stage *, mlp_call *, const mlp_tensor *), const char *what) {
    bool any = false;
    for (uint32_t i = 0; i < in->tensor_count; i++) {
        const mlp_tensor *t = mlp_tensor_at(in->tensors, in->tensor_stride, i);
        if (!wants(s, t, fits(t))) {
            mlp_status st = g_host->pass_tensor(call, i);
            if (st != MLP_OK) return st;
            continue;
        }
        any = true;
        mlp_status st = one(s, call, t);
        if (st != MLP_OK) return st;
    }
    return any ? MLP_OK : nothing_to_do(call, s, what);
}

static bool is_bytes(const mlp_tensor *t) {
    return t->datatype == MLP_DT_BYTES;
}
static bool is_4d_tensor(const mlp_tensor *t) {
    return t->rank == 4 && t->datatype != MLP_DT_BYTES;
}

/* ---------------------------------------------------------------------------------------------
 * b64
 * ------------------------------------------------------------------------------------------- */

/* Base64 text without a data-URL prefix and whitespace; returns the decoded length or -1. When
 * `scratch` is non-NULL it receives the cleaned text (at most len bytes). */
static long b64_element(const uint8_t *text, size_t len, char *scratch, uint8_t *out) {
    const char *s = (const char *)text;
    const char *comma = memchr(s, ',', len < 256 ? len : 256);
    if (len >= 5 && memcmp(s, "data:", 5) == 0 && comma) {
        len -= (size_t)(comma + 1 - s);
        s = comma + 1;
    }
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        if (s[i] != ' ' && s[i] != '\n' && s[i] != '\r' && s[i] != '\t') scratch[n++] = s[i];
    return mlp_b64_decode(scratch, n, out);
}

static mlp_status b64_one(const stage *s, mlp_call *call, const mlp_tensor *t) {
    (void)s;
    if (t->datatype != MLP_DT_BYTES)
        return fail(call, MLP_ERR_INVALID_INPUT, "b64: tensor '%.*s' is not BYTES", (int)t->name.len, t->name.ptr);
    char *scratch = malloc(t->data.len + 1);
    if (!scratch) return fail(call, MLP_ERR_NOMEM, "out of memory");
    /* Measure, then write. */
    size_t total = 0, count = element_count(t), k = 0;
    const uint8_t *p = t->data.ptr, *end = p + t->data.len, *e;
    size_t elen;
    for (; k < count && next_element(&p, end, &e, &elen); k++) {
        long n = b64_element(e, elen, scratch, NULL);
        if (n < 0) {
            free(scratch);
            return fail(call, MLP_ERR_INVALID_INPUT, "b64: element %zu of '%.*s' is not base64", k, (int)t->name.len,
                        t->name.ptr);
        }
        total += 4 + (size_t)n;
    }
    if (k != count) {
        free(scratch);
        return fail(call, MLP_ERR_INVALID_INPUT, "b64: '%.*s' is truncated", (int)t->name.len, t->name.ptr);
    }
    uint8_t *out = add(call, t, MLP_DT_BYTES, t->shape, t->rank, total);
    if (!out) {
        free(scratch);
        return fail(call, MLP_ERR_NOMEM, "b64: the host refused %zu bytes", total);
    }
    p = t->data.ptr;
    while (next_element(&p, end, &e, &elen)) {
        long n = b64_element(e, elen, scratch, out + 4);
        out[0] = (uint8_t)n;
        out[1] = (uint8_t)(n >> 8);
        out[2] = (uint8_t)(n >> 16);
        out[3] = (uint8_t)(n >> 24);
        out += 4 + n;
    }
    free(scratch);
    return MLP_OK;
}

static mlp_status b64_apply(void *instance, mlp_call *call, const mlp_stage_input *in) {
    return each_tensor(instance, call, in, is_bytes, b64_one, "BYTES");
}

/* ---------------------------------------------------------------------------------------------
 * image: JPEG and PNG decoding.
 * ------------------------------------------------------------------------------------------- */
typedef struct picture {
    uint32_t width, height;
    char error[JMSG_LENGTH_MAX + 64];
} picture;

typedef struct jpeg_failure {
    struct jpeg_error_mgr mgr;
    jmp_buf jump;
    char *message;
} jpeg_failure;

static void jpeg_fail(j_common_ptr c) {
    jpeg_failure *f = (jpeg_failure *)c->err;
    (*c->err->format_message)(c, f->message);
    longjmp(f->jump, 1);
}

/* Warnings (corrupt data that libjpeg would paper over with grey) fail the request too; other
 * messages are dropped, so nothing is printed. */
static void jpeg_message(j_common_ptr c, int level) {
    if (level < 0) jpeg_fail(c);
}

static bool is_jpeg(const uint8_t *d, size_t n) {
    return n >= 3 && d[0] == 0xFF && d[1] == 0xD8 && d[2] == 0xFF;
}
static bool is_png(const uint8_t *d, size_t n) {
    return n >= 8 && memcmp(d, "\x89PNG\r\n\x1a\n", 8) == 0;
}

/* Reads the size (out == NULL) or decodes into `out` (width * height * channels bytes), at the smallest
 * DCT scale that keeps at least min_h x min_w (0 x 0: full size). */
static bool decode_jpeg(const uint8_t *data, size_t len, int channels, bool bgr, uint32_t min_h, uint32_t min_w,
                        uint8_t *out, picture *pic) {
    struct jpeg_decompress_struct d;
    jpeg_failure f;
    d.err = jpeg_std_error(&f.mgr);
    f.mgr.error_exit = jpeg_fail;
    f.mgr.emit_message = jpeg_message;
    f.message = pic->error;
    if (setjmp(f.jump)) {
        jpeg_destroy_decompress(&d);
        return false;
    }
    jpeg_create_decompress(&d);
    jpeg_mem_src(&d, data, (unsigned long)len);
    jpeg_read_header(&d, TRUE);
    d.out_color_space = channels == 1 ? JCS_GRAYSCALE : bgr ? JCS_EXT_BGR : JCS_RGB;
    d.scale_num = 1;
    d.scale_denom = 1;
    for (unsigned denom = 8; (min_h || min_w) && denom > 1; denom /= 2) {
        d.scale_denom = denom;
        jpeg_calc_output_dimensions(&d);
        if (d.output_height >= min_h && d.output_width >= min_w) break;
        d.scale_denom = 1;
    }
    jpeg_calc_output_dimensions(&d);
    pic->width = d.output_width;
    pic->height = d.output_height;
    if (out) {
        jpeg_start_decompress(&d);
        size_t row = (size_t)d.output_width * (size_t)channels;
        while (d.output_scanline < d.output_height) {
            JSAMPROW r = out + (size_t)d.output_scanline * row;
            jpeg_read_scanlines(&d, &r, 1);
        }
        jpeg_finish_decompress(&d);
    }
    jpeg_destroy_decompress(&d);
    return true;
}

static bool decode_png(const uint8_t *data, size_t len, int channels, bool bgr, uint8_t *out, picture *pic) {
    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_memory(&img, data, len)) {
        snprintf(pic->error, sizeof pic->error, "%s", img.message);
        png_image_free(&img);
        return false;
    }
    pic->width = img.width;
    pic->height = img.height;
    if (!out) {
        png_image_free(&img);
        return true;
    }
    img.format = channels == 1 ? PNG_FORMAT_GRAY : bgr ? PNG_FORMAT_BGR : PNG_FORMAT_RGB;
    /* Transparent pixels are composited on black (background NULL). */
    if (!png_image_finish_read(&img, NULL, out, 0, NULL)) {
        snprintf(pic->error, sizeof pic->error, "%s", img.message);
        png_image_free(&img);
        return false;
    }
    return true;
}

static bool decode_picture(const uint8_t *data, size_t len, int channels, bool bgr, uint32_t min_h, uint32_t min_w,
                           uint8_t *out, picture *pic) {
    if (is_jpeg(data, len)) return decode_jpeg(data, len, channels, bgr, min_h, min_w, out, pic);
    if (is_png(data, len)) return decode_png(data, len, channels, bgr, out, pic);
    snprintf(pic->error, sizeof pic->error, "is neither JPEG nor PNG");
    return false;
}

static mlp_status image_one(const stage *s, mlp_call *call, const mlp_tensor *t) {
    const int nm = (int)t->name.len;
    const char *name = (const char *)t->name.ptr;
    if (t->datatype != MLP_DT_BYTES)
        return fail(call, MLP_ERR_INVALID_INPUT, "image: tensor '%.*s' is not BYTES (encoded images)", nm, name);
    size_t count = element_count(t);
    if (t->rank < 1 || count != (size_t)t->shape[0])
        return fail(call, MLP_ERR_INVALID_INPUT, "image: '%.*s' must hold one image per item (shape [n])", nm, name);
    /* First the sizes: every image of the request must agree, and stay under max_pixels. */
    picture first = {0}, pic;
    const uint8_t *p = t->data.ptr, *end = p + t->data.len, *e;
    size_t elen;
    for (size_t k = 0; k < count; k++) {
        memset(&pic, 0, sizeof pic);
        if (!next_element(&p, end, &e, &elen))
            return fail(call, MLP_ERR_INVALID_INPUT, "image: '%.*s' is truncated", nm, name);
        if (!decode_picture(e, elen, s->channels, s->bgr, s->at_least_h, s->at_least_w, NULL, &pic))
            return fail(call, is_jpeg(e, elen) || is_png(e, elen) ? MLP_ERR_INVALID_INPUT : MLP_ERR_UNSUPPORTED,
                        "image %zu of '%.*s' %s%s", k, nm, name,
                        is_jpeg(e, elen)  ? "is a corrupt JPEG: "
                        : is_png(e, elen) ? "is a corrupt PNG: "
                                          : "",
                        pic.error);
        if ((uint64_t)pic.width * pic.height > s->max_pixels || pic.width == 0 || pic.height == 0)
            return fail(call, MLP_ERR_INVALID_INPUT,
                        "image %zu of '%.*s' is %ux%u pixels; this model takes at most %llu", k, nm, name, pic.width,
                        pic.height, (unsigned long long)s->max_pixels);
        if (k == 0)
            first = pic;
        else if (pic.width != first.width || pic.height != first.height)
            return fail(call, MLP_ERR_INVALID_INPUT,
                        "image %zu of '%.*s' is %ux%u but image 0 is %ux%u; send one size per request", k, nm, name,
                        pic.width, pic.height, first.width, first.height);
    }
    size_t one = (size_t)first.width * first.height * (size_t)s->channels;
    int64_t shape[4] = {(int64_t)count, first.height, first.width, s->channels};
    uint8_t *out = add(call, t, MLP_DT_UINT8, shape, 4, one * count);
    if (!out) return fail(call, MLP_ERR_NOMEM, "image: the host refused %zu bytes", one * count);
    p = t->data.ptr;
    for (size_t k = 0; k < count && next_element(&p, end, &e, &elen); k++) {
        memset(&pic, 0, sizeof pic);
        if (!decode_picture(e, elen, s->channels, s->bgr, s->at_least_h, s->at_least_w, out + k * one, &pic))
            return fail(call, MLP_ERR_INVALID_INPUT, "image %zu of '%.*s' is corrupt: %s", k, nm, name, pic.error);
    }
    return MLP_OK;
}

static mlp_status image_apply(void *instance, mlp_call *call, const mlp_stage_input *in) {
    return each_tensor(instance, call, in, is_bytes, image_one, "BYTES");
}

/* ---------------------------------------------------------------------------------------------
 * resize, normalise, chw: [n,H,W,C] images.
 * ------------------------------------------------------------------------------------------- */
static bool is_image_tensor(const mlp_tensor *t) {
    return t->rank == 4 && (t->datatype == MLP_DT_UINT8 || t->datatype == MLP_DT_FP32);
}

static double load_px(const mlp_tensor *t, size_t i) {
    if (t->datatype == MLP_DT_UINT8) return (double)t->data.ptr[i];
    float f;
    memcpy(&f, t->data.ptr + i * 4, 4);
    return f;
}

/* Source index and weight of the next pixel, for output position o of n over a source of m. In
 * double, so results round the same way as a float64 reference (ties stay ties). */
static void axis_map(int64_t n, int64_t m, int64_t *lo, double *w) {
    for (int64_t o = 0; o < n; o++) {
        double src = ((double)o + 0.5) * (double)m / (double)n - 0.5;
        if (src < 0) src = 0;
        int64_t i = (int64_t)src;
        if (i > m - 1) i = m - 1;
        lo[o] = i;
        w[o] = i + 1 < m ? src - (double)i : 0.0;
    }
}

static mlp_status resize_one(const stage *s, mlp_call *call, const mlp_tensor *t) {
    if (!is_image_tensor(t))
        return fail(call, MLP_ERR_INVALID_INPUT, "resize: '%.*s' is not a UINT8 or FP32 [n,H,W,C] image",
                    (int)t->name.len, t->name.ptr);
    int64_t n = t->shape[0], H = t->shape[1], W = t->shape[2], C = t->shape[3], h = s->height, w = s->width;
    if (H < 1 || W < 1)
        return fail(call, MLP_ERR_INVALID_INPUT, "resize: '%.*s' is empty", (int)t->name.len, t->name.ptr);
    size_t esize = t->datatype == MLP_DT_UINT8 ? 1 : 4;
    int64_t shape[4] = {n, h, w, C};
    uint8_t *out = add(call, t, t->datatype, shape, 4, (size_t)(n * h * w * C) * esize);
    int64_t *ylo = malloc(sizeof(int64_t) * (size_t)(h + w));
    double *yw = malloc(sizeof(double) * (size_t)(h + w));
    if (!out || !ylo || !yw) {
        free(ylo);
        free(yw);
        return fail(call, MLP_ERR_NOMEM, "resize: out of memory");
    }
    int64_t *xlo = ylo + h;
    double *xw = yw + h;
    axis_map(h, H, ylo, yw);
    axis_map(w, W, xlo, xw);
    const bool u8 = esize == 1;
    size_t o = 0;
    for (int64_t b = 0; b < n; b++)
        for (int64_t y = 0; y < h; y++) {
            size_t row0 = (size_t)(((b * H + ylo[y]) * W) * C), row1 = row0 + (yw[y] > 0 ? (size_t)(W * C) : 0);
            double wy = yw[y], wy0 = 1 - wy;
            for (int64_t x = 0; x < w; x++) {
                size_t c0 = (size_t)(xlo[x] * C), c1 = c0 + (xw[x] > 0 ? (size_t)C : 0);
                double wx = xw[x], wx0 = 1 - wx;
                for (int64_t c = 0; c < C; c++, o++) {
                    double p00, p01, p10, p11;
                    if (u8) {
                        const uint8_t *px = t->data.ptr;
                        p00 = px[row0 + c0 + c];
                        p01 = px[row0 + c1 + c];
                        p10 = px[row1 + c0 + c];
                        p11 = px[row1 + c1 + c];
                    } else {
                        p00 = load_px(t, row0 + c0 + c);
                        p01 = load_px(t, row0 + c1 + c);
                        p10 = load_px(t, row1 + c0 + c);
                        p11 = load_px(t, row1 + c1 + c);
                    }
                    double v = (p00 * wx0 + p01 * wx) * wy0 + (p10 * wx0 + p11 * wx) * wy;
                    if (u8) {
                        out[o] = (uint8_t)(v <= 0 ? 0 : v >= 255 ? 255 : lrint(v));
                    } else {
                        float f = (float)v;
                        memcpy(out + o * 4, &f, 4);
                    }
                }
            }
        }
    free(ylo);
    free(yw);
    return MLP_OK;
}

static mlp_status resize_apply(void *instance, mlp_call *call, const mlp_stage_input *in) {
    return each_tensor(instance, call, in, is_image_tensor, resize_one, "UINT8 or FP32 [n,H,W,C] image");
}

static mlp_status normalise_one(const stage *s, mlp_call *call, const mlp_tensor *t) {
    bool fits = t->rank >= 2 && (t->datatype == MLP_DT_UINT8 || t->datatype == MLP_DT_FP32);
    if (!fits)
        return fail(call, MLP_ERR_INVALID_INPUT, "normalise: '%.*s' is not UINT8 or FP32 with channels last",
                    (int)t->name.len, t->name.ptr);
    int64_t C = t->shape[t->rank - 1];
    if (s->channel_params > 1 && C != (int64_t)s->channel_params)
        return fail(call, MLP_ERR_INVALID_INPUT, "normalise: '%.*s' has %lld channels but mean/std are given for %u",
                    (int)t->name.len, t->name.ptr, (long long)C, s->channel_params);
    size_t count = element_count(t);
    uint8_t *out = add(call, t, MLP_DT_FP32, t->shape, t->rank, count * 4);
    if (!out) return fail(call, MLP_ERR_NOMEM, "normalise: the host refused %zu bytes", count * 4);
    size_t cs = s->channel_params > 1 ? (size_t)C : 1;
    if (t->datatype == MLP_DT_UINT8) {
        for (size_t k = 0; k < count; k++) {
            float v = s->lut[cs > 1 ? k % cs : 0][t->data.ptr[k]];
            memcpy(out + k * 4, &v, 4);
        }
    } else {
        for (size_t k = 0; k < count; k++) {
            float v = normalised(s, (float)load_px(t, k), (uint32_t)(cs > 1 ? k % cs : 0));
            memcpy(out + k * 4, &v, 4);
        }
    }
    return MLP_OK;
}

static mlp_status normalise_apply(void *instance, mlp_call *call, const mlp_stage_input *in) {
    return each_tensor(instance, call, in, is_image_tensor, normalise_one, "UINT8 or FP32 [n,H,W,C] image");
}

static mlp_status chw_one(const stage *s, mlp_call *call, const mlp_tensor *t) {
    (void)s;
    bool fits = t->rank == 4 && t->datatype != MLP_DT_BYTES;
    if (!fits)
        return fail(call, MLP_ERR_INVALID_INPUT, "chw: '%.*s' is not an [n,H,W,C] tensor", (int)t->name.len,
                    t->name.ptr);
    int64_t n = t->shape[0], H = t->shape[1], W = t->shape[2], C = t->shape[3];
    size_t es = mlp_datatype_size(t->datatype);
    int64_t shape[4] = {n, C, H, W};
    uint8_t *out = add(call, t, t->datatype, shape, 4, t->data.len);
    if (!out) return fail(call, MLP_ERR_NOMEM, "chw: the host refused %zu bytes", t->data.len);
    /* Walks the destination in order, reading the source with stride C. */
    for (int64_t b = 0; b < n; b++)
        for (int64_t c = 0; c < C; c++) {
            const uint8_t *src = t->data.ptr + (size_t)((b * H * W) * C + c) * es;
            uint8_t *dst = out + (size_t)((b * C + c) * H * W) * es;
            size_t step = (size_t)C * es, plane = (size_t)(H * W);
            if (es == 4)
                for (size_t i = 0; i < plane; i++) memcpy(dst + i * 4, src + i * step, 4);
            else if (es == 1)
                for (size_t i = 0; i < plane; i++) dst[i] = src[i * step];
            else
                for (size_t i = 0; i < plane; i++) memcpy(dst + i * es, src + i * step, es);
        }
    return MLP_OK;
}

static mlp_status chw_apply(void *instance, mlp_call *call, const mlp_stage_input *in) {
    return each_tensor(instance, call, in, is_4d_tensor, chw_one, "[n,H,W,C]");
}

/* ---------------------------------------------------------------------------------------------
 * Registration.
 * ------------------------------------------------------------------------------------------- */
#define STAGE_CREATE(fn, kind)                                                                                         \
    static mlp_status fn(mlp_call *call, mlp_bytes config, void **out) {                                               \
        return create_kind(kind, call, config, out);                                                                   \
    }
STAGE_CREATE(b64_create, STAGE_B64)
STAGE_CREATE(image_create, STAGE_IMAGE)
STAGE_CREATE(resize_create, STAGE_RESIZE)
STAGE_CREATE(normalise_create, STAGE_NORMALISE)
STAGE_CREATE(chw_create, STAGE_CHW)

#define STAGE_VTABLE(var, create_fn, apply_fn)                                                                         \
    static const mlp_stage_vtable var = {                                                                              \
        .struct_size = sizeof(mlp_stage_vtable), .create = create_fn, .destroy = stage_destroy, .apply = apply_fn}
STAGE_VTABLE(k_b64, b64_create, b64_apply);
STAGE_VTABLE(k_image, image_create, image_apply);
STAGE_VTABLE(k_resize, resize_create, resize_apply);
STAGE_VTABLE(k_normalise, normalise_create, normalise_apply);
STAGE_VTABLE(k_chw, chw_create, chw_apply);

#define COMPONENT(var, nm, desc, vt)                                                                                   \
    static const mlp_component var = {                                                                                 \
        .struct_size = sizeof(mlp_component), .kind = MLP_KIND_STAGE, .name = nm, .description = desc, .vtable = &vt}
COMPONENT(c_b64, "b64", "base64 text -> bytes (data: URLs and whitespace allowed)", k_b64);
COMPONENT(c_image, "image", "JPEG/PNG bytes -> UINT8 [n,H,W,C] (rgb, bgr or gray)", k_image);
COMPONENT(c_resize, "resize", "bilinear resize of [n,H,W,C] images: resize(height,width)", k_resize);
COMPONENT(c_normalise, "normalise", "UINT8/FP32 -> FP32 (x*scale - mean)/std per channel; normalise(imagenet)",
          k_normalise);
COMPONENT(c_normalize, "normalize", "the same as normalise", k_normalise);
COMPONENT(c_chw, "chw", "[n,H,W,C] -> [n,C,H,W] (PyTorch layout)", k_chw);

static const mlp_component *const k_components[] = {&c_b64, &c_image, &c_resize, &c_normalise, &c_normalize, &c_chw};

MLP_EXPORT mlp_status mlp_plugin_init(const mlp_host_api *host, mlp_plugin_info *out) {
    mlp_status s = mlp_plugin_begin(host, out, "image");
    if (s != MLP_OK) return s;
    out->version = MLP_BUNDLED_VERSION;
    out->description = "image stages: b64, image (JPEG, PNG), resize, normalise, chw";
    /* Stages need pass_tensor, which ABI 1.1 hosts have. */
    if (host->abi_minor < 1 || host->struct_size < offsetof(mlp_host_api, pass_tensor) + sizeof host->pass_tensor)
        return MLP_ERR_UNSUPPORTED;
    g_host = host;
    out->components = k_components;
    out->component_count = sizeof k_components / sizeof k_components[0];
    return MLP_OK;
}
