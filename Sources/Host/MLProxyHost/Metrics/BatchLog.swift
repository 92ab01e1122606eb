import Foundation
import NIOConcurrencyHelpers

/// One batch as an operator wants to see it: when and why it left, how big it was, how long its
/// requests waited and the model server took, and how it ended.
public struct BatchRecord: Sendable, Equatable {
    public var sequence: Int
    /// Wall-clock time it left the queue, milliseconds since the Unix epoch.
    public var dispatchedAtMillis: Int64
    public var items: Int
    public var requests: Int
    /// Why it left when it did (`DispatchReason.label`).
    public var reason: String
    /// Queue time of its requests: the shortest, the median and the longest, in milliseconds.
    public var queueMillis: (min: Double, median: Double, max: Double)
    public var upstreamMillis: Double
    /// "ok", or how it failed (and whether it was split to isolate the cause).
    public var outcome: String

    public static func == (a: BatchRecord, b: BatchRecord) -> Bool {
        a.sequence == b.sequence && a.items == b.items && a.reason == b.reason && a.outcome == b.outcome
    }

    var json: [String: Any] {
        [
            "sequence": sequence, "dispatched_at_ms": Int(dispatchedAtMillis), "items": items, "requests": requests,
            "reason": reason, "upstream_ms": upstreamMillis, "outcome": outcome,
            "queue_ms": ["min": queueMillis.min, "median": queueMillis.median, "max": queueMillis.max],
        ]
    }
}

/// The last `capacity` batches of one model, newest last; safe from any event loop.
public final class BatchLog: Sendable {
    public let capacity: Int
    private let state = NIOLockedValueBox((next: 0, records: [BatchRecord]()))

    public init(capacity: Int = 256) { self.capacity = capacity }

    /// Records a batch; `queueNanos` holds each request's wait.
    func record(
        items: Int, queueNanos: [Int64], upstreamNanos: Int64, reason: DispatchReason, outcome: String
    ) {
        let waits = queueNanos.sorted().map { Double($0) / 1e6 }
        let millis = Int64(Date().timeIntervalSince1970 * 1000)
        state.withLockedValue { s in
            let r = BatchRecord(
                sequence: s.next, dispatchedAtMillis: millis - upstreamNanos / 1_000_000, items: items,
                requests: queueNanos.count, reason: reason.label,
                queueMillis: (waits.first ?? 0, nearestRank(waits, 0.5) ?? 0, waits.last ?? 0),
                upstreamMillis: Double(upstreamNanos) / 1e6, outcome: outcome)
            s.next += 1
            s.records.append(r)
            if s.records.count > capacity { s.records.removeFirst(s.records.count - capacity) }
        }
    }

    /// The last `limit` batches, oldest first.
    public func recent(_ limit: Int) -> [BatchRecord] {
        state.withLockedValue { Array($0.records.suffix(max(0, limit))) }
    }
}
