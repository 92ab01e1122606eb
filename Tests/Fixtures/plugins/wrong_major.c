/* A plugin built against a hypothetical ABI 2.0: the host must refuse it, naming both versions. */
#include <mlproxy/mlproxy.h>

MLP_EXPORT mlp_status mlp_plugin_init(const mlp_host_api *host, mlp_plugin_info *out) {
    (void)host;
    out->struct_size = sizeof *out;
    out->abi_major = MLP_ABI_MAJOR + 1;
    out->abi_minor = 0;
    out->plugin_name = "wrong-major";
    out->components = 0;
    out->component_count = 0;
    return MLP_OK;
}
