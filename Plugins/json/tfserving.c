/* TF Serving REST: the `tfserving` codec (clients POST /v1/models/{m}:predict) and the `tfserving`
 * backend (the proxy calls a TF Serving-style server, e.g. KServe's v1 protocol).
 *
 * Requests come in the row format {"instances": [...]} (one element per item; an element is a value
 * for a single unnamed input, or an object of named inputs) or the columnar format {"inputs": ...}
 * (a value, or an object of named values, each with the batch dimension first). Strings are BYTES,
 * {"b64": "..."} objects are BYTES decoded from base64, booleans BOOL, numbers the configured type
 * (FP32 unless the codec's config says "number_type"). An unnamed input is called "input".
 * Replies mirror the request: {"predictions": [...]} for rows, {"outputs": ...} for columns. */
#include "mlp_json.h"
#include "mlp_base64.h"
#include "mlp_plugin_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char k_unnamed[] = "input";

/* ---------------------------------------------------------------------------------------------
 * Reading values: shape, kind and size, then the elements.
 * ------------------------------------------------------------------------------------------- */
bool is_b64(const json_t *v) {
    return json_is_object(v) && json_object_size(v) == 1 && json_is_string(json_object_get(v, "b64"));
}

typedef enum { KIND_NONE, KIND_NUMBER, KIND_BOOL, KIND_BYTES } leaf_kind;

typedef struct value_info {
    int64_t shape[16];
    uint32_t rank;
    size_t count; /* leaves */
    size_t bytes; /* encoded BYTES size (4 + length per element) */
    leaf_kind kind;
    bool all_integers;
} value_info;

/* Walks a value whose dims must be rectangular: the first element at each depth fixes the dim. */
static const char *walk(const json_t *v, value_info *info, uint32_t depth) {
    if (json_is_array(v)) {
        if (depth >= 16) return "is nested more than 16 deep";
        int64_t n = (int64_t)json_array_size(v);
        if (depth == info->rank) {
            if (info->count) return "is ragged (an array where a value was expected before)";
            info->shape[info->rank++] = n;
        } else if (info->shape[depth] != n) {
            return "is ragged (arrays of different lengths at one depth)";
        }
        size_t i;
        const json_t *e;
        json_array_foreach(v, i, e) {
            const char *why = walk(e, info, depth + 1);
            if (why) return why;
        }
        return NULL;
    }
    if (depth != info->rank) return "is ragged (a value where an array was expected)";
    leaf_kind k;
    if (json_is_number(v)) {
        k = KIND_NUMBER;
        if (!json_is_integer(v)) info->all_integers = false;
    } else if (json_is_boolean(v)) {
        k = KIND_BOOL;
    } else if (json_is_string(v)) {
        k = KIND_BYTES;
        info->bytes += 4 + json_string_length(v);
    } else if (is_b64(v)) {
        const json_t *s = json_object_get(v, "b64");
        long n = mlp_b64_decode(json_string_value(s), json_string_length(s), NULL);
        if (n < 0) return "has a b64 value that is not base64";
        k = KIND_BYTES;
        info->bytes += 4 + (size_t)n;
    } else {
        return "holds something that is not a number, boolean, string or {\"b64\": ...}";
    }
    if (info->kind != KIND_NONE && info->kind != k) return "mixes numbers, booleans and strings";
    info->kind = k;
    info->count++;
    return NULL;
}

static mlp_status write_bytes_leaves(const json_t *v, uint8_t **out) {
    if (json_is_array(v)) {
        size_t i;
        const json_t *e;
        json_array_foreach(v, i, e) write_bytes_leaves(e, out);
        return MLP_OK;
    }
    uint32_t len;
    if (is_b64(v)) {
        const json_t *s = json_object_get(v, "b64");
        len = (uint32_t)mlp_b64_decode(json_string_value(s), json_string_length(s), *out + 4);
    } else {
        len = (uint32_t)json_string_length(v);
        memcpy(*out + 4, json_string_value(v), len);
    }
    memcpy(*out, &len, 4);
    *out += 4 + len;
    return MLP_OK;
}

