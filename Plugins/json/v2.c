/* Open Inference Protocol (v2) JSON: the `json` codec and the `kserve-v2` backend adapter.
 *
 * Both components map between the v2 JSON tensor form
 *     {"name": "x", "datatype": "FP32", "shape": [2, 3], "data": [...flat or nested...]}
 * and the canonical tensors of the ABI. Decoding runs on simdjson (v2_fast.cpp), which hands anything it
 * cannot judge exactly as jansson would, and every error, to the jansson decoder here; encoding writes
 * JSON text directly into a growable buffer because building a jansson tree for large tensors costs
 * several times more. */
#include "mlp_json.h"
#include "mlp_plugin_util.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef v2_binary_cursor binary_cursor;

/* Decodes a v2 "inputs" or "outputs" array into host tensors. `what` names it in messages. Tensors
 * with parameters.binary_data_size take their bytes from `bin` (NULL when the body has none). */
static mlp_status decode_tensor_array(mlp_call *call, const json_t *arr, const char *key, const char *what,
                                      mlp_status err_status, binary_cursor *bin) {
    if (!json_is_array(arr) || json_array_size(arr) == 0)
        return fail(call, err_status, "'%s' must be a non-empty array", key);
    size_t idx;
    const json_t *t;
    json_array_foreach(arr, idx, t) {
        if (!json_is_object(t)) return fail(call, err_status, "%s[%zu] is not an object", key, idx);
        const json_t *jname = json_object_get(t, "name");
        const json_t *jdt = json_object_get(t, "datatype");
        const json_t *jshape = json_object_get(t, "shape");
        const json_t *jdata = json_object_get(t, "data");
        if (!json_is_string(jname)) return fail(call, err_status, "%s[%zu]: 'name' must be a string", key, idx);
        const char *name = json_string_value(jname);
        if (!json_is_string(jdt)) return fail(call, err_status, "%s '%s': 'datatype' must be a string", what, name);
        uint32_t dt = dt_from_name(json_string_value(jdt));
        if (dt == MLP_DT_INVALID)
            return fail(call, err_status,
                        "%s '%s': unknown datatype '%s' (expected one of BOOL, UINT8..UINT64, INT8..INT64, FP16, FP32, "
                        "FP64, BYTES)",
                        what, name, json_string_value(jdt));
        if (!json_is_array(jshape) || json_array_size(jshape) == 0 || json_array_size(jshape) > 16)
            return fail(call, err_status, "%s '%s': 'shape' must be an array of 1 to 16 dimensions", what, name);
        int64_t shape[16];
        uint32_t rank = (uint32_t)json_array_size(jshape);
        size_t expected = 1;
        for (uint32_t d = 0; d < rank; d++) {
            const json_t *jd = json_array_get(jshape, d);
            if (!json_is_integer(jd) || json_integer_value(jd) < 0)
                return fail(call, err_status, "%s '%s': shape[%u] must be a non-negative integer", what, name, d);
            shape[d] = (int64_t)json_integer_value(jd);
            if (shape[d] > 0 && expected > SIZE_MAX / 16 / (size_t)shape[d])
                return fail(call, err_status, "%s '%s': shape is too large", what, name);
            expected *= (size_t)shape[d];
        }
        const json_t *jbin = json_object_get(json_object_get(t, "parameters"), "binary_data_size");
        if (jbin) {
            if (!json_is_integer(jbin) || json_integer_value(jbin) < 0)
                return fail(call, err_status, "%s '%s': binary_data_size must be a non-negative integer", what, name);
            size_t size = (size_t)json_integer_value(jbin);
            if (!bin)
                return fail(call, err_status,
                            "%s '%s': binary_data_size is set but the request has no binary part "
                            "(send Inference-Header-Content-Length)",
                            what, name);
            if (size > bin->left)
                return fail(call, err_status,
                            "%s '%s': binary_data_size %zu runs past the end of the body (%zu bytes left)", what, name,
                            size, bin->left);
            if (dt != MLP_DT_BYTES && size != expected * mlp_datatype_size(dt))
                return fail(call, err_status,
                            "%s '%s': binary_data_size %zu does not match shape of %zu %s elements (%zu bytes)", what,
                            name, size, expected, k_dt_names[dt], expected * mlp_datatype_size(dt));
            mlp_tensor_desc desc = {
                .struct_size = sizeof desc,
                .datatype = dt,
                .name = {(const uint8_t *)name, json_string_length(jname)},
                .shape = shape,
                .rank = rank,
                .byte_size = size,
            };
            uint8_t *out = g_host->add_tensor(call, &desc);
            if (!out) return fail(call, MLP_ERR_NOMEM, "%s '%s': the host refused %zu bytes", what, name, size);
            if (size) memcpy(out, bin->at, size);
            bin->at += size;
            bin->left -= size;
            continue;
        }
        if (jdata == NULL) return fail(call, err_status, "%s '%s': 'data' is missing", what, name);
        size_t count = 0, bytes = 0;
        if (!count_leaves(jdata, dt, &count, &bytes, 0)) {
            if (dt == MLP_DT_BYTES) return fail(call, err_status, "%s '%s': BYTES data must be strings", what, name);
            return fail(call, err_status, "%s '%s': 'data' is nested too deeply", what, name);
        }
        if (count != expected)
            return fail(call, err_status, "%s '%s': shape has %zu elements but data has %zu", what, name, expected,
                        count);
        if (dt != MLP_DT_BYTES) bytes = count * mlp_datatype_size(dt);
        mlp_tensor_desc desc = {
            .struct_size = sizeof desc,
            .datatype = dt,
            .name = {(const uint8_t *)name, json_string_length(jname)},
            .shape = shape,
            .rank = rank,
            .byte_size = bytes,
        };
        uint8_t *out = g_host->add_tensor(call, &desc);
        if (!out) return fail(call, MLP_ERR_NOMEM, "%s '%s': the host refused %zu bytes", what, name, bytes);
        leaf_writer w = {.dt = dt, .out = out, .index = 0, .tensor = name, .call = call, .err_status = err_status};
        mlp_status s = write_leaves(&w, jdata);
        if (s != MLP_OK) return s;
    }
    return MLP_OK;
}

