/* A plugin built against a newer minor of ABI 1 than the host's: the host must refuse it. */
#include <mlproxy/mlproxy.h>

MLP_EXPORT mlp_status mlp_plugin_init(const mlp_host_api *host, mlp_plugin_info *out) {
    mlp_status s = mlp_plugin_begin(host, out, "newer-minor");
    out->abi_minor = MLP_ABI_MINOR + 1;
    return s;
}
