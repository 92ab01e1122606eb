/* The `npy` codec: a request body that is one NumPy .npy array (format 1.0, 2.0 or 3.0; little-endian
 * or single-byte numeric and bool dtypes; C order) becomes the model's one input, dim 0 the items; the
 * response is the first output (or the configured one) as .npy. Content types application/x-npy and
 * application/npy, on the v2 route (POST /v2/models/{m}/infer).
 *
 * Config (JSON): {"input_name": "input", "output_name": ""} (empty: the first output). */
#include "mlp_tensor_codecs.h"
#include "mlp_plugin_util.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const mlp_host_api *g_host;

MLP_DEFINE_FAIL(static)

/* NumPy dtype descriptions <-> v2 datatypes (little-endian or byte-sized only). */
static const struct {
    const char *descr;
    uint32_t dt;
} k_types[] = {
    {"|b1", MLP_DT_BOOL},   {"|u1", MLP_DT_UINT8}, {"<u2", MLP_DT_UINT16}, {"<u4", MLP_DT_UINT32},
    {"<u8", MLP_DT_UINT64}, {"|i1", MLP_DT_INT8},  {"<i2", MLP_DT_INT16},  {"<i4", MLP_DT_INT32},
    {"<i8", MLP_DT_INT64},  {"<f2", MLP_DT_FP16},  {"<f4", MLP_DT_FP32},   {"<f8", MLP_DT_FP64},
};

typedef struct npy_codec {
    char input_name[128];
    char output_name[128];
} npy_codec;

static mlp_status npy_create(mlp_call *call, mlp_bytes config, void **out) {
    npy_codec *c = calloc(1, sizeof *c);
    if (!c) return fail(call, MLP_ERR_NOMEM, "out of memory");
    strcpy(c->input_name, "input");
    /* A tiny reader for {"input_name": "...", "output_name": "..."}: the host hands JSON text. */
    const char *keys[] = {"\"input_name\"", "\"output_name\""};
    char *dest[] = {c->input_name, c->output_name};
    for (int k = 0; k < 2; k++) {
        const char *text = (const char *)config.ptr;
        size_t n = strlen(keys[k]);
        for (size_t i = 0; config.len >= n && i + n <= config.len; i++) {
            if (memcmp(text + i, keys[k], n) != 0) continue;
            size_t j = i + n;
            while (j < config.len && (text[j] == ' ' || text[j] == ':')) j++;
            if (j >= config.len || text[j] != '"') break;
            size_t start = ++j;
            while (j < config.len && text[j] != '"') j++;
            if (j - start >= 128) {
                free(c);
                return fail(call, MLP_ERR_CONFIG, "npy: %s is too long", keys[k]);
            }
            memcpy(dest[k], text + start, j - start);
            dest[k][j - start] = 0;
            break;
        }
    }
    *out = c;
    return MLP_OK;
}

static void npy_destroy(void *instance) {
    free(instance);
}

/* Finds `'key':` in the header dict and returns a pointer just past the colon and spaces. */
static const char *dict_value(const char *h, size_t n, const char *key) {
    size_t k = strlen(key);
    for (size_t i = 0; i + k + 2 < n; i++) {
        if ((h[i] == '\'' || h[i] == '"') && memcmp(h + i + 1, key, k) == 0 && h[i + 1 + k] == h[i]) {
            const char *p = h + i + k + 2;
            while (p < h + n && (*p == ' ' || *p == ':')) p++;
            return p;
        }
    }
    return NULL;
}