static mlp_status pass_parameters(mlp_call *call, const json_t *params, const char *what, mlp_status err_status) {
    if (params == NULL) return MLP_OK;
    if (!json_is_object(params)) return fail(call, err_status, "%s 'parameters' must be an object", what);
    char *text = json_dumps(params, JSON_COMPACT);
    if (!text) return fail(call, MLP_ERR_NOMEM, "out of memory");
    mlp_status s = g_host->set_parameters_json(call, (mlp_bytes){(const uint8_t *)text, strlen(text)});
    free(text);
    return s;
}

/* Writes {"name":...,"datatype":...,"shape":[...],"data":[...]} (and parameters when present). */
static mlp_status encode_tensor(mlp_call *call, text_buf *b, const mlp_tensor *t, bool binary) {
    if (t->datatype < MLP_DT_BOOL || t->datatype > MLP_DT_BYTES)
        return fail(call, MLP_ERR_INTERNAL, "tensor with invalid datatype %u", t->datatype);
    tb_str(b, "{\"name\":");
    tb_json_string(b, t->name.ptr, t->name.len);
    tb_fmt(b, ",\"datatype\":\"%s\",\"shape\":[", k_dt_names[t->datatype]);
    size_t count = 1;
    for (uint32_t d = 0; d < t->rank; d++) {
        tb_fmt(b, d ? ",%lld" : "%lld", (long long)t->shape[d]);
        count *= (size_t)t->shape[d];
    }
    tb_str(b, "]");
    if (binary) {
        tb_fmt(b, ",\"parameters\":{\"binary_data_size\":%zu}}", t->data.len);
        return MLP_OK;
    }
    if (t->parameters_json.len) {
        tb_str(b, ",\"parameters\":");
        tb_put(b, (const char *)t->parameters_json.ptr, t->parameters_json.len);
    }
    tb_str(b, ",\"data\":[");
    const uint8_t *p = t->data.ptr;
    const uint8_t *end = p + t->data.len;
    size_t es = mlp_datatype_size(t->datatype);
    if (es && count * es != t->data.len)
        return fail(call, MLP_ERR_INTERNAL, "tensor '%.*s' has %zu bytes for %zu elements", (int)t->name.len,
                    (const char *)t->name.ptr, t->data.len, count);
    if (t->datatype == MLP_DT_FP16 || t->datatype == MLP_DT_FP32 || t->datatype == MLP_DT_FP64) {
        tb_float_elements(b, p, count, t->datatype);
        tb_str(b, "]}");
        return MLP_OK;
    }
    for (size_t i = 0; i < count; i++) {
        if (i) tb_put(b, ",", 1);
        switch (t->datatype) { /* the float types went through tb_float_elements above */
        case MLP_DT_BOOL: tb_str(b, p[0] ? "true" : "false"); break;
        case MLP_DT_UINT8: tb_fmt(b, "%u", (unsigned)p[0]); break;
        case MLP_DT_INT8: tb_fmt(b, "%d", (int)(int8_t)p[0]); break;
        case MLP_DT_UINT16: {
            uint16_t v;
            memcpy(&v, p, 2);
            tb_fmt(b, "%u", (unsigned)v);
            break;
        }
        case MLP_DT_INT16: {
            int16_t v;
            memcpy(&v, p, 2);
            tb_fmt(b, "%d", (int)v);
            break;
        }
        case MLP_DT_UINT32: {
            uint32_t v;
            memcpy(&v, p, 4);
            tb_fmt(b, "%u", v);
            break;
        }
        case MLP_DT_INT32: {
            int32_t v;
            memcpy(&v, p, 4);
            tb_fmt(b, "%d", v);
            break;
        }
        case MLP_DT_UINT64: {
            uint64_t v;
            memcpy(&v, p, 8);
            tb_fmt(b, "%llu", (unsigned long long)v);
            break;
        }
        case MLP_DT_INT64: {
            int64_t v;
            memcpy(&v, p, 8);
            tb_fmt(b, "%lld", (long long)v);
            break;
        }
        case MLP_DT_BYTES: {
            uint32_t n;
            if (end - p < 4) return fail(call, MLP_ERR_INTERNAL, "truncated BYTES tensor");
            memcpy(&n, p, 4);
            if ((size_t)(end - p - 4) < n) return fail(call, MLP_ERR_INTERNAL, "truncated BYTES element");
            tb_json_string(b, p + 4, n);
            p += 4 + n;
            continue;
        }
        }
        p += es;
    }
    tb_str(b, "]}");
    return MLP_OK;
}

