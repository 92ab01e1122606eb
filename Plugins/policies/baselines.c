/* The baseline policies the default is measured against, each as its authors describe it, so that a
 * comparison is honest and users can pick them:
 *
 *  - mlproxy-aimd: the research system's algorithm (buffer size B, a p95-based timer, AIMD on B every
 *    30 s);
 *  - cork: BentoML's CORK dispatcher (a linear latency fit; wait while waiting pays off; shed the
 *    oldest when it cannot make its deadline);
 *  - aimd: Clipper's additive-increase, multiplicative-decrease of the batch size against the SLO,
 *    dispatching whenever a slot is free.
 *
 * Pure: time arrives in the calls. */
#include "mlp_policies.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static void wait_for_events(mlp_policy_decision *out) {
    out->action = MLP_ACTION_WAIT;
    out->wake_at_ns = MLP_WAKE_NEVER;
}

static void dispatch(mlp_policy_decision *out, uint32_t items) {
    out->action = MLP_ACTION_DISPATCH;
    out->dispatch_items = items;
}

/* ---------------------------------------------------------------------------------------------
 * mlproxy-aimd.
 * Dispatch when the buffer holds B items, or when a timer fires at
 *     max(T - max(p95 upstream latency of the next batch size, 50 ms), 50 ms)
 * after the oldest arrival (p95 of the largest size seen if that size is unseen, 100 ms without
 * data). Every 30 s, with T = 0.8 x SLO: B += 5, unless the window's p95 response time >= T or the
 * share of timer-triggered dispatches >= the threshold, in which case B = floor(0.7 x B) (at least
 * one less); B stays within [min_batch, max_batch].
 * ------------------------------------------------------------------------------------------- */
typedef struct mlproxy_aimd {
    uint32_t b, min_b, max_b;
    int64_t target_ns, window_ns;
    double threshold;
    size_stats *stats; /* max_b + 1 entries */
    uint32_t largest_seen;
    int64_t window_start;
    double *rt; /* response times (ns) of the current window */
    size_t rt_len, rt_cap;
    uint32_t timer_dispatches, size_dispatches;
} mlproxy_aimd;

static mlp_status mlproxy_aimd_create(mlp_call *call, mlp_bytes config, void **out) {
    static const char *const known[] = {HOST_KEYS, "initial_batch", "min_batch", "timer_share_threshold", "window_s",
                                        NULL};
    mlp_status s;
    json_t *cfg = config_parse(call, config, known, &s);
    if (!cfg) return s;
    double max_items, slo, initial, min_b, threshold, window;
    if ((s = config_number(call, cfg, "max_batch_items", 1, 1, 65536, &max_items)) != MLP_OK ||
        (s = config_number(call, cfg, "slo_ms", 100, 0.001, 3600e3, &slo)) != MLP_OK ||
        (s = config_number(call, cfg, "min_batch", 1, 1, max_items, &min_b)) != MLP_OK ||
        (s = config_number(call, cfg, "initial_batch", fmin(10, max_items), min_b, max_items, &initial)) != MLP_OK ||
        (s = config_number(call, cfg, "timer_share_threshold", 0.7, 0.5, 0.9, &threshold)) != MLP_OK ||
        (s = config_number(call, cfg, "window_s", 30, 0.001, 3600, &window)) != MLP_OK) {
        json_decref(cfg);
        return s;
    }
    json_decref(cfg);
    mlproxy_aimd *p = calloc(1, sizeof *p);
    if (!p) return fail(call, MLP_ERR_NOMEM, "out of memory");
    p->b = (uint32_t)initial;
    p->min_b = (uint32_t)min_b;
    p->max_b = (uint32_t)max_items;
    p->target_ns = (int64_t)(0.8 * slo * 1e6);
    p->window_ns = (int64_t)(window * 1e9);
    p->threshold = threshold;
    p->window_start = INT64_MIN;
    p->stats = calloc(p->max_b + 1, sizeof *p->stats);
    if (!p->stats) {
        free(p);
        return fail(call, MLP_ERR_NOMEM, "out of memory");
    }
    *out = p;
    return MLP_OK;
}

static void mlproxy_aimd_destroy(void *instance) {
    mlproxy_aimd *p = instance;
    if (!p) return;
    free(p->stats);
    free(p->rt);
    free(p);
}

