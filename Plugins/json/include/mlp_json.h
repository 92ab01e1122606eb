/* The JSON protocols plugin: the `json` codec and `kserve-v2` backend (Open Inference Protocol v2,
 * v2.c), the `tfserving` codec and backend (TF Serving REST, tfserving.c), the `raw` codec (raw.c),
 * the `torchserve` backend (torchserve.c), with the helpers they share (json_text.c). Everything here is internal; the library exports mlp_plugin_init (Tests/Fuzz
 * drives the codecs through it). */
#ifndef MLP_JSON_H
#define MLP_JSON_H

#include <mlproxy/mlproxy.h>

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MLP_INTERNAL __attribute__((visibility("hidden")))

/* The binary section of a v2 binary-extension body: tensors' raw bytes, in the order they appear. */
typedef struct v2_binary_cursor {
    const uint8_t *at;
    size_t left;
} v2_binary_cursor;

/* The v2 decoders after the binary split: simdjson's (v2_fast.cpp), which returns false, leaving the
 * cursor alone, whenever the jansson decoder must judge (any error included), and jansson's (v2.c). The
 * codec and backend run the first and, when it declines, the second; Tests/Fuzz compares them. */
MLP_INTERNAL bool v2_fast_decode_request(mlp_call *call, mlp_bytes head, v2_binary_cursor *bin);
MLP_INTERNAL bool v2_fast_decode_reply(mlp_call *call, mlp_bytes head, v2_binary_cursor *bin);
MLP_INTERNAL mlp_status v2_jansson_decode_request(mlp_call *call, mlp_bytes head, v2_binary_cursor *bin);
MLP_INTERNAL mlp_status v2_jansson_decode_reply(mlp_call *call, mlp_bytes head, v2_binary_cursor *bin);

/* The TF Serving and TorchServe JSON decoders: simdjson's (rows_fast.cpp), which return false when
 * jansson's (tfserving.c, torchserve.c) must judge, as the v2 pair above. Requests are TF Serving
 * rows or columns with numbers read as `number_type`; replies are TF Serving's or TorchServe's list
 * of `batch_items` rows, numbers read as INT64 when all are integers, else FP64. */
MLP_INTERNAL bool tf_fast_decode_request(mlp_call *call, mlp_bytes body, uint32_t number_type);
MLP_INTERNAL bool tf_fast_decode_reply(mlp_call *call, mlp_bytes body);
MLP_INTERNAL bool ts_fast_decode_reply(mlp_call *call, mlp_bytes body, uint32_t batch_items);
MLP_INTERNAL mlp_status tf_jansson_decode_request(mlp_call *call, mlp_bytes body, uint32_t number_type);
MLP_INTERNAL mlp_status tf_jansson_decode_reply(mlp_call *call, mlp_bytes body);
MLP_INTERNAL mlp_status ts_jansson_decode_reply(mlp_call *call, mlp_bytes body, uint32_t batch_items);

/* Set once by mlp_plugin_init; the same table for every instance. */
MLP_INTERNAL extern const mlp_host_api *g_host;