/* ---------------------------------------------------------------------------------------------
 * The `json` codec (clients speak v2 JSON).
 * ------------------------------------------------------------------------------------------- */

/* The value of header `name` (lower case) among `count` headers, or len 0. */
static mlp_bytes find_header(const mlp_header *headers, uint32_t count, const char *name) {
    size_t n = strlen(name);
    for (uint32_t i = 0; headers && i < count; i++)
        if (headers[i].name.len == n && memcmp(headers[i].name.ptr, name, n) == 0) return headers[i].value;
    return (mlp_bytes){NULL, 0};
}

static mlp_bytes header_value(const mlp_request_message *msg, const char *name) {
    if (msg->struct_size < offsetof(mlp_request_message, headers) + sizeof msg->headers) return (mlp_bytes){NULL, 0};
    return find_header(msg->headers, msg->header_count, name);
}

/* v2 binary tensor extension: with an Inference-Header-Content-Length value `hlen`, the JSON head is
 * that many bytes of `body` and the tensors' raw bytes follow it (*binp points at `bin`); without
 * one, the whole body is JSON (*binp stays NULL). */
static mlp_status split_binary(mlp_call *call, mlp_bytes hlen, mlp_bytes body, mlp_bytes *head, binary_cursor *bin,
                               binary_cursor **binp, mlp_status err_status) {
    *head = body;
    *binp = NULL;
    if (!hlen.len) return MLP_OK;
    size_t n = 0;
    for (size_t i = 0; i < hlen.len; i++) {
        if (hlen.ptr[i] < '0' || hlen.ptr[i] > '9' || n > SIZE_MAX / 10 - 10)
            return fail(call, err_status, "Inference-Header-Content-Length '%.*s' is not a byte count",
                        (int)(hlen.len > 40 ? 40 : hlen.len), (const char *)hlen.ptr);
        n = n * 10 + (size_t)(hlen.ptr[i] - '0');
    }
    if (n > body.len)
        return fail(call, err_status, "Inference-Header-Content-Length %zu is larger than the body (%zu bytes)", n,
                    body.len);
    head->len = n;
    bin->at = body.ptr + n;
    bin->left = body.len - n;
    *binp = bin;
    return MLP_OK;
}