/* Adds one tensor from `value`, whose first dim is the batch. `rows` is set for the row format, where
 * `value` is the array of per-instance values (so the batch dim is the array itself). */
mlp_status add_value(mlp_call *call, const char *name, size_t name_len, const json_t *value, uint32_t number_type,
                     mlp_status err_status, const char *what) {
    value_info info = {.kind = KIND_NONE, .all_integers = true};
    if (!json_is_array(value))
        return fail(call, err_status, "%s '%.*s' must be an array whose first dimension is the batch", what,
                    (int)name_len, name);
    const char *why = walk(value, &info, 0);
    if (why) return fail(call, err_status, "%s '%.*s' %s", what, (int)name_len, name, why);
    uint32_t dt = info.kind == KIND_BOOL ? MLP_DT_BOOL : info.kind == KIND_BYTES ? MLP_DT_BYTES : number_type;
    if (number_type == 0) dt = info.kind == KIND_NUMBER ? (info.all_integers ? MLP_DT_INT64 : MLP_DT_FP64) : dt;
    if (info.kind == KIND_NONE) dt = number_type ? number_type : MLP_DT_FP32;
    size_t size = dt == MLP_DT_BYTES ? info.bytes : info.count * mlp_datatype_size(dt);
    mlp_tensor_desc desc = {
        .struct_size = sizeof desc,
        .datatype = dt,
        .name = {(const uint8_t *)name, name_len},
        .shape = info.shape,
        .rank = info.rank,
        .byte_size = size,
    };
    uint8_t *out = g_host->add_tensor(call, &desc);
    if (!out)
        return fail(call, MLP_ERR_NOMEM, "%s '%.*s': the host refused %zu bytes", what, (int)name_len, name, size);
    if (dt == MLP_DT_BYTES) return write_bytes_leaves(value, &out);
    leaf_writer w = {.dt = dt, .out = out, .index = 0, .tensor = name, .call = call, .err_status = err_status};
    return write_leaves(&w, value);
}

/* Row format: named inputs are gathered from every instance into one array per name; plain values
 * become one tensor called `unnamed`. */
mlp_status add_rows(mlp_call *call, const json_t *instances, uint32_t number_type, mlp_status err_status,
                    const char *what, const char *unnamed) {
    if (!json_is_array(instances) || json_array_size(instances) == 0)
        return fail(call, err_status, "the %ss must be a non-empty array of rows", what);
    const json_t *first = json_array_get(instances, 0);
    if (!json_is_object(first) || is_b64(first))
        return add_value(call, unnamed, strlen(unnamed), instances, number_type, err_status, what);
    const char *key;
    const json_t *unused;
    json_object_foreach((json_t *)first, key, unused) {
        json_t *column = json_array();
        size_t i;
        const json_t *inst;
        mlp_status s = MLP_OK;
        json_array_foreach(instances, i, inst) {
            const json_t *v = json_object_get(inst, key);
            if (!json_is_object(inst) || !v || json_object_size(inst) != json_object_size(first)) {
                s = fail(call, err_status, "instances[%zu] does not have the same named inputs as instances[0] ('%s')",
                         i, key);
                break;
            }
            json_array_append(column, (json_t *)v);
        }
        if (s == MLP_OK) s = add_value(call, key, strlen(key), column, number_type, err_status, what);
        json_decref(column);
        if (s != MLP_OK) return s;
    }
    return MLP_OK;
}

static mlp_status add_columns(mlp_call *call, const json_t *inputs, uint32_t number_type, mlp_status err_status,
                              const char *what) {
    if (!json_is_object(inputs) || is_b64(inputs))
        return add_value(call, k_unnamed, sizeof k_unnamed - 1, inputs, number_type, err_status, what);
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)inputs, key, v) {
        mlp_status s = add_value(call, key, strlen(key), v, number_type, err_status, what);
        if (s != MLP_OK) return s;
    }
    return MLP_OK;
}

