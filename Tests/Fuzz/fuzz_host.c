/* A libFuzzer harness that plays the host: it initialises one plugin through mlp_plugin_init, as the
 * proxy does, and feeds each input to one hook through the real C ABI (codec decode_request and
 * encode_response, backend decode_response, a chain of stages). Built once per target by
 * `make fuzz` with clang -fsanitize=fuzzer,address,undefined, linked with the plugin's own sources.
 *
 * The host here does what the proxy's host does with what plugins hand it, no more: it copies
 * tensors, hands out writable areas of the size asked for, and passes produced tensors to the next
 * hook as the proxy would (between stages without checking them, as ABI 1.1 hosts do). A crash, a
 * sanitizer report or a leak is a finding; a refused input (any status other than MLP_OK) is not.
 *
 * FUZZ_TARGET picks the target:
 *   v2_request     codec "json" decode_request, then encode_response of what it decoded
 *   v2_binary      the same with the binary extension: input = 2-byte little-endian JSON length, body
 *   v2_response    backend "kserve-v2" decode_response: 1 byte batch items, 2-byte JSON length (0:
 *                  no binary part), body
 *   tfserving      codec "tfserving" decode_request, then encode_response
 *   npy            codec "npy" decode_request (input_name x)
 *   image          stages image -> resize(7,5) -> normalise(imagenet) -> chw on one BYTES element
 *   v2_diff        the simdjson and jansson v2 decoders on the same head: they must make the same host
 *                  calls with the same bytes, or the simdjson one must decline (and if it declines after
 *                  calling the host, jansson must refuse the input). Input: 1 byte mode (bit 0: reply,
 *                  bit 1: binary extension, length in the next 2 bytes little-endian), then the body.
 *   rows_diff      the same for the TF Serving and TorchServe decoders. Input: 1 byte m, then the body;
 *                  m % 3: 0 TF Serving request (number type m / 3 % 8 of a list), 1 TF Serving reply,
 *                  2 TorchServe reply of m / 3 % 8 items. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mlp_plugin_util.h"
#include "mlproxy/mlproxy.h"

mlp_status mlp_plugin_init(const mlp_host_api *host, mlp_plugin_info *out);

/* Each target uses one of the entry functions below. */
#define UNUSED_OK __attribute__((unused))

#define MAX_TENSORS      64
#define MAX_RANK         16
#define MAX_TENSOR_BYTES (64u << 20)

typedef struct produced {
    mlp_tensor view;
    int64_t shape[MAX_RANK];
    char name[256];
    uint8_t *data;
    bool owned;
} produced;

struct mlp_call {
    produced tensors[MAX_TENSORS];
    uint32_t count;
    const mlp_stage_input *stage_in; /* for pass_tensor */
    uint8_t state[4096];             /* codec state, as the host keeps it for encode_response */
    size_t state_len;
    size_t written;
    /* Every call that carries data, in order, for comparing two decoders (v2_diff). */
    uint8_t log[1 << 16];
    size_t log_len;
    bool log_full;
};

static void note(mlp_call *c, char tag, const void *p, size_t n) {
    if (c->log_len + 1 + sizeof n + n > sizeof c->log) {
        c->log_full = true;
        return;
    }
    c->log[c->log_len++] = (uint8_t)tag;
    memcpy(c->log + c->log_len, &n, sizeof n);
    c->log_len += sizeof n;
    if (n) memcpy(c->log + c->log_len, p, n);
    c->log_len += n;
}

static void reset(mlp_call *c) {
    for (uint32_t i = 0; i < c->count; i++)
        if (c->tensors[i].owned) free(c->tensors[i].data);
    c->count = 0;
    c->stage_in = NULL;
    c->written = 0;
    c->log_len = 0;
    c->log_full = false;
}

static void host_log(mlp_call *c, uint32_t level, const char *msg, size_t len) {
    (void)c;
    (void)level;
    if (len && !msg) abort();
}
static void host_set_error(mlp_call *c, const char *msg, size_t len) {
    (void)c;
    if (len && !msg) abort();
    if (len) (void)((volatile const char *)msg)[len - 1]; /* the host copies it: it must be readable */
}

