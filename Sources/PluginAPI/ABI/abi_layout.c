/* Compile-time checks of the ABI's layout rules: every struct that crosses the boundary starts with
 * its size, and the 1.0 layouts never move (a change here means a major version bump). */
#include <stddef.h>
#include "../../../include/mlproxy/mlproxy.h"

#define STARTS_WITH_SIZE(T) _Static_assert(offsetof(T, struct_size) == 0, #T " must start with struct_size")
STARTS_WITH_SIZE(mlp_tensor);
STARTS_WITH_SIZE(mlp_tensor_desc);
STARTS_WITH_SIZE(mlp_host_api);
STARTS_WITH_SIZE(mlp_queued_request);
STARTS_WITH_SIZE(mlp_policy_input);
STARTS_WITH_SIZE(mlp_policy_decision);
STARTS_WITH_SIZE(mlp_batch_report);
STARTS_WITH_SIZE(mlp_policy_vtable);
STARTS_WITH_SIZE(mlp_request_message);
STARTS_WITH_SIZE(mlp_response_view);
STARTS_WITH_SIZE(mlp_codec_vtable);
STARTS_WITH_SIZE(mlp_batch_view);
STARTS_WITH_SIZE(mlp_upstream_reply);
STARTS_WITH_SIZE(mlp_backend_vtable);
STARTS_WITH_SIZE(mlp_stage_input);
STARTS_WITH_SIZE(mlp_stage_vtable);
STARTS_WITH_SIZE(mlp_component);
STARTS_WITH_SIZE(mlp_plugin_info);

/* The first fields of the host table and of plugin info are what version negotiation reads. */
_Static_assert(offsetof(mlp_host_api, abi_major) == 4, "host api version moved");
_Static_assert(offsetof(mlp_plugin_info, abi_major) == 4, "plugin info version moved");

/* 1.1 only appended: the 1.0 host table ends where pass_tensor begins. */
_Static_assert(offsetof(mlp_host_api, pass_tensor) == offsetof(mlp_host_api, set_codec_state) + sizeof(void *),
               "ABI 1.1 fields must follow the 1.0 ones");
_Static_assert(offsetof(mlp_upstream_reply, headers) == offsetof(mlp_upstream_reply, reserved) + sizeof(uint32_t),
               "ABI 1.1 fields must follow the 1.0 ones");

/* 1.2 only appended (the frozen 1.0 and 1.1 headers in Tests/Fixtures prove the old ends load). */
_Static_assert(offsetof(mlp_policy_vtable, observe_call) == offsetof(mlp_policy_vtable, observe) + sizeof(void *),
               "ABI 1.2 fields must follow the 1.1 ones");
_Static_assert(offsetof(mlp_codec_vtable, destroy_call) == offsetof(mlp_codec_vtable, protocol) + sizeof(void *),
               "ABI 1.2 fields must follow the 1.1 ones");
_Static_assert(offsetof(mlp_stage_vtable, destroy_call) == offsetof(mlp_stage_vtable, apply) + sizeof(void *),
               "ABI 1.2 fields must follow the 1.1 ones");
_Static_assert(offsetof(mlp_backend_vtable, destroy_call) ==
                   offsetof(mlp_backend_vtable, decode_response) + sizeof(void *),
               "ABI 1.2 fields must follow the 1.1 ones");
_Static_assert(offsetof(mlp_policy_decision, dispatch_reason) ==
                   offsetof(mlp_policy_decision, select_count) + sizeof(uint32_t),
               "ABI 1.2 fields must follow the 1.1 ones");

/* Exposed so the host can log the header version it was compiled with. */
unsigned mlp_abi_header_version(void) {
    return (MLP_ABI_MAJOR << 16) | MLP_ABI_MINOR;
}
