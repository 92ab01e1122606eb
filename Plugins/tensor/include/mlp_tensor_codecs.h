/* The tensor codecs plugin: `npy` (NumPy .npy bodies in and out). Internal; the library exports
 * mlp_plugin_init and the fuzz entry point. */
#ifndef MLP_TENSOR_CODECS_H
#define MLP_TENSOR_CODECS_H

#include <mlproxy/mlproxy.h>

/* libFuzzer-ready: decodes `data` as an .npy request with a host that discards tensors. */
MLP_EXPORT int mlp_npy_fuzz_decode_request(const uint8_t *data, size_t size);

#endif
