/* The `raw` codec: the whole request body becomes one BYTES tensor of shape [1] (one item), for
 * chain stages to turn into something a model takes (e.g. raw -> image -> resize -> normalise, or
 * raw -> b64 -> image for base64 text). The tensor is called "input" unless the codec's params say
 * {"input": "name"}. Replies are v2 JSON, as the `json` codec writes them. */
#include "mlp_json.h"

#include <stdlib.h>
#include <string.h>

typedef struct raw_codec {
    size_t name_len;
    char name[];
} raw_codec;

static mlp_status raw_create(mlp_call *call, mlp_bytes config, void **out) {
    json_t *cfg = config.len ? json_loadb((const char *)config.ptr, config.len, 0, NULL) : json_object();
    const json_t *input = json_is_object(cfg) ? json_object_get(cfg, "input") : NULL;
    if (!json_is_object(cfg) || (input && (!json_is_string(input) || json_string_length(input) == 0))) {
        json_decref(cfg);
        return fail(call, MLP_ERR_CONFIG, "raw codec: params are {\"input\": \"<tensor name>\"}");
    }
    const char *name = input ? json_string_value(input) : "input";
    size_t n = strlen(name);
    raw_codec *c = malloc(sizeof *c + n + 1);
    if (!c) {
        json_decref(cfg);
        return fail(call, MLP_ERR_NOMEM, "out of memory");
    }
    c->name_len = n;
    memcpy(c->name, name, n + 1);
    json_decref(cfg);
    *out = c;
    return MLP_OK;
}

static void raw_destroy(void *instance) {
    free(instance);
}

static mlp_status raw_decode(void *instance, mlp_call *call, const mlp_request_message *msg) {
    const raw_codec *c = instance;
    if (msg->body.len == 0) return fail(call, MLP_ERR_INVALID_INPUT, "the request body is empty");
    if (msg->body.len > UINT32_MAX)
        return fail(call, MLP_ERR_INVALID_INPUT, "the body is larger than a BYTES element (4 GiB)");
    int64_t shape[1] = {1};
    mlp_tensor_desc desc = {
        .struct_size = sizeof desc,
        .datatype = MLP_DT_BYTES,
        .name = {(const uint8_t *)c->name, c->name_len},
        .shape = shape,
        .rank = 1,
        .byte_size = 4 + msg->body.len,
    };
    uint8_t *out = g_host->add_tensor(call, &desc);
    if (!out) return fail(call, MLP_ERR_NOMEM, "the host refused %zu bytes", desc.byte_size);
    uint32_t len = (uint32_t)msg->body.len;
    out[0] = (uint8_t)len;
    out[1] = (uint8_t)(len >> 8);
    out[2] = (uint8_t)(len >> 16);
    out[3] = (uint8_t)(len >> 24);
    memcpy(out + 4, msg->body.ptr, msg->body.len);
    return MLP_OK;
}

/* Bodies that are not JSON; a model's config can narrow or widen this with content_types. */
static const char *const k_raw_types[] = {"image/jpeg", "image/png", "application/octet-stream", "text/plain", NULL};

const mlp_codec_vtable mlp_raw_codec = {
    .struct_size = sizeof(mlp_codec_vtable),
    .content_types = k_raw_types,
    .create = raw_create,
    .destroy = raw_destroy,
    .decode_request = raw_decode,
    .encode_response = v2_encode_response,
    .protocol = "v2",
};
