/* The bundled batching policies: `none`, `static` and `adaptive-sla` (the default).
 *
 * Pure functions of what the host passes in: no clock reads, no threads, no I/O. The same file runs in
 * the live proxy and in the simulator. */
#include "mlp_plugin_util.h"
#include "mlp_policies.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------------------------------------
 * none: every request goes alone, as soon as a slot is free.
 * ------------------------------------------------------------------------------------------- */
static mlp_status none_create(mlp_call *call, mlp_bytes config, void **out) {
    static const char *const known[] = {HOST_KEYS, NULL};
    mlp_status s;
    json_t *cfg = config_parse(call, config, known, &s);
    if (!cfg) return s;
    json_decref(cfg);
    *out = NULL;
    return MLP_OK;
}

static mlp_status none_decide(void *instance, mlp_call *call, const mlp_policy_input *in, mlp_policy_decision *out) {
    (void)instance;
    (void)call;
    if (in->queue_len == 0) {
        out->action = MLP_ACTION_WAIT;
        out->wake_at_ns = MLP_WAKE_NEVER;
        return MLP_OK;
    }
    out->action = MLP_ACTION_DISPATCH;
    out->dispatch_items = mlp_queue_at(in, 0)->items;
    set_dispatch_reason(out, MLP_DISPATCH_NO_GAIN); /* no batching: waiting never pays */
    return MLP_OK;
}

static const mlp_policy_vtable k_none = {
    .struct_size = sizeof(mlp_policy_vtable),
    .create = none_create,
    .destroy = destroy_free,
    .decide = none_decide,
    .observe = NULL,
};

/* ---------------------------------------------------------------------------------------------
 * static: dispatch at max items or when the oldest request has waited max_delay_ms (Triton's
 * max_queue_delay_microseconds, TF Serving's batch_timeout_micros).
 * ------------------------------------------------------------------------------------------- */
typedef struct static_policy {
    uint32_t max_items;
    int64_t max_delay_ns;
    bool by_priority; /* batches take the highest priority first (select_by_priority) */
} static_policy;

static mlp_status static_create(mlp_call *call, mlp_bytes config, void **out) {
    static const char *const known[] = {HOST_KEYS, "max_delay_ms", "batch_items", "by_priority", NULL};
    mlp_status s;
    json_t *cfg = config_parse(call, config, known, &s);
    if (!cfg) return s;
    double host_max, items, delay, by_priority;
    if ((s = config_number(call, cfg, "max_batch_items", 1, 1, 1 << 20, &host_max)) != MLP_OK ||
        (s = config_number(call, cfg, "batch_items", host_max, 1, host_max, &items)) != MLP_OK ||
        (s = config_number(call, cfg, "max_delay_ms", 10, 0, 3600e3, &delay)) != MLP_OK ||
        (s = config_number(call, cfg, "by_priority", 0, 0, 1, &by_priority)) != MLP_OK) {
        json_decref(cfg);
        return s;
    }
    json_decref(cfg);
    static_policy *p = calloc(1, sizeof *p);
    if (!p) return fail(call, MLP_ERR_NOMEM, "out of memory");
    p->max_items = (uint32_t)items;
    p->max_delay_ns = (int64_t)(delay * 1e6);
    p->by_priority = by_priority >= 0.5;
    *out = p;
    return MLP_OK;
}

static mlp_status static_decide(void *instance, mlp_call *call, const mlp_policy_input *in, mlp_policy_decision *out) {
    (void)call;
    const static_policy *p = instance;
    if (in->queue_len == 0) {
        out->action = MLP_ACTION_WAIT;
        out->wake_at_ns = MLP_WAKE_NEVER;
        return MLP_OK;
    }
    if (in->queued_items >= p->max_items) {
        out->action = MLP_ACTION_DISPATCH;
        out->dispatch_items = p->max_items;
        set_dispatch_reason(out, MLP_DISPATCH_FULL);
        if (p->by_priority) select_by_priority(in, out);
        return MLP_OK;
    }
    int64_t due = mlp_queue_at(in, 0)->arrival_ns + p->max_delay_ns;
    if (in->now_ns >= due) {
        out->action = MLP_ACTION_DISPATCH;
        out->dispatch_items = in->queued_items;
        set_dispatch_reason(out, MLP_DISPATCH_TIMER);
        if (p->by_priority) select_by_priority(in, out);
        return MLP_OK;
    }
    out->action = MLP_ACTION_WAIT;
    out->wake_at_ns = due;
    return MLP_OK;
}

