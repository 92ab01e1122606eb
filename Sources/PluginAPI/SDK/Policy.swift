/// A batching policy in Swift. The host creates one instance per model and calls it one call at a
/// time (under the model's lock), so `decide` and `observe` may mutate it. Pure, as every plugin:
/// time arrives as `PolicyInput.now`; no clock reads, I/O or threads.
public protocol BatchingPolicy {
    /// `config`: the model's `policy_params` plus the host's keys (`ModelLimits`).
    init(config: PluginConfig, host: HostCall) throws
    /// What to do now (the host's reaction to each decision is in the header, at mlp_action).
    mutating func decide(_ input: PolicyInput, host: HostCall) throws -> PolicyDecision
    /// A batch finished. A thrown error is logged and counted; the batch is answered already.
    mutating func observe(_ report: BatchReport, host: HostCall) throws
}

extension BatchingPolicy {
    public mutating func observe(_ report: BatchReport, host: HostCall) throws {}
}

/// One waiting request as a policy sees it.
public struct QueuedRequest: Sendable, Equatable {
    public var items: Int
    public var arrival: Int64
    /// Arrival plus the model's SLO, or earlier when the client asked for a tighter timeout.
    public var deadline: Int64
    /// Higher first (a Triton level L of a model with n levels is n + 1 - L).
    public var priority: Int32
    /// Requests with equal groups may share a batch; comparable only within one call.
    public var batchGroup: UInt32
}

/// Everything a policy is told when asked to decide. Borrowed: valid during `decide` only.
public struct PolicyInput {
    let raw: UnsafePointer<mlp_policy_input>

    /// Monotonic nanoseconds (virtual time in the simulator).
    public var now: Int64 { raw.pointee.now_ns }
    public var queue: Queue { Queue(raw: raw) }
    public var queuedItems: Int { Int(raw.pointee.queued_items) }
    public var inflightBatches: Int { Int(raw.pointee.inflight_batches) }
    public var maxInflightBatches: Int { Int(raw.pointee.max_inflight_batches) }
    public var maxBatchItems: Int { Int(raw.pointee.max_batch_items) }
    /// The model's SLO in nanoseconds.
    public var slo: Int64 { raw.pointee.slo_ns }

    /// The queue, oldest first.
    public struct Queue: RandomAccessCollection {
        let raw: UnsafePointer<mlp_policy_input>
        public var startIndex: Int { 0 }
        public var endIndex: Int { Int(raw.pointee.queue_len) }
        public subscript(i: Int) -> QueuedRequest {
            precondition(i >= 0 && i < endIndex, "queue index out of range")
            let r = mlp_queue_at(raw, UInt32(i))!.pointee
            return QueuedRequest(
                items: Int(r.items), arrival: r.arrival_ns, deadline: r.deadline_ns, priority: r.priority,
                batchGroup: r.batch_group)
        }
    }
}

/// A policy's answer.
public enum PolicyDecision: Sendable, Equatable {
    /// Ask again at `until` at the latest (nil: only on the next arrival or completion).
    case wait(until: Int64?)
    /// Whole requests from the head of the queue, up to `items` (the host clamps to its limits).
    case dispatch(items: Int, reason: mlp_dispatch_reason = MLP_DISPATCH_UNSPECIFIED)
    /// Exactly these queue indices, in this order: one batch group, at most max_batch_items items.
    case select([Int], reason: mlp_dispatch_reason = MLP_DISPATCH_UNSPECIFIED)
    /// Answer these queue indices with 503 and `reason`.
    case shed([Int], reason: String)
}

