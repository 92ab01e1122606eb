/* The image plugin: chain stages b64, image (JPEG/PNG decoding), resize, normalise and chw.
 * Everything here is internal; the library exports mlp_plugin_init and the fuzz entry point. */
#ifndef MLP_IMAGE_STAGES_H
#define MLP_IMAGE_STAGES_H

#include <stddef.h>
#include <stdint.h>

#include <mlproxy/mlproxy.h>

/* libFuzzer-ready: decodes `data` as one image with a host that discards tensors. Never crashes on
 * any input; returns the status the image stage would. */
MLP_EXPORT int mlp_image_fuzz_decode(const uint8_t *data, size_t size);

#endif
