/* libffi for Swift 6: its ffi_type_* descriptors are mutable C globals, which strict concurrency
 * rejects, so they are reached through these accessors. */
#ifndef MLPROXY_CFFI_SHIM_H
#define MLPROXY_CFFI_SHIM_H

#include <ffi.h>

static inline ffi_type *mlp_ffi_type_double(void) {
    return &ffi_type_double;
}
static inline ffi_type *mlp_ffi_type_float(void) {
    return &ffi_type_float;
}
static inline ffi_type *mlp_ffi_type_sint32(void) {
    return &ffi_type_sint32;
}
static inline ffi_type *mlp_ffi_type_sint64(void) {
    return &ffi_type_sint64;
}
static inline ffi_abi mlp_ffi_default_abi(void) {
    return FFI_DEFAULT_ABI;
}

#endif
