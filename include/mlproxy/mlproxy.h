/*
 * mlproxy.h -- the MLProxy plugin ABI, version 1.2.
 *
 * 1.2 (appended to 1.1; 1.0 and 1.1 plugins still load): a policy may answer DISPATCH with the queue
 * indices that form the batch (mlp_policy_decision.select_indices) and why it sends now
 * (dispatch_reason), and sees which requests may share a batch (mlp_queued_request.batch_group);
 * observe_call and destroy_call hooks that get an mlp_call; a plugin says its version, license and
 * what it is (mlp_plugin_info), shown by `mlproxy plugins`; mlp_datatype_size(); enum-valued
 * arguments are uint32_t everywhere (log's level and set_request_int's key were int: the same
 * registers, so older plugins are unaffected).
 * 1.1 (appended to 1.0, which still loads): chain stages (MLP_KIND_STAGE, mlp_stage_vtable) that turn a
 * request's decoded tensors into new ones, host->pass_tensor for them, and the upstream reply's
 * headers in mlp_upstream_reply.
 *
 * This header is the whole contract between the MLProxy host and its plugins (batching policies,
 * request codecs, chain stages and backend adapters). A plugin is a shared library that exports one function,
 * `mlp_plugin_init`, and includes nothing of ours but this file. The host exports no symbols.
 *
 * Rules that hold for every declaration below:
 *  - Every struct that crosses the boundary starts with `uint32_t struct_size`, set by whoever fills
 *    the struct to sizeof() of the struct as *it* was compiled. Readers touch only fields that lie
 *    inside struct_size; fields are only ever appended, so an older plugin stays readable.
 *  - Versions are major.minor. The host refuses a plugin built against a different major or a newer
 *    minor than its own; older minors load. Nothing but struct_size and the version is read before
 *    that check.
 *  - Buffers are pointer + length (`mlp_bytes`), never NUL-terminated, except names in component
 *    descriptors, which are read once at load time.
 *  - Ownership and lifetime are written on every pointer. "Borrowed" means the callee may read it
 *    until the call returns and must copy whatever it wants to keep.
 *  - Hooks return an `mlp_status` and never abort. Details of a failure go through
 *    `host->set_error`, which copies the message.
 *  - Plugins are pure: no sockets, no threads, no clock reads, no global mutable state shared between
 *    instances. Time reaches them as `now_ns` (a monotonic clock in nanoseconds, or virtual time in the
 *    simulator). The host owns all I/O, timers and threads.
 *  - Plugins never call json_set_alloc_funcs (the jansson allocator is process-wide).
 */
#ifndef MLPROXY_H
#define MLPROXY_H
/* The contract is laid out by hand, its comments aligned as they are read: no formatter. */
/* clang-format off */

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MLP_ABI_MAJOR 1
#define MLP_ABI_MINOR 2

/* The one symbol a plugin exports. */
#define MLP_PLUGIN_INIT_SYMBOL "mlp_plugin_init"

#if defined(__GNUC__) || defined(__clang__)
#define MLP_EXPORT __attribute__((visibility("default")))
#else
#define MLP_EXPORT
#endif

/* ------------------------------------------------------------------------------------------------
 * Status codes. The host maps them to HTTP statuses for the client the hook was working for, with
 * the message the hook gave host->set_error (or one naming the hook and the status).
 * Any other value counts as MLP_ERR_INTERNAL. Where the table does not apply:
 *  - a codec's decode_request and a stage's apply: MLP_ERR_UPSTREAM is taken as MLP_ERR_INVALID_INPUT
 *    (400): they see no model server;
 *  - a backend's encode_request: INVALID_INPUT and UNSUPPORTED fail only the request that holds the
 *    value (400, 415; the host splits the batch to find it); UPSTREAM fails the batch with 502, any
 *    other status with 500;
 *  - a backend's decode_response: any failing status means the reply cannot be used, 502 for every
 *    request of the batch, whatever the status; a reply with an HTTP error status gets that status
 *    instead (docs/failures.md);
 *  - a policy's decide: no client is answered with it; the host logs it, counts it and sends a
 *    batch from the head (see mlp_action).
 * ---------------------------------------------------------------------------------------------- */
