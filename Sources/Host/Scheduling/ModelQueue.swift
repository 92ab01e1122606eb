import ProxyCore

/// Per-model limits the host enforces whatever the policy says.
public struct QueueLimits: Sendable, Equatable {
    public var maxBatchItems: Int
    public var maxQueuedItems: Int
    public var maxInflightBatches: Int
    public var sloNanos: Int64
    /// When true a request whose deadline passes in the queue is answered at once with a timeout;
    /// when false it is dispatched at the first free slot.
    public var rejectLate: Bool

    public init(maxBatchItems: Int, maxQueuedItems: Int, maxInflightBatches: Int, sloNanos: Int64, rejectLate: Bool) {
        self.maxBatchItems = maxBatchItems
        self.maxQueuedItems = maxQueuedItems
        self.maxInflightBatches = maxInflightBatches
        self.sloNanos = sloNanos
        self.rejectLate = rejectLate
    }
}

/// A request waiting in a model's queue.
public struct QueueEntry<Payload> {
    public let items: Int
    public let arrival: Int64
    public let deadline: Int64
    public let priority: Int32
    public let batchKey: String
    public let payload: Payload
}

/// What the scheduler wants done. The caller (`ModelService`, on whichever event loop made the queue
/// move, or a test with a manual clock) carries these out.
public enum QueueEffect<Payload> {
    case dispatch([QueueEntry<Payload>], DispatchReason)
    case reject([QueueEntry<Payload>], RequestError)
    case wake(at: Int64)
}

/// Why a batch left the queue when it did.
public enum DispatchReason: Sendable, Equatable {
    /// The policy decided to send it, for this reason.
    case policy(PolicyReason)
    /// A request's deadline had passed with nothing in flight: the host sent it, whatever the policy said.
    case lateRequest
    /// The policy failed to decide; the host sent what was queued without it.
    case policyFailed(PolicyFailure)

    /// A short label for logs and the admin batch log.
    public var label: String {
        switch self {
        case .policy(.unspecified): return "policy"
        case .policy(let r): return "policy: \(r.label)"
        case .lateRequest: return "deadline passed (host)"
        case .policyFailed(let f): return "policy failed (host): \(f.message)"
        }
    }

    /// One word for the reason, for a metric label and the mlproxy-batch-reason header: the policy's
    /// reason (`PolicyReason.label`), or what the host did without it.
    public var name: String {
        switch self {
        case .policy(let r): return r.label
        case .lateRequest: return "host-late"
        case .policyFailed: return "host-policy-failed"
        }
    }
}

/// The per-model queue and dispatcher: admission, asking the policy on every arrival, timer and
/// completion, enforcing limits and deadlines. Pure: time comes in, effects go out. Not thread-safe:
/// the live proxy calls it under its model's lock, from any event loop; the simulator from one thread.
public final class ModelQueue<Payload> {
    public let limits: QueueLimits
    public let policy: BatchingPolicy
    private var entries: [QueueEntry<Payload>] = []
    // The policy's view of the queue, kept in step with `entries` (same indices, from `head`).
    private var views: [QueuedRequest] = []
    private var head = 0
    // Batch keys numbered for policies (QueuedRequest.batchGroup); forgotten when the queue empties.
    private var groups: [String: UInt32] = [:]
    public private(set) var queuedItems = 0
    public private(set) var inflight = 0

    public init(limits: QueueLimits, policy: BatchingPolicy) {
        self.limits = limits
        self.policy = policy
    }

    public var count: Int { entries.count - head }

    /// Admits a request or says why not. Does not dispatch: call `pump` after.
    public func admit(
        items: Int, arrival: Int64, timeoutMicros: Int64?, priority: Int32,
        batchKey: String, payload: Payload
    ) -> RequestError? {
        if items > limits.maxBatchItems {
            return .invalid(
                "the request has \(items) items but this model's max_batch_items is \(limits.maxBatchItems)")
        }
        if queuedItems + items > limits.maxQueuedItems {
            return RequestError(
                .queueFull,
                "queue full: \(queuedItems) items are waiting and max_queued_items is "
                    + "\(limits.maxQueuedItems); retry later"
            )
        }
        var deadline = arrival + limits.sloNanos
        if let t = timeoutMicros, t >= 0 { deadline = min(deadline, arrival + t * 1000) }
        entries.append(
            QueueEntry(
                items: items, arrival: arrival, deadline: deadline, priority: priority,
                batchKey: batchKey, payload: payload))
        if count == 0 { groups.removeAll(keepingCapacity: true) }
        let group: UInt32
        if let g = groups[batchKey] {
            group = g
        } else {
            group = UInt32(truncatingIfNeeded: groups.count)
            groups[batchKey] = group
        }
        views.append(
            QueuedRequest(items: items, arrival: arrival, deadline: deadline, priority: priority, batchGroup: group))
        queuedItems += items
        return nil
    }

