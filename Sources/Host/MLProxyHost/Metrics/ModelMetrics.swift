import NIOConcurrencyHelpers

/// A fixed-bucket histogram in Prometheus' cumulative form.
struct Histogram {
    let bounds: [Double]
    var counts: [UInt64]
    var sum = 0.0
    var count: UInt64 = 0

    init(bounds: [Double]) {
        self.bounds = bounds
        counts = Array(repeating: 0, count: bounds.count)
    }

    mutating func observe(_ v: Double) {
        for (i, b) in bounds.enumerated() where v <= b { counts[i] += 1 }
        sum += v
        count += 1
    }

    func render(_ name: String, labels: String, into out: inout String) {
        for (b, c) in zip(bounds, counts) { out += "\(name)_bucket{\(labels),le=\"\(b)\"} \(c)\n" }
        out +=
            "\(name)_bucket{\(labels),le=\"+Inf\"} \(count)\n\(name)_sum{\(labels)} "
            + "\(sum)\n\(name)_count{\(labels)} \(count)\n"
    }
}

/// One model's counters and histograms, safe to update from any event loop. Rendered in the
/// Prometheus text format at GET /metrics (`ProxyRuntime`).
public final class ModelMetrics: @unchecked Sendable {
    private let lock = NIOLock()
    // Guarded by `lock`.
    private var responses: [Int: UInt64] = [:]
    private var rejected: [String: UInt64] = [:]
    private var batches: UInt64 = 0
    private var batchItems = Histogram(bounds: [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024])
    private var queueSeconds = Histogram(bounds: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5])
    private var upstreamSeconds = Histogram(bounds: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5])
    private var upstreamFailures: UInt64 = 0
    private var splits: UInt64 = 0
    private var isolatedBatches: UInt64 = 0
    private var retries: UInt64 = 0
    private var failedByCause: [String: UInt64] = [:]
    private var policyFailures: [String: UInt64] = [:]
    private var dispatchReasons: [String: UInt64] = [:]
    private var up = true

    public init() {}

    /// Every series `render` writes: name, type and HELP text, written once per scrape.
    static let series: [(name: String, type: String, help: String)] = [
        ("mlproxy_responses_total", "counter", "Inference responses by HTTP status."),
        (
            "mlproxy_rejected_total", "counter",
            "Requests answered without reaching the model: by reason (queue_full, invalid, unsupported, "
                + "signature, unavailable, shed, deadline)."
        ),
        ("mlproxy_batches_total", "counter", "Upstream requests (batches) sent."),
        (
            "mlproxy_batches_by_reason_total", "counter",
            "Batches the queue released, by why they left then: the policy's reason (full, deadline, timer, "
                + "no-gain, probe, priority, other, or policy when it gave none) or the host's (host-late, "
                + "host-policy-failed)."
        ),
        ("mlproxy_upstream_failures_total", "counter", "Batches whose upstream request failed."),
        (
            "mlproxy_split_batches_total", "counter",
            "Batches the model server rejected and the proxy split to isolate the cause."
        ),
        (
            "mlproxy_batch_splits_total", "counter",
            "Splits made while isolating failures (each sends two smaller upstream requests)."
        ),
        (
            "mlproxy_upstream_retries_total", "counter",
            "Upstream requests sent again after a reused connection was lost before the reply."
        ),
        (
            "mlproxy_upstream_up", "gauge",
            "Whether the model server can be reached (0 while the proxy answers 503 and reconnects)."
        ),
        (
            "mlproxy_failed_after_dispatch_total", "counter",
            "Requests that left the queue and got an error, by cause: own, batch, upstream."
        ),
        (
            "mlproxy_policy_failures_total", "counter",
            "Policy hooks that failed, by hook; each failed decide sends what is queued without the policy."
        ),
        ("mlproxy_batch_items", "histogram", "Items per batch."),
        ("mlproxy_queue_seconds", "histogram", "Time requests waited in the proxy's queue."),
        ("mlproxy_upstream_seconds", "histogram", "Upstream latency per batch."),
        ("mlproxy_queued_requests", "gauge", "Requests waiting now."),
        ("mlproxy_inflight_batches", "gauge", "Batches at the model server now."),
    ]

    static var help: String { series.map { "# HELP \($0.name) \($0.help)\n# TYPE \($0.name) \($0.type)\n" }.joined() }

    func response(status: Int) { lock.withLock { responses[status, default: 0] += 1 } }
    func queued(nanos: Int64) { lock.withLock { queueSeconds.observe(Double(nanos) / 1e9) } }
    func rejected(reason: String, count: Int) { lock.withLock { rejected[reason, default: 0] += UInt64(count) } }

    /// A batch that failed at first; `splits`: how often it was split to isolate the cause.
    func isolation(splits: Int) {
        lock.withLock {
            if splits > 0 { isolatedBatches += 1 }
            self.splits += UInt64(splits)
        }
    }
    func retried() { lock.withLock { retries += 1 } }
    func failed(cause: FailureCause) { lock.withLock { failedByCause[cause.rawValue, default: 0] += 1 } }
    func upstreamUp(_ isUp: Bool) { lock.withLock { up = isUp } }
    func policyFailed(hook: String) { lock.withLock { policyFailures[hook, default: 0] += 1 } }
    func dispatched(reason: String) { lock.withLock { dispatchReasons[reason, default: 0] += 1 } }

    func batch(items: Int, upstreamNanos: Int64, ok: Bool) {
        lock.withLock {
            batches += 1
            batchItems.observe(Double(items))
            upstreamSeconds.observe(Double(upstreamNanos) / 1e9)
            if !ok { upstreamFailures += 1 }
        }
    }

    func render(model: String, queued: Int, inflight: Int, into out: inout String) {
        let m = "model=\"\(model)\""
        lock.withLock {
            for (code, n) in responses.sorted(by: { $0.key < $1.key }) {
                out += "mlproxy_responses_total{\(m),code=\"\(code)\"} \(n)\n"
            }
            for (reason, n) in rejected.sorted(by: { $0.key < $1.key }) {
                out += "mlproxy_rejected_total{\(m),reason=\"\(reason)\"} \(n)\n"
            }
            out += "mlproxy_batches_total{\(m)} \(batches)\n"
            out += "mlproxy_upstream_failures_total{\(m)} \(upstreamFailures)\n"
            out += "mlproxy_split_batches_total{\(m)} \(isolatedBatches)\nmlproxy_batch_splits_total{\(m)} \(splits)\n"
            out += "mlproxy_upstream_retries_total{\(m)} \(retries)\nmlproxy_upstream_up{\(m)} \(up ? 1 : 0)\n"
            for hook in ["decide", "observe"] {
                out += "mlproxy_policy_failures_total{\(m),hook=\"\(hook)\"} \(policyFailures[hook, default: 0])\n"
            }
            for (reason, n) in dispatchReasons.sorted(by: { $0.key < $1.key }) {
                out += "mlproxy_batches_by_reason_total{\(m),reason=\"\(reason)\"} \(n)\n"
            }
            for (cause, n) in failedByCause.sorted(by: { $0.key < $1.key }) {
                out += "mlproxy_failed_after_dispatch_total{\(m),cause=\"\(cause)\"} \(n)\n"
            }
            batchItems.render("mlproxy_batch_items", labels: m, into: &out)
            queueSeconds.render("mlproxy_queue_seconds", labels: m, into: &out)
            upstreamSeconds.render("mlproxy_upstream_seconds", labels: m, into: &out)
        }
        out += "mlproxy_queued_requests{\(m)} \(queued)\nmlproxy_inflight_batches{\(m)} \(inflight)\n"
    }
}
