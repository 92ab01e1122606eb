/* The bundled batching policies: `none`, `static` and `adaptive-sla` (the default).
 *
 * Pure functions of what the host passes in: no clock reads, no threads, no I/O. The same file runs in
 * the live proxy and in the simulator. */
#include "mlp_policies.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const mlp_host_api *g_host;

__attribute__((format(printf, 3, 4)))
static mlp_status fail(mlp_call *call, mlp_status status, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (n < 0) n = 0;
    if ((size_t)n >= sizeof msg) n = (int)sizeof msg - 1;
    if (g_host) g_host->set_error(call, msg, (size_t)n);
    return status;
}

/* Reads a number from the config object; `*found` tells whether it was there. Non-numbers fail. */
static mlp_status config_number(mlp_call *call, const json_t *cfg, const char *key, double dflt,
                                double min, double max, double *out) {
    const json_t *v = json_object_get(cfg, key);
    if (!v) { *out = dflt; return MLP_OK; }
    if (!json_is_number(v)) return fail(call, MLP_ERR_CONFIG, "policy parameter '%s' must be a number", key);
    double d = json_number_value(v);
    if (!(d >= min && d <= max))
        return fail(call, MLP_ERR_CONFIG, "policy parameter '%s' = %g is outside [%g, %g]", key, d, min, max);
    *out = d;
    return MLP_OK;
}

/* Parses the config and rejects keys the policy does not know, naming them. */
static json_t *config_parse(mlp_call *call, mlp_bytes text, const char *const *known, mlp_status *status) {
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
        for (const char *const *k = known; *k; k++) if (strcmp(*k, key) == 0) ok = true;
        if (!ok) {
            *status = fail(call, MLP_ERR_CONFIG, "unknown policy parameter '%s'", key);
            json_decref(cfg);
            return NULL;
        }
    }
    *status = MLP_OK;
    return cfg;
}

/* Host-supplied keys every policy accepts. */
#define HOST_KEYS "slo_ms", "max_batch_items", "max_inflight_batches"

static void destroy_free(void *instance) { free(instance); }

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

static mlp_status none_decide(void *instance, mlp_call *call, const mlp_policy_input *in,
                              mlp_policy_decision *out) {
    (void)instance; (void)call;
    if (in->queue_len == 0) {
        out->action = MLP_ACTION_WAIT;
        out->wake_at_ns = MLP_WAKE_NEVER;
        return MLP_OK;
    }
    out->action = MLP_ACTION_DISPATCH;
    out->dispatch_items = mlp_queue_at(in, 0)->items;
    return MLP_OK;
}

static const mlp_policy_vtable k_none = {
    .struct_size = sizeof(mlp_policy_vtable), .create = none_create, .destroy = destroy_free,
    .decide = none_decide, .observe = NULL,
};

/* ---------------------------------------------------------------------------------------------
 * static: dispatch at max items or when the oldest request has waited max_delay_ms (Triton's
 * max_queue_delay_microseconds, TF Serving's batch_timeout_micros).
 * ------------------------------------------------------------------------------------------- */
typedef struct static_policy {
    uint32_t max_items;
    int64_t max_delay_ns;
} static_policy;

static mlp_status static_create(mlp_call *call, mlp_bytes config, void **out) {
    static const char *const known[] = {HOST_KEYS, "max_delay_ms", "batch_items", NULL};
    mlp_status s;
    json_t *cfg = config_parse(call, config, known, &s);
    if (!cfg) return s;
    double host_max, items, delay;
    if ((s = config_number(call, cfg, "max_batch_items", 1, 1, 1 << 20, &host_max)) != MLP_OK ||
        (s = config_number(call, cfg, "batch_items", host_max, 1, host_max, &items)) != MLP_OK ||
        (s = config_number(call, cfg, "max_delay_ms", 10, 0, 3600e3, &delay)) != MLP_OK) {
        json_decref(cfg);
        return s;
    }
    json_decref(cfg);
    static_policy *p = calloc(1, sizeof *p);
    if (!p) return fail(call, MLP_ERR_NOMEM, "out of memory");
    p->max_items = (uint32_t)items;
    p->max_delay_ns = (int64_t)(delay * 1e6);
    *out = p;
    return MLP_OK;
}

