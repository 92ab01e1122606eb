/* Helpers the JSON protocols plugin's components share: errors, datatypes, JSON text, leaves. */
#include "mlp_json.h"
#include "mlp_plugin_util.h"

#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Set once by mlp_plugin_init; the same table for every instance. */
const mlp_host_api *g_host;

/* ---------------------------------------------------------------------------------------------
 * Errors: formatted, then copied by the host.
 * ------------------------------------------------------------------------------------------- */
MLP_DEFINE_FAIL()

/* ---------------------------------------------------------------------------------------------
 * Datatypes.
 * ------------------------------------------------------------------------------------------- */
const char *const k_dt_names[] = {
    [MLP_DT_BOOL] = "BOOL",     [MLP_DT_UINT8] = "UINT8", [MLP_DT_UINT16] = "UINT16", [MLP_DT_UINT32] = "UINT32",
    [MLP_DT_UINT64] = "UINT64", [MLP_DT_INT8] = "INT8",   [MLP_DT_INT16] = "INT16",   [MLP_DT_INT32] = "INT32",
    [MLP_DT_INT64] = "INT64",   [MLP_DT_FP16] = "FP16",   [MLP_DT_FP32] = "FP32",     [MLP_DT_FP64] = "FP64",
    [MLP_DT_BYTES] = "BYTES",
};

uint32_t dt_from_name(const char *s) {
    if (!s) return MLP_DT_INVALID;
    for (uint32_t i = MLP_DT_BOOL; i <= MLP_DT_BYTES; i++)
        if (strcmp(k_dt_names[i], s) == 0) return i;
    return MLP_DT_INVALID;
}

/* IEEE 754 binary16 <-> binary32, round to nearest even. */
uint16_t half_from_float(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u;
    int32_t exp = (int32_t)((x >> 23) & 0xffu);
    uint32_t mant = x & 0x7fffffu;
    if (exp == 0xff) return (uint16_t)(sign | 0x7c00u | (mant ? 0x200u : 0));
    int32_t e = exp - 127 + 15;
    if (e >= 0x1f) return (uint16_t)(sign | 0x7c00u);
    if (e <= 0) {
        if (e < -10) return (uint16_t)sign;
        mant |= 0x800000u;
        uint32_t shift = (uint32_t)(14 - e);
        uint32_t h = mant >> shift;
        uint32_t rem = mant & ((1u << shift) - 1);
        uint32_t halfway = 1u << (shift - 1);
        if (rem > halfway || (rem == halfway && (h & 1u))) h++;
        return (uint16_t)(sign | h);
    }
    uint32_t h = ((uint32_t)e << 10) | (mant >> 13);
    uint32_t rem = mant & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++;
    return (uint16_t)(sign | h);
}

