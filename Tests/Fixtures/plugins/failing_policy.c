/* A policy whose decide always fails: the host must still answer every request. */
#include <mlproxy/mlproxy.h>
#include <string.h>

static const mlp_host_api *g_host;

static mlp_status create(mlp_call *call, mlp_bytes config, void **out) {
    (void)call;
    (void)config;
    *out = 0;
    return MLP_OK;
}
static void destroy(void *p) {
    (void)p;
}
static mlp_status decide(void *p, mlp_call *call, const mlp_policy_input *in, mlp_policy_decision *out) {
    (void)p;
    (void)in;
    (void)out;
    static const char msg[] = "this policy always fails";
    g_host->set_error(call, msg, sizeof msg - 1);
    return MLP_ERR_INTERNAL;
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
    .name = "always-fails",
    .description = "test fixture",
    .vtable = &vt,
};
static const mlp_component *const comps[] = {&comp};

MLP_EXPORT mlp_status mlp_plugin_init(const mlp_host_api *host, mlp_plugin_info *out) {
    mlp_status s = mlp_plugin_begin(host, out, "failing-policy");
    if (s != MLP_OK) return s;
    g_host = host;
    out->components = comps;
    out->component_count = 1;
    return MLP_OK;
}
