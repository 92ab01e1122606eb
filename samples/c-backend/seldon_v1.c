/*
 * A backend adapter for a protocol MLProxy does not ship, Seldon Core v1 REST, written from the
 * header alone; docs/plugin-abi.md builds it step by step. Built with plain cc and jansson:
 *
 *     cc -shared -fPIC -O2 -Wall -Wextra -Werror -I include -o libseldon_v1.so \
 *        samples/c-backend/seldon_v1.c -ljansson -lm
 *
 * and used by a model with `backend: seldon` (plugins: [./libseldon_v1.so]).
 *
 * The wire format: POST /api/v1.0/predictions with {"data": {"ndarray": [[...], ...]}}, one row per
 * item (the first input's values), and the reply {"data": {"ndarray": [[...], ...]}}; errors are
 * {"status": {"code": N, "info": "..."}}. Non-finite values cannot be written in its JSON: the
 * request that holds one is refused with MLP_ERR_INVALID_INPUT, and the host pins that on the request
 * alone. Tested against Seldon Core's own server (Tests/interop/seldon_serve.py).
 */
#include <mlproxy/mlproxy.h>

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

static const mlp_host_api *g_host;

static mlp_status fail(mlp_call *call, mlp_status s, const char *msg) {
    g_host->set_error(call, msg, strlen(msg));
    return s;
}

static mlp_status create(mlp_call *call, mlp_bytes config, void **out) {
    (void)call;
    (void)config;
    *out = NULL;
    return MLP_OK;
}
static void destroy(void *p) {
    (void)p;
}

static double element(const mlp_tensor *t, size_t i) {
    if (t->datatype == MLP_DT_FP32) {
        float f;
        memcpy(&f, t->data.ptr + 4 * i, 4);
        return f;
    }
    double d;
    memcpy(&d, t->data.ptr + 8 * i, 8);
    return d;
}

static mlp_status encode(void *p, mlp_call *call, const mlp_batch_view *batch) {
    (void)p;
    const mlp_tensor *t = mlp_tensor_at(batch->inputs, batch->tensor_stride, 0);
    if (t->datatype != MLP_DT_FP32 && t->datatype != MLP_DT_FP64)
        return fail(call, MLP_ERR_UNSUPPORTED, "the seldon backend sends FP32 or FP64 rows only");
    size_t items = (size_t)t->shape[0], per = 1;
    for (uint32_t d = 1; d < t->rank; d++) per *= (size_t)t->shape[d];
    json_t *rows = json_array();
    for (size_t r = 0; r < items; r++) {
        json_t *row = json_array();
        for (size_t k = 0; k < per; k++) {
            double v = element(t, r * per + k);
            if (!isfinite(v)) {
                char msg[160];
                snprintf(msg, sizeof msg, "item %zu holds %g, which Seldon's JSON cannot carry", r, v);
                json_decref(row);
                json_decref(rows);
                return fail(call, MLP_ERR_INVALID_INPUT, msg);
            }
            json_array_append_new(row, json_real(v));
        }
        json_array_append_new(rows, row);
    }
    json_t *root = json_pack("{s:{s:o}}", "data", "ndarray", rows);
    char *text = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    if (!text) return fail(call, MLP_ERR_NOMEM, "out of memory");
    static const char path[] = "/api/v1.0/predictions", ct[] = "content-type", json[] = "application/json";
    mlp_status s = g_host->set_path(call, (mlp_bytes){(const uint8_t *)path, sizeof path - 1});
    if (s == MLP_OK)
        s = g_host->set_header(call, (mlp_bytes){(const uint8_t *)ct, sizeof ct - 1},
                               (mlp_bytes){(const uint8_t *)json, sizeof json - 1});
    if (s == MLP_OK) s = g_host->write(call, text, strlen(text));
    free(text);
    return s;
}

static mlp_status decode(void *p, mlp_call *call, const mlp_upstream_reply *reply) {
    (void)p;
    json_t *root = json_loadb((const char *)reply->body.ptr, reply->body.len, 0, NULL);
    if (reply->http_status != 200) {
        const char *info = json_string_value(json_object_get(json_object_get(root, "status"), "info"));
        char msg[512];
        snprintf(msg, sizeof msg, "seldon answered %u: %s", reply->http_status, info ? info : "(no status.info)");
        json_decref(root);
        return fail(call, MLP_ERR_UPSTREAM, msg);
    }
    const json_t *rows = json_object_get(json_object_get(root, "data"), "ndarray");
    size_t n = json_array_size(rows), per = json_array_size(json_array_get(rows, 0));
    if (!json_is_array(rows) || n != reply->batch_items || per == 0) {
        json_decref(root);
        return fail(call, MLP_ERR_UPSTREAM, "seldon's reply has no ndarray of one row per item");
    }
    int64_t shape[2] = {(int64_t)n, (int64_t)per};
    static const char name[] = "predictions";
    mlp_tensor_desc desc = {.struct_size = sizeof desc,
                            .datatype = MLP_DT_FP64,
                            .name = {(const uint8_t *)name, sizeof name - 1},
                            .shape = shape,
                            .rank = 2,
                            .byte_size = n * per * 8};
    uint8_t *out = g_host->add_tensor(call, &desc);
    if (!out) {
        json_decref(root);
        return MLP_ERR_NOMEM;
    }
    for (size_t r = 0; r < n; r++)
        for (size_t k = 0; k < per; k++) {
            double v = json_number_value(json_array_get(json_array_get(rows, r), k));
            memcpy(out + 8 * (r * per + k), &v, 8);
        }
    json_decref(root);
    return MLP_OK;
}

static const mlp_backend_vtable vt = {
    .struct_size = sizeof vt,
    .create = create,
    .destroy = destroy,
    .encode_request = encode,
    .decode_response = decode,
};
static const mlp_component comp = {
    .struct_size = sizeof comp,
    .kind = MLP_KIND_BACKEND,
    .name = "seldon",
    .description = "Seldon Core v1 REST: /api/v1.0/predictions, data.ndarray rows",
    .vtable = &vt,
};
static const mlp_component *const comps[] = {&comp};

MLP_EXPORT mlp_status mlp_plugin_init(const mlp_host_api *host, mlp_plugin_info *out) {
    mlp_status s = mlp_plugin_begin(host, out, "seldon-backend");
    if (s != MLP_OK) return s;
    g_host = host;
    out->components = comps;
    out->component_count = 1;
    out->version = "1.0.0";
    out->description = "the docs/plugin-abi.md tutorial backend: Seldon Core v1 REST";
    return MLP_OK;
}