/* ---------------------------------------------------------------------------------------------
 * Writing values.
 * ------------------------------------------------------------------------------------------- */
static void write_element(text_buf *b, uint32_t dt, const uint8_t **p) {
    switch (dt) {
    case MLP_DT_BOOL: tb_str(b, **p ? "true" : "false"); break;
    case MLP_DT_UINT8: tb_fmt(b, "%u", (unsigned)**p); break;
    case MLP_DT_INT8: tb_fmt(b, "%d", (int)(int8_t) * *p); break;
    case MLP_DT_UINT16: {
        uint16_t v;
        memcpy(&v, *p, 2);
        tb_fmt(b, "%u", (unsigned)v);
        break;
    }
    case MLP_DT_INT16: {
        int16_t v;
        memcpy(&v, *p, 2);
        tb_fmt(b, "%d", (int)v);
        break;
    }
    case MLP_DT_UINT32: {
        uint32_t v;
        memcpy(&v, *p, 4);
        tb_fmt(b, "%u", v);
        break;
    }
    case MLP_DT_INT32: {
        int32_t v;
        memcpy(&v, *p, 4);
        tb_fmt(b, "%d", v);
        break;
    }
    case MLP_DT_UINT64: {
        uint64_t v;
        memcpy(&v, *p, 8);
        tb_fmt(b, "%llu", (unsigned long long)v);
        break;
    }
    case MLP_DT_INT64: {
        int64_t v;
        memcpy(&v, *p, 8);
        tb_fmt(b, "%lld", (long long)v);
        break;
    }
    case MLP_DT_FP16: {
        uint16_t v;
        memcpy(&v, *p, 2);
        tb_double(b, float_from_half(v), true);
        break;
    }
    case MLP_DT_FP32: {
        float v;
        memcpy(&v, *p, 4);
        tb_double(b, v, true);
        break;
    }
    case MLP_DT_FP64: {
        double v;
        memcpy(&v, *p, 8);
        tb_double(b, v, false);
        break;
    }
    case MLP_DT_BYTES: {
        uint32_t n;
        memcpy(&n, *p, 4);
        const uint8_t *s = *p + 4;
        bool text = true;
        for (uint32_t i = 0; i < n; i++)
            if (s[i] < 0x20 || s[i] >= 0x7f) text = false;
        if (text) {
            tb_json_string(b, s, n);
        } else {
            /* Binary strings go back as {"b64": ...}, as TF Serving does. */
            static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
            tb_str(b, "{\"b64\":\"");
            for (uint32_t i = 0; i < n; i += 3) {
                uint32_t v =
                    (uint32_t)s[i] << 16 | (i + 1 < n ? (uint32_t)s[i + 1] << 8 : 0) | (i + 2 < n ? s[i + 2] : 0);
                char q[4] = {alphabet[v >> 18 & 63], alphabet[v >> 12 & 63], i + 1 < n ? alphabet[v >> 6 & 63] : '=',
                             i + 2 < n ? alphabet[v & 63] : '='};
                tb_put(b, q, 4);
            }
            tb_str(b, "\"}");
        }
        *p += 4 + n;
        return;
    }
    }
    *p += mlp_datatype_size(dt);
}

/* Writes dims [d, rank) of a tensor starting at *p, as nested arrays. */
static void write_nested(text_buf *b, const mlp_tensor *t, uint32_t d, const uint8_t **p) {
    if (d == t->rank) {
        write_element(b, t->datatype, p);
        return;
    }
    tb_put(b, "[", 1);
    if (d + 1 == t->rank && (t->datatype == MLP_DT_FP16 || t->datatype == MLP_DT_FP32 || t->datatype == MLP_DT_FP64)) {
        /* The innermost dim of a float tensor in one go: the encoder's hot loop. */
        size_t n = (size_t)t->shape[d];
        tb_float_elements(b, *p, n, t->datatype);
        *p += n * mlp_datatype_size(t->datatype);
    } else {
        for (int64_t i = 0; i < t->shape[d]; i++) {
            if (i) tb_put(b, ",", 1);
            write_nested(b, t, d + 1, p);
        }
    }
    tb_put(b, "]", 1);
}

