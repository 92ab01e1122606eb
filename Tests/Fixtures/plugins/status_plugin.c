/* Every hook returns the status its configuration names, so a test can check each status against
 * the HTTP status the header promises. Params: codec {"decode": N, "encode": N}, stage "status(N)",
 * backend {"encode": N, "decode": N}, policy {"decide": N, "observe": N}; 0 (or absent) means work:
 * the codec turns any body into FP32 x = [[body length]] and answers {"ok":true}; the stage passes its
 * input on; the backend sends x as v2 JSON and answers y = x; the policy sends each request alone. */
#include <mlproxy/mlproxy.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const mlp_host_api *g_host;

typedef struct statuses {
    int first, second;
} statuses;

static mlp_status fail_with(mlp_call *call, int status, const char *hook) {
    char msg[64];
    int n = snprintf(msg, sizeof msg, "%s says %d", hook, status);
    g_host->set_error(call, msg, (size_t)n);
    return (mlp_status)status;
}

static mlp_status make(mlp_bytes config, const char *first, const char *second, void **out) {
    json_t *cfg = json_loadb((const char *)config.ptr, config.len, 0, NULL);
    statuses *s = calloc(1, sizeof *s);
    if (!s) return MLP_ERR_NOMEM;
    json_t *args = json_object_get(cfg, "args");
    s->first = (int)json_integer_value(args ? json_array_get(args, 0) : json_object_get(cfg, first));
    s->second = (int)json_integer_value(json_object_get(cfg, second));
    json_decref(cfg);
    *out = s;
    return MLP_OK;
}

static void destroy(void *p) {
    free(p);
}

/* ---- codec ---- */
static mlp_status codec_create(mlp_call *call, mlp_bytes config, void **out) {
    (void)call;
    return make(config, "decode", "encode", out);
}

static mlp_status decode_request(void *p, mlp_call *call, const mlp_request_message *msg) {
    const statuses *s = p;
    if (s->first) return fail_with(call, s->first, "decode_request");
    const int64_t shape[] = {1, 1};
    mlp_tensor_desc d = {sizeof d, MLP_DT_FP32, {(const uint8_t *)"x", 1}, shape, 2, 4};
    uint8_t *data = g_host->add_tensor(call, &d);
    if (!data) return MLP_ERR_NOMEM;
    float length = (float)msg->body.len;
    memcpy(data, &length, 4);
    return MLP_OK;
}

static mlp_status encode_response(void *p, mlp_call *call, const mlp_response_view *resp) {
    (void)resp;
    const statuses *s = p;
    if (s->second) return fail_with(call, s->second, "encode_response");
    static const char body[] = "{\"ok\":true}", type[] = "application/json", ct[] = "content-type";
    g_host->set_header(call, (mlp_bytes){(const uint8_t *)ct, sizeof ct - 1},
                       (mlp_bytes){(const uint8_t *)type, sizeof type - 1});
    return g_host->write(call, body, sizeof body - 1);
}

static const char *const content_types[] = {"application/x-status", NULL};
static const mlp_codec_vtable codec = {
    .struct_size = sizeof codec,
    .content_types = content_types,
    .create = codec_create,
    .destroy = destroy,
    .decode_request = decode_request,
    .encode_response = encode_response,
};

/* ---- stage ---- */
static mlp_status stage_create(mlp_call *call, mlp_bytes config, void **out) {
    (void)call;
    return make(config, "status", "unused", out);
}

static mlp_status apply(void *p, mlp_call *call, const mlp_stage_input *in) {
    (void)in;
    const statuses *s = p;
    if (s->first) return fail_with(call, s->first, "apply");
    return g_host->pass_tensor(call, 0);
}

static const mlp_stage_vtable stage = {
    .struct_size = sizeof stage,
    .create = stage_create,
    .destroy = destroy,
    .apply = apply,
};

/* ---- backend ---- */
static mlp_status backend_create(mlp_call *call, mlp_bytes config, void **out) {
    (void)call;
    return make(config, "encode", "decode", out);
}