typedef enum mlp_status {
    MLP_OK = 0,
    MLP_ERR_INVALID_INPUT = 1,  /* the request is malformed: answered with 400 and the message      */
    MLP_ERR_UNSUPPORTED = 2,    /* content type, datatype or feature not handled: 415                */
    MLP_ERR_UPSTREAM = 3,       /* the model server answered with an error or garbage: 502           */
    MLP_ERR_CONFIG = 4,         /* bad configuration at create time: the model does not start       */
    MLP_ERR_NOMEM = 5,          /* allocation failed: 500                                            */
    MLP_ERR_INTERNAL = 6        /* a bug in the plugin: 500                                          */
} mlp_status;

/* Open Inference Protocol (v2) datatypes. Data is row-major little-endian; BYTES elements are a
 * 4-byte little-endian length followed by that many bytes. BOOL is one byte, 0 or 1. */
typedef enum mlp_datatype {
    MLP_DT_INVALID = 0,
    MLP_DT_BOOL = 1,
    MLP_DT_UINT8 = 2,
    MLP_DT_UINT16 = 3,
    MLP_DT_UINT32 = 4,
    MLP_DT_UINT64 = 5,
    MLP_DT_INT8 = 6,
    MLP_DT_INT16 = 7,
    MLP_DT_INT32 = 8,
    MLP_DT_INT64 = 9,
    MLP_DT_FP16 = 10,
    MLP_DT_FP32 = 11,
    MLP_DT_FP64 = 12,
    MLP_DT_BYTES = 13
} mlp_datatype;

/* ABI 1.2: bytes per element of a datatype; 0 for BYTES (variable) and unknown values. */
static inline size_t mlp_datatype_size(uint32_t datatype) {
    switch (datatype) {
    case MLP_DT_BOOL: case MLP_DT_UINT8: case MLP_DT_INT8: return 1;
    case MLP_DT_UINT16: case MLP_DT_INT16: case MLP_DT_FP16: return 2;
    case MLP_DT_UINT32: case MLP_DT_INT32: case MLP_DT_FP32: return 4;
    case MLP_DT_UINT64: case MLP_DT_INT64: case MLP_DT_FP64: return 8;
    default: return 0;
    }
}

typedef enum mlp_log_level {
    MLP_LOG_DEBUG = 0,
    MLP_LOG_INFO = 1,
    MLP_LOG_WARNING = 2,
    MLP_LOG_ERROR = 3
} mlp_log_level;

/* A borrowed byte range. Who owns it and for how long is said wherever one appears. */
typedef struct mlp_bytes {
    const uint8_t *ptr; /* may be NULL when len == 0 */
    size_t len;
} mlp_bytes;

/* Opaque host state for one hook invocation. Valid only during that invocation, and only on the
 * thread that made it. Plugins pass it back to the host functions below and never keep it. */
typedef struct mlp_call mlp_call;

/* A tensor in canonical form. Filled by the host for plugins to read (all pointers borrowed for the
 * duration of the hook). */
typedef struct mlp_tensor {
    uint32_t struct_size;
    uint32_t datatype;        /* mlp_datatype */
    mlp_bytes name;           /* borrowed */
    const int64_t *shape;     /* borrowed, `rank` entries; shape[0] is the item (batch) dimension */
    uint32_t rank;
    mlp_bytes data;           /* borrowed, row-major little-endian, see mlp_datatype */
    mlp_bytes parameters_json;/* borrowed JSON object text, or len 0 when there are none */
} mlp_tensor;

/* Description of a tensor a plugin hands to the host through host->add_tensor. */
typedef struct mlp_tensor_desc {
    uint32_t struct_size;
    uint32_t datatype;        /* mlp_datatype */
    mlp_bytes name;           /* borrowed for the call to add_tensor; the host copies it */
    const int64_t *shape;     /* borrowed for the call to add_tensor; the host copies it */
    uint32_t rank;
    size_t byte_size;         /* exact size of the data the plugin will write */
} mlp_tensor_desc;