/* Writes item `row` of a tensor (dims 1..rank) at its byte offset. */
static void write_row(text_buf *b, const mlp_tensor *t, int64_t row) {
    const uint8_t *p = t->data.ptr;
    size_t per = 1;
    for (uint32_t d = 1; d < t->rank; d++) per *= (size_t)t->shape[d];
    if (t->datatype == MLP_DT_BYTES) {
        for (size_t skip = (size_t)row * per; skip > 0; skip--) {
            uint32_t n;
            memcpy(&n, p, 4);
            p += 4 + n;
        }
    } else {
        p += (size_t)row * per * mlp_datatype_size(t->datatype);
    }
    write_nested(b, t, 1, &p);
}

static bool tensor_is_sane(const mlp_tensor *t) {
    if (t->rank == 0 || t->rank > 16 || t->datatype < MLP_DT_BOOL || t->datatype > MLP_DT_BYTES) return false;
    size_t count = 1;
    for (uint32_t d = 0; d < t->rank; d++) count *= (size_t)t->shape[d];
    if (t->datatype != MLP_DT_BYTES) return count * mlp_datatype_size(t->datatype) == t->data.len;
    const uint8_t *p = t->data.ptr, *end = p + t->data.len;
    for (size_t i = 0; i < count; i++) {
        uint32_t n;
        if (end - p < 4) return false;
        memcpy(&n, p, 4);
        if ((size_t)(end - p - 4) < n) return false;
        p += 4 + n;
    }
    return p == end;
}

/* `"name":` of a tensor as a member of a JSON object, after a comma unless it is the first. */
static void write_key(text_buf *b, const mlp_tensor *t, bool first) {
    if (!first) tb_put(b, ",", 1);
    tb_json_string(b, t->name.ptr, t->name.len);
    tb_put(b, ":", 1);
}

/* {"predictions": [...]} (rows) or {"outputs": ...} (columns) from tensors whose dim 0 is the batch;
 * with rows and no rows_key, the bare list of rows. */
mlp_status write_reply(mlp_call *call, text_buf *b, const mlp_tensor *ts, uint32_t stride, uint32_t count, bool rows,
                       const char *rows_key, const char *columns_key) {
    for (uint32_t i = 0; i < count; i++)
        if (!tensor_is_sane(mlp_tensor_at(ts, stride, i)))
            return fail(call, MLP_ERR_INTERNAL, "tensor %u does not match its shape", i);
    bool single = count == 1;
    if (rows) {
        if (rows_key)
            tb_fmt(b, "{\"%s\":[", rows_key);
        else
            tb_put(b, "[", 1);
        int64_t items = count ? mlp_tensor_at(ts, stride, 0)->shape[0] : 0;
        for (int64_t r = 0; r < items; r++) {
            if (r) tb_put(b, ",", 1);
            if (!single) tb_put(b, "{", 1);
            for (uint32_t i = 0; i < count; i++) {
                const mlp_tensor *t = mlp_tensor_at(ts, stride, i);
                if (!single) write_key(b, t, i == 0);
                if (t->shape[0] != items) return fail(call, MLP_ERR_INTERNAL, "outputs disagree on dim 0");
                write_row(b, t, r);
            }
            if (!single) tb_put(b, "}", 1);
        }
        tb_str(b, rows_key ? "]}" : "]");
    } else {
        tb_fmt(b, "{\"%s\":", columns_key);
        if (!single) tb_put(b, "{", 1);
        for (uint32_t i = 0; i < count; i++) {
            const mlp_tensor *t = mlp_tensor_at(ts, stride, i);
            if (!single) write_key(b, t, i == 0);
            const uint8_t *p = t->data.ptr;
            write_nested(b, t, 0, &p);
        }
        if (!single) tb_put(b, "}", 1);
        tb_put(b, "}", 1);
    }
    return b->oom ? fail(call, MLP_ERR_NOMEM, "out of memory while encoding JSON") : MLP_OK;
}

