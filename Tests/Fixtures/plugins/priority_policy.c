/* A policy that chooses its batches (ABI 1.2): the highest priority first, earliest deadline first
 * within a priority, only requests of the first pick's batch group, up to max_batch_items; sent at
 * once when full, else at the earliest deadline minus 10 ms. Params {"lie": "..."} make it answer a
 * selection the host must refuse ("out_of_range", "twice", "mixed", "too_many", "overflow"), with
 * dispatch_items 2 for the host's fallback. Built with plain cc from the header alone. */
#include <jansson.h>
#include <mlproxy/mlproxy.h>
#include <stdlib.h>
#include <string.h>

static const mlp_host_api *g_host;

typedef struct {
    char lie[16];
    uint32_t max_items;
} policy;

static mlp_status create(mlp_call *call, mlp_bytes config, void **out) {
    json_t *cfg = json_loadb((const char *)config.ptr, config.len, 0, NULL);
    policy *p = calloc(1, sizeof *p);
    if (!cfg || !p) {
        json_decref(cfg);
        free(p);
        static const char msg[] = "bad config";
        g_host->set_error(call, msg, sizeof msg - 1);
        return MLP_ERR_CONFIG;
    }
    const char *lie = json_string_value(json_object_get(cfg, "lie"));
    if (lie) strncpy(p->lie, lie, sizeof p->lie - 1);
    p->max_items = (uint32_t)json_integer_value(json_object_get(cfg, "max_batch_items"));
    json_decref(cfg);
    *out = p;
    return MLP_OK;
}

static void destroy(void *p) {
    free(p);
}

/* Whether request a goes before request b. */
static int before(const mlp_queued_request *a, const mlp_queued_request *b) {
    if (a->priority != b->priority) return a->priority > b->priority;
    return a->deadline_ns < b->deadline_ns;
}

static mlp_status decide(void *instance, mlp_call *call, const mlp_policy_input *in, mlp_policy_decision *out) {
    (void)call;
    const policy *p = instance;
    if (out->struct_size < sizeof *out) return MLP_ERR_UNSUPPORTED; /* a host older than 1.2 */
    if (in->queue_len == 0) {
        out->action = MLP_ACTION_WAIT;
        out->wake_at_ns = MLP_WAKE_NEVER;
        return MLP_OK;
    }
    /* Picks in order, one request at a time (queues in tests are small). */
    uint32_t n = 0, items = 0, group = 0;
    int64_t earliest = INT64_MAX;
    for (uint32_t i = 0; i < in->queue_len; i++)
        if (mlp_queue_at(in, i)->deadline_ns < earliest) earliest = mlp_queue_at(in, i)->deadline_ns;
    for (;;) {
        int best = -1;
        for (uint32_t i = 0; i < in->queue_len; i++) {
            const mlp_queued_request *r = mlp_queue_at(in, i);
            int taken = 0;
            for (uint32_t k = 0; k < n; k++) taken |= out->select_indices[k] == i;
            if (taken || (n > 0 && r->batch_group != group) || items + r->items > p->max_items) continue;
            if (best < 0 || before(r, mlp_queue_at(in, (uint32_t)best))) best = (int)i;
        }
        if (best < 0) break;
        if (n == 0) group = mlp_queue_at(in, (uint32_t)best)->batch_group;
        items += mlp_queue_at(in, (uint32_t)best)->items;
        out->select_indices[n++] = (uint32_t)best;
    }
    if (items < p->max_items && earliest - 10000000 > in->now_ns) {
        out->action = MLP_ACTION_WAIT;
        out->wake_at_ns = earliest - 10000000;
        return MLP_OK;
    }
    out->action = MLP_ACTION_DISPATCH;
    out->select_count = n;
    out->dispatch_items = 2;
    if (strcmp(p->lie, "out_of_range") == 0) out->select_indices[0] = in->queue_len;
    if (strcmp(p->lie, "twice") == 0 && n > 1) out->select_indices[1] = out->select_indices[0];
    if (strcmp(p->lie, "mixed") == 0) {
        for (uint32_t i = 0; i < in->queue_len; i++)
            if (mlp_queue_at(in, i)->batch_group != group) out->select_indices[0] = i;
    }
    if (strcmp(p->lie, "too_many") == 0) {
        for (uint32_t i = 0; i < in->queue_len; i++) out->select_indices[i] = i;
        out->select_count = in->queue_len;
    }
    if (strcmp(p->lie, "overflow") == 0) out->select_count = in->queue_len + 1;
    return MLP_OK;
}

static const mlp_policy_vtable vt = {
    .struct_size = sizeof vt,
    .create = create,
    .destroy = destroy,
    .decide = decide,
    .observe = 0,
};
static const mlp_component comp = {
    .struct_size = sizeof comp,
    .kind = MLP_KIND_POLICY,
    .name = "priority-edf",
    .description = "test fixture: highest priority, then earliest deadline, by selection",
    .vtable = &vt,
};
static const mlp_component *const comps[] = {&comp};

MLP_EXPORT mlp_status mlp_plugin_init(const mlp_host_api *host, mlp_plugin_info *out) {
    mlp_status s = mlp_plugin_begin(host, out, "priority-policy");
    if (s != MLP_OK) return s;
    g_host = host;
    out->components = comps;
    out->component_count = 1;
    return MLP_OK;
}