/* Which outputs the client wants in binary (the v2 binary tensor extension), kept as codec state:
 * a first byte '*' (all, from parameters.binary_data_output) or '-', then "+name\n" or "-name\n" for
 * outputs that say so themselves. */
static mlp_status note_binary_outputs(mlp_call *call, const json_t *params, const json_t *outputs) {
    text_buf st = {0};
    const json_t *all = json_object_get(params, "binary_data_output");
    tb_put(&st, json_is_true(all) ? "*" : "-", 1);
    bool any = json_is_true(all);
    size_t i;
    const json_t *o;
    json_array_foreach(outputs, i, o) {
        const json_t *flag = json_object_get(json_object_get(o, "parameters"), "binary_data");
        const json_t *n = json_object_get(o, "name");
        if (!json_is_boolean(flag) || !json_is_string(n)) continue;
        tb_put(&st, json_is_true(flag) ? "+" : "-", 1);
        tb_put(&st, json_string_value(n), json_string_length(n));
        tb_put(&st, "\n", 1);
        any = any || json_is_true(flag);
    }
    mlp_status s = MLP_OK;
    if (st.oom)
        s = fail(call, MLP_ERR_NOMEM, "out of memory");
    else if (any)
        s = g_host->set_codec_state(call, (mlp_bytes){(const uint8_t *)st.p, st.len});
    free(st.p);
    return s;
}

/* Whether output `name` goes back in binary, from the codec state above. */
static bool wants_binary(mlp_bytes state, mlp_bytes name) {
    if (state.len == 0) return false;
    const uint8_t *p = state.ptr + 1, *end = state.ptr + state.len;
    while (p < end) {
        const uint8_t *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl) break;
        if ((size_t)(nl - p - 1) == name.len && memcmp(p + 1, name.ptr, name.len) == 0) return p[0] == '+';
        p = nl + 1;
    }
    return state.ptr[0] == '*';
}

static mlp_status codec_decode(void *instance, mlp_call *call, const mlp_request_message *msg) {
    (void)instance;
    mlp_bytes head = msg->body;
    binary_cursor bin = {NULL, 0}, *binp = NULL;
    mlp_status status = split_binary(call, header_value(msg, "inference-header-content-length"), msg->body, &head, &bin,
                                     &binp, MLP_ERR_INVALID_INPUT);
    if (status != MLP_OK) return status;
    binary_cursor fast = bin;
    if (v2_fast_decode_request(call, head, binp ? &fast : NULL)) return MLP_OK;
    return v2_jansson_decode_request(call, head, binp);
}