float float_from_half(uint16_t h) {
    uint32_t sign = ((uint32_t)h & 0x8000u) << 16;
    uint32_t exp = ((uint32_t)h >> 10) & 0x1fu;
    uint32_t mant = (uint32_t)h & 0x3ffu;
    uint32_t x;
    if (exp == 0) {
        if (mant == 0) {
            x = sign;
        } else {
            int32_t e = -1;
            do {
                e++;
                mant <<= 1;
            } while ((mant & 0x400u) == 0);
            x = sign | ((uint32_t)(127 - 15 - e) << 23) | ((mant & 0x3ffu) << 13);
        }
    } else if (exp == 0x1f) {
        x = sign | 0x7f800000u | (mant << 13);
    } else {
        x = sign | ((exp - 15 + 127) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &x, 4);
    return f;
}

/* ---------------------------------------------------------------------------------------------
 * JSON -> tensors.
 * ------------------------------------------------------------------------------------------- */

/* Counts the leaves of a (possibly nested) data array and, for BYTES, their encoded size. */
bool count_leaves(const json_t *v, uint32_t dt, size_t *count, size_t *bytes, int depth) {
    if (depth > 64) return false;
    if (json_is_array(v)) {
        size_t i;
        const json_t *e;
        json_array_foreach(v, i, e) {
            if (!count_leaves(e, dt, count, bytes, depth + 1)) return false;
        }
        return true;
    }
    (*count)++;
    if (dt == MLP_DT_BYTES) {
        if (!json_is_string(v)) return false;
        *bytes += 4 + json_string_length(v);
    }
    return true;
}

mlp_status write_leaf(leaf_writer *w, const json_t *v) {
    size_t es = mlp_datatype_size(w->dt);
    uint8_t *p = w->out;
    switch (w->dt) {
    case MLP_DT_BOOL:
        if (!json_is_boolean(v))
            return fail(w->call, w->err_status, "input '%s': element %zu is not a boolean (BOOL)", w->tensor, w->index);
        p[0] = json_is_true(v) ? 1 : 0;
        break;
    case MLP_DT_FP16:
    case MLP_DT_FP32:
    case MLP_DT_FP64: {
        if (!json_is_number(v))
            return fail(w->call, w->err_status, "input '%s': element %zu is not a number (%s)", w->tensor, w->index,
                        k_dt_names[w->dt]);
        double d = json_number_value(v);
        if (w->dt == MLP_DT_FP64) {
            memcpy(p, &d, 8);
        } else if (w->dt == MLP_DT_FP32) {
            float f = (float)d;
            memcpy(p, &f, 4);
        } else {
            uint16_t h = half_from_float((float)d);
            memcpy(p, &h, 2);
        }
        break;
    }
    case MLP_DT_BYTES: {
        size_t n = json_string_length(v);
        uint32_t len = (uint32_t)n;
        memcpy(p, &len, 4);
        memcpy(p + 4, json_string_value(v), n);
        w->out += 4 + n;
        w->index++;
        return MLP_OK;
    }
    default: {
        /* Integers: exact values in range only. */
        if (!json_is_integer(v))
            return fail(w->call, w->err_status, "input '%s': element %zu is not an integer (%s)", w->tensor, w->index,
                        k_dt_names[w->dt]);
        json_int_t i = json_integer_value(v);
        long long lo = 0, hi = 0;
        bool is_unsigned = false;
        switch (w->dt) {
        case MLP_DT_UINT8:
            lo = 0;
            hi = UINT8_MAX;
            is_unsigned = true;
            break;
        case MLP_DT_UINT16:
            lo = 0;
            hi = UINT16_MAX;
            is_unsigned = true;
            break;
        case MLP_DT_UINT32:
            lo = 0;
            hi = UINT32_MAX;
            is_unsigned = true;
            break;
        case MLP_DT_UINT64:
            lo = 0;
            hi = INT64_MAX;
            is_unsigned = true;
            break;
        case MLP_DT_INT8:
            lo = INT8_MIN;
            hi = INT8_MAX;
            break;
        case MLP_DT_INT16:
            lo = INT16_MIN;
            hi = INT16_MAX;
            break;
        case MLP_DT_INT32:
            lo = INT32_MIN;
            hi = INT32_MAX;
            break;
        default:
            lo = INT64_MIN;
            hi = INT64_MAX;
            break;
        }
        if (i < lo || i > hi)
            return fail(w->call, w->err_status, "input '%s': element %zu = %lld is out of range for %s", w->tensor,
                        w->index, (long long)i, k_dt_names[w->dt]);
        (void)is_unsigned;
        /* Little-endian hosts only (x86_64, aarch64): the low bytes of the value are the element. */
        int64_t v64 = (int64_t)i;
        memcpy(p, &v64, es);
        break;
    }
    }
    w->out += es;
    w->index++;
    return MLP_OK;
}

mlp_status write_leaves(leaf_writer *w, const json_t *v) {
    if (json_is_array(v)) {
        size_t i;
        const json_t *e;
        json_array_foreach(v, i, e) {
            mlp_status s = write_leaves(w, e);
            if (s != MLP_OK) return s;
        }
        return MLP_OK;
    }
    return write_leaf(w, v);
}

json_t *parse_body(mlp_call *call, mlp_bytes body, const char *what, mlp_status err_status, mlp_status *status) {
    json_error_t err;
    json_t *root = json_loadb((const char *)body.ptr, body.len, 0, &err);
    if (!root) {
        *status = fail(call, err_status, "%s is not valid JSON: %s (line %d, column %d)", what, err.text, err.line,
                       err.column);
        return NULL;
    }
    if (!json_is_object(root)) {
        json_decref(root);
        *status = fail(call, err_status, "%s must be a JSON object", what);
        return NULL;
    }
    *status = MLP_OK;
    return root;
}

/* ---------------------------------------------------------------------------------------------
 * Tensors -> JSON text.
 * ------------------------------------------------------------------------------------------- */

void tb_reserve(text_buf *b, size_t extra) {
    if (b->oom || b->len + extra <= b->cap) return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
        b->oom = true;
        return;
    }
    b->p = p;
    b->cap = cap;
}

void tb_put(text_buf *b, const char *s, size_t n) {
    tb_reserve(b, n);
    if (b->oom) return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

void tb_str(text_buf *b, const char *s) {
    tb_put(b, s, strlen(s));
}

__attribute__((format(printf, 2, 3))) void tb_fmt(text_buf *b, const char *fmt, ...) {
    tb_reserve(b, 64);
    if (b->oom) return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->oom = true;
        return;
    }
    if ((size_t)n >= b->cap - b->len) {
        tb_reserve(b, (size_t)n + 1);
        if (b->oom) return;
        va_start(ap, fmt);
        vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
    }
    b->len += (size_t)n;
}