/* Keys for host->set_request_int. */
typedef enum mlp_request_key {
    MLP_REQ_PRIORITY = 1,     /* the client's value as sent (0 = none). Policies see it in
                               * mlp_queued_request.priority, higher first; a model with Triton's
                               * priority_levels maps level L to levels + 1 - L there (and refuses
                               * values outside 0..levels with 400) */
    MLP_REQ_TIMEOUT_US = 2    /* per-request deadline relative to arrival; can only tighten the SLO */
} mlp_request_key;

/* ------------------------------------------------------------------------------------------------
 * The host function table. Owned by the host, valid from mlp_plugin_init until the process exits
 * (plugins are never unloaded). Append-only: check struct_size before using a field added after 1.0.
 * Every function is safe to call from any thread that is inside a hook, with that hook's `call`.
 * ---------------------------------------------------------------------------------------------- */
typedef struct mlp_host_api {
    uint32_t struct_size;
    uint16_t abi_major;
    uint16_t abi_minor;

    /* Logging. `msg` is borrowed and copied. `call` may be NULL (e.g. in create). */
    void (*log)(mlp_call *call, uint32_t level, const char *msg, size_t len);  /* mlp_log_level */

    /* Records why the current hook failed; the host copies `msg`. The last call wins. */
    void (*set_error)(mlp_call *call, const char *msg, size_t len);

    /* Allocates a tensor in host memory and returns its writable data area of desc->byte_size bytes
     * (owned by the host; the plugin may write it until the hook returns and must fill all of it).
     * Returns NULL if the call does not accept tensors, the description is invalid (the host records
     * why, as set_error would) or memory is exhausted; the plugin then returns MLP_ERR_NOMEM, and the
     * client sees the host's recorded reason when there is one.
     * Valid in: codec decode_request (request inputs), backend decode_response (batch outputs),
     * stage apply (ABI 1.1). */
    uint8_t *(*add_tensor)(mlp_call *call, const mlp_tensor_desc *desc);

    /* Appends bytes to the body the hook is producing. Valid in: codec encode_response, backend
     * encode_request. Returns MLP_ERR_NOMEM on failure. */
    mlp_status (*write)(mlp_call *call, const void *bytes, size_t len);

    /* Sets a header on the message being produced (content-type included). Borrowed, copied.
     * Valid in: codec encode_response, backend encode_request. */
    mlp_status (*set_header)(mlp_call *call, mlp_bytes name, mlp_bytes value);

    /* Sets the upstream request path (e.g. "/v2/models/iris/infer"). Valid in: backend encode_request. */
    mlp_status (*set_path)(mlp_call *call, mlp_bytes path);

    /* Request metadata found while decoding. Valid in: codec decode_request; set_parameters_json
     * also in backend decode_response.
     * set_id: the client's request id, echoed in its response.
     * set_request_int: see mlp_request_key.
     * add_requested_output: names an output the client wants; none means all.
     * set_parameters_json: JSON object text of request-level (decode_request) or response-level
     * (backend decode_response) parameters. */
    mlp_status (*set_id)(mlp_call *call, mlp_bytes id);
    mlp_status (*set_request_int)(mlp_call *call, uint32_t key, int64_t value);  /* mlp_request_key */
    mlp_status (*add_requested_output)(mlp_call *call, mlp_bytes name);
    mlp_status (*set_parameters_json)(mlp_call *call, mlp_bytes json);

    /* Opaque bytes a codec keeps from decode_request for its encode_response of the same request
     * (e.g. which outputs the client wants in binary). Borrowed, copied; handed back as
     * mlp_response_view.codec_state. Valid in: codec decode_request. */
    mlp_status (*set_codec_state)(mlp_call *call, mlp_bytes state);

    /* ---- ABI 1.1 (check struct_size before use; a 1.1 host always has it) ---- */

    /* Hands input tensor `index` of a stage's mlp_stage_input on unchanged, without copying, in the
     * position of the call (outputs keep the order in which add_tensor and pass_tensor were called).
     * Valid in: stage apply. Returns MLP_ERR_INVALID_INPUT for an index out of range. */
    mlp_status (*pass_tensor)(mlp_call *call, uint32_t index);
} mlp_host_api;