static uint8_t *host_add_tensor(mlp_call *c, const mlp_tensor_desc *d) {
    if (!c || !d || d->struct_size < sizeof *d || c->count >= MAX_TENSORS || d->rank > MAX_RANK) return NULL;
    if (d->byte_size > MAX_TENSOR_BYTES || d->name.len >= sizeof c->tensors[0].name) return NULL;
    produced *p = &c->tensors[c->count];
    memset(p, 0, sizeof *p);
    if (d->name.len) memcpy(p->name, d->name.ptr, d->name.len);
    if (d->rank) memcpy(p->shape, d->shape, d->rank * sizeof(int64_t));
    p->data = malloc(d->byte_size ? d->byte_size : 1);
    if (!p->data) return NULL;
    p->owned = true;
    note(c, 'T', &d->datatype, sizeof d->datatype);
    note(c, 'N', d->name.ptr, d->name.len);
    note(c, 'S', d->shape, d->rank * sizeof(int64_t));
    note(c, 'B', &d->byte_size, sizeof d->byte_size);
    p->view = (mlp_tensor){.struct_size = sizeof(mlp_tensor),
                           .datatype = d->datatype,
                           .name = {(const uint8_t *)p->name, d->name.len},
                           .shape = p->shape,
                           .rank = d->rank,
                           .data = {p->data, d->byte_size}};
    c->count++;
    return p->data;
}

static mlp_status host_pass_tensor(mlp_call *c, uint32_t index) {
    if (!c || !c->stage_in || index >= c->stage_in->tensor_count || c->count >= MAX_TENSORS)
        return MLP_ERR_INVALID_INPUT;
    const mlp_tensor *t = mlp_tensor_at(c->stage_in->tensors, c->stage_in->tensor_stride, index);
    produced *p = &c->tensors[c->count++];
    memset(p, 0, sizeof *p);
    p->view = *t;
    return MLP_OK;
}

static mlp_status host_write(mlp_call *c, const void *bytes, size_t len) {
    if (len && !bytes) abort();
    if (len) (void)((volatile const uint8_t *)bytes)[len - 1];
    c->written += len;
    return MLP_OK;
}
static mlp_status host_header(mlp_call *c, mlp_bytes name, mlp_bytes value) {
    (void)c;
    if ((name.len && !name.ptr) || (value.len && !value.ptr)) abort();
    return MLP_OK;
}
static mlp_status host_bytes(mlp_call *c, mlp_bytes b) {
    (void)c;
    if (b.len && !b.ptr) abort();
    if (b.len) (void)((volatile const uint8_t *)b.ptr)[b.len - 1];
    return MLP_OK;
}
static mlp_status host_id(mlp_call *c, mlp_bytes b) {
    note(c, 'I', b.ptr, b.len);
    return host_bytes(c, b);
}
static mlp_status host_output(mlp_call *c, mlp_bytes b) {
    note(c, 'O', b.ptr, b.len);
    return host_bytes(c, b);
}
static mlp_status host_parameters(mlp_call *c, mlp_bytes b) {
    note(c, 'P', b.ptr, b.len);
    return host_bytes(c, b);
}
static mlp_status host_int(mlp_call *c, uint32_t key, int64_t value) {
    int64_t kv[2] = {key, value};
    note(c, 'R', kv, sizeof kv);
    return MLP_OK;
}
static mlp_status host_codec_state(mlp_call *c, mlp_bytes b) {
    note(c, 'C', b.ptr, b.len);
    if (b.len > sizeof c->state) return MLP_ERR_INVALID_INPUT;
    if (b.len) memcpy(c->state, b.ptr, b.len);
    c->state_len = b.len;
    return MLP_OK;
}

static const mlp_host_api k_host = {
    .struct_size = sizeof(mlp_host_api),
    .abi_major = MLP_ABI_MAJOR,
    .abi_minor = MLP_ABI_MINOR,
    .log = host_log,
    .set_error = host_set_error,
    .add_tensor = host_add_tensor,
    .write = host_write,
    .set_header = host_header,
    .set_path = host_bytes,
    .set_id = host_id,
    .set_request_int = host_int,
    .add_requested_output = host_output,
    .set_parameters_json = host_parameters,
    .set_codec_state = host_codec_state,
    .pass_tensor = host_pass_tensor,
};

