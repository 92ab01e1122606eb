/* The limits a JSON codec can approach: simdjson's own parse of a text, every number converted, and
 * std::to_chars writing every float in its shortest form. */
#ifndef SIMDJSON_BASELINE_H
#define SIMDJSON_BASELINE_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Parses `len` bytes of JSON with simdjson's DOM parser and adds up every number in it (so that the
 * parse and the number conversion both count); returns the sum, or NaN when the text is not JSON. */
double simdjson_baseline_sum(const char *text, size_t len);

/* Writes `count` floats from `values` into `out` (at least 16 * count bytes), each in its shortest
 * round-trip form (std::to_chars) followed by a comma; returns the bytes written. */
size_t to_chars_baseline(const float *values, size_t count, char *out);

#ifdef __cplusplus
}
#endif

#endif