static const mlp_policy_vtable k_static = {
    .struct_size = sizeof(mlp_policy_vtable),
    .create = static_create,
    .destroy = destroy_free,
    .decide = static_decide,
    .observe = NULL,
};

/* ---------------------------------------------------------------------------------------------
 * adaptive-sla: send the fewest, largest batches that still meet every queued request's deadline.
 *
 * Its parts (the latency and service-time lines, the arrival rate, the decision, the latency knee,
 * the in-flight cap, packing, shedding) and the measurements that shaped each are described in
 * docs/policies.md; the comments here say what each piece of code is for.
 * ------------------------------------------------------------------------------------------- */
#define LAT_KEPT 128
#define OUT_KEPT 64
/* The in-flight cap's rate: about the last 50 arrivals, steadier than the per-request rate, whose
 * Poisson swings would let batches out at its peaks (docs/policies.md, in-flight cap). */
#define STEADY_ALPHA 0.02
#define LATE_WINDOW  300000.0 /* requests: about the error budget's horizon */

/* The last LAT_KEPT batches' sizes and latencies. */
typedef struct latency_ring {
    struct {
        double n, ns;
    } at[LAT_KEPT];
    uint32_t kept, next;
} latency_ring;

static void ring_add(latency_ring *r, double n, double ns) {
    r->at[r->next].n = n;
    r->at[r->next].ns = ns;
    r->next = (r->next + 1) % LAT_KEPT;
    if (r->kept < LAT_KEPT) r->kept++;
}

/* Least-squares line ns = a + b n over the ring (b >= 0); with one size seen, half of its latency is
 * assumed to be per item, pessimistic until others are seen. */
static void ring_fit(const latency_ring *r, double *a, double *b) {
    uint32_t k = r->kept;
    double sx = 0, sy = 0, sxx = 0, sxy = 0, nmax = 0, nmin = INFINITY;
    for (uint32_t i = 0; i < k; i++) {
        sx += r->at[i].n;
        sy += r->at[i].ns;
        sxx += r->at[i].n * r->at[i].n;
        sxy += r->at[i].n * r->at[i].ns;
        nmax = fmax(nmax, r->at[i].n);
        nmin = fmin(nmin, r->at[i].n);
    }
    double det = k * sxx - sx * sx;
    if (nmax > nmin && det > 0) {
        *b = fmax(0, (k * sxy - sx * sy) / det);
        *a = (sy - *b * sx) / k;
    } else {
        double mean = sy / k;
        *b = mean / (2 * nmax);
        *a = mean - *b * nmax;
    }
}

/* A latency line with its margin: L(n) = a + b n + margin. */
typedef struct latency_line {
    double a, b, margin;
} latency_line;

typedef struct adaptive_policy {
    uint32_t max_items;
    double quantile;
    int64_t safety_ns;
    double rate_alpha;
    double utilization;   /* 0 disables the knee: always the largest batch that meets the deadline */
    double headroom;      /* in-flight cap: ceil(c_full x headroom) + 1 batches; 0 disables it */
    bool pack;            /* a further batch in flight only when waiting for a slot misses a deadline */
    bool shed;            /* the model allows shedding: requests that cannot meet their deadline go 503 */
    double miss_budget;   /* fraction of requests that may be late rather than add a batch in flight */
    double late_fraction; /* of the last ~LATE_WINDOW requests answered (an exponential average) */
    int64_t slo_ns;
    /* Latency model. */
    latency_ring lat;
    double a, b, margin;
    bool have_data;
    /* The upstream's service time for pacing, S(n) = svc_a + svc_b n, fitted over the batches that
     * were not outliers (more than twice S: queued behind a cold start or a backlog), so a backlog at
     * the upstream does not pass for a slower model and raise the in-flight cap with it. Outliers that
     * last 10 s are believed (the model really is slower): the ring restarts from the main one. */
    latency_ring svc;
    double svc_a, svc_b;
    latency_line svc_line; /* S(n) with the quantile of its residuals */
    int64_t outliers_since;
    uint32_t largest_seen; /* the largest batch observed; batches grow at most to twice it */
    /* The batches this policy sent that have not been reported yet (time, items), so it can tell
     * when a slot frees up. Batches the host sent on its own (a late request with nothing in flight)
     * are entered when first seen, as if sent then. */
    struct {
        int64_t at;
        uint32_t items;
    } out[OUT_KEPT];
    uint32_t out_count;
    /* Arrival rate. */
    int64_t last_arrival_ns;
    double gap_ns;        /* mean gap between arrivals; 0 until two have been seen */
    double steady_gap_ns; /* the same with weight STEADY_ALPHA, for the in-flight cap */
    double items_per_request;
} adaptive_policy;

