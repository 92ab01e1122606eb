/* Helpers shared by the bundled policies: errors, configuration, latency statistics. */
#include "mlp_policies.h"
#include "mlp_plugin_util.h"

#include <math.h>
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
