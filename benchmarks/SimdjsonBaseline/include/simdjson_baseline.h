/* The limit a JSON decoder can approach: simdjson's own parse of a text, every number converted. */
#ifndef SIMDJSON_BASELINE_H
#define SIMDJSON_BASELINE_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Parses `len` bytes of JSON with simdjson's DOM parser and adds up every number in it (so that the
 * parse and the number conversion both count); returns the sum, or NaN when the text is not JSON. */
double simdjson_baseline_sum(const char *text, size_t len);

#ifdef __cplusplus
}
#endif

#endif