static mlp_status adaptive_create(mlp_call *call, mlp_bytes config, void **out) {
    static const char *const known[] = {HOST_KEYS,  "quantile", "safety_ms",   "rate_alpha", "utilization",
                                        "headroom", "pack",     "miss_budget", "shed",       NULL};
    mlp_status s;
    json_t *cfg = config_parse(call, config, known, &s);
    if (!cfg) return s;
    double max_items, slo, q, safety, alpha, utilization, headroom, pack, budget, shed;
    if ((s = config_number(call, cfg, "max_batch_items", 1, 1, 65536, &max_items)) != MLP_OK ||
        (s = config_number(call, cfg, "slo_ms", 100, 0.001, 3600e3, &slo)) != MLP_OK ||
        (s = config_number(call, cfg, "quantile", 0.95, 0.5, 1.0, &q)) != MLP_OK ||
        (s = config_number(call, cfg, "safety_ms", slo * 0.05, 0, 3600e3, &safety)) != MLP_OK ||
        (s = config_number(call, cfg, "rate_alpha", 0.25, 0.001, 1.0, &alpha)) != MLP_OK ||
        (s = config_number(call, cfg, "utilization", 0.7, 0, 1.0, &utilization)) != MLP_OK ||
        (s = config_number(call, cfg, "headroom", 8, 0, 100, &headroom)) != MLP_OK ||
        (s = config_number(call, cfg, "pack", 1, 0, 1, &pack)) != MLP_OK ||
        (s = config_number(call, cfg, "miss_budget", 0.005, 0, 1, &budget)) != MLP_OK ||
        (s = config_number(call, cfg, "shed", 0, 0, 1, &shed)) != MLP_OK) {
        json_decref(cfg);
        return s;
    }
    json_decref(cfg);
    adaptive_policy *p = calloc(1, sizeof *p);
    if (!p) return fail(call, MLP_ERR_NOMEM, "out of memory");
    p->max_items = (uint32_t)max_items;
    p->quantile = q;
    p->safety_ns = (int64_t)(safety * 1e6);
    p->rate_alpha = alpha;
    p->utilization = utilization;
    p->headroom = headroom;
    p->pack = pack != 0;
    p->miss_budget = budget;
    p->shed = shed != 0;
    p->slo_ns = (int64_t)(slo * 1e6);
    p->last_arrival_ns = INT64_MIN;
    *out = p;
    return MLP_OK;
}

static double line_at(const latency_line *l, uint32_t n) {
    return l->a + l->b * n + l->margin;
}

/* The least-squares line over the ring plus the `quantile` of its residuals. */
static latency_line ring_line(const latency_ring *r, double quantile) {
    latency_line l;
    ring_fit(r, &l.a, &l.b);
    double residual[LAT_KEPT];
    for (uint32_t i = 0; i < r->kept; i++) residual[i] = r->at[i].ns - (l.a + l.b * r->at[i].n);
    l.margin = fmax(0, quantile_of(residual, r->kept, quantile));
    return l;
}

/* Refits L(n) = a + b n + margin over the kept batches. O(LAT_KEPT) per finished batch. */
static void adaptive_refit(adaptive_policy *p) {
    latency_line l = ring_line(&p->lat, p->quantile);
    p->a = l.a;
    p->b = l.b;
    p->margin = l.margin;
    p->have_data = true;
}

static double latency_of(const adaptive_policy *p, uint32_t n) {
    return p->a + p->b * n + p->margin;
}

