import MLProxyPlugin

/// samples/c-policy/edf_priority.c in Swift, decision for decision: higher priority first, earliest
/// deadline first within a priority; a batch leaves when it holds `max_items` items or when the
/// earliest deadline in the queue, less `margin_ms`, has come.
struct EDFPriorityPolicy: BatchingPolicy {
    let maxItems: Int
    let margin: Int64

    init(config: PluginConfig, host: HostCall) throws {
        try config.allowOnly(["max_items", "margin_ms"])
        maxItems = try config.integer("max_items", default: 16, in: 1...4096)
        margin = Int64(try config.number("margin_ms", default: 5, in: 0...60000) * 1_000_000)
    }

    /// The order requests are served in: higher priority, then earlier deadline, then queue order.
    private static func before(_ queue: PolicyInput.Queue, _ i: Int, _ j: Int) -> Bool {
        let a = queue[i]
        let b = queue[j]
        if a.priority != b.priority { return a.priority > b.priority }
        if a.deadline != b.deadline { return a.deadline < b.deadline }
        return i < j
    }

    mutating func decide(_ input: PolicyInput, host: HostCall) throws -> PolicyDecision {
        let queue = input.queue
        guard !queue.isEmpty, input.inflightBatches < input.maxInflightBatches else { return .wait(until: nil) }
        let limit = min(maxItems, input.maxBatchItems)
        // Each pick is the best request after the previous one that fits the first pick's batch.
        var picked: [Int] = []
        var items = 0
        var group: UInt32 = 0
        while items < limit {
            var best: Int?
            for i in queue.indices {
                if let last = picked.last, !Self.before(queue, last, i) { continue }
                if !picked.isEmpty && (queue[i].batchGroup != group || items + queue[i].items > limit) { continue }
                if best == nil || Self.before(queue, i, best!) { best = i }
            }
            guard let best else { break }
            if picked.isEmpty { group = queue[best].batchGroup }
            picked.append(best)
            items += queue[best].items
        }
        let due = queue.map(\.deadline).min()! - margin
        if items >= limit || input.now >= due {
            return .select(picked, reason: items >= limit ? MLP_DISPATCH_FULL : MLP_DISPATCH_DEADLINE)
        }
        return .wait(until: due)
    }
}