static mlp_status static_decide(void *instance, mlp_call *call, const mlp_policy_input *in,
                                mlp_policy_decision *out) {
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
        return MLP_OK;
    }
    int64_t due = mlp_queue_at(in, 0)->arrival_ns + p->max_delay_ns;
    if (in->now_ns >= due) {
        out->action = MLP_ACTION_DISPATCH;
        out->dispatch_items = in->queued_items;
        return MLP_OK;
    }
    out->action = MLP_ACTION_WAIT;
    out->wake_at_ns = due;
    return MLP_OK;
}

static const mlp_policy_vtable k_static = {
    .struct_size = sizeof(mlp_policy_vtable), .create = static_create, .destroy = destroy_free,
    .decide = static_decide, .observe = NULL,
};

/* ---------------------------------------------------------------------------------------------
 * adaptive-sla: send the fewest, largest batches that still meet every queued request's deadline.
 *
 * It learns the upstream latency of each batch size online as a quantile (p95 by default) of the
 * last SAMPLES observations of that size, and turns the sizes it has seen into a nondecreasing curve
 * L(n) (linear between seen sizes, extrapolated above the largest by a least-squares slope). It
 * estimates the arrival rate from an exponentially weighted mean of the gaps between arrivals, updated
 * on every request (so a spike shows within a few requests, not after a 30 s window); the time since
 * the last arrival bounds the gap from below, so the estimate falls as soon as traffic stops.
 *
 * On every call: with n queued items and the tightest deadline d, the batch it would send if it
 * waited as long as possible holds about n_w = min(max, n + rate * (d - now)) items. It waits until
 * d - L(n_w) - safety unless that moment has come, the queue already fills a batch, or waiting is
 * expected to bring less than one more item (then waiting only adds latency).
 * ------------------------------------------------------------------------------------------- */
#define SAMPLES 16

typedef struct size_stats {
    double ring[SAMPLES];
    uint32_t count;  /* total observations, ring index = count % SAMPLES */
} size_stats;

typedef struct adaptive_policy {
    uint32_t max_items;
    double quantile;
    int64_t safety_ns;
    double rate_alpha;
    size_stats *stats;   /* max_items + 1 entries */
    double *curve_ns;    /* max_items + 1 entries; valid when have_data */
    bool have_data;
    int64_t last_arrival_ns;
    double gap_ns;       /* mean gap between arrivals; 0 until two have been seen */
    double items_per_request;
} adaptive_policy;