/* ---------------------------------------------------------------------------------------------
 * The codec.
 * ------------------------------------------------------------------------------------------- */
typedef struct tf_codec {
    uint32_t number_type;
} tf_codec;

static mlp_status tf_codec_create(mlp_call *call, mlp_bytes config, void **out) {
    json_error_t err;
    json_t *cfg = config.len ? json_loadb((const char *)config.ptr, config.len, 0, &err) : json_object();
    if (!json_is_object(cfg)) {
        json_decref(cfg);
        return fail(call, MLP_ERR_CONFIG, "tfserving codec: configuration is not a JSON object");
    }
    uint32_t dt = MLP_DT_FP32;
    const json_t *nt = json_object_get(cfg, "number_type");
    if (nt) {
        dt = json_is_string(nt) ? dt_from_name(json_string_value(nt)) : MLP_DT_INVALID;
        if (dt == MLP_DT_INVALID || dt == MLP_DT_BYTES || dt == MLP_DT_BOOL) {
            json_decref(cfg);
            return fail(call, MLP_ERR_CONFIG,
                        "tfserving codec: number_type must be a numeric v2 datatype such as FP32");
        }
    }
    json_decref(cfg);
    tf_codec *c = malloc(sizeof *c);
    if (!c) return fail(call, MLP_ERR_NOMEM, "out of memory");
    c->number_type = dt;
    *out = c;
    return MLP_OK;
}

static void tf_codec_destroy(void *instance) {
    free(instance);
}

mlp_status tf_jansson_decode_request(mlp_call *call, mlp_bytes body, uint32_t number_type) {
    mlp_status status;
    json_t *root = parse_body(call, body, "request body", MLP_ERR_INVALID_INPUT, &status);
    if (!root) return status;
    const json_t *instances = json_object_get(root, "instances");
    const json_t *inputs = json_object_get(root, "inputs");
    if (instances && inputs) {
        status = fail(call, MLP_ERR_INVALID_INPUT, "a TF Serving request has 'instances' or 'inputs', not both");
    } else if (instances) {
        status = add_rows(call, instances, number_type, MLP_ERR_INVALID_INPUT, "input", k_unnamed);
        if (status == MLP_OK) status = g_host->set_codec_state(call, (mlp_bytes){(const uint8_t *)"r", 1});
    } else if (inputs) {
        status = add_columns(call, inputs, number_type, MLP_ERR_INVALID_INPUT, "input");
        if (status == MLP_OK) status = g_host->set_codec_state(call, (mlp_bytes){(const uint8_t *)"c", 1});
    } else {
        status =
            fail(call, MLP_ERR_INVALID_INPUT, "a TF Serving request needs 'instances' (rows) or 'inputs' (columns)");
    }
    json_decref(root);
    return status;
}

static mlp_status tf_codec_decode(void *instance, mlp_call *call, const mlp_request_message *msg) {
    const tf_codec *c = instance;
    if (tf_fast_decode_request(call, msg->body, c->number_type)) return MLP_OK;
    return tf_jansson_decode_request(call, msg->body, c->number_type);
}

static mlp_status tf_codec_encode(void *instance, mlp_call *call, const mlp_response_view *r) {
    (void)instance;
    bool rows = !(r->codec_state.len == 1 && r->codec_state.ptr[0] == 'c');
    text_buf b = {0};
    mlp_status s = write_reply(call, &b, r->outputs, r->tensor_stride, r->output_count, rows, "predictions", "outputs");
    if (s != MLP_OK) {
        free(b.p);
        return s;
    }
    return flush(call, &b, "application/json");
}

static const char *const k_tf_types[] = {"application/json", "", "application/x-www-form-urlencoded", NULL};