static void adaptive_observe(void *instance, const mlp_batch_report *r) {
    adaptive_policy *p = instance;
    /* The batch is no longer out: forget the sent batch nearest to its dispatch time. */
    uint32_t nearest = p->out_count;
    for (uint32_t i = 0; i < p->out_count; i++) {
        if (nearest == p->out_count ||
            llabs(p->out[i].at - r->dispatched_ns) < llabs(p->out[nearest].at - r->dispatched_ns))
            nearest = i;
    }
    if (nearest < p->out_count) p->out[nearest] = p->out[--p->out_count];
    for (uint32_t i = 0; i < r->requests; i++) {
        double late = r->ok && r->finished_ns - r->arrival_ns[i] <= p->slo_ns ? 0.0 : 1.0;
        p->late_fraction += (late - p->late_fraction) / LATE_WINDOW;
    }
    if (!r->ok || r->items == 0) return;
    double ns = (double)(r->finished_ns - r->dispatched_ns);
    ring_add(&p->lat, r->items, ns);
    if (r->items > p->largest_seen) p->largest_seen = r->items;
    adaptive_refit(p);
    /* The service time: a fit over batches that were not outliers, so a backlog queued at the upstream
     * (replies twice as slow as predicted) does not pass for a slower model. Outliers that last 10 s
     * are believed: the ring restarts from them. */
    bool outlier = p->svc.kept > 0 && ns > 2 * (p->svc_a + p->svc_b * r->items) + 1e6;
    if (!outlier) {
        ring_add(&p->svc, r->items, ns);
        p->outliers_since = 0;
    } else if (!p->outliers_since) {
        p->outliers_since = r->finished_ns;
    } else if (r->finished_ns - p->outliers_since > 10000000000LL) {
        p->svc = p->lat;
        p->outliers_since = 0;
    }
    p->svc_line = ring_line(&p->svc, p->quantile);
    p->svc_a = p->svc_line.a;
    p->svc_b = p->svc_line.b;
}

/* Items per nanosecond expected from now on, from a mean gap; 0 when nothing is known. */
static double rate_from(const adaptive_policy *p, double mean_gap, int64_t now) {
    if (mean_gap <= 0) return 0;
    double quiet = (double)(now - p->last_arrival_ns);
    return p->items_per_request / (quiet > mean_gap ? quiet : mean_gap);
}

static double rate_at(const adaptive_policy *p, int64_t now) {
    return rate_from(p, p->gap_ns, now);
}

static void note_arrivals(adaptive_policy *p, const mlp_policy_input *in) {
    /* Requests newer than the last one seen sit at the tail; take them oldest first. */
    uint32_t first_new = in->queue_len;
    while (first_new > 0 && mlp_queue_at(in, first_new - 1)->arrival_ns > p->last_arrival_ns) first_new--;
    for (uint32_t i = first_new; i < in->queue_len; i++) {
        const mlp_queued_request *r = mlp_queue_at(in, i);
        double a = p->rate_alpha;
        if (p->last_arrival_ns != INT64_MIN) {
            double gap = (double)(r->arrival_ns - p->last_arrival_ns);
            if (gap < 1000) gap = 1000; /* simultaneous arrivals: 1 us apart */
            p->gap_ns = p->gap_ns > 0 ? a * gap + (1 - a) * p->gap_ns : gap;
            p->steady_gap_ns = p->steady_gap_ns > 0 ? STEADY_ALPHA * gap + (1 - STEADY_ALPHA) * p->steady_gap_ns : gap;
            p->items_per_request = a * r->items + (1 - a) * p->items_per_request;
        } else {
            p->items_per_request = r->items;
        }
        p->last_arrival_ns = r->arrival_ns;
    }
}

/* The in-flight batches this policy knows of, made to agree with the host's count: batches reported
 * while the policy was not looking are dropped oldest first, ones the host sent on its own are
 * entered as sent now with a full batch (pessimistic). */
static void reconcile_out(adaptive_policy *p, const mlp_policy_input *in, uint32_t B) {
    while (p->out_count > in->inflight_batches) {
        uint32_t oldest = 0;
        for (uint32_t i = 1; i < p->out_count; i++)
            if (p->out[i].at < p->out[oldest].at) oldest = i;
        p->out[oldest] = p->out[--p->out_count];
    }
    while (p->out_count < in->inflight_batches && p->out_count < OUT_KEPT) {
        p->out[p->out_count].at = in->now_ns;
        p->out[p->out_count++].items = B;
    }
}

/* Packing: whether every queued request still meets its deadline (less the safety) if nothing more is
 * sent until an in-flight batch finishes, the queue then going in batches of up to B, each on the slot
 * that frees first, with the arrivals expected meanwhile joining the last batch. If so, *recheck is
 * when that stops being true should the in-flight batches run late. An autoscaler that counts
 * in-flight requests (Knative's KPA, concurrency target 1) pays a replica for every batch out at
 * once, so a second one goes only when waiting for the first would miss a deadline. */