/* Closes every 30 s window that has ended by `now`, applying the AIMD rule to B. */
static void mlproxy_aimd_adjust(mlproxy_aimd *p, int64_t now) {
    if (p->window_start == INT64_MIN) {
        p->window_start = now;
        return;
    }
    while (now >= p->window_start + p->window_ns) {
        uint32_t dispatches = p->timer_dispatches + p->size_dispatches;
        if (dispatches > 0 || p->rt_len > 0) {
            double p95 = quantile_of(p->rt, p->rt_len, 0.95);
            double share = dispatches ? (double)p->timer_dispatches / dispatches : 0;
            int64_t b = p->b;
            if ((p->rt_len && p95 >= (double)p->target_ns) || share >= p->threshold) {
                int64_t down = (int64_t)floor(0.7 * (double)b);
                b = down < b - 1 ? down : b - 1;
            } else {
                b += 5;
            }
            if (b < (int64_t)p->min_b) b = p->min_b;
            if (b > (int64_t)p->max_b) b = p->max_b;
            p->b = (uint32_t)b;
        }
        p->rt_len = 0;
        p->timer_dispatches = p->size_dispatches = 0;
        p->window_start += p->window_ns;
    }
}

static mlp_status mlproxy_aimd_decide(void *instance, mlp_call *call, const mlp_policy_input *in,
                                      mlp_policy_decision *out) {
    (void)call;
    mlproxy_aimd *p = instance;
    mlproxy_aimd_adjust(p, in->now_ns);
    if (in->queue_len == 0) {
        wait_for_events(out);
        return MLP_OK;
    }
    if (in->queued_items >= p->b) {
        p->size_dispatches++;
        dispatch(out, p->b);
        return MLP_OK;
    }
    uint32_t next = in->queued_items;
    double latency;
    if (next <= p->max_b && p->stats[next].count)
        latency = size_stats_quantile(&p->stats[next], 0.95);
    else if (p->largest_seen)
        latency = size_stats_quantile(&p->stats[p->largest_seen], 0.95);
    else
        latency = 100e6;
    const double floor_ns = 50e6;
    double delay = (double)p->target_ns - fmax(latency, floor_ns);
    if (delay < floor_ns) delay = floor_ns;
    int64_t due = mlp_queue_at(in, 0)->arrival_ns + (int64_t)delay;
    if (in->now_ns >= due) {
        p->timer_dispatches++;
        dispatch(out, in->queued_items);
        return MLP_OK;
    }
    out->action = MLP_ACTION_WAIT;
    out->wake_at_ns = due;
    return MLP_OK;
}

static void mlproxy_aimd_observe(void *instance, const mlp_batch_report *r) {
    mlproxy_aimd *p = instance;
    mlproxy_aimd_adjust(p, r->finished_ns);
    if (r->ok && r->items > 0) {
        uint32_t n = r->items > p->max_b ? p->max_b : r->items;
        size_stats_add(&p->stats[n], (double)(r->finished_ns - r->dispatched_ns));
        if (n > p->largest_seen) p->largest_seen = n;
    }
    if (!r->arrival_ns) return;
    if (p->rt_len + r->requests > p->rt_cap) {
        size_t cap = p->rt_cap ? p->rt_cap : 1024;
        while (cap < p->rt_len + r->requests) cap *= 2;
        double *rt = realloc(p->rt, cap * sizeof *rt);
        if (!rt) return; /* lose this batch's samples rather than fail */
        p->rt = rt;
        p->rt_cap = cap;
    }
    for (uint32_t i = 0; i < r->requests; i++) p->rt[p->rt_len++] = (double)(r->finished_ns - r->arrival_ns[i]);
}

const mlp_policy_vtable mlp_mlproxy_aimd_policy = {
    .struct_size = sizeof(mlp_policy_vtable),
    .create = mlproxy_aimd_create,
    .destroy = mlproxy_aimd_destroy,
    .decide = mlproxy_aimd_decide,
    .observe = mlproxy_aimd_observe,
};

