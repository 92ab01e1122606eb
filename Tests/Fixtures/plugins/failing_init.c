/* A plugin whose mlp_plugin_init fails before it fills anything in (e.g. a resource it needs is
 * missing): the host must say that init failed, not that the version is missing. */
#include <mlproxy/mlproxy.h>

MLP_EXPORT mlp_status mlp_plugin_init(const mlp_host_api *host, mlp_plugin_info *out) {
    (void)host;
    (void)out;
    return MLP_ERR_CONFIG;
}