/* ------------------------------------------------------------------------------------------------
 * Batching policies.
 * Threading: the host calls create/decide/observe of one instance one at a time (under the model's
 * lock, from whichever host thread holds it); calls are serialized per instance. Different instances
 * may run concurrently.
 * ---------------------------------------------------------------------------------------------- */

/* One waiting request, as the policy sees it. */
typedef struct mlp_queued_request {
    uint32_t struct_size;
    uint32_t items;           /* dim 0 of its inputs */
    int64_t arrival_ns;
    int64_t deadline_ns;      /* arrival + the model's SLO, or tighter if the client asked */
    int32_t priority;         /* higher first; see MLP_REQ_PRIORITY */
    /* ABI 1.2: requests with equal values may share a batch (same inputs, datatypes and trailing
     * dims, or padding joins them). Compare values only within one call; they are small numbers the
     * host reuses once the queue is empty. (Older hosts wrote 0 here, but they refuse 1.2 plugins.) */
    uint32_t batch_group;
} mlp_queued_request;

typedef struct mlp_policy_input {
    uint32_t struct_size;
    uint32_t queue_len;
    int64_t now_ns;
    /* Borrowed for the call: queue_len entries, oldest first, `request_stride` bytes apart (use
     * mlp_queue_at). */
    const mlp_queued_request *queue;
    uint32_t request_stride;
    uint32_t queued_items;
    uint32_t inflight_batches;
    uint32_t max_inflight_batches;
    uint32_t max_batch_items;
    uint32_t reserved;
    int64_t slo_ns;           /* the model's SLO */
} mlp_policy_input;

static inline const mlp_queued_request *mlp_queue_at(const mlp_policy_input *in, uint32_t i) {
    return (const mlp_queued_request *)((const uint8_t *)in->queue + (size_t)i * in->request_stride);
}

/* What the host does with each decision:
 *  WAIT      asks again at wake_at_ns at the latest, and on every arrival and batch completion. A
 *            time in the past is asked again after 0.1 ms; the host never sleeps past the earliest
 *            deadline in the queue (then it rejects late requests when the model says so, or, with
 *            nothing in flight, sends a batch itself: the highest priority queued first).
 *  DISPATCH  with select_count 0: takes whole requests from the head, the head always, then each
 *            later request of the head's batch_group while the total stays within dispatch_items
 *            (0 counts as 1) and max_batch_items; so a batch never splits a request, and a request
 *            larger than dispatch_items goes alone.
 *            With select_count > 0 (ABI 1.2): sends exactly those queue indices, in the order given.
 *            A selection with an index out of range, an index twice, requests of different
 *            batch_groups, or more than max_batch_items items in all is refused: the host logs the
 *            reason, counts it as a policy failure (mlproxy_policy_failures_total) and sends a batch from
 *            the head as above for this decision.
 *  SHED      answers the requests at shed_indices with 503 and `reason`; indices out of range are
 *            ignored; a SHED that names none is treated as WAIT for 1 ms.
 * A decide that returns an error status: the host logs it, counts it and sends a batch from the head
 * (max_batch_items), so no request is stranded by a failing policy. */
typedef enum mlp_action {
    MLP_ACTION_WAIT = 0,      /* ask again at wake_at_ns, or on the next arrival/completion        */
    MLP_ACTION_DISPATCH = 1,  /* send a batch now: from the head, or the selection (ABI 1.2)       */
    MLP_ACTION_SHED = 2       /* answer the requests in shed_indices with 503 and `reason`         */
} mlp_action;

#define MLP_WAKE_NEVER INT64_MAX

/* ABI 1.2: why a batch leaves now, returned with DISPATCH in mlp_policy_decision.dispatch_reason.
 * The host explains each batch with it: the admin batch log, the mlproxy-batch-reason response
 * header and mlproxy_batches_by_reason_total{reason} (names in brackets). Values it does not know
 * count as "other". */
