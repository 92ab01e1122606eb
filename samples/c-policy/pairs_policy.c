/*
 * A complete batching policy in C, built with nothing but our header:
 *
 *     cc -shared -fPIC -Wall -Wextra -Werror -I include -o libpairs_policy.so \
 *        samples/c-policy/pairs_policy.c -ljansson
 *
 * then named in the config (see samples/c-policy/config.yaml):
 *
 *     plugins: [./libpairs_policy.so]        (relative to the config file's folder)
 *     models: [{name: m, upstream: "http://...", policy: pairs, policy_params: {group: 2}}]
 *
 * It sends requests in groups of `group` items, or whatever is queued once the oldest request has
 * used half of its time to deadline. Pure: no clock reads, no I/O, no threads.
 */
#include <mlproxy/mlproxy.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const mlp_host_api *g_host;

typedef struct pairs {
    uint32_t group;
} pairs;

static mlp_status pairs_create(mlp_call *call, mlp_bytes config, void **out) {
    json_error_t err;
    json_t *cfg = json_loadb((const char *)config.ptr, config.len, 0, &err);
    json_int_t group = 2;
    if (cfg && json_is_integer(json_object_get(cfg, "group")))
        group = json_integer_value(json_object_get(cfg, "group"));
    json_decref(cfg);
    if (group < 1) {
        static const char msg[] = "pairs: 'group' must be at least 1";
        g_host->set_error(call, msg, sizeof msg - 1);
        return MLP_ERR_CONFIG;
    }
    pairs *p = malloc(sizeof *p);
    if (!p) return MLP_ERR_NOMEM;
    p->group = (uint32_t)group;
    *out = p;
    return MLP_OK;
}

static void pairs_destroy(void *instance) {
    free(instance);
}

static mlp_status pairs_decide(void *instance, mlp_call *call, const mlp_policy_input *in, mlp_policy_decision *out) {
    (void)call;
    const pairs *p = instance;
    if (in->queue_len == 0) {
        out->action = MLP_ACTION_WAIT;
        out->wake_at_ns = MLP_WAKE_NEVER;
        return MLP_OK;
    }
    if (in->queued_items >= p->group) {
        out->action = MLP_ACTION_DISPATCH;
        out->dispatch_items = p->group;
        return MLP_OK;
    }
    const mlp_queued_request *oldest = mlp_queue_at(in, 0);
    int64_t half_way = oldest->arrival_ns + (oldest->deadline_ns - oldest->arrival_ns) / 2;
    if (in->now_ns >= half_way) {
        out->action = MLP_ACTION_DISPATCH;
        out->dispatch_items = in->queued_items;
        return MLP_OK;
    }
    out->action = MLP_ACTION_WAIT;
    out->wake_at_ns = half_way;
    return MLP_OK;
}

static const mlp_policy_vtable k_pairs = {
    .struct_size = sizeof(mlp_policy_vtable),
    .create = pairs_create,
    .destroy = pairs_destroy,
    .decide = pairs_decide,
    .observe = NULL,
};

static const mlp_component k_component = {
    .struct_size = sizeof(mlp_component),
    .kind = MLP_KIND_POLICY,
    .name = "pairs",
    .description = "groups of `group` items, or what is queued at half the oldest's deadline",
    .vtable = &k_pairs,
};

static const mlp_component *const k_components[] = {&k_component};

MLP_EXPORT mlp_status mlp_plugin_init(const mlp_host_api *host, mlp_plugin_info *out) {
    mlp_status s = mlp_plugin_begin(host, out, "pairs-sample");
    if (s != MLP_OK) return s;
#if MLP_ABI_MINOR >= 2 /* the header's own fields: this file also builds against 1.0 and 1.1 */
    out->version = "1.0.0";
    out->description = "sample: sends requests in pairs, or alone at the SLO's edge";
#endif
    g_host = host;
    out->components = k_components;
    out->component_count = 1;
    return MLP_OK;
}
