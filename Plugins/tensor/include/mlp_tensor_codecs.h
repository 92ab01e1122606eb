/* The tensor codecs plugin: `npy` (NumPy .npy bodies in and out). Internal; the library exports
 * mlp_plugin_init (Tests/Fuzz drives the codec through it). */
#ifndef MLP_TENSOR_CODECS_H
#define MLP_TENSOR_CODECS_H

#include <mlproxy/mlproxy.h>

#endif
