/*
 * A batching policy as a plain C function of numbers: no MLProxy header, no plugin ABI. Any language
 * that can export a C symbol works the same way. Build and name it in a model's config:
 *
 *     cc -shared -fPIC -O2 -o samples/ffi-policy/libpick.so samples/ffi-policy/pick.c
 *
 *     foreign_policy:
 *       library: ./libpick.so        (in samples/ffi-policy/config.yaml: relative to its folder)
 *       signature: "int pick(double queued_items, double oldest_wait_ms, double slo_ms, double p95_ms)"
 *
 * The host binds the signature once with libffi and calls the function on every arrival and batch
 * completion (and every poll_ms while it waits). It returns the items to send now, or 0 to wait.
 */
int pick(double queued_items, double oldest_wait_ms, double slo_ms, double p95_ms);

int pick(double queued_items, double oldest_wait_ms, double slo_ms, double p95_ms) {
    if (queued_items >= 32) return 32;
    /* Send what is queued once the oldest request could not wait for another batch's latency. */
    if (oldest_wait_ms + 2 * p95_ms >= 0.8 * slo_ms) return (int)queued_items;
    return 0;
}
