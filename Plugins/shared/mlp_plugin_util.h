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

/* Bytes per element of a datatype; 0 for BYTES (variable) and unknown values. The one table the
 * bundled plugins use (the host's is DataType.elementSize). */
static inline size_t mlp_dt_size(uint32_t dt) {
    switch (dt) {
    case MLP_DT_BOOL:
    case MLP_DT_UINT8:
    case MLP_DT_INT8: return 1;
    case MLP_DT_UINT16:
    case MLP_DT_INT16:
    case MLP_DT_FP16: return 2;
    case MLP_DT_UINT32:
    case MLP_DT_INT32:
    case MLP_DT_FP32: return 4;
    case MLP_DT_UINT64:
    case MLP_DT_INT64:
    case MLP_DT_FP64: return 8;
    default: return 0;
    }
}

#endif