    /// Removes every queued request, oldest first (the model server is down: they are answered at once).
    public func removeAllQueued() -> [QueueEntry<Payload>] { removeAll { _ in true } }

    /// Records a finished batch and tells the policy (`arrivals`: each request's arrival time).
    /// Returns the policy's failure to observe it, for the caller to count and log.
    @discardableResult
    public func batchFinished(items: Int, arrivals: [Int64], ok: Bool, dispatched: Int64, finished: Int64)
        -> PolicyFailure?
    {
        inflight -= 1
        do {
            try policy.observe(items: items, arrivals: arrivals, ok: ok, dispatched: dispatched, finished: finished)
            return nil
        } catch {
            return error
        }
    }

    /// Asks the policy what to do now, as often as it keeps dispatching, and returns the effects.
    public func pump(now: Int64) -> [QueueEffect<Payload>] {
        var effects: [QueueEffect<Payload>] = []
        var rounds = 0
        while count > 0 {
            rounds += 1
            if limits.rejectLate {
                let late = removeAll { $0.deadline <= now }
                if !late.isEmpty {
                    effects.append(
                        .reject(
                            late,
                            RequestError(
                                .deadline,
                                "the request's deadline passed while it waited in the queue "
                                    + "(\(limits.sloNanos / 1_000_000) ms SLO)"
                            )))
                    continue
                }
            }
            guard count > 0 else { break }
            guard inflight < limits.maxInflightBatches else {
                // Completion will pump again; late requests need a timer only when they are rejected.
                if limits.rejectLate { effects.append(.wake(at: earliestDeadline())) }
                break
            }
            // A request past its deadline never idles: with nothing in flight it goes now, whatever the
            // policy says. While batches are in flight the policy may still pace it (sending a backlog
            // all at once only queues it at the upstream, where an autoscaler buys replicas for it);
            // every completion asks again, so it waits at most until the upstream is idle.
            let late = !limits.rejectLate && earliestDeadline() <= now
            if late && inflight == 0 {
                effects.append(.dispatch(take(items: limits.maxBatchItems, highestPriority: true), .lateRequest))
                continue
            }
            let decision = Result { () throws(PolicyFailure) -> PolicyDecision in
                try views.withUnsafeBufferPointer { all throws(PolicyFailure) in
                    try policy.decide(
                        PolicyInput(
                            now: now, queue: UnsafeBufferPointer(rebasing: all[head...]), queuedItems: queuedItems,
                            inflight: inflight, limits: limits))
                }
            }
            switch decision {
            case .failure(let e):
                // A failing policy must not strand requests: fall back to sending what is queued.
                effects.append(.dispatch(take(items: limits.maxBatchItems), .policyFailed(e)))
            case .success(.dispatch(let n, let reason)):
                effects.append(.dispatch(take(items: min(max(n, 1), limits.maxBatchItems)), .policy(reason)))
            case .success(.select(let indices, let n, let reason)):
                if let problem = refusal(of: indices) {
                    effects.append(
                        .dispatch(
                            take(items: min(max(n, 1), limits.maxBatchItems)),
                            .policyFailed(PolicyFailure("its selection was refused: \(problem)"))))
                } else {
                    effects.append(.dispatch(take(selected: indices), .policy(reason)))
                }
            case .success(.shed(let indices, let reason)):
                let set = Set(indices)
                var i = -1
                let shed = removeAll { _ in
                    i += 1
                    return set.contains(i)
                }
                if shed.isEmpty {
                    effects.append(.wake(at: min(earliestDeadline(), now + 1_000_000)))
                    return effects
                }
                effects.append(
                    .reject(
                        shed, RequestError(.shed, "shed: \(reason)")
                    ))
            case .success(.wait(let until)):
                if late {
                    // Batches are in flight (see above): their completions ask again.
                    if until != .max { effects.append(.wake(at: max(until, now + 100_000))) }
                    return effects
                }
                // Never past the earliest deadline: at that moment the host dispatches or rejects.
                var at = min(until, earliestDeadline())
                if at <= now { at = now + 100_000 }
                effects.append(.wake(at: at))
                return effects
            }
            if rounds > 10_000 { break }
        }
        return effects
    }