static bool queue_fits_in_flight(adaptive_policy *p, const mlp_policy_input *in, uint32_t B, double rate,
                                 int64_t *recheck) {
    double now = (double)in->now_ns;
    double slot[OUT_KEPT];
    uint32_t k = p->out_count;
    double first = INFINITY;
    for (uint32_t i = 0; i < k; i++) {
        slot[i] = fmax(now, (double)p->out[i].at + p->a + p->b * p->out[i].items);
        first = fmin(first, slot[i]);
    }
    if (k == 0) return false;
    double least_slack = INFINITY;
    for (uint32_t i = 0; i < in->queue_len;) {
        double items = 0;
        int64_t deadline = INT64_MAX;
        uint32_t j = i;
        for (; j < in->queue_len; j++) {
            const mlp_queued_request *r = mlp_queue_at(in, j);
            if (items > 0 && items + r->items > B) break;
            items += r->items;
            if (r->deadline_ns < deadline) deadline = r->deadline_ns;
        }
        if (j == in->queue_len) items = fmin(B, items + rate * (first - now));
        uint32_t s = 0;
        for (uint32_t m = 1; m < k; m++)
            if (slot[m] < slot[s]) s = m;
        slot[s] += latency_of(p, (uint32_t)ceil(items));
        double slack = (double)deadline - slot[s];
        if (slack < 0) return false;
        least_slack = fmin(least_slack, slack);
        i = j;
    }
    *recheck = (int64_t)fmin(first + least_slack, 9e18);
    return true;
}