mlp_status v2_jansson_decode_request(mlp_call *call, mlp_bytes head, binary_cursor *binp) {
    mlp_status status;
    json_t *root = parse_body(call, head, "request body", MLP_ERR_INVALID_INPUT, &status);
    if (!root) return status;

    const json_t *id = json_object_get(root, "id");
    if (id) {
        if (!json_is_string(id)) {
            status = fail(call, MLP_ERR_INVALID_INPUT, "'id' must be a string");
            goto done;
        }
        status = g_host->set_id(call, (mlp_bytes){(const uint8_t *)json_string_value(id), json_string_length(id)});
        if (status != MLP_OK) goto done;
    }
    const json_t *params = json_object_get(root, "parameters");
    status = pass_parameters(call, params, "request", MLP_ERR_INVALID_INPUT);
    if (status != MLP_OK) goto done;
    if (params) {
        /* Triton's names for per-request controls. */
        const json_t *prio = json_object_get(params, "priority");
        if (prio) {
            if (!json_is_integer(prio)) {
                status = fail(call, MLP_ERR_INVALID_INPUT, "parameters.priority must be an integer");
                goto done;
            }
            g_host->set_request_int(call, MLP_REQ_PRIORITY, json_integer_value(prio));
        }
        const json_t *timeout = json_object_get(params, "timeout");
        if (timeout) {
            if (!json_is_integer(timeout) || json_integer_value(timeout) < 0) {
                status = fail(call, MLP_ERR_INVALID_INPUT,
                              "parameters.timeout must be a non-negative integer (microseconds)");
                goto done;
            }
            g_host->set_request_int(call, MLP_REQ_TIMEOUT_US, json_integer_value(timeout));
        }
    }
    const json_t *outputs = json_object_get(root, "outputs");
    if (outputs) {
        if (!json_is_array(outputs)) {
            status = fail(call, MLP_ERR_INVALID_INPUT, "'outputs' must be an array");
            goto done;
        }
        size_t i;
        const json_t *o;
        json_array_foreach(outputs, i, o) {
            const json_t *n = json_object_get(o, "name");
            if (!json_is_string(n)) {
                status = fail(call, MLP_ERR_INVALID_INPUT, "outputs[%zu].name must be a string", i);
                goto done;
            }
            status = g_host->add_requested_output(
                call, (mlp_bytes){(const uint8_t *)json_string_value(n), json_string_length(n)});
            if (status != MLP_OK) goto done;
        }
    }
    status = note_binary_outputs(call, params, outputs);
    if (status != MLP_OK) goto done;
    status = decode_tensor_array(call, json_object_get(root, "inputs"), "inputs", "input", MLP_ERR_INVALID_INPUT, binp);
    if (status == MLP_OK && binp && binp->left)
        status = fail(call, MLP_ERR_INVALID_INPUT,
                      "%zu bytes of binary data follow the JSON head but no input's binary_data_size claims them",
                      binp->left);
done:
    json_decref(root);
    return status;
}

mlp_status v2_encode_response(void *instance, mlp_call *call, const mlp_response_view *r) {
    (void)instance;
    text_buf b = {0};
    tb_str(&b, "{\"model_name\":");
    tb_json_string(&b, r->model_name.ptr, r->model_name.len);
    if (r->model_version.len) {
        tb_str(&b, ",\"model_version\":");
        tb_json_string(&b, r->model_version.ptr, r->model_version.len);
    }
    if (r->id.len) {
        tb_str(&b, ",\"id\":");
        tb_json_string(&b, r->id.ptr, r->id.len);
    }
    if (r->parameters_json.len) {
        tb_str(&b, ",\"parameters\":");
        tb_put(&b, (const char *)r->parameters_json.ptr, r->parameters_json.len);
    }
    mlp_bytes state = r->struct_size >= offsetof(mlp_response_view, codec_state) + sizeof r->codec_state
                          ? r->codec_state
                          : (mlp_bytes){NULL, 0};
    bool any_binary = false;
    tb_str(&b, ",\"outputs\":[");
    for (uint32_t i = 0; i < r->output_count; i++) {
        if (i) tb_put(&b, ",", 1);
        const mlp_tensor *t = mlp_tensor_at(r->outputs, r->tensor_stride, i);
        bool binary = wants_binary(state, t->name);
        any_binary = any_binary || binary;
        mlp_status s = encode_tensor(call, &b, t, binary);
        if (s != MLP_OK) {
            free(b.p);
            return s;
        }
    }
    tb_str(&b, "]}");
    if (!any_binary) return flush(call, &b, "application/json");
    /* The JSON head, then each binary output's bytes in order; the header says where JSON ends. */
    char len[32];
    int n = snprintf(len, sizeof len, "%zu", b.len);
    static const char hname[] = "inference-header-content-length";
    mlp_status s = g_host->set_header(call, (mlp_bytes){(const uint8_t *)hname, sizeof hname - 1},
                                      (mlp_bytes){(const uint8_t *)len, (size_t)n});
    if (s == MLP_OK)
        s = flush(call, &b, "application/octet-stream");
    else
        free(b.p);
    for (uint32_t i = 0; s == MLP_OK && i < r->output_count; i++) {
        const mlp_tensor *t = mlp_tensor_at(r->outputs, r->tensor_stride, i);
        if (wants_binary(state, t->name) && t->data.len) s = g_host->write(call, t->data.ptr, t->data.len);
    }
    return s;
}