/// A finished batch, for `observe`.
public struct BatchReport {
    let raw: UnsafePointer<mlp_batch_report>
    public var items: Int { Int(raw.pointee.items) }
    public var requests: Int { Int(raw.pointee.requests) }
    /// The model server answered with a usable result.
    public var ok: Bool { raw.pointee.ok != 0 }
    public var dispatched: Int64 { raw.pointee.dispatched_ns }
    public var finished: Int64 { raw.pointee.finished_ns }
    /// Each request's arrival, in queue order (finished - arrivals[i] is its response time).
    public var arrivals: UnsafeBufferPointer<Int64> {
        UnsafeBufferPointer(start: raw.pointee.arrival_ns, count: raw.pointee.arrival_ns == nil ? 0 : requests)
    }
}

/// A policy instance and what its last decision lent the host.
final class PolicyBox {
    var policy: any BatchingPolicy
    let host: UnsafePointer<mlp_host_api>
    // SHED's reason: the host reads it once decide has returned, so it lives here until the next one.
    private var reason = UnsafeMutableBufferPointer<UInt8>(start: nil, count: 0)

    init(_ policy: any BatchingPolicy, host: UnsafePointer<mlp_host_api>) {
        self.policy = policy
        self.host = host
    }

    deinit { reason.deallocate() }

    static func from(_ p: UnsafeMutableRawPointer?) -> PolicyBox {
        Unmanaged<PolicyBox>.fromOpaque(p!).takeUnretainedValue()
    }

    func decide(
        _ call: OpaquePointer?, _ input: UnsafePointer<mlp_policy_input>,
        _ out: UnsafeMutablePointer<mlp_policy_decision>
    ) -> mlp_status {
        let host = HostCall(self.host, call)
        return host.run("decide") {
            let decision = try policy.decide(PolicyInput(raw: input), host: host)
            try write(decision, queueLength: Int(input.pointee.queue_len), into: out)
        }
    }

    private func write(
        _ decision: PolicyDecision, queueLength: Int, into out: UnsafeMutablePointer<mlp_policy_decision>
    ) throws(PluginError) {
        func indices(_ list: [Int], into buffer: UnsafeMutablePointer<UInt32>?) throws(PluginError) -> UInt32 {
            guard list.count <= queueLength, let buffer else {
                throw .internal("\(list.count) queue indices for a queue of \(queueLength)")
            }
            for (k, i) in list.enumerated() {
                guard i >= 0 && i < queueLength else {
                    throw .internal("queue index \(i) is out of range (\(queueLength) queued)")
                }
                buffer[k] = UInt32(i)
            }
            return UInt32(list.count)
        }
        switch decision {
        case .wait(let until):
            out.pointee.action = MLP_ACTION_WAIT.rawValue
            out.pointee.wake_at_ns = until ?? .max  // MLP_WAKE_NEVER (INT64_MAX; a macro Swift cannot import)
        case .dispatch(let items, let reason):
            out.pointee.action = MLP_ACTION_DISPATCH.rawValue
            out.pointee.dispatch_items = UInt32(clamping: max(items, 0))
            out.pointee.dispatch_reason = reason.rawValue
        case .select(let list, let reason):
            guard !list.isEmpty else { throw .internal("a selection of no requests") }
            out.pointee.action = MLP_ACTION_DISPATCH.rawValue
            out.pointee.select_count = try indices(list, into: out.pointee.select_indices)
            out.pointee.dispatch_reason = reason.rawValue
        case .shed(let list, let why):
            out.pointee.action = MLP_ACTION_SHED.rawValue
            out.pointee.shed_count = try indices(list, into: out.pointee.shed_indices)
            reason.deallocate()
            reason = UnsafeMutableBufferPointer<UInt8>.allocate(capacity: why.utf8.count)
            _ = reason.initialize(from: why.utf8)
            out.pointee.reason = mlp_bytes(ptr: reason.baseAddress, len: reason.count)
        }
    }

    func observe(_ call: OpaquePointer?, _ report: UnsafePointer<mlp_batch_report>) -> mlp_status {
        let host = HostCall(self.host, call)
        return host.run("observe") { try policy.observe(BatchReport(raw: report), host: host) }
    }
}