/* ---------------------------------------------------------------------------------------------
 * cork (BentoML's CorkDispatcher).
 * Upstream latency = a x n + b, fitted by least squares over the last 50 batches (the first two are
 * skipped; refitted at most every 5 s); o_w is the mean queue wait of those batches. With n queued,
 * oldest age w0 and newest age wn: shed the oldest when n > 1 and w0 + a x n + b >= max latency
 * (the SLO); wait one tick (1 ms) while n x (wn + tick + a) <= 0.95 x o_w; else dispatch up to the
 * max. BentoML's three warm-up steps are not reproduced (it starts from its initial a, b, o_w), and
 * it takes requests from the head of the queue where BentoML pops the newest.
 * ------------------------------------------------------------------------------------------- */
#define CORK_KEPT 50

typedef struct cork {
    uint32_t max_items;
    double max_latency_ns, tick_ns;
    double a, b, wait_ns;
    struct {
        double n, duration, wait;
    } samples[CORK_KEPT];
    uint32_t kept, next, outbound;
    int64_t last_refresh;
} cork;

static mlp_status cork_create(mlp_call *call, mlp_bytes config, void **out) {
    static const char *const known[] = {HOST_KEYS, "tick_ms", NULL};
    mlp_status s;
    json_t *cfg = config_parse(call, config, known, &s);
    if (!cfg) return s;
    double max_items, slo, tick;
    if ((s = config_number(call, cfg, "max_batch_items", 1, 1, 65536, &max_items)) != MLP_OK ||
        (s = config_number(call, cfg, "slo_ms", 100, 0.001, 3600e3, &slo)) != MLP_OK ||
        (s = config_number(call, cfg, "tick_ms", 1, 0.001, 1000, &tick)) != MLP_OK) {
        json_decref(cfg);
        return s;
    }
    json_decref(cfg);
    cork *p = calloc(1, sizeof *p);
    if (!p) return fail(call, MLP_ERR_NOMEM, "out of memory");
    p->max_items = (uint32_t)max_items;
    p->max_latency_ns = slo * 1e6;
    p->tick_ns = tick * 1e6;
    /* BentoML's starting point, in seconds: a = min(2, L x 2/30), b = min(1, L/30), wait = 0.01. */
    p->a = fmin(2e9, p->max_latency_ns * 2.0 / 30);
    p->b = fmin(1e9, p->max_latency_ns / 30);
    p->wait_ns = 10e6;
    p->last_refresh = INT64_MIN;
    *out = p;
    return MLP_OK;
}

static void cork_refit(cork *p) {
    double sx = 0, sy = 0, sxx = 0, sxy = 0, sw = 0;
    uint32_t n = p->kept;
    for (uint32_t i = 0; i < n; i++) {
        sx += p->samples[i].n;
        sy += p->samples[i].duration;
        sxx += p->samples[i].n * p->samples[i].n;
        sxy += p->samples[i].n * p->samples[i].duration;
        sw += p->samples[i].wait;
    }
    double det = n * sxx - sx * sx;
    if (det > 0) {
        double a = (n * sxy - sx * sy) / det;
        double b = (sy - a * sx) / n;
        p->a = fmax(1e3, a); /* BentoML: max(0.000001 s, a) */
        p->b = fmax(0, b);
    } else if (n > 0) {
        /* Every batch had one size: least squares puts it all in the intercept. */
        p->a = 1e3;
        p->b = fmax(0, sy / n - p->a * sx / n);
    }
    if (n > 0) p->wait_ns = fmax(0, sw / n);
}

static void cork_observe(void *instance, const mlp_batch_report *r) {
    cork *p = instance;
    if (!r->ok || r->items == 0) return;
    p->outbound++;
    if (p->outbound <= 2) return; /* the first two are skipped as inaccurate */
    double wait = r->arrival_ns && r->requests ? (double)(r->dispatched_ns - r->arrival_ns[0]) : 0;
    p->samples[p->next].n = r->items;
    p->samples[p->next].duration = (double)(r->finished_ns - r->dispatched_ns);
    p->samples[p->next].wait = wait;
    p->next = (p->next + 1) % CORK_KEPT;
    if (p->kept < CORK_KEPT) p->kept++;
    if (p->last_refresh == INT64_MIN || r->finished_ns - p->last_refresh >= 5000000000LL) {
        cork_refit(p);
        p->last_refresh = r->finished_ns;
    }
}