typedef enum mlp_dispatch_reason {
    MLP_DISPATCH_UNSPECIFIED = 0, /* [policy]    the policy gave no reason                          */
    MLP_DISPATCH_FULL = 1,        /* [full]      the batch is as large as the policy wants it        */
    MLP_DISPATCH_DEADLINE = 2,    /* [deadline]  waiting longer would make a queued request late     */
    MLP_DISPATCH_TIMER = 3,       /* [timer]     a wait the policy chose ran out (e.g. a max delay)  */
    MLP_DISPATCH_NO_GAIN = 4,     /* [no-gain]   waiting is not expected to bring more items         */
    MLP_DISPATCH_PROBE = 5,       /* [probe]     the policy sends to measure the upstream            */
    MLP_DISPATCH_PRIORITY = 6     /* [priority]  a higher-priority request should not wait           */
} mlp_dispatch_reason;

/* Filled by the policy. The host zeroes it and sets struct_size and the index buffers before the
 * call. */
typedef struct mlp_policy_decision {
    uint32_t struct_size;
    uint32_t action;          /* mlp_action */
    int64_t wake_at_ns;       /* WAIT: latest time to be asked again; MLP_WAKE_NEVER for "on events" */
    uint32_t dispatch_items;  /* DISPATCH: items from the head (the host clamps to its limits)     */
    uint32_t shed_count;      /* SHED: entries written to shed_indices                              */
    uint32_t *shed_indices;   /* host-owned, capacity queue_len, valid for the call: queue indices  */
    mlp_bytes reason;         /* SHED: borrowed until the hook returns; the host copies it          */
    /* ---- ABI 1.2 (check struct_size: a 1.1 host passes a shorter struct) ---- */
    uint32_t select_count;    /* DISPATCH: entries written to select_indices; 0: from the head      */
    uint32_t dispatch_reason; /* DISPATCH: why now (mlp_dispatch_reason); 0 when the policy says not */
    uint32_t *select_indices; /* host-owned, capacity queue_len, valid for the call: queue indices  */
} mlp_policy_decision;

/* Reported to observe() once per finished batch. */
typedef struct mlp_batch_report {
    uint32_t struct_size;
    uint32_t items;
    uint32_t requests;
    uint32_t ok;              /* 1 when the model server answered with a usable result              */
    int64_t dispatched_ns;
    int64_t finished_ns;      /* finished_ns - dispatched_ns is the upstream latency                */
    /* Borrowed for the call: the arrival time of each of the batch's `requests`, in queue order, so
     * finished_ns - arrival_ns[i] is request i's response time. */
    const int64_t *arrival_ns;
} mlp_batch_report;

typedef struct mlp_policy_vtable {
    uint32_t struct_size;
    uint32_t reserved;
    /* Creates an instance for one model. config_json (borrowed) is the model's policy parameters as
     * a JSON object plus "slo_ms", "max_batch_items" and "max_inflight_batches". On success writes an
     * instance pointer (plugin-owned until destroy). On failure calls host->set_error with `call`. */
    mlp_status (*create)(mlp_call *call, mlp_bytes config_json, void **instance_out);
    void (*destroy)(void *instance);
    /* Decides what to do now. `in` is borrowed for the call; `out` is described above. */
    mlp_status (*decide)(void *instance, mlp_call *call, const mlp_policy_input *in,
                         mlp_policy_decision *out);
    /* Observes a finished batch (borrowed). May be NULL. */
    void (*observe)(void *instance, const mlp_batch_report *report);
    /* ---- ABI 1.2 (the host reads them only when struct_size covers them; both may be NULL) ---- */
    /* observe with the call, for host->log with the model's context and host->set_error: a failing
     * status is logged and counted (mlproxy_policy_failures_total{hook="observe"}); the batch was
     * answered already and nothing else changes. When set, the host calls it instead of observe. */
    mlp_status (*observe_call)(void *instance, mlp_call *call, const mlp_batch_report *report);
    /* destroy with the call (for host->log); when set, the host calls it instead of destroy. */
    void (*destroy_call)(void *instance, mlp_call *call);
} mlp_policy_vtable;