static mlp_status adaptive_create(mlp_call *call, mlp_bytes config, void **out) {
    static const char *const known[] = {HOST_KEYS, "quantile", "safety_ms", "rate_alpha", NULL};
    mlp_status s;
    json_t *cfg = config_parse(call, config, known, &s);
    if (!cfg) return s;
    double max_items, slo, q, safety, alpha;
    if ((s = config_number(call, cfg, "max_batch_items", 1, 1, 65536, &max_items)) != MLP_OK ||
        (s = config_number(call, cfg, "slo_ms", 100, 0.001, 3600e3, &slo)) != MLP_OK ||
        (s = config_number(call, cfg, "quantile", 0.95, 0.5, 1.0, &q)) != MLP_OK ||
        (s = config_number(call, cfg, "safety_ms", slo * 0.05, 0, 3600e3, &safety)) != MLP_OK ||
        (s = config_number(call, cfg, "rate_alpha", 0.25, 0.001, 1.0, &alpha)) != MLP_OK) {
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
    p->stats = calloc(p->max_items + 1, sizeof *p->stats);
    p->curve_ns = calloc(p->max_items + 1, sizeof *p->curve_ns);
    p->last_arrival_ns = INT64_MIN;
    if (!p->stats || !p->curve_ns) {
        free(p->stats);
        free(p->curve_ns);
        free(p);
        return fail(call, MLP_ERR_NOMEM, "out of memory");
    }
    *out = p;
    return MLP_OK;
}

static void adaptive_destroy(void *instance) {
    adaptive_policy *p = instance;
    if (!p) return;
    free(p->stats);
    free(p->curve_ns);
    free(p);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double stats_quantile(const size_stats *st, double q) {
    uint32_t n = st->count < SAMPLES ? st->count : SAMPLES;
    double tmp[SAMPLES];
    memcpy(tmp, st->ring, n * sizeof(double));
    qsort(tmp, n, sizeof(double), cmp_double);
    uint32_t idx = (uint32_t)ceil(q * n) - 1;
    if (idx >= n) idx = n - 1;
    return tmp[idx];
}

/* Rebuilds L(n) for every n from the per-size quantiles. O(max_items) per finished batch. */
static void rebuild_curve(adaptive_policy *p) {
    uint32_t B = p->max_items;
    double sx = 0, sy = 0, sxx = 0, sxy = 0;
    uint32_t points = 0, first = 0, last = 0;
    for (uint32_t n = 1; n <= B; n++) {
        if (!p->stats[n].count) { p->curve_ns[n] = NAN; continue; }
        double y = stats_quantile(&p->stats[n], p->quantile);
        p->curve_ns[n] = y;
        sx += n; sy += y; sxx += (double)n * n; sxy += (double)n * y;
        if (!first) first = n;
        last = n;
        points++;
    }
    if (!points) return;
    double slope;
    if (points >= 2 && (points * sxx - sx * sx) > 0) {
        slope = (points * sxy - sx * sy) / (points * sxx - sx * sx);
        if (slope < 0) slope = 0;
    } else {
        /* One size seen: assume half of its latency is per item, which is pessimistic and so makes
         * the next batches small enough to be safe while the curve is learnt. */
        slope = p->curve_ns[last] / (2.0 * last);
    }
    for (uint32_t n = 1; n < first; n++) p->curve_ns[n] = p->curve_ns[first];
    uint32_t prev = first;
    for (uint32_t n = first + 1; n <= last; n++) {
        if (isnan(p->curve_ns[n])) continue;
        for (uint32_t m = prev + 1; m < n; m++)
            p->curve_ns[m] = p->curve_ns[prev] + (p->curve_ns[n] - p->curve_ns[prev]) * (m - prev) / (n - prev);
        prev = n;
    }
    for (uint32_t n = last + 1; n <= B; n++) p->curve_ns[n] = p->curve_ns[last] + slope * (n - last);
    for (uint32_t n = 2; n <= B; n++)
        if (p->curve_ns[n] < p->curve_ns[n - 1]) p->curve_ns[n] = p->curve_ns[n - 1];
    p->have_data = true;
}

static void adaptive_observe(void *instance, const mlp_batch_report *r) {
    adaptive_policy *p = instance;
    if (!r->ok || r->items == 0) return;
    uint32_t n = r->items > p->max_items ? p->max_items : r->items;
    size_stats *st = &p->stats[n];
    st->ring[st->count % SAMPLES] = (double)(r->finished_ns - r->dispatched_ns);
    st->count++;
    rebuild_curve(p);
}

/* Items per nanosecond expected from now on; 0 when nothing is known. */
static double rate_at(const adaptive_policy *p, int64_t now) {
    if (p->gap_ns <= 0) return 0;
    double gap = p->gap_ns;
    double quiet = (double)(now - p->last_arrival_ns);
    if (quiet > gap) gap = quiet;
    return p->items_per_request / gap;
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
            p->items_per_request = a * r->items + (1 - a) * p->items_per_request;
        } else {
            p->items_per_request = r->items;
        }
        p->last_arrival_ns = r->arrival_ns;
    }
}