/* "" is a request without a content type; curl -d sends application/x-www-form-urlencoded, and v2
 * servers (Triton, MLServer) read such bodies as JSON, so clients that work against them work here. */
static const char *const k_json_types[] = {"application/json", "", "application/x-www-form-urlencoded",
                                           "application/octet-stream", NULL};

static const mlp_codec_vtable k_json_codec = {
    .struct_size = sizeof(mlp_codec_vtable),
    .content_types = k_json_types,
    .create = stateless_create,
    .destroy = stateless_destroy,
    .decode_request = codec_decode,
    .encode_response = v2_encode_response,
    .protocol = "v2",
};

/* ---------------------------------------------------------------------------------------------
 * The `kserve-v2` backend (POST /v2/models/{m}[/versions/{v}]/infer).
 * ------------------------------------------------------------------------------------------- */
/* Params {"binary": "auto" | "always" | "never"}: whether inputs go in the binary tensor extension.
 * auto (the default) sends JSON, except BYTES inputs that JSON cannot carry (bytes that are not
 * UTF-8, or NUL), which go binary, with binary outputs asked for too; always suits Triton, which reads
 * binary tensors without parsing numbers; never is for servers without the extension. */
typedef enum { BINARY_AUTO, BINARY_ALWAYS, BINARY_NEVER } binary_mode;

static mlp_status backend_create(mlp_call *call, mlp_bytes config, void **out) {
    json_t *cfg = config.len ? json_loadb((const char *)config.ptr, config.len, 0, NULL) : json_object();
    const json_t *b = json_is_object(cfg) ? json_object_get(cfg, "binary") : NULL;
    const char *v = json_is_string(b) ? json_string_value(b) : NULL;
    binary_mode mode = BINARY_AUTO;
    bool ok = json_is_object(cfg) && json_object_size(cfg) == (b ? 1u : 0u);
    if (ok && v) {
        if (strcmp(v, "always") == 0)
            mode = BINARY_ALWAYS;
        else if (strcmp(v, "never") == 0)
            mode = BINARY_NEVER;
        else
            ok = strcmp(v, "auto") == 0;
    } else if (b) {
        ok = false;
    }
    json_decref(cfg);
    if (!ok) return fail(call, MLP_ERR_CONFIG, "kserve-v2 backend: params are {binary: auto | always | never}");
    binary_mode *m = malloc(sizeof *m);
    if (!m) return fail(call, MLP_ERR_NOMEM, "out of memory");
    *m = mode;
    *out = m;
    return MLP_OK;
}

static void backend_destroy(void *instance) {
    free(instance);
}