static mlp_status npy_decode(void *instance, mlp_call *call, const mlp_request_message *msg) {
    const npy_codec *c = instance;
    const uint8_t *b = msg->body.ptr;
    size_t len = msg->body.len;
    if (len < 10 || memcmp(b, "\x93NUMPY", 6) != 0)
        return fail(call, MLP_ERR_INVALID_INPUT, "the body is not a .npy file (no \\x93NUMPY magic)");
    size_t hlen, hstart;
    if (b[6] == 1) {
        hlen = (size_t)b[8] | (size_t)b[9] << 8;
        hstart = 10;
    } else if (b[6] == 2 || b[6] == 3) {
        if (len < 12) return fail(call, MLP_ERR_INVALID_INPUT, ".npy header is truncated");
        hlen = (size_t)b[8] | (size_t)b[9] << 8 | (size_t)b[10] << 16 | (size_t)b[11] << 24;
        hstart = 12;
    } else {
        return fail(call, MLP_ERR_INVALID_INPUT, ".npy format version %u.%u is not supported", b[6], b[7]);
    }
    if (hlen > len - hstart)
        return fail(call, MLP_ERR_INVALID_INPUT, ".npy header length %zu runs past the body", hlen);
    const char *h = (const char *)b + hstart;
    const char *descr = dict_value(h, hlen, "descr");
    const char *order = dict_value(h, hlen, "fortran_order");
    const char *shape_text = dict_value(h, hlen, "shape");
    if (!descr || !order || !shape_text)
        return fail(call, MLP_ERR_INVALID_INPUT, ".npy header lacks descr, fortran_order or shape");
    /* Every read below stays inside the header: a value may end right at its last byte. */
    const char *end = h + hlen;
    if (end - order < 5 || memcmp(order, "False", 5) != 0)
        return fail(call, MLP_ERR_INVALID_INPUT, ".npy array is in Fortran order; send a C-ordered array");
    uint32_t dt = MLP_DT_INVALID;
    size_t es = 0;
    int descr_len = (int)(end - descr < 8 ? end - descr : 8);
    if (end - descr >= 5 && (*descr == '\'' || *descr == '"')) {
        for (size_t i = 0; i < sizeof k_types / sizeof k_types[0]; i++) {
            const char *d = k_types[i].descr;
            bool match = memcmp(descr + 1, d, 3) == 0 ||
                         (d[0] == '<' && descr[1] == '=' && memcmp(descr + 2, d + 1, 2) == 0) ||
                         (d[0] == '|' && (descr[1] == '<' || descr[1] == '=') && memcmp(descr + 2, d + 1, 2) == 0);
            if (match && descr[4] == descr[0]) {
                dt = k_types[i].dt;
                es = mlp_datatype_size(k_types[i].dt);
                break;
            }
        }
    }
    if (dt == MLP_DT_INVALID)
        return fail(call, MLP_ERR_UNSUPPORTED,
                    ".npy dtype %.*s is not supported (little-endian bool, int, uint or float only)", descr_len, descr);
    int64_t shape[16];
    uint32_t rank = 0;
    const char *p = shape_text;
    if (p >= end || *p != '(') return fail(call, MLP_ERR_INVALID_INPUT, ".npy shape is not a tuple");
    p++;
    size_t count = 1;
    while (p < end && *p != ')') {
        while (p < end && (*p == ' ' || *p == ',')) p++;
        if (p < end && *p == ')') break;
        if (p >= end || *p < '0' || *p > '9')
            return fail(call, MLP_ERR_INVALID_INPUT, ".npy shape holds something that is not a size");
        int64_t v = 0;
        while (p < end && *p >= '0' && *p <= '9') {
            if (v > (INT64_C(1) << 40)) return fail(call, MLP_ERR_INVALID_INPUT, ".npy shape is too large");
            v = v * 10 + (*p++ - '0');
        }
        if (rank == 16) return fail(call, MLP_ERR_INVALID_INPUT, ".npy array has more than 16 dimensions");
        shape[rank++] = v;
        if (v && count > SIZE_MAX / (size_t)v / 16) return fail(call, MLP_ERR_INVALID_INPUT, ".npy shape is too large");
        count *= (size_t)v;
    }
    if (rank == 0) return fail(call, MLP_ERR_INVALID_INPUT, ".npy array is a scalar; dim 0 must be the items");
    size_t data = hstart + hlen;
    if (len - data != count * es)
        return fail(call, MLP_ERR_INVALID_INPUT, ".npy data is %zu bytes but the shape and dtype need %zu", len - data,
                    count * es);
    mlp_tensor_desc desc = {
        .struct_size = sizeof desc,
        .datatype = dt,
        .name = {(const uint8_t *)c->input_name, strlen(c->input_name)},
        .shape = shape,
        .rank = rank,
        .byte_size = count * es,
    };
    uint8_t *out = g_host->add_tensor(call, &desc);
    if (!out) return fail(call, MLP_ERR_NOMEM, "the host refused %zu bytes", count * es);
    memcpy(out, b + data, count * es);
    return MLP_OK;
}