static mlp_status adaptive_decide(void *instance, mlp_call *call, const mlp_policy_input *in,
                                  mlp_policy_decision *out) {
    (void)call;
    adaptive_policy *p = instance;
    note_arrivals(p, in);
    if (in->queue_len == 0) {
        out->action = MLP_ACTION_WAIT;
        out->wake_at_ns = MLP_WAKE_NEVER;
        return MLP_OK;
    }
    uint32_t B = in->max_batch_items < p->max_items ? in->max_batch_items : p->max_items;
    uint32_t n = in->queued_items;
    out->action = MLP_ACTION_DISPATCH;
    out->dispatch_items = n < B ? n : B;
    if (n >= B) return MLP_OK;  /* a full batch */

    int64_t deadline = INT64_MAX;
    for (uint32_t i = 0; i < in->queue_len; i++) {
        int64_t d = mlp_queue_at(in, i)->deadline_ns;
        if (d < deadline) deadline = d;
    }
    if (!p->have_data) {
        /* Nothing learnt yet: send one batch to learn from, and while it is out gather the rest
         * until half the time to the tightest deadline is gone (sending each request alone before
         * the first answer would flood a cold upstream). */
        if (in->inflight_batches == 0) return MLP_OK;
        int64_t half = deadline - (deadline - mlp_queue_at(in, 0)->arrival_ns) / 2;
        if (in->now_ns >= half) return MLP_OK;
        out->action = MLP_ACTION_WAIT;
        out->wake_at_ns = half;
        out->dispatch_items = 0;
        return MLP_OK;
    }
    double rate = rate_at(p, in->now_ns);
    double horizon = (double)(deadline - in->now_ns);
    if (horizon <= 0) return MLP_OK;
    double expect = n + rate * horizon;
    uint32_t n_wait = expect >= B ? B : (uint32_t)expect;
    if (n_wait < n) n_wait = n;
    int64_t latest = deadline - (int64_t)p->curve_ns[n_wait] - p->safety_ns;
    if (latest <= in->now_ns) return MLP_OK;
    /* Waiting that is expected to bring less than one more item only adds latency. */
    if (rate * (double)(latest - in->now_ns) < 1.0) return MLP_OK;
    out->action = MLP_ACTION_WAIT;
    out->wake_at_ns = latest;
    out->dispatch_items = 0;
    return MLP_OK;
}

static const mlp_policy_vtable k_adaptive = {
    .struct_size = sizeof(mlp_policy_vtable), .create = adaptive_create, .destroy = adaptive_destroy,
    .decide = adaptive_decide, .observe = adaptive_observe,
};

/* ---------------------------------------------------------------------------------------------
 * Registration.
 * ------------------------------------------------------------------------------------------- */
static const mlp_component k_none_c = {
    .struct_size = sizeof(mlp_component), .kind = MLP_KIND_POLICY, .name = "none",
    .description = "no batching: every request is sent alone", .vtable = &k_none,
};
static const mlp_component k_static_c = {
    .struct_size = sizeof(mlp_component), .kind = MLP_KIND_POLICY, .name = "static",
    .description = "dispatch at batch_items or after max_delay_ms", .vtable = &k_static,
};
static const mlp_component k_adaptive_c = {
    .struct_size = sizeof(mlp_component), .kind = MLP_KIND_POLICY, .name = "adaptive-sla",
    .description = "largest batches that meet every deadline, from a learnt latency quantile",
    .vtable = &k_adaptive,
};
static const mlp_component *const k_components[] = {&k_none_c, &k_static_c, &k_adaptive_c};

MLP_EXPORT mlp_status mlp_plugin_init(const mlp_host_api *host, mlp_plugin_info *out) {
    mlp_status s = mlp_plugin_begin(host, out, "policies");
    if (s != MLP_OK) return s;
    g_host = host;
    out->components = k_components;
    out->component_count = 3;
    return MLP_OK;
}