static const void *find(uint32_t kind, const char *name) {
    static mlp_plugin_info info;
    if (!info.struct_size) {
        info.struct_size = sizeof info;
        if (mlp_plugin_init(&k_host, &info) != MLP_OK) abort();
    }
    for (uint32_t i = 0; i < info.component_count; i++) {
        const mlp_component *c = info.components[i];
        if (c->kind == kind && strcmp(c->name, name) == 0) return c->vtable;
    }
    fprintf(stderr, "no component %s\n", name);
    abort();
}

static void *create(mlp_status (*fn)(mlp_call *, mlp_bytes, void **), const char *config) {
    void *instance = NULL;
    mlp_bytes cfg = {(const uint8_t *)config, strlen(config)};
    if (fn(NULL, cfg, &instance) != MLP_OK) abort();
    return instance;
}

/* FUZZ_TRACE=1 prints what each hook did, to check that the seeds reach every hook. */
static bool tracing(void) {
    static int trace = -1;
    if (trace < 0) trace = getenv("FUZZ_TRACE") != NULL;
    return trace;
}

static uint32_t le16(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8;
}

/* Decodes with a codec, then encodes what was decoded as the response, as a client's echo. */
UNUSED_OK static void codec_round_trip(const char *name, const char *config, const char *content_type,
                                       const mlp_header *headers, uint32_t header_count, const uint8_t *body,
                                       size_t size) {
    static const mlp_codec_vtable *vt;
    static void *instance;
    if (!vt) {
        vt = find(MLP_KIND_CODEC, name);
        instance = create(vt->create, config);
    }
    static mlp_call call;
    reset(&call);
    call.state_len = 0;
    mlp_request_message msg = {.struct_size = sizeof msg,
                               .header_count = header_count,
                               .body = {body, size},
                               .content_type = {(const uint8_t *)content_type, strlen(content_type)},
                               .model_name = {(const uint8_t *)"m", 1},
                               .headers = headers};
    mlp_status decoded = vt->decode_request(instance, &call, &msg);
    if (tracing()) fprintf(stderr, "decode_request: status %d, %u tensor(s)\n", (int)decoded, call.count);
    if (decoded == MLP_OK && vt->encode_response) {
        /* The host checks decoded tensors before they go anywhere (BatchAssembler.validate): only
         * consistent ones reach an encoder. */
        mlp_tensor outs[MAX_TENSORS];
        uint32_t n = 0;
        for (uint32_t i = 0; i < call.count; i++) {
            const mlp_tensor *t = &call.tensors[i].view;
            size_t es = mlp_datatype_size(t->datatype);
            uint64_t count = 1;
            for (uint32_t d = 0; d < t->rank; d++) count *= (uint64_t)(t->shape[d] < 0 ? 0 : t->shape[d]);
            if (t->datatype != MLP_DT_BYTES && (es == 0 || count * es != t->data.len)) return;
            if (t->datatype == MLP_DT_BYTES) {
                /* Each element: a 4-byte little-endian length, then that many bytes. */
                size_t off = 0;
                for (uint64_t e = 0; e < count; e++) {
                    if (t->data.len - off < 4) return;
                    uint32_t len = (uint32_t)t->data.ptr[off] | (uint32_t)t->data.ptr[off + 1] << 8 |
                                   (uint32_t)t->data.ptr[off + 2] << 16 | (uint32_t)t->data.ptr[off + 3] << 24;
                    if (t->data.len - off - 4 < len) return;
                    off += 4 + (size_t)len;
                }
                if (off != t->data.len) return;
            }
            outs[n++] = *t;
        }
        mlp_response_view resp = {.struct_size = sizeof resp,
                                  .output_count = n,
                                  .model_name = {(const uint8_t *)"m", 1},
                                  .outputs = outs,
                                  .tensor_stride = sizeof(mlp_tensor),
                                  .codec_state = {call.state, call.state_len}};
        mlp_call enc = {0};
        mlp_status encoded = vt->encode_response(instance, &enc, &resp);
        if (tracing()) fprintf(stderr, "encode_response: status %d, %zu bytes\n", (int)encoded, enc.written);
        reset(&enc);
    }
    reset(&call);
}