/* Whether a BYTES tensor's elements can go in JSON strings: UTF-8 without NUL. */
static bool bytes_fit_json(const mlp_tensor *t) {
    const uint8_t *p = t->data.ptr, *end = p + t->data.len;
    while (end - p >= 4) {
        uint32_t n;
        memcpy(&n, p, 4);
        p += 4;
        if ((size_t)(end - p) < n || !utf8_valid(p, n) || memchr(p, 0, n)) return false;
        p += n;
    }
    return true;
}

static mlp_status backend_encode(void *instance, mlp_call *call, const mlp_batch_view *batch) {
    const binary_mode mode = instance ? *(const binary_mode *)instance : BINARY_AUTO;
    mlp_status s = set_model_path(call, "/v2/models/", batch->model_name, "/versions/", batch->model_version, "/infer");
    if (s != MLP_OK) return s;

    bool any_binary = false;
    bool binary[64] = {false};
    for (uint32_t i = 0; i < batch->input_count; i++) {
        const mlp_tensor *t = mlp_tensor_at(batch->inputs, batch->tensor_stride, i);
        bool b = mode == BINARY_ALWAYS || (mode == BINARY_AUTO && t->datatype == MLP_DT_BYTES && !bytes_fit_json(t));
        if (i < 64)
            binary[i] = b;
        else if (b)
            return fail(call, MLP_ERR_UNSUPPORTED, "binary inputs beyond the 64th are not supported");
        any_binary = any_binary || b;
    }
    text_buf b = {0};
    tb_str(&b, "{\"inputs\":[");
    for (uint32_t i = 0; i < batch->input_count; i++) {
        if (i) tb_put(&b, ",", 1);
        s = encode_tensor(call, &b, mlp_tensor_at(batch->inputs, batch->tensor_stride, i), i < 64 && binary[i]);
        if (s != MLP_OK) {
            free(b.p);
            return s;
        }
    }
    tb_str(&b, "]");
    if (batch->requested_output_count) {
        tb_str(&b, ",\"outputs\":[");
        for (uint32_t i = 0; i < batch->requested_output_count; i++) {
            tb_str(&b, i ? ",{\"name\":" : "{\"name\":");
            tb_json_string(&b, batch->requested_outputs[i].ptr, batch->requested_outputs[i].len);
            tb_str(&b, "}");
        }
        tb_str(&b, "]");
    }
    /* A server that takes binary inputs can answer in binary too, which carries any bytes. */
    if (any_binary) tb_str(&b, ",\"parameters\":{\"binary_data_output\":true}");
    tb_str(&b, "}");
    if (!any_binary) return flush(call, &b, "application/json");
    char len[32];
    int n = snprintf(len, sizeof len, "%zu", b.len);
    static const char hname[] = "inference-header-content-length";
    s = g_host->set_header(call, (mlp_bytes){(const uint8_t *)hname, sizeof hname - 1},
                           (mlp_bytes){(const uint8_t *)len, (size_t)n});
    if (s == MLP_OK)
        s = flush(call, &b, "application/octet-stream");
    else
        free(b.p);
    for (uint32_t i = 0; s == MLP_OK && i < batch->input_count; i++) {
        const mlp_tensor *t = mlp_tensor_at(batch->inputs, batch->tensor_stride, i);
        if (binary[i] && t->data.len) s = g_host->write(call, t->data.ptr, t->data.len);
    }
    return s;
}

static mlp_status backend_decode(void *instance, mlp_call *call, const mlp_upstream_reply *reply) {
    (void)instance;
    /* v2 servers answer errors as {"error": "..."}. */
    if (reply->http_status != 200) return upstream_error(call, reply, "error", "model server");
    mlp_status status;
    mlp_bytes head;
    binary_cursor bin = {NULL, 0}, *binp = NULL;
    bool has_headers = reply->struct_size >= offsetof(mlp_upstream_reply, reserved2) + sizeof reply->reserved2;
    mlp_bytes hlen = has_headers ? find_header(reply->headers, reply->header_count, "inference-header-content-length")
                                 : (mlp_bytes){NULL, 0};
    status = split_binary(call, hlen, reply->body, &head, &bin, &binp, MLP_ERR_UPSTREAM);
    if (status != MLP_OK) return status;
    binary_cursor fast = bin;
    if (v2_fast_decode_reply(call, head, binp ? &fast : NULL)) return MLP_OK;
    return v2_jansson_decode_reply(call, head, binp);
}