/* ------------------------------------------------------------------------------------------------
 * Request codecs: client bytes <-> canonical tensors.
 * Threading: decode_request and encode_response may be called concurrently on one instance from any
 * of the host's event loops; instances must be immutable after create (or synchronise themselves,
 * which pure plugins have no need to do).
 * ---------------------------------------------------------------------------------------------- */

/* One HTTP header (name in lower case). */
typedef struct mlp_header {
    mlp_bytes name;
    mlp_bytes value;
} mlp_header;

typedef struct mlp_request_message {
    uint32_t struct_size;
    uint32_t header_count;
    mlp_bytes body;           /* borrowed for the call */
    mlp_bytes content_type;   /* borrowed for the call; len 0 when the client sent none */
    mlp_bytes model_name;     /* borrowed for the call */
    const mlp_header *headers;/* borrowed for the call: the request's headers, header_count entries */
} mlp_request_message;

/* One client's share of a finished batch, to encode as its response. */
typedef struct mlp_response_view {
    uint32_t struct_size;
    uint32_t output_count;
    mlp_bytes model_name;     /* borrowed for the call */
    mlp_bytes model_version;  /* borrowed; len 0 when unknown */
    mlp_bytes id;             /* borrowed; the client's request id, len 0 when it sent none */
    const mlp_tensor *outputs;/* borrowed; output_count entries `tensor_stride` bytes apart */
    uint32_t tensor_stride;
    uint32_t reserved;
    mlp_bytes parameters_json;/* borrowed; response-level parameters or len 0 */
    mlp_bytes codec_state;    /* borrowed; what this codec's decode_request set with set_codec_state */
} mlp_response_view;

static inline const mlp_tensor *mlp_tensor_at(const mlp_tensor *base, uint32_t stride, uint32_t i) {
    return (const mlp_tensor *)((const uint8_t *)base + (size_t)i * stride);
}

typedef struct mlp_codec_vtable {
    uint32_t struct_size;
    uint32_t reserved;
    /* Content types this codec decodes, e.g. "application/json". Static, NUL-terminated, read at
     * load time; a NULL-terminated array. */
    const char *const *content_types;
    mlp_status (*create)(mlp_call *call, mlp_bytes config_json, void **instance_out);
    void (*destroy)(void *instance);
    /* Decodes one client request: inputs via host->add_tensor, metadata via host->set_id etc. */
    mlp_status (*decode_request)(void *instance, mlp_call *call, const mlp_request_message *msg);
    /* Encodes one client's response via host->write and host->set_header. */
    mlp_status (*encode_response)(void *instance, mlp_call *call, const mlp_response_view *resp);
    /* Which client endpoints this codec serves: "v2" (POST /v2/models/{m}/infer; also when NULL) or
     * "tfserving" (POST /v1/models/{m}:predict). Static, NUL-terminated, read at load time. */
    const char *protocol;
    /* ---- ABI 1.2 (read only when struct_size covers it; may be NULL) ---- */
    /* destroy with a call (for host->log); when set, the host calls it instead of destroy. */
    void (*destroy_call)(void *instance, mlp_call *call);
} mlp_codec_vtable;

/* ------------------------------------------------------------------------------------------------
 * Chain stages (ABI 1.1): one request's decoded tensors -> new tensors, after the codec's
 * decode_request and before the request is queued, e.g. base64 -> image -> resize -> normalise.
 * A model's config chains a codec with stages; each stage sees what the previous one produced.
 * A failing stage answers only its own request (MLP_ERR_INVALID_INPUT: 400, MLP_ERR_UNSUPPORTED: 415).
 * Trust: the tensors a stage receives were checked by the host (data length = shape x datatype size,
 * BYTES framing within the data, one dim 0 for all), so a stage may index by shape. The host checks
 * each stage's output the same way before the next hook sees it, and that dim 0 is kept; a stage whose
 * output breaks these rules fails its request with 500, naming the stage.
 * Threading: as for codecs (concurrent calls on one instance are allowed).
 * ---------------------------------------------------------------------------------------------- */