UNUSED_OK static void v2_response(const uint8_t *data, size_t size) {
    static const mlp_backend_vtable *vt;
    static void *instance;
    if (!vt) {
        vt = find(MLP_KIND_BACKEND, "kserve-v2");
        instance = create(vt->create, "{}");
    }
    if (size < 3) return;
    uint32_t items = 1 + data[0] % 8;
    uint32_t json_len = le16(data + 1);
    char value[16];
    snprintf(value, sizeof value, "%u", json_len);
    mlp_header h = {{(const uint8_t *)"inference-header-content-length", 31}, {(const uint8_t *)value, strlen(value)}};
    mlp_upstream_reply reply = {.struct_size = sizeof reply,
                                .http_status = 200,
                                .body = {data + 3, size - 3},
                                .content_type = {(const uint8_t *)"application/json", 16},
                                .model_name = {(const uint8_t *)"m", 1},
                                .batch_items = items,
                                .headers = json_len ? &h : NULL,
                                .header_count = json_len ? 1 : 0};
    static mlp_call call;
    reset(&call);
    mlp_status decoded = vt->decode_response(instance, &call, &reply);
    if (tracing()) fprintf(stderr, "decode_response: status %d, %u tensor(s)\n", (int)decoded, call.count);
    reset(&call);
}

UNUSED_OK static void image_chain(const uint8_t *data, size_t size) {
    static const char *const names[] = {"image", "resize", "normalise", "chw"};
    static const char *const configs[] = {"{}", "{\"args\":[7,5]}", "{\"args\":[\"imagenet\"]}", "{}"};
    static const mlp_stage_vtable *vts[4];
    static void *instances[4];
    if (!vts[0]) {
        for (int i = 0; i < 4; i++) {
            vts[i] = find(MLP_KIND_STAGE, names[i]);
            instances[i] = create(vts[i]->create, configs[i]);
        }
    }
    if (size > MAX_TENSOR_BYTES - 4) return;
    /* The body as the host hands it to a chain that starts with a stage: one BYTES element. */
    uint8_t *framed = malloc(size + 4);
    if (!framed) return;
    framed[0] = (uint8_t)size;
    framed[1] = (uint8_t)(size >> 8);
    framed[2] = (uint8_t)(size >> 16);
    framed[3] = (uint8_t)(size >> 24);
    if (size) memcpy(framed + 4, data, size);
    static const int64_t one = 1;
    mlp_tensor input = {.struct_size = sizeof input,
                        .datatype = MLP_DT_BYTES,
                        .name = {(const uint8_t *)"input", 5},
                        .shape = &one,
                        .rank = 1,
                        .data = {framed, size + 4}};
    /* One call per stage, all kept until the chain ends: a stage may pass on (pass_tensor) tensors
     * that live in an earlier stage's call. */
    static mlp_call calls[4];
    mlp_stage_input in = {.struct_size = sizeof in,
                          .tensor_count = 1,
                          .tensors = &input,
                          .tensor_stride = sizeof(mlp_tensor),
                          .model_name = {(const uint8_t *)"m", 1}};
    mlp_tensor views[MAX_TENSORS];
    for (int i = 0; i < 4; i++) {
        mlp_call *c = &calls[i];
        c->stage_in = &in;
        mlp_status status = vts[i]->apply(instances[i], c, &in);
        if (tracing()) fprintf(stderr, "stage %s: status %d, %u tensor(s)\n", names[i], (int)status, c->count);
        if (status != MLP_OK) break;
        for (uint32_t k = 0; k < c->count; k++) views[k] = c->tensors[k].view;
        in.tensors = views;
        in.tensor_count = c->count;
    }
    for (int i = 0; i < 4; i++) reset(&calls[i]);
    free(framed);
}

#if defined(FUZZ_V2_DIFF) || defined(FUZZ_ROWS_DIFF)
#include "mlp_json.h"

/* Both decoders' host calls, then every tensor's bytes, must be the same. */
static bool same(const mlp_call *a, const mlp_call *b) {
    if (a->log_full || b->log_full) return true; /* too large to compare: not a finding */
    if (a->log_len != b->log_len || memcmp(a->log, b->log, a->log_len) != 0 || a->count != b->count) return false;
    for (uint32_t i = 0; i < a->count; i++) {
        mlp_bytes x = a->tensors[i].view.data, y = b->tensors[i].view.data;
        if (x.len != y.len || (x.len && memcmp(x.ptr, y.ptr, x.len) != 0)) return false;
    }
    return true;
}

/* A finding when the simdjson decoder decoded what jansson's refused or decoded otherwise, or declined
 * after calls to the host that jansson's success would keep. */