static mlp_status adaptive_choose(adaptive_policy *p, const mlp_policy_input *in, mlp_policy_decision *out) {
    if (in->queue_len == 0) {
        out->action = MLP_ACTION_WAIT;
        out->wake_at_ns = MLP_WAKE_NEVER;
        return MLP_OK;
    }
    uint32_t B = in->max_batch_items < p->max_items ? in->max_batch_items : p->max_items;
    /* Sizes far beyond what has been measured are guesses: grow at most to twice the largest seen,
     * and while still learning keep one batch out at a time, so a cold start does not flood the
     * upstream with small batches (which, under an autoscaler, buys replicas). */
    bool learning = p->largest_seen < B;
    if (learning && p->have_data && 2 * p->largest_seen < B) B = 2 * p->largest_seen;
    uint32_t n = in->queued_items;
    if (p->headroom > 0 && p->have_data && in->inflight_batches > 0) {
        /* Full batches need c_full = rate x L(B) / B of them in flight; more than that (with headroom)
         * only wait at the upstream, where an autoscaler counts them as demand and buys replicas. */
        double c_full = rate_from(p, p->steady_gap_ns, in->now_ns) * (p->svc_a + p->svc_b * B) / B;
        double cap = ceil(c_full * p->headroom) + 1;
        if ((double)in->inflight_batches >= cap) {
            out->action = MLP_ACTION_WAIT;
            out->wake_at_ns = MLP_WAKE_NEVER;
            return MLP_OK;
        }
    }
    if (p->shed && p->have_data) {
        /* Requests that would be late even in a batch sent now: answering them late only delays the
         * ones behind them, so they are shed (the model is configured to allow it). */
        double soonest = (double)in->now_ns + p->svc_a + p->svc_b * (n < B ? n : B);
        uint32_t k = 0;
        for (uint32_t i = 0; i < in->queue_len; i++) {
            if ((double)mlp_queue_at(in, i)->deadline_ns < soonest) out->shed_indices[k++] = i;
        }
        if (k > 0) {
            for (uint32_t i = 0; i < k; i++) p->late_fraction += (1.0 - p->late_fraction) / LATE_WINDOW;
            out->action = MLP_ACTION_SHED;
            out->shed_count = k;
            const char *why = "the request can no longer meet its deadline";
            out->reason.ptr = (const uint8_t *)why;
            out->reason.len = strlen(why);
            return MLP_OK;
        }
    }
    int64_t recheck;
    reconcile_out(p, in, B);
    if (p->pack && p->have_data && in->inflight_batches > 0) {
        if (queue_fits_in_flight(p, in, B, rate_at(p, in->now_ns), &recheck)) {
            out->action = MLP_ACTION_WAIT;
            out->wake_at_ns = recheck;
            return MLP_OK;
        }
        if (p->shed && p->late_fraction < p->miss_budget) {
            /* Some would be late, but the budget allows it: they will be shed when they can no
             * longer make it, where a batch added now would only queue behind the in-flight ones
             * until the autoscaler buys a replica, and then keep it for a minute. Without shedding
             * the late ones would be served late and delay everyone behind them, so no budget. */
            out->action = MLP_ACTION_WAIT;
            out->wake_at_ns = MLP_WAKE_NEVER;
            return MLP_OK;
        }
    }
    out->action = MLP_ACTION_DISPATCH;
    out->dispatch_items = n < B ? n : B;
    set_dispatch_reason(out, MLP_DISPATCH_FULL);
    if (n >= B && !(learning && in->inflight_batches > 0)) return MLP_OK; /* a full batch */
    set_dispatch_reason(out, MLP_DISPATCH_DEADLINE);                      /* below: waiting longer would be late */
    if (n >= B) {
        out->action = MLP_ACTION_WAIT; /* the batch out now will ask again when it finishes */
        out->wake_at_ns = MLP_WAKE_NEVER;
        return MLP_OK;
    }

    int64_t deadline = INT64_MAX;
    for (uint32_t i = 0; i < in->queue_len; i++) {
        int64_t d = mlp_queue_at(in, i)->deadline_ns;
        if (d < deadline) deadline = d;
    }
    int64_t now = in->now_ns;
    if (!p->have_data) {
        /* Nothing learnt yet: send one batch to learn from, and while it is out gather the rest
         * until half the time to the tightest deadline is gone (sending each request alone before
         * the first answer would flood a cold upstream). */
        if (in->inflight_batches == 0) {
            set_dispatch_reason(out, MLP_DISPATCH_PROBE);
            return MLP_OK;
        }
        int64_t half = deadline - (deadline - mlp_queue_at(in, 0)->arrival_ns) / 2;
        if (now >= half) return MLP_OK;
        out->action = MLP_ACTION_WAIT;
        out->wake_at_ns = half;
        return MLP_OK;
    }
    /* With nothing in flight nothing of ours waits at the upstream: predict from the service time
     * (the batches that did not queue behind others), so replies slowed by a backlog that has
     * drained do not keep the policy believing the upstream is overloaded. With batches in flight,
     * from every batch, queueing included. */
    const latency_line all = {p->a, p->b, p->margin};
    const latency_line *L = in->inflight_batches == 0 && p->svc.kept > 0 ? &p->svc_line : &all;
    double rate = rate_at(p, now);
    if (deadline <= now) return MLP_OK;
    /* The largest batch worth waiting for: gathering n' items takes (n' - n) / rate and sending them
     * L(n') = a + b n' + margin, and both must fit before the deadline (less the safety). */
    double slack = (double)(deadline - now) - L->a - L->margin - (double)p->safety_ns;
    uint32_t target = n;
    if (rate > 0 && slack > 0) {
        double per_item_wait = 1.0 / rate;
        double best = (slack + n * per_item_wait) / (per_item_wait + L->b);
        if (best > B) best = B;
        if (best > n) target = (uint32_t)best;
    }
    if (target > n && p->utilization > 0) {
        /* Batches in flight at a batch size m: c(m) = rate x L(m) / m. An autoscaler with a
         * concurrency target of one per replica pays for ceil(c / utilization) replicas, so well below
         * one replica, batches larger than the smallest with c <= utilization (the knee) only add
         * latency. Near the autoscaler's threshold the largest batch wins instead (bursts that smaller
         * batches let through buy replicas). Between the two the target slides continuously from the
         * knee to the largest batch as c(target) goes from utilization/4 to utilization/2, so a small
         * change in the measured rate or latency makes a small change in the batch. */
        double c_target = rate * line_at(L, target) / target;
        double lo = p->utilization / 4, hi = p->utilization / 2;
        double w = c_target <= lo ? 1.0 : c_target >= hi ? 0.0 : (hi - c_target) / (hi - lo);
        if (w > 0) {
            uint32_t knee = target;
            for (uint32_t m = n; m < target; m++) {
                if (m > 0 && rate * line_at(L, m) / m <= p->utilization) {
                    knee = m;
                    break;
                }
            }
            target = (uint32_t)lround((double)target - w * (double)(target - knee));
        }
    }
    if (target > n) {
        int64_t latest = deadline - (int64_t)line_at(L, target) - p->safety_ns;
        if (latest > now) {
            /* Waiting that is expected to bring less than one more item only adds latency. */
            if (rate * (double)(latest - now) < 1.0) {
                set_dispatch_reason(out, MLP_DISPATCH_NO_GAIN);
                return MLP_OK;
            }
            out->action = MLP_ACTION_WAIT;
            out->wake_at_ns = latest;
            return MLP_OK;
        }
    }
    if (now + (int64_t)line_at(L, n) + p->safety_ns <= deadline) return MLP_OK;
    /* Overloaded: gather a full batch rather than add small ones to the upstream's queue. */
    if (rate <= 0) {
        set_dispatch_reason(out, MLP_DISPATCH_NO_GAIN);
        return MLP_OK;
    }
    int64_t full = now + (int64_t)((B - n) / rate);
    out->action = MLP_ACTION_WAIT;
    out->wake_at_ns = full < deadline ? full : deadline;
    return MLP_OK;
}

