/* Small helpers the bundled C plugins share (compiled into each; not part of the ABI). */
#ifndef MLP_PLUGIN_UTIL_H
#define MLP_PLUGIN_UTIL_H

#include <mlproxy/mlproxy.h>

#include <stdarg.h>
#include <stdio.h>

/* Formats a failure message into a bounded buffer, hands it to host->set_error (which copies it)
 * and returns `status`, so hooks can `return mlp_failv(...)`. */
static inline mlp_status mlp_failv(const mlp_host_api *host, mlp_call *call, mlp_status status, const char *fmt,
                                   va_list ap) {
    char msg[512];
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    if (n < 0) n = 0;
    if ((size_t)n >= sizeof msg) n = (int)sizeof msg - 1;
    if (host) host->set_error(call, msg, (size_t)n);
    return status;
}

/* Defines `fail(call, status, fmt, ...)` over mlp_failv with the plugin's `g_host`; `linkage` is
 * `static` or empty. One definition per plugin source that needs it. */
#define MLP_DEFINE_FAIL(linkage)                                                                                       \
    __attribute__((format(printf, 3, 4))) linkage mlp_status fail(mlp_call *call, mlp_status status, const char *fmt,  \
                                                                  ...) {                                               \
        va_list ap;                                                                                                    \
        va_start(ap, fmt);                                                                                             \
        mlp_status s = mlp_failv(g_host, call, status, fmt, ap);                                                       \
        va_end(ap);                                                                                                    \
        return s;                                                                                                      \
    }

/* The bundled plugins' version, as `mlproxy plugins` shows it: the project's, bumped with its
 * releases. No license is declared: the project has not chosen one yet. */
#define MLP_BUNDLED_VERSION "0.1.0"

#endif