static void judge(bool handled, mlp_status status, mlp_call *fast, mlp_call *slow) {
    if (tracing()) fprintf(stderr, "simdjson %s, jansson status %d\n", handled ? "decoded" : "declined", (int)status);
    if (handled && (status != MLP_OK || !same(fast, slow))) {
        fprintf(stderr, "the decoders disagree: simdjson decoded, jansson status %d or different calls\n", (int)status);
        abort();
    }
    if (!handled && status == MLP_OK && (fast->log_len || fast->count)) {
        fprintf(stderr, "simdjson declined after calling the host, but jansson decoded it\n");
        abort();
    }
    reset(fast);
    reset(slow);
}

UNUSED_OK static void v2_diff(const uint8_t *data, size_t size) {
    if (!g_host) g_host = &k_host; /* both decoders call the plugin's host table */
    if (size < 1) return;
    bool reply = data[0] & 1;
    mlp_bytes head = {data + 1, size - 1};
    v2_binary_cursor bin = {NULL, 0}, *binp = NULL;
    if (data[0] & 2) {
        if (size < 3) return;
        size_t n = le16(data + 1);
        head = (mlp_bytes){data + 3, size - 3 < n ? size - 3 : n};
        bin = (v2_binary_cursor){data + 3 + head.len, size - 3 - head.len};
        binp = &bin;
    }
    static mlp_call fast, slow;
    reset(&fast);
    reset(&slow);
    v2_binary_cursor fast_bin = bin, slow_bin = bin;
    bool handled = reply ? v2_fast_decode_reply(&fast, head, binp ? &fast_bin : NULL)
                         : v2_fast_decode_request(&fast, head, binp ? &fast_bin : NULL);
    mlp_status status = reply ? v2_jansson_decode_reply(&slow, head, binp ? &slow_bin : NULL)
                              : v2_jansson_decode_request(&slow, head, binp ? &slow_bin : NULL);
    judge(handled, status, &fast, &slow);
}

UNUSED_OK static void rows_diff(const uint8_t *data, size_t size) {
    if (!g_host) g_host = &k_host;
    if (size < 1) return;
    static const uint32_t number_types[] = {MLP_DT_FP32,  MLP_DT_FP64, MLP_DT_INT64, MLP_DT_INT32,
                                            MLP_DT_UINT8, MLP_DT_FP16, MLP_DT_INT8,  MLP_DT_UINT64};
    uint32_t mode = data[0] % 3, arg = data[0] / 3;
    mlp_bytes body = {data + 1, size - 1};
    static mlp_call fast, slow;
    reset(&fast);
    reset(&slow);
    bool handled;
    mlp_status status;
    if (mode == 0) {
        uint32_t nt = number_types[arg % 8];
        handled = tf_fast_decode_request(&fast, body, nt);
        status = tf_jansson_decode_request(&slow, body, nt);
    } else if (mode == 1) {
        handled = tf_fast_decode_reply(&fast, body);
        status = tf_jansson_decode_reply(&slow, body);
    } else {
        handled = ts_fast_decode_reply(&fast, body, arg % 8);
        status = ts_jansson_decode_reply(&slow, body, arg % 8);
    }
    judge(handled, status, &fast, &slow);
}
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
#if defined(FUZZ_V2_REQUEST)
    codec_round_trip("json", "{}", "application/json", NULL, 0, data, size);
#elif defined(FUZZ_V2_BINARY)
    if (size < 2) return 0;
    char value[16];
    snprintf(value, sizeof value, "%u", le16(data));
    mlp_header h = {{(const uint8_t *)"inference-header-content-length", 31}, {(const uint8_t *)value, strlen(value)}};
    codec_round_trip("json", "{}", "application/octet-stream", &h, 1, data + 2, size - 2);
#elif defined(FUZZ_V2_RESPONSE)
    v2_response(data, size);
#elif defined(FUZZ_TFSERVING)
    codec_round_trip("tfserving", "{}", "application/json", NULL, 0, data, size);
#elif defined(FUZZ_NPY)
    codec_round_trip("npy", "{\"input_name\":\"x\"}", "application/x-npy", NULL, 0, data, size);
#elif defined(FUZZ_IMAGE)
    image_chain(data, size);
#elif defined(FUZZ_V2_DIFF)
    v2_diff(data, size);
#elif defined(FUZZ_ROWS_DIFF)
    rows_diff(data, size);
#else
#error "define one FUZZ_<TARGET>"
#endif
    return 0;
}
