/* The bundled batching policies: none, static, adaptive-sla. Everything they export is mlp_plugin_init. */
#ifndef MLP_POLICIES_H
#define MLP_POLICIES_H

#include <mlproxy/mlproxy.h>

#endif