static mlp_status npy_encode(void *instance, mlp_call *call, const mlp_response_view *r) {
    const npy_codec *c = instance;
    const mlp_tensor *t = NULL;
    for (uint32_t i = 0; i < r->output_count && !t; i++) {
        const mlp_tensor *o = mlp_tensor_at(r->outputs, r->tensor_stride, i);
        if (!c->output_name[0] ||
            (o->name.len == strlen(c->output_name) && memcmp(o->name.ptr, c->output_name, o->name.len) == 0))
            t = o;
    }
    if (!t)
        return fail(call, MLP_ERR_UPSTREAM, "the model's reply has no output '%s' to send as .npy",
                    c->output_name[0] ? c->output_name : "(any)");
    const char *descr = NULL;
    for (size_t i = 0; i < sizeof k_types / sizeof k_types[0]; i++)
        if (k_types[i].dt == t->datatype) descr = k_types[i].descr;
    if (!descr) return fail(call, MLP_ERR_UNSUPPORTED, "output datatype %u has no .npy form (BYTES)", t->datatype);
    char header[512];
    int n = snprintf(header, sizeof header, "{'descr': '%s', 'fortran_order': False, 'shape': (", descr);
    for (uint32_t d = 0; d < t->rank && n < 400; d++)
        n += snprintf(header + n, sizeof header - (size_t)n, "%lld,%s", (long long)t->shape[d],
                      t->rank > 1 && d + 1 < t->rank ? " " : "");
    n += snprintf(header + n, sizeof header - (size_t)n, "), }");
    /* Pad with spaces so that magic (10 bytes) + header + newline is a multiple of 64. */
    size_t total = 10 + (size_t)n + 1;
    size_t pad = (64 - total % 64) % 64;
    uint8_t pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, 0, 0};
    size_t hl = (size_t)n + pad + 1;
    pre[8] = (uint8_t)(hl & 0xff);
    pre[9] = (uint8_t)(hl >> 8);
    static const char ct[] = "content-type", npy[] = "application/x-npy";
    mlp_status s = g_host->set_header(call, (mlp_bytes){(const uint8_t *)ct, sizeof ct - 1},
                                      (mlp_bytes){(const uint8_t *)npy, sizeof npy - 1});
    if (s == MLP_OK) s = g_host->write(call, pre, sizeof pre);
    if (s == MLP_OK) s = g_host->write(call, header, (size_t)n);
    for (size_t i = 0; s == MLP_OK && i < pad; i++) s = g_host->write(call, " ", 1);
    if (s == MLP_OK) s = g_host->write(call, "\n", 1);
    if (s == MLP_OK && t->data.len) s = g_host->write(call, t->data.ptr, t->data.len);
    return s;
}

static const char *const k_npy_types[] = {"application/x-npy", "application/npy", NULL};

static const mlp_codec_vtable k_npy = {
    .struct_size = sizeof(mlp_codec_vtable),
    .content_types = k_npy_types,
    .create = npy_create,
    .destroy = npy_destroy,
    .decode_request = npy_decode,
    .encode_response = npy_encode,
    .protocol = "v2",
};
static const mlp_component k_npy_component = {
    .struct_size = sizeof(mlp_component),
    .kind = MLP_KIND_CODEC,
    .name = "npy",
    .description = "NumPy .npy request and response bodies",
    .vtable = &k_npy,
};
static const mlp_component *const k_components[] = {&k_npy_component};

MLP_EXPORT mlp_status mlp_plugin_init(const mlp_host_api *host, mlp_plugin_info *out) {
    mlp_status s = mlp_plugin_begin(host, out, "tensor");
    if (s != MLP_OK) return s;
    out->version = MLP_BUNDLED_VERSION;
    out->description = "NumPy .npy tensors";
    g_host = host;
    out->components = k_components;
    out->component_count = 1;
    return MLP_OK;
}