typedef struct mlp_stage_input {
    uint32_t struct_size;
    uint32_t tensor_count;
    const mlp_tensor *tensors;/* borrowed for the call; tensor_count entries `tensor_stride` apart */
    uint32_t tensor_stride;
    uint32_t reserved;
    mlp_bytes model_name;     /* borrowed for the call */
} mlp_stage_input;

typedef struct mlp_stage_vtable {
    uint32_t struct_size;
    uint32_t reserved;
    /* config_json: the stage's params from the model's config as a JSON object; a chain written as
     * "resize(224,224)" passes {"args":[224,224]}. */
    mlp_status (*create)(mlp_call *call, mlp_bytes config_json, void **instance_out);
    void (*destroy)(void *instance);
    /* Produces the request's complete new set of tensors, in order: new ones via host->add_tensor,
     * unchanged ones via host->pass_tensor. Every tensor must keep the same dim 0 (items). */
    mlp_status (*apply)(void *instance, mlp_call *call, const mlp_stage_input *in);
    /* ---- ABI 1.2 (read only when struct_size covers it; may be NULL) ---- */
    /* destroy with a call (for host->log); when set, the host calls it instead of destroy. */
    void (*destroy_call)(void *instance, mlp_call *call);
} mlp_stage_vtable;

/* ------------------------------------------------------------------------------------------------
 * Backend adapters: a batch <-> one upstream HTTP request in a model server's protocol. The host does
 * the HTTP. Threading: as for codecs (concurrent calls on one instance are allowed).
 * ---------------------------------------------------------------------------------------------- */

typedef struct mlp_batch_view {
    uint32_t struct_size;
    uint32_t input_count;
    mlp_bytes model_name;     /* borrowed; the upstream model name from the config */
    mlp_bytes model_version;  /* borrowed; len 0 when none is configured */
    const mlp_tensor *inputs; /* borrowed; merged along dim 0, `tensor_stride` bytes apart */
    uint32_t tensor_stride;
    uint32_t batch_items;
    /* Borrowed; names of outputs to request (the union of what the batch's clients asked for), or
     * count 0 for all outputs. A protocol that cannot name outputs ignores them: the host gives each
     * client only what it asked for from the reply, and a 400 for an output the reply lacks. */
    const mlp_bytes *requested_outputs;
    uint32_t requested_output_count;
    uint32_t reserved;
} mlp_batch_view;

typedef struct mlp_upstream_reply {
    uint32_t struct_size;
    uint32_t http_status;
    mlp_bytes body;           /* borrowed for the call */
    mlp_bytes content_type;   /* borrowed for the call */
    mlp_bytes model_name;     /* borrowed for the call */
    uint32_t batch_items;     /* items that were sent */
    uint32_t reserved;
    /* ABI 1.1 (check struct_size): the reply's headers, names in lower case, borrowed for the call,
     * e.g. Inference-Header-Content-Length of a v2 binary reply. */
    const mlp_header *headers;
    uint32_t header_count;
    uint32_t reserved2;
} mlp_upstream_reply;

typedef struct mlp_backend_vtable {
    uint32_t struct_size;
    uint32_t reserved;
    mlp_status (*create)(mlp_call *call, mlp_bytes config_json, void **instance_out);
    void (*destroy)(void *instance);
    /* Encodes a batch: host->set_path, host->set_header, host->write. A value the wire format cannot
     * carry returns MLP_ERR_INVALID_INPUT (or MLP_ERR_UNSUPPORTED): the host then splits the batch
     * until the request that holds it is alone, and only that request gets 400 (415) and the message;
     * its batch-mates are sent without it. Other statuses fail the batch with 500. */
    mlp_status (*encode_request)(void *instance, mlp_call *call, const mlp_batch_view *batch);
    /* Decodes the reply: outputs via host->add_tensor (dim 0 = batch_items), response parameters via
     * host->set_parameters_json. An error reply returns MLP_ERR_UPSTREAM with the server's message.
     * The host decides what the reply's HTTP status means for the batch (docs/failures.md): a 4xx or
     * a 5xx other than 502-504 is split until only the requests that fail alone remain; they get the
     * reply's own status and this message, which no other request ever sees. */
    mlp_status (*decode_response)(void *instance, mlp_call *call, const mlp_upstream_reply *reply);
    /* ---- ABI 1.2 (read only when struct_size covers it; may be NULL) ---- */
    /* destroy with a call (for host->log); when set, the host calls it instead of destroy. */
    void (*destroy_call)(void *instance, mlp_call *call);
} mlp_backend_vtable;

