/* The image plugin: chain stages b64, image (JPEG/PNG decoding), resize, normalise and chw.
 * Everything here is internal; the library exports mlp_plugin_init (Tests/Fuzz drives the stages
 * through it). */
#ifndef MLP_IMAGE_STAGES_H
#define MLP_IMAGE_STAGES_H

#include <stddef.h>
#include <stdint.h>

#include <mlproxy/mlproxy.h>

#endif