static mlp_status encode_request(void *p, mlp_call *call, const mlp_batch_view *batch) {
    const statuses *s = p;
    if (s->first) return fail_with(call, s->first, "encode_request");
    const mlp_tensor *x = mlp_tensor_at(batch->inputs, batch->tensor_stride, 0);
    char text[128];
    int n = snprintf(text, sizeof text, "/v2/models/%.*s/infer", (int)batch->model_name.len,
                     (const char *)batch->model_name.ptr);
    g_host->set_path(call, (mlp_bytes){(const uint8_t *)text, (size_t)n});
    n = snprintf(text, sizeof text, "{\"inputs\":[{\"name\":\"x\",\"shape\":[%u,1],\"datatype\":\"FP32\",\"data\":[",
                 batch->batch_items);
    g_host->write(call, text, (size_t)n);
    for (uint32_t i = 0; i < batch->batch_items; i++) {
        float v;
        memcpy(&v, x->data.ptr + 4 * i, 4);
        n = snprintf(text, sizeof text, "%s%g", i ? "," : "", (double)v);
        g_host->write(call, text, (size_t)n);
    }
    return g_host->write(call, "]}]}", 4);
}

static mlp_status decode_response(void *p, mlp_call *call, const mlp_upstream_reply *reply) {
    const statuses *s = p;
    if (s->second) return fail_with(call, s->second, "decode_response");
    const int64_t shape[] = {reply->batch_items, 1};
    mlp_tensor_desc d = {sizeof d, MLP_DT_FP32, {(const uint8_t *)"y", 1}, shape, 2, 4 * (size_t)reply->batch_items};
    uint8_t *data = g_host->add_tensor(call, &d);
    if (!data) return MLP_ERR_NOMEM;
    memset(data, 0, d.byte_size);
    return MLP_OK;
}

static const mlp_backend_vtable backend = {
    .struct_size = sizeof backend,
    .create = backend_create,
    .destroy = destroy,
    .encode_request = encode_request,
    .decode_response = decode_response,
};

/* ---- policy ---- */
static mlp_status policy_create(mlp_call *call, mlp_bytes config, void **out) {
    (void)call;
    return make(config, "decide", "observe", out);
}

static mlp_status decide(void *p, mlp_call *call, const mlp_policy_input *in, mlp_policy_decision *out) {
    const statuses *s = p;
    if (s->first) return fail_with(call, s->first, "decide");
    out->action = in->queue_len ? MLP_ACTION_DISPATCH : MLP_ACTION_WAIT;
    out->wake_at_ns = MLP_WAKE_NEVER;
    out->dispatch_items = 1;
    out->dispatch_reason = MLP_DISPATCH_NO_GAIN;
    return MLP_OK;
}

static mlp_status observe_call(void *p, mlp_call *call, const mlp_batch_report *report) {
    (void)report;
    const statuses *s = p;
    if (s->second) return fail_with(call, s->second, "observe");
    return MLP_OK;
}

static const mlp_policy_vtable policy = {
    .struct_size = sizeof policy,
    .create = policy_create,
    .destroy = destroy,
    .decide = decide,
    .observe_call = observe_call,
};

#define COMPONENT(var, k, n, vt)                                                                                       \
    static const mlp_component var = {                                                                                 \
        .struct_size = sizeof(mlp_component), .kind = k, .name = n, .description = "test fixture", .vtable = &vt}
COMPONENT(c_codec, MLP_KIND_CODEC, "status-codec", codec);
COMPONENT(c_stage, MLP_KIND_STAGE, "status", stage);
COMPONENT(c_backend, MLP_KIND_BACKEND, "status-backend", backend);
COMPONENT(c_policy, MLP_KIND_POLICY, "status-policy", policy);
static const mlp_component *const components[] = {&c_codec, &c_stage, &c_backend, &c_policy};

MLP_EXPORT mlp_status mlp_plugin_init(const mlp_host_api *host, mlp_plugin_info *out) {
    mlp_status s = mlp_plugin_begin(host, out, "status-fixture");
    if (s != MLP_OK) return s;
    g_host = host;
    out->components = components;
    out->component_count = 4;
    return MLP_OK;
}
