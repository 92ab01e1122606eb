/* The Open Inference Protocol (v2) JSON plugin: the `json` codec (clients) and the `kserve-v2`
 * backend adapter (Triton, MLServer, KServe). Both directions share one JSON <-> tensor mapping. */
#ifndef MLP_V2_H
#define MLP_V2_H

#include <mlproxy/mlproxy.h>

/* libFuzzer-ready entry point: decodes `data` as a v2 request with a host that discards tensors.
 * Never crashes on any input; returns the status the codec would. */
int mlp_v2_fuzz_decode_request(const uint8_t *data, size_t size);

#endif