static mlp_status cork_decide(void *instance, mlp_call *call, const mlp_policy_input *in, mlp_policy_decision *out) {
    (void)call;
    cork *p = instance;
    if (in->queue_len == 0) {
        wait_for_events(out);
        return MLP_OK;
    }
    uint32_t max = in->max_batch_items < p->max_items ? in->max_batch_items : p->max_items;
    double n = in->queued_items;
    double w0 = (double)(in->now_ns - mlp_queue_at(in, 0)->arrival_ns);
    double wn = (double)(in->now_ns - mlp_queue_at(in, in->queue_len - 1)->arrival_ns);
    if (in->queue_len > 1 && w0 + p->a * n + p->b >= p->max_latency_ns) {
        static const char reason[] = "cork: the oldest request can no longer meet max latency (the SLO)";
        out->action = MLP_ACTION_SHED;
        out->shed_indices[0] = 0;
        out->shed_count = 1;
        out->reason = (mlp_bytes){(const uint8_t *)reason, sizeof reason - 1};
        return MLP_OK;
    }
    if (n < max && n * (wn + p->tick_ns + p->a) <= p->wait_ns * 0.95) {
        out->action = MLP_ACTION_WAIT;
        out->wake_at_ns = in->now_ns + (int64_t)p->tick_ns;
        return MLP_OK;
    }
    dispatch(out, in->queued_items < max ? in->queued_items : max);
    return MLP_OK;
}

const mlp_policy_vtable mlp_cork_policy = {
    .struct_size = sizeof(mlp_policy_vtable),
    .create = cork_create,
    .destroy = destroy_free,
    .decide = cork_decide,
    .observe = cork_observe,
};

/* ---------------------------------------------------------------------------------------------
 * aimd (Clipper): whenever a slot is free, send up to B items; after each batch, B += step if its
 * latency stayed within the SLO, else B = B x backoff (10% less by default).
 * ------------------------------------------------------------------------------------------- */
typedef struct aimd {
    double b, max_b, step, backoff;
    int64_t slo_ns;
} aimd;

static mlp_status aimd_create(mlp_call *call, mlp_bytes config, void **out) {
    static const char *const known[] = {HOST_KEYS, "initial_batch", "step", "backoff", NULL};
    mlp_status s;
    json_t *cfg = config_parse(call, config, known, &s);
    if (!cfg) return s;
    double max_items, slo, initial, step, backoff;
    if ((s = config_number(call, cfg, "max_batch_items", 1, 1, 65536, &max_items)) != MLP_OK ||
        (s = config_number(call, cfg, "slo_ms", 100, 0.001, 3600e3, &slo)) != MLP_OK ||
        (s = config_number(call, cfg, "initial_batch", 1, 1, max_items, &initial)) != MLP_OK ||
        (s = config_number(call, cfg, "step", 2, 0.001, 65536, &step)) != MLP_OK ||
        (s = config_number(call, cfg, "backoff", 0.9, 0.01, 0.999, &backoff)) != MLP_OK) {
        json_decref(cfg);
        return s;
    }
    json_decref(cfg);
    aimd *p = calloc(1, sizeof *p);
    if (!p) return fail(call, MLP_ERR_NOMEM, "out of memory");
    p->b = initial;
    p->max_b = max_items;
    p->step = step;
    p->backoff = backoff;
    p->slo_ns = (int64_t)(slo * 1e6);
    *out = p;
    return MLP_OK;
}

static mlp_status aimd_decide(void *instance, mlp_call *call, const mlp_policy_input *in, mlp_policy_decision *out) {
    (void)call;
    const aimd *p = instance;
    if (in->queue_len == 0) {
        wait_for_events(out);
        return MLP_OK;
    }
    uint32_t b = (uint32_t)p->b;
    dispatch(out, in->queued_items < b ? in->queued_items : b);
    return MLP_OK;
}

static void aimd_observe(void *instance, const mlp_batch_report *r) {
    aimd *p = instance;
    if (!r->ok) return;
    if (r->finished_ns - r->dispatched_ns > p->slo_ns)
        p->b = fmax(1, p->b * p->backoff);
    else
        p->b = fmin(p->max_b, p->b + p->step);
}

const mlp_policy_vtable mlp_aimd_policy = {
    .struct_size = sizeof(mlp_policy_vtable),
    .create = aimd_create,
    .destroy = destroy_free,
    .decide = aimd_decide,
    .observe = aimd_observe,
};
