/* Base64 decoding for the bundled C plugins (compiled into each that needs it; not part of the ABI). */
#ifndef MLP_BASE64_H
#define MLP_BASE64_H

#include <stddef.h>
#include <stdint.h>

static inline int mlp_b64_value(char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+' || c == '-') return 62;
    if (c == '/' || c == '_') return 63;
    return -1;
}

/* Decodes base64 (standard or URL alphabet, padding optional) into `out` (NULL to only measure).
 * Returns the decoded length, or -1 when the text is not base64. Whitespace is not skipped here. */
static inline long mlp_b64_decode(const char *s, size_t n, uint8_t *out) {
    while (n > 0 && s[n - 1] == '=') n--;
    if (n % 4 == 1) return -1;
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        int v = mlp_b64_value(s[i]);
        if (v < 0) return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (out) out[o] = (uint8_t)(acc >> bits);
            o++;
        }
    }
    return (long)o;
}

#endif
