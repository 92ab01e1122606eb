/* Helpers shared by the bundled policies: errors, configuration, latency statistics. */
#include "mlp_policies.h"
#include "mlp_plugin_util.h"

#include <math.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const mlp_host_api *g_host;

MLP_DEFINE_FAIL()

/* Reads a number from the config object; `*found` tells whether it was there. Non-numbers fail. */
mlp_status config_number(mlp_call *call, const json_t *cfg, const char *key, double dflt, double min, double max,
                         double *out) {
    const json_t *v = json_object_get(cfg, key);
    if (!v) {
        *out = dflt;
        return MLP_OK;
    }
    if (!json_is_number(v)) return fail(call, MLP_ERR_CONFIG, "policy parameter '%s' must be a number", key);
    double d = json_number_value(v);
    if (!(d >= min && d <= max))
        return fail(call, MLP_ERR_CONFIG, "policy parameter '%s' = %g is outside [%g, %g]", key, d, min, max);
    *out = d;
    return MLP_OK;
}

/* Parses the config and rejects keys the policy does not know, naming them. */
json_t *config_parse(mlp_call *call, mlp_bytes text, const char *const *known, mlp_status *status) {
    json_error_t err;
    json_t *cfg = json_loadb((const char *)text.ptr, text.len, 0, &err);
    if (!json_is_object(cfg)) {
        json_decref(cfg);
        *status = fail(call, MLP_ERR_CONFIG, "policy configuration is not a JSON object: %s", err.text);
        return NULL;
    }
    const char *key;
    json_t *value;
    json_object_foreach(cfg, key, value) {
        bool ok = false;
        for (const char *const *k = known; *k; k++)
            if (strcmp(*k, key) == 0) ok = true;
        if (!ok) {
            *status = fail(call, MLP_ERR_CONFIG, "unknown policy parameter '%s'", key);
            json_decref(cfg);
            return NULL;
        }
    }
    *status = MLP_OK;
    return cfg;
}

void destroy_free(void *instance) {
    free(instance);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

void size_stats_add(size_stats *st, double value) {
    st->ring[st->count % SAMPLES] = value;
    st->count++;
}

double size_stats_quantile(const size_stats *st, double q) {
    uint32_t n = st->count < SAMPLES ? st->count : SAMPLES;
    double tmp[SAMPLES];
    memcpy(tmp, st->ring, n * sizeof(double));
    return quantile_of(tmp, n, q);
}

/* The nearest-rank quantile (sorts `values` in place); NaN when there are none. The same rule as the
 * host's `nearestRank` in Swift. */
double quantile_of(double *values, size_t n, double q) {
    if (n == 0) return NAN;
    qsort(values, n, sizeof(double), cmp_double);
    size_t idx = (size_t)ceil(q * (double)n);
    if (idx > 0) idx--;
    if (idx >= n) idx = n - 1;
    return values[idx];
}

/* The queue being sorted by select_by_priority (qsort has no context argument; policies are called
 * one at a time per instance but instances may run concurrently, hence thread-local). */
static _Thread_local const mlp_policy_input *t_sorting;

/* Higher priority first, then earlier deadline, then queue order. */
static int before_in_priority_order(const void *a, const void *b) {
    uint32_t i = *(const uint32_t *)a, j = *(const uint32_t *)b;
    const mlp_queued_request *x = mlp_queue_at(t_sorting, i), *y = mlp_queue_at(t_sorting, j);
    if (x->priority != y->priority) return x->priority > y->priority ? -1 : 1;
    if (x->deadline_ns != y->deadline_ns) return x->deadline_ns < y->deadline_ns ? -1 : 1;
    return (i > j) - (i < j);
}

void set_dispatch_reason(mlp_policy_decision *out, mlp_dispatch_reason reason) {
    if (out->struct_size >= offsetof(mlp_policy_decision, dispatch_reason) + sizeof out->dispatch_reason)
        out->dispatch_reason = reason;
}

void select_by_priority(const mlp_policy_input *in, mlp_policy_decision *out) {
    if (out->action != MLP_ACTION_DISPATCH || in->queue_len < 2) return;
    if (out->struct_size < offsetof(mlp_policy_decision, select_indices) + sizeof(uint32_t *)) return;
    bool in_order = true;
    for (uint32_t i = 1; i < in->queue_len && in_order; i++) {
        const mlp_queued_request *prev = mlp_queue_at(in, i - 1), *r = mlp_queue_at(in, i);
        in_order =
            r->priority < prev->priority || (r->priority == prev->priority && r->deadline_ns >= prev->deadline_ns);
    }
    if (in_order) return;
    /* select_indices has room for queue_len entries: sort there, then keep the batch's prefix. */
    uint32_t *order = out->select_indices;
    for (uint32_t i = 0; i < in->queue_len; i++) order[i] = i;
    t_sorting = in;
    qsort(order, in->queue_len, sizeof *order, before_in_priority_order);
    t_sorting = NULL;
    uint32_t limit = out->dispatch_items ? out->dispatch_items : 1;
    if (limit > in->max_batch_items) limit = in->max_batch_items;
    uint32_t group = mlp_queue_at(in, order[0])->batch_group, n = 0, items = 0;
    for (uint32_t k = 0; k < in->queue_len; k++) {
        const mlp_queued_request *r = mlp_queue_at(in, order[k]);
        if (r->batch_group != group) continue;
        if (items > 0 && items + r->items > limit) break;
        items += r->items;
        order[n++] = order[k]; /* n <= k: the kept prefix never overtakes the scan */
    }
    out->select_count = n;
}
