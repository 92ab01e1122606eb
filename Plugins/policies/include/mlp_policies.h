/* Internal to the bundled policies plugin: shared helpers and the vtables each file defines.
 * Everything the library exports is mlp_plugin_init. */
#ifndef MLP_POLICIES_H
#define MLP_POLICIES_H

#include <mlproxy/mlproxy.h>

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#define MLP_INTERNAL __attribute__((visibility("hidden")))

/* The host table, set once by mlp_plugin_init. */
MLP_INTERNAL extern const mlp_host_api *g_host;

/* Formats a message, hands it to host->set_error and returns `status`. */
MLP_INTERNAL mlp_status fail(mlp_call *call, mlp_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Keys the host adds to every policy's configuration. */
#define HOST_KEYS "slo_ms", "max_batch_items", "max_inflight_batches"

/* Parses a policy's JSON configuration, refusing keys not in the NULL-terminated `known`. */
MLP_INTERNAL json_t *config_parse(mlp_call *call, mlp_bytes text, const char *const *known, mlp_status *status);

/* Reads a number in [min, max], or `dflt` when absent. */
MLP_INTERNAL mlp_status config_number(mlp_call *call, const json_t *cfg, const char *key, double dflt, double min,
                                      double max, double *out);

MLP_INTERNAL void destroy_free(void *instance);

/* The last SAMPLES observations of one quantity (e.g. the latency of one batch size). */
#define SAMPLES 16
typedef struct size_stats {
    double ring[SAMPLES];
    uint32_t count; /* total observations; ring index = count % SAMPLES */
} size_stats;

MLP_INTERNAL void size_stats_add(size_stats *st, double value);
/* The q-quantile of the kept samples (nearest rank); NAN when there are none. */
MLP_INTERNAL double size_stats_quantile(const size_stats *st, double q);
/* The q-quantile of `values` (sorted in place); NAN when n == 0. */
MLP_INTERNAL double quantile_of(double *values, size_t n, double q);

/* Turns a DISPATCH of out->dispatch_items from the head into a selection (ABI 1.2) in priority
 * order: higher mlp_queued_request.priority first, earliest deadline first within a priority, queue
 * order between equal deadlines; the first pick's batch group only, whole requests while they fit.
 * Leaves the decision as it is when that order is the queue's own (the usual case: one priority and
 * one SLO, so deadlines follow arrivals; checked in one pass) or when the host is older than 1.2. */
MLP_INTERNAL void select_by_priority(const mlp_policy_input *in, mlp_policy_decision *out);

/* Writes out->dispatch_reason (ABI 1.2) when the host's decision struct has it. */
MLP_INTERNAL void set_dispatch_reason(mlp_policy_decision *out, mlp_dispatch_reason reason);

/* Baselines, in baselines.c. */
MLP_INTERNAL extern const mlp_policy_vtable mlp_mlproxy_aimd_policy;
MLP_INTERNAL extern const mlp_policy_vtable mlp_cork_policy;
MLP_INTERNAL extern const mlp_policy_vtable mlp_aimd_policy;

#endif