/* Formats a message for host->set_error and returns `status`. */
MLP_INTERNAL mlp_status fail(mlp_call *call, mlp_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* v2 datatypes: names indexed by mlp_datatype, name lookup, element size (0 for BYTES). */
MLP_INTERNAL extern const char *const k_dt_names[];
MLP_INTERNAL uint32_t dt_from_name(const char *s);
MLP_INTERNAL uint16_t half_from_float(float f);
MLP_INTERNAL float float_from_half(uint16_t h);

/* Leaves of (possibly nested) JSON data arrays: count them (and BYTES' encoded size), then write them
 * as `dt` elements, with errors naming the tensor and element. */
MLP_INTERNAL bool count_leaves(const json_t *v, uint32_t dt, size_t *count, size_t *bytes, int depth);
typedef struct leaf_writer {
    uint32_t dt;
    uint8_t *out;
    size_t index;
    const char *tensor;
    mlp_call *call;
    mlp_status err_status;
} leaf_writer;
MLP_INTERNAL mlp_status write_leaf(leaf_writer *w, const json_t *v);
MLP_INTERNAL mlp_status write_leaves(leaf_writer *w, const json_t *v);

/* Parses `body` as a JSON object; on failure sets the error (naming `what`) and returns NULL. */
MLP_INTERNAL json_t *parse_body(mlp_call *call, mlp_bytes body, const char *what, mlp_status err_status,
                                mlp_status *status);

/* A growable text buffer; `oom` sticks once an allocation failed. */
typedef struct text_buf {
    char *p;
    size_t len, cap;
    bool oom;
} text_buf;
MLP_INTERNAL void tb_reserve(text_buf *b, size_t extra);
MLP_INTERNAL void tb_put(text_buf *b, const char *s, size_t n);
MLP_INTERNAL void tb_str(text_buf *b, const char *s);
MLP_INTERNAL void tb_fmt(text_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
MLP_INTERNAL void tb_json_string(text_buf *b, const uint8_t *s, size_t n);
/* A number as JSON: the shortest text that reads back as the same value (as a float when `single`),
 * integral values below 1e15 with ".0", non-finite values as null. In v2_fast.cpp (std::to_chars). */
MLP_INTERNAL void tb_double(text_buf *b, double d, bool single);
/* `count` FP16, FP32 or FP64 elements at `p`, as tb_double writes them, comma-separated. */
MLP_INTERNAL void tb_float_elements(text_buf *b, const uint8_t *p, size_t count, uint32_t dt);

/* Whether `n` bytes at `s` are well-formed UTF-8 (no overlongs, surrogates or values past U+10FFFF). */
MLP_INTERNAL bool utf8_valid(const uint8_t *s, size_t n);

/* Sets the upstream path prefix + model [+ version_sep + version] + suffix (the version part only when
 * a version is configured). */
MLP_INTERNAL mlp_status set_model_path(mlp_call *call, const char *prefix, mlp_bytes model, const char *version_sep,
                                       mlp_bytes version, const char *suffix);

/* The failure for a reply whose HTTP status is not 200: `who` answered <status>, with the server's own
 * words from JSON member `key` ("error" for v2 and TF Serving, "message" for TorchServe) when there
 * are some, else the start of the body. */
MLP_INTERNAL mlp_status upstream_error(mlp_call *call, const mlp_upstream_reply *reply, const char *key,
                                       const char *who);

/* Sets content-type (when given), writes the buffer as the body and frees it. */
MLP_INTERNAL mlp_status flush(mlp_call *call, text_buf *b, const char *content_type);

MLP_INTERNAL mlp_status stateless_create(mlp_call *call, mlp_bytes config, void **out);
MLP_INTERNAL void stateless_destroy(void *instance);

/* The v2 JSON response (binary outputs where the codec state asks for them); the `json` and `raw`
 * codecs answer with it. */
MLP_INTERNAL mlp_status v2_encode_response(void *instance, mlp_call *call, const mlp_response_view *r);

/* TF Serving components, in tfserving.c. */
MLP_INTERNAL extern const mlp_codec_vtable mlp_tfserving_codec;
MLP_INTERNAL extern const mlp_backend_vtable mlp_tfserving_backend;

/* TF Serving's row format, shared with the TorchServe backend: {"<rows_key>": [...]} or
 * {"<columns_key>": ...} from tensors whose dim 0 is the batch (rows_key NULL: a bare list of rows),
 * and tensors from a JSON list of rows (one value per item, or an object of named values per item;
 * plain values make one tensor called `unnamed`). `what` ("input", "output") names them in errors. */
MLP_INTERNAL mlp_status write_reply(mlp_call *call, text_buf *b, const mlp_tensor *ts, uint32_t stride, uint32_t count,
                                    bool rows, const char *rows_key, const char *columns_key);
MLP_INTERNAL mlp_status add_rows(mlp_call *call, const json_t *instances, uint32_t number_type, mlp_status err_status,
                                 const char *what, const char *unnamed);
MLP_INTERNAL mlp_status add_value(mlp_call *call, const char *name, size_t name_len, const json_t *value,
                                  uint32_t number_type, mlp_status err_status, const char *what);
MLP_INTERNAL bool is_b64(const json_t *v);

/* The `raw` codec (raw.c) and the `torchserve` backend (torchserve.c). */
MLP_INTERNAL extern const mlp_codec_vtable mlp_raw_codec;
MLP_INTERNAL extern const mlp_backend_vtable mlp_torchserve_backend;

#endif