const mlp_codec_vtable mlp_tfserving_codec = {
    .struct_size = sizeof(mlp_codec_vtable),
    .content_types = k_tf_types,
    .create = tf_codec_create,
    .destroy = tf_codec_destroy,
    .decode_request = tf_codec_decode,
    .encode_response = tf_codec_encode,
    .protocol = "tfserving",
};

/* ---------------------------------------------------------------------------------------------
 * The backend: POST /v1/models/{m}[/versions/{v}]:predict with {"instances": [...]}.
 * ------------------------------------------------------------------------------------------- */
static mlp_status tf_backend_encode(void *instance, mlp_call *call, const mlp_batch_view *batch) {
    (void)instance;
    mlp_status s =
        set_model_path(call, "/v1/models/", batch->model_name, "/versions/", batch->model_version, ":predict");
    if (s != MLP_OK) return s;
    /* One input called "input" goes as plain instances; several go as objects of named values. */
    bool unnamed =
        batch->input_count == 1 &&
        mlp_tensor_at(batch->inputs, batch->tensor_stride, 0)->name.len == sizeof k_unnamed - 1 &&
        memcmp(mlp_tensor_at(batch->inputs, batch->tensor_stride, 0)->name.ptr, k_unnamed, sizeof k_unnamed - 1) == 0;
    text_buf b = {0};
    s = write_reply(call, &b, batch->inputs, batch->tensor_stride, unnamed ? 1 : batch->input_count, true, "instances",
                    "inputs");
    if (s != MLP_OK) {
        free(b.p);
        return s;
    }
    if (!unnamed && batch->input_count == 1) {
        /* A single named input still needs its name: rewrite as objects. */
        free(b.p);
        b = (text_buf){0};
        const mlp_tensor *t = mlp_tensor_at(batch->inputs, batch->tensor_stride, 0);
        tb_str(&b, "{\"instances\":[");
        for (int64_t r = 0; r < t->shape[0]; r++) {
            tb_str(&b, r ? ",{" : "{");
            write_key(&b, t, true);
            write_row(&b, t, r);
            tb_put(&b, "}", 1);
        }
        tb_str(&b, "]}");
    }
    return flush(call, &b, "application/json");
}

mlp_status tf_jansson_decode_reply(mlp_call *call, mlp_bytes body) {
    json_t *root = json_loadb((const char *)body.ptr, body.len, 0, NULL);
    mlp_status s;
    if (!json_is_object(root)) {
        s = fail(call, MLP_ERR_UPSTREAM, "the model server's reply is not a JSON object");
    } else if (json_object_get(root, "predictions")) {
        const json_t *preds = json_object_get(root, "predictions");
        const json_t *first = json_array_get(preds, 0);
        if (json_is_object(first) && !is_b64(first)) {
            s = add_rows(call, preds, 0, MLP_ERR_UPSTREAM, "output", "predictions");
        } else {
            static const char name[] = "predictions";
            s = json_is_array(preds) ? add_value(call, name, sizeof name - 1, preds, 0, MLP_ERR_UPSTREAM, "output")
                                     : fail(call, MLP_ERR_UPSTREAM, "'predictions' is not an array");
        }
    } else if (json_object_get(root, "outputs")) {
        s = add_columns(call, json_object_get(root, "outputs"), 0, MLP_ERR_UPSTREAM, "output");
    } else {
        s = fail(call, MLP_ERR_UPSTREAM, "the model server's reply has neither 'predictions' nor 'outputs'");
    }
    json_decref(root);
    return s;
}

static mlp_status tf_backend_decode(void *instance, mlp_call *call, const mlp_upstream_reply *reply) {
    (void)instance;
    if (reply->http_status != 200) return upstream_error(call, reply, "error", "model server");
    if (tf_fast_decode_reply(call, reply->body)) return MLP_OK;
    return tf_jansson_decode_reply(call, reply->body);
}

const mlp_backend_vtable mlp_tfserving_backend = {
    .struct_size = sizeof(mlp_backend_vtable),
    .create = stateless_create,
    .destroy = stateless_destroy,
    .encode_request = tf_backend_encode,
    .decode_response = tf_backend_decode,
};