    private func earliestDeadline() -> Int64 {
        var d = Int64.max
        for i in head..<entries.count where entries[i].deadline < d { d = entries[i].deadline }
        return d
    }

    /// Why a policy's selection (indices from the head) cannot be a batch, or nil when it can.
    private func refusal(of indices: [Int]) -> String? {
        guard let first = indices.first else { return "it selected no requests" }
        var seen = Set<Int>()
        var items = 0
        for i in indices {
            guard i >= 0 && i < count else { return "index \(i) is out of range (\(count) queued)" }
            guard seen.insert(i).inserted else { return "index \(i) is selected twice" }
            if entries[head + i].batchKey != entries[head + first].batchKey {
                return
                    "requests \(first) and \(i) cannot share a batch (batch groups \(views[head + first].batchGroup) "
                    + "and \(views[head + i].batchGroup))"
            }
            items += entries[head + i].items
        }
        if items > limits.maxBatchItems {
            return "it selected \(items) items and max_batch_items is \(limits.maxBatchItems)"
        }
        return nil
    }

    /// Takes the selected requests (checked by `refusal`), in the order given.
    private func take(selected indices: [Int]) -> [QueueEntry<Payload>] {
        let batch = indices.map { entries[head + $0] }
        let chosen = Set(indices)
        var i = -1
        _ = removeAll { _ in
            i += 1
            return chosen.contains(i)
        }
        inflight += 1
        return batch
    }

    /// Takes the head request and then, in order, the requests batchable with it while they fit.
    /// Requests of another batch key stay queued for a batch of their own. With `highestPriority`
    /// (the host's own batch for late requests) the first request of the highest priority queued
    /// stands for the head, and only requests of that priority go: when not everyone can be served in
    /// time, the higher priorities are; with one priority this is the head.
    private func take(items limit: Int, highestPriority: Bool = false) -> [QueueEntry<Payload>] {
        var first = head
        if highestPriority {
            for i in head..<entries.count where entries[i].priority > entries[first].priority { first = i }
        }
        let key = entries[first].batchKey
        let priority = entries[first].priority
        var total = 0
        var stopped = false
        let taken = removeAll { e in
            if stopped || e.batchKey != key || (highestPriority && e.priority != priority) { return false }
            if total > 0 && total + e.items > limit {
                stopped = true
                return false
            }
            total += e.items
            return true
        }
        inflight += 1
        return taken
    }

    /// Removes the entries matching `predicate` (called once per entry, oldest first). Removing a
    /// prefix, the usual case, only moves `head`; the arrays are compacted once half is dead.
    private func removeAll(where predicate: (QueueEntry<Payload>) -> Bool) -> [QueueEntry<Payload>] {
        var removed: [QueueEntry<Payload>] = []
        var removedIndices: [Int] = []
        for i in head..<entries.count where predicate(entries[i]) {
            removed.append(entries[i])
            removedIndices.append(i)
        }
        guard let last = removedIndices.last else { return [] }
        queuedItems -= removed.reduce(0) { $0 + $1.items }
        if last == head + removedIndices.count - 1 {
            head += removedIndices.count
        } else {
            let drop = Set(removedIndices)
            let keep = (head..<entries.count).filter { !drop.contains($0) }
            entries = keep.map { entries[$0] }
            views = keep.map { views[$0] }
            head = 0
        }
        if head >= 32 && head * 2 >= entries.count {
            entries.removeFirst(head)
            views.removeFirst(head)
            head = 0
        }
        return removed
    }
}

extension QueueEntry: Sendable where Payload: Sendable {}
