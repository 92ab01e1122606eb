/*
 * The policy docs/plugin-abi.md builds step by step: higher priority first, earliest deadline first
 * within a priority; a batch leaves when it holds `max_items` items or when the earliest deadline in
 * the queue, less `margin_ms`, has come. Built with nothing but our header and jansson:
 *
 *     cc -shared -fPIC -O2 -Wall -Wextra -Werror -I include -o libedf_priority.so \
 *        samples/c-policy/edf_priority.c -ljansson
 *
 * samples/swift-plugin/EDFPriorityPolicy.swift is the same policy in Swift; a test runs both in the
 * simulator on one trace and expects the same figures.
 */
#include <mlproxy/mlproxy.h>

#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const mlp_host_api *g_host;

typedef struct edf_priority {
    uint32_t max_items;
    int64_t margin_ns;
} edf_priority;

static mlp_status config_error(mlp_call *call, const char *msg) {
    g_host->set_error(call, msg, strlen(msg));
    return MLP_ERR_CONFIG;
}

static mlp_status edf_create(mlp_call *call, mlp_bytes config, void **out) {
    json_error_t err;
    json_t *cfg = json_loadb((const char *)config.ptr, config.len, 0, &err);
    if (!json_is_object(cfg)) {
        json_decref(cfg);
        return config_error(call, "edf-priority: the configuration is not a JSON object");
    }
    /* Refuse keys we do not know (the host adds slo_ms, max_batch_items, max_inflight_batches). */
    const char *key;
    json_t *value;
    json_object_foreach(cfg, key, value) {
        if (strcmp(key, "max_items") && strcmp(key, "margin_ms") && strcmp(key, "slo_ms") &&
            strcmp(key, "max_batch_items") && strcmp(key, "max_inflight_batches")) {
            char msg[160];
            snprintf(msg, sizeof msg, "edf-priority: unknown parameter '%s'", key);
            json_decref(cfg);
            return config_error(call, msg);
        }
    }
    double max_items = 16, margin_ms = 5;
    json_t *v = json_object_get(cfg, "max_items");
    if (v) max_items = json_is_number(v) ? json_number_value(v) : -1;
    json_t *m = json_object_get(cfg, "margin_ms");
    if (m) margin_ms = json_is_number(m) ? json_number_value(m) : -1;
    json_decref(cfg);
    if (!(max_items >= 1 && max_items <= 4096) || max_items != (double)(uint32_t)max_items)
        return config_error(call, "edf-priority: 'max_items' must be a whole number in 1...4096");
    if (!(margin_ms >= 0 && margin_ms <= 60000))
        return config_error(call, "edf-priority: 'margin_ms' must be a number in 0...60000");
    edf_priority *p = malloc(sizeof *p);
    if (!p) return MLP_ERR_NOMEM;
    p->max_items = (uint32_t)max_items;
    p->margin_ns = (int64_t)(margin_ms * 1000000.0);
    *out = p;
    return MLP_OK;
}

static void edf_destroy(void *instance) {
    free(instance);
}

/* The order requests are served in: higher priority, then earlier deadline, then queue order. */
static bool before(const mlp_policy_input *in, uint32_t i, uint32_t j) {
    const mlp_queued_request *a = mlp_queue_at(in, i), *b = mlp_queue_at(in, j);
    if (a->priority != b->priority) return a->priority > b->priority;
    if (a->deadline_ns != b->deadline_ns) return a->deadline_ns < b->deadline_ns;
    return i < j;
}

static mlp_status edf_decide(void *instance, mlp_call *call, const mlp_policy_input *in, mlp_policy_decision *out) {
    (void)call;
    const edf_priority *p = instance;
    if (in->queue_len == 0 || in->inflight_batches >= in->max_inflight_batches) {
        out->action = MLP_ACTION_WAIT; /* an arrival or a completion asks again */
        out->wake_at_ns = MLP_WAKE_NEVER;
        return MLP_OK;
    }
    uint32_t limit = p->max_items < in->max_batch_items ? p->max_items : in->max_batch_items;
    /* Pick in serving order, skipping what does not fit or cannot share the first pick's batch:
     * each pick is the best request after the previous one, so no sort and no extra memory. */
    uint32_t n = 0, items = 0, group = 0;
    int64_t last = -1;
    while (items < limit) {
        int64_t best = -1;
        for (uint32_t i = 0; i < in->queue_len; i++) {
            const mlp_queued_request *r = mlp_queue_at(in, i);
            if (last >= 0 && !before(in, (uint32_t)last, i)) continue;
            if (n > 0 && (r->batch_group != group || items + r->items > limit)) continue;
            if (best < 0 || before(in, i, (uint32_t)best)) best = i;
        }
        if (best < 0) break;
        const mlp_queued_request *r = mlp_queue_at(in, (uint32_t)best);
        if (n == 0) group = r->batch_group;
        out->select_indices[n++] = (uint32_t)best;
        items += r->items;
        last = best;
    }
    int64_t earliest = INT64_MAX;
    for (uint32_t i = 0; i < in->queue_len; i++)
        if (mlp_queue_at(in, i)->deadline_ns < earliest) earliest = mlp_queue_at(in, i)->deadline_ns;
    int64_t due = earliest - p->margin_ns;
    if (items >= limit || in->now_ns >= due) {
        out->action = MLP_ACTION_DISPATCH;
        out->select_count = n;
        out->dispatch_reason = items >= limit ? MLP_DISPATCH_FULL : MLP_DISPATCH_DEADLINE;
        return MLP_OK;
    }
    out->action = MLP_ACTION_WAIT;
    out->wake_at_ns = due;
    return MLP_OK;
}

static const mlp_policy_vtable k_edf = {
    .struct_size = sizeof(mlp_policy_vtable),
    .create = edf_create,
    .destroy = edf_destroy,
    .decide = edf_decide,
};

static const mlp_component k_component = {
    .struct_size = sizeof(mlp_component),
    .kind = MLP_KIND_POLICY,
    .name = "edf-priority",
    .description = "higher priority first, earliest deadline first within; at max_items or deadline - margin",
    .vtable = &k_edf,
};

static const mlp_component *const k_components[] = {&k_component};

MLP_EXPORT mlp_status mlp_plugin_init(const mlp_host_api *host, mlp_plugin_info *out) {
    mlp_status s = mlp_plugin_begin(host, out, "edf-priority-c");
    if (s != MLP_OK) return s;
    g_host = host;
    out->components = k_components;
    out->component_count = 1;
    out->version = "1.0.0";
    out->description = "the docs/plugin-abi.md tutorial policy, in C";
    return MLP_OK;
}