static mlp_status adaptive_decide(void *instance, mlp_call *call, const mlp_policy_input *in,
                                  mlp_policy_decision *out) {
    (void)call;
    adaptive_policy *p = instance;
    note_arrivals(p, in);
    mlp_status s = adaptive_choose(p, in, out);
    if (s == MLP_OK) select_by_priority(in, out);
    if (s == MLP_OK && out->action == MLP_ACTION_DISPATCH && p->out_count < OUT_KEPT) {
        uint32_t items = out->dispatch_items < in->queued_items ? out->dispatch_items : in->queued_items;
        p->out[p->out_count].at = in->now_ns;
        p->out[p->out_count++].items = items;
    }
    return s;
}

static const mlp_policy_vtable k_adaptive = {
    .struct_size = sizeof(mlp_policy_vtable),
    .create = adaptive_create,
    .destroy = destroy_free,
    .decide = adaptive_decide,
    .observe = adaptive_observe,
};

/* ---------------------------------------------------------------------------------------------
 * Registration.
 * ------------------------------------------------------------------------------------------- */
static const mlp_component k_none_c = {
    .struct_size = sizeof(mlp_component),
    .kind = MLP_KIND_POLICY,
    .name = "none",
    .description = "no batching: every request is sent alone",
    .vtable = &k_none,
};
static const mlp_component k_static_c = {
    .struct_size = sizeof(mlp_component),
    .kind = MLP_KIND_POLICY,
    .name = "static",
    .description = "dispatch at batch_items or after max_delay_ms",
    .vtable = &k_static,
};
static const mlp_component k_adaptive_c = {
    .struct_size = sizeof(mlp_component),
    .kind = MLP_KIND_POLICY,
    .name = "adaptive-sla",
    .description = "largest batches that meet every deadline, from a learnt latency quantile",
    .vtable = &k_adaptive,
};
static const mlp_component k_mlproxy_aimd_c = {
    .struct_size = sizeof(mlp_component),
    .kind = MLP_KIND_POLICY,
    .name = "mlproxy-aimd",
    .description = "the research system's buffer size B with AIMD every 30 s and a p95-based timer",
    .vtable = &mlp_mlproxy_aimd_policy,
};
static const mlp_component k_cork_c = {
    .struct_size = sizeof(mlp_component),
    .kind = MLP_KIND_POLICY,
    .name = "cork",
    .description = "BentoML's CORK dispatcher: linear latency fit, wait while the queue's wait pays off",
    .vtable = &mlp_cork_policy,
};
static const mlp_component k_aimd_c = {
    .struct_size = sizeof(mlp_component),
    .kind = MLP_KIND_POLICY,
    .name = "aimd",
    .description = "Clipper's AIMD on the batch size against the SLO, dispatching when a slot is free",
    .vtable = &mlp_aimd_policy,
};
static const mlp_component *const k_components[] = {&k_none_c,         &k_static_c, &k_adaptive_c,
                                                    &k_mlproxy_aimd_c, &k_cork_c,   &k_aimd_c};

MLP_EXPORT mlp_status mlp_plugin_init(const mlp_host_api *host, mlp_plugin_info *out) {
    mlp_status s = mlp_plugin_begin(host, out, "policies");
    if (s != MLP_OK) return s;
    out->version = MLP_BUNDLED_VERSION;
    out->description = "batching policies: adaptive-sla (the default), static, none and the baselines";
    g_host = host;
    out->components = k_components;
    out->component_count = sizeof k_components / sizeof k_components[0];
    return MLP_OK;
}
