/* A stage that breaks the ABI's tensor rules on request: the host must refuse its output for that
 * request alone (500, naming the stage) before anything else reads it. The request's body (the
 * host's BYTES tensor) picks the lie: "shape" declares [1, 1000] FP32 over 4 bytes, "items" changes
 * dim 0 from 1 to 3, "bytes" writes BYTES whose length prefix runs past its data; any other body
 * becomes FP32 [1, 1] holding the body's length. */
#include <mlproxy/mlproxy.h>
#include <stdbool.h>
#include <string.h>

static const mlp_host_api *g_host;

static mlp_status create(mlp_call *call, mlp_bytes config, void **out) {
    (void)call;
    (void)config;
    *out = 0;
    return MLP_OK;
}

static void destroy(void *p) {
    (void)p;
}

static bool starts(mlp_bytes element, const char *word) {
    size_t n = strlen(word);
    return element.len >= n && memcmp(element.ptr, word, n) == 0;
}

static mlp_status add(mlp_call *call, uint32_t datatype, const int64_t *shape, uint32_t rank, size_t bytes,
                      const void *data) {
    static const char name[] = "lied";
    mlp_tensor_desc d = {sizeof d, datatype, {(const uint8_t *)name, sizeof name - 1}, shape, rank, bytes};
    uint8_t *out = g_host->add_tensor(call, &d);
    if (!out) return MLP_ERR_INTERNAL;
    memcpy(out, data, bytes);
    return MLP_OK;
}

static mlp_status apply(void *p, mlp_call *call, const mlp_stage_input *in) {
    (void)p;
    if (in->tensor_count < 1) return MLP_ERR_INVALID_INPUT;
    const mlp_tensor *t = mlp_tensor_at(in->tensors, in->tensor_stride, 0);
    if (t->datatype != MLP_DT_BYTES || t->data.len < 4) return MLP_ERR_INVALID_INPUT;
    mlp_bytes body = {t->data.ptr + 4, t->data.len - 4};
    const float one[3] = {1, 2, 3};
    if (starts(body, "shape")) {
        const int64_t shape[] = {1, 1000};
        return add(call, MLP_DT_FP32, shape, 2, 4, one);
    }
    if (starts(body, "items")) {
        const int64_t shape[] = {3};
        return add(call, MLP_DT_FP32, shape, 1, 12, one);
    }
    if (starts(body, "bytes")) {
        const uint8_t framed[6] = {100, 0, 0, 0, 'h', 'i'};
        const int64_t shape[] = {1};
        return add(call, MLP_DT_BYTES, shape, 1, sizeof framed, framed);
    }
    const float length = (float)body.len;
    const int64_t shape[] = {1, 1};
    return add(call, MLP_DT_FP32, shape, 2, 4, &length);
}

static const mlp_stage_vtable vt = {
    .struct_size = sizeof vt,
    .create = create,
    .destroy = destroy,
    .apply = apply,
};
static const mlp_component comp = {
    .struct_size = sizeof comp,
    .kind = MLP_KIND_STAGE,
    .name = "liar",
    .description = "test fixture: a stage that breaks the tensor rules on request",
    .vtable = &vt,
};
static const mlp_component *const comps[] = {&comp};

MLP_EXPORT mlp_status mlp_plugin_init(const mlp_host_api *host, mlp_plugin_info *out) {
    mlp_status s = mlp_plugin_begin(host, out, "lying-stage");
    if (s != MLP_OK) return s;
    g_host = host;
    out->components = comps;
    out->component_count = 1;
    return MLP_OK;
}