mlp_status v2_jansson_decode_reply(mlp_call *call, mlp_bytes head, binary_cursor *binp) {
    mlp_status status;
    json_t *root = parse_body(call, head, "model server reply", MLP_ERR_UPSTREAM, &status);
    if (!root) return status;
    status = pass_parameters(call, json_object_get(root, "parameters"), "reply", MLP_ERR_UPSTREAM);
    if (status == MLP_OK)
        status =
            decode_tensor_array(call, json_object_get(root, "outputs"), "outputs", "output", MLP_ERR_UPSTREAM, binp);
    json_decref(root);
    return status;
}

static const mlp_backend_vtable k_kserve_v2 = {
    .struct_size = sizeof(mlp_backend_vtable),
    .create = backend_create,
    .destroy = backend_destroy,
    .encode_request = backend_encode,
    .decode_response = backend_decode,
};

/* ---------------------------------------------------------------------------------------------
 * Registration.
 * ------------------------------------------------------------------------------------------- */
static const mlp_component k_codec_component = {
    .struct_size = sizeof(mlp_component),
    .kind = MLP_KIND_CODEC,
    .name = "json",
    .description = "Open Inference Protocol (v2) JSON requests and responses",
    .vtable = &k_json_codec,
};
static const mlp_component k_backend_component = {
    .struct_size = sizeof(mlp_component),
    .kind = MLP_KIND_BACKEND,
    .name = "kserve-v2",
    .description = "KServe/Open Inference Protocol v2 JSON (Triton, MLServer, KServe)",
    .vtable = &k_kserve_v2,
};
static const mlp_component k_tf_codec_component = {
    .struct_size = sizeof(mlp_component),
    .kind = MLP_KIND_CODEC,
    .name = "tfserving",
    .description = "TF Serving REST requests (instances/inputs, b64) and replies (predictions/outputs)",
    .vtable = &mlp_tfserving_codec,
};
static const mlp_component k_tf_backend_component = {
    .struct_size = sizeof(mlp_component),
    .kind = MLP_KIND_BACKEND,
    .name = "tfserving",
    .description = "TF Serving REST predict (TF Serving, KServe v1)",
    .vtable = &mlp_tfserving_backend,
};
static const mlp_component k_raw_codec_component = {
    .struct_size = sizeof(mlp_component),
    .kind = MLP_KIND_CODEC,
    .name = "raw",
    .description = "the whole body as one BYTES element (images, audio, text) for chain stages; v2 JSON replies",
    .vtable = &mlp_raw_codec,
};
static const mlp_component k_torchserve_component = {
    .struct_size = sizeof(mlp_component),
    .kind = MLP_KIND_BACKEND,
    .name = "torchserve",
    .description = "TorchServe inference API (POST /predictions/{m}), the batch as one JSON list",
    .vtable = &mlp_torchserve_backend,
};
static const mlp_component *const k_components[] = {&k_codec_component,     &k_backend_component,
                                                    &k_tf_codec_component,  &k_tf_backend_component,
                                                    &k_raw_codec_component, &k_torchserve_component};

MLP_EXPORT mlp_status mlp_plugin_init(const mlp_host_api *host, mlp_plugin_info *out) {
    mlp_status s = mlp_plugin_begin(host, out, "v2");
    if (s != MLP_OK) return s;
    out->version = MLP_BUNDLED_VERSION;
    out->description = "Open Inference Protocol (v2) JSON and binary, TF Serving REST and TorchServe JSON";
    g_host = host;
    out->components = k_components;
    out->component_count = sizeof k_components / sizeof k_components[0];
    return MLP_OK;
}