/* A JSON string literal of arbitrary bytes: control characters, quote and backslash escaped. */
void tb_json_string(text_buf *b, const uint8_t *s, size_t n) {
    tb_reserve(b, n + 2);
    tb_put(b, "\"", 1);
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = s[i];
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        tb_put(b, (const char *)s + run, i - run);
        run = i + 1;
        char esc[8];
        switch (c) {
        case '"': tb_put(b, "\\\"", 2); break;
        case '\\': tb_put(b, "\\\\", 2); break;
        case '\n': tb_put(b, "\\n", 2); break;
        case '\r': tb_put(b, "\\r", 2); break;
        case '\t': tb_put(b, "\\t", 2); break;
        default: snprintf(esc, sizeof esc, "\\u%04x", c); tb_put(b, esc, 6);
        }
    }
    tb_put(b, (const char *)s + run, n - run);
    tb_put(b, "\"", 1);
}

bool utf8_valid(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t len;
        uint32_t cp;
        if ((c & 0xE0) == 0xC0) {
            len = 2;
            cp = c & 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            len = 3;
            cp = c & 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            len = 4;
            cp = c & 0x07;
        } else
            return false;
        if (n - i < len) return false;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return false;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        static const uint32_t min_for_len[5] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < min_for_len[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
        i += len;
    }
    return true;
}

mlp_status flush(mlp_call *call, text_buf *b, const char *content_type) {
    mlp_status s = MLP_OK;
    if (b->oom) s = fail(call, MLP_ERR_NOMEM, "out of memory while encoding JSON");
    if (s == MLP_OK && content_type) {
        static const char ct[] = "content-type";
        s = g_host->set_header(call, (mlp_bytes){(const uint8_t *)ct, sizeof ct - 1},
                               (mlp_bytes){(const uint8_t *)content_type, strlen(content_type)});
    }
    if (s == MLP_OK) s = g_host->write(call, b->p, b->len);
    free(b->p);
    return s;
}

mlp_status set_model_path(mlp_call *call, const char *prefix, mlp_bytes model, const char *version_sep,
                          mlp_bytes version, const char *suffix) {
    text_buf path = {0};
    tb_str(&path, prefix);
    tb_put(&path, (const char *)model.ptr, model.len);
    if (version.len) {
        tb_str(&path, version_sep);
        tb_put(&path, (const char *)version.ptr, version.len);
    }
    tb_str(&path, suffix);
    mlp_status s = path.oom ? MLP_ERR_NOMEM : g_host->set_path(call, (mlp_bytes){(const uint8_t *)path.p, path.len});
    free(path.p);
    return s == MLP_OK ? MLP_OK : fail(call, s, "could not set the upstream path");
}

/* The words of a Python traceback (MLServer answers a 500 with one as text/plain): the exception
 * line(s) after the last indented line, e.g. "ValueError: Input X contains NaN."; the whole body when
 * it is not a traceback. */
static mlp_bytes error_words(mlp_bytes body) {
    static const char tb[] = "Traceback (most recent call last):";
    if (body.len < sizeof tb - 1 || memcmp(body.ptr, tb, sizeof tb - 1) != 0) return body;
    size_t after_indented = 0;
    for (size_t i = 0; i < body.len; i++) {
        if ((i == 0 || body.ptr[i - 1] == '\n') && body.ptr[i] == ' ') {
            const uint8_t *nl = memchr(body.ptr + i, '\n', body.len - i);
            after_indented = nl ? (size_t)(nl - body.ptr) + 1 : body.len;
        }
    }
    size_t end = body.len;
    while (end > after_indented && (body.ptr[end - 1] == '\n' || body.ptr[end - 1] == ' ')) end--;
    return end > after_indented ? (mlp_bytes){body.ptr + after_indented, end - after_indented} : body;
}

mlp_status upstream_error(mlp_call *call, const mlp_upstream_reply *reply, const char *key, const char *who) {
    json_t *root = json_loadb((const char *)reply->body.ptr, reply->body.len, 0, NULL);
    const json_t *words = json_is_object(root) ? json_object_get(root, key) : NULL;
    mlp_status s;
    mlp_bytes text = error_words(reply->body);
    if (json_is_string(words))
        s = fail(call, MLP_ERR_UPSTREAM, "%s answered %u: %s", who, reply->http_status, json_string_value(words));
    else if (text.len)
        s = fail(call, MLP_ERR_UPSTREAM, "%s answered %u: %.*s", who, reply->http_status,
                 (int)(text.len < 300 ? text.len : 300), (const char *)text.ptr);
    else
        s = fail(call, MLP_ERR_UPSTREAM, "%s answered %u with an empty body", who, reply->http_status);
    json_decref(root);
    return s;
}

mlp_status stateless_create(mlp_call *call, mlp_bytes config, void **out) {
    (void)call;
    (void)config;
    *out = NULL;
    return MLP_OK;
}

void stateless_destroy(void *instance) {
    (void)instance;
}