/* ------------------------------------------------------------------------------------------------
 * Registration.
 * ---------------------------------------------------------------------------------------------- */

typedef enum mlp_component_kind {
    MLP_KIND_POLICY = 1,
    MLP_KIND_CODEC = 2,
    MLP_KIND_BACKEND = 3,
    MLP_KIND_STAGE = 4        /* ABI 1.1 */
} mlp_component_kind;

typedef struct mlp_component {
    uint32_t struct_size;
    uint32_t kind;            /* mlp_component_kind */
    const char *name;         /* static, NUL-terminated, e.g. "adaptive-sla" */
    const char *description;  /* static, NUL-terminated, one line */
    /* Static vtable of the kind: mlp_policy_vtable, mlp_codec_vtable, mlp_backend_vtable or
     * mlp_stage_vtable. */
    const void *vtable;
} mlp_component;

typedef struct mlp_plugin_info {
    uint32_t struct_size;     /* the plugin writes sizeof(mlp_plugin_info) as it was compiled */
    uint16_t abi_major;       /* the plugin writes MLP_ABI_MAJOR */
    uint16_t abi_minor;       /* the plugin writes MLP_ABI_MINOR */
    const char *plugin_name;  /* static, NUL-terminated */
    /* Static array of component_count pointers to static descriptors; valid while the plugin is
     * loaded, which is until the process exits. */
    const mlp_component *const *components;
    uint32_t component_count;
    uint32_t reserved;
    /* ---- ABI 1.2 (the host reads them only when struct_size covers them) ---- */
    const char *version;      /* static, NUL-terminated: the plugin's own version, e.g. "2.1.0"; or NULL */
    const char *license;      /* static, NUL-terminated: an SPDX identifier, e.g. "Apache-2.0"; or NULL */
    const char *description;  /* static, NUL-terminated: what the plugin is, one line; or NULL */
} mlp_plugin_info;

/* The entry point. `host` is valid until the process exits. `out` is host memory of
 * sizeof(mlp_plugin_info) as the *host* was compiled (its ABI minor: host->abi_minor); the plugin
 * fills it, and writes fields added after 1.0 only when the host's minor has them (mlp_plugin_begin
 * refuses a host older than the header it was built with, before writing past 1.0's fields). Called
 * once, on the main thread, before any other hook. Return MLP_ERR_UNSUPPORTED if host->abi_major
 * differs from MLP_ABI_MAJOR. */
typedef mlp_status (*mlp_plugin_init_fn)(const mlp_host_api *host, mlp_plugin_info *out);

/* Helper for the start of every mlp_plugin_init: checks the host's version and fills the header of
 * `out`. */
static inline mlp_status mlp_plugin_begin(const mlp_host_api *host, mlp_plugin_info *out,
                                          const char *plugin_name) {
    if (host == NULL || out == NULL) return MLP_ERR_INTERNAL;
    /* The version goes out first, so that a host of another major can name both versions. */
    out->struct_size = (uint32_t)sizeof(mlp_plugin_info);
    out->abi_major = MLP_ABI_MAJOR;
    out->abi_minor = MLP_ABI_MINOR;
    out->plugin_name = plugin_name;
    out->components = NULL;
    out->component_count = 0;
    out->reserved = 0;
    if (host->struct_size < offsetof(mlp_host_api, log) || host->abi_major != MLP_ABI_MAJOR)
        return MLP_ERR_UNSUPPORTED;
    /* An older host passed a shorter `out` and will refuse this plugin, naming both versions. */
    if (host->abi_minor < MLP_ABI_MINOR) return MLP_ERR_UNSUPPORTED;
    out->version = NULL;
    out->license = NULL;
    out->description = NULL;
    return MLP_OK;
}

#ifdef __cplusplus
}
#endif

/* clang-format on */
#endif /* MLPROXY_H */
