/// A queued request as a policy sees it: the scheduler's own type, so nothing here knows the C ABI.
/// `PluginPolicy` (PluginHost) copies these into the ABI's `mlp_queued_request` for C policies.
public struct QueuedRequest: Sendable, Equatable {
    /// Items in dim 0 of its inputs.
    public var items: Int
    public var arrival: Int64
    /// Arrival plus the model's SLO, or earlier when the client asked for a tighter timeout.
    public var deadline: Int64
    public var priority: Int32
    /// Requests with equal groups may share a batch (their batch keys are equal). Comparable only
    /// within one call: the queue numbers the keys it holds, and starts again once it is empty.
    public var batchGroup: UInt32

    public init(items: Int, arrival: Int64, deadline: Int64, priority: Int32, batchGroup: UInt32 = 0) {
        self.items = items
        self.arrival = arrival
        self.deadline = deadline
        self.priority = priority
        self.batchGroup = batchGroup
    }
}

/// Everything a policy is told when it is asked to decide.
public struct PolicyInput {
    public var now: Int64
    /// The queue, oldest first. Borrowed: valid only during the call.
    public var queue: UnsafeBufferPointer<QueuedRequest>
    public var queuedItems: Int
    public var inflight: Int
    public var limits: QueueLimits

    public init(
        now: Int64, queue: UnsafeBufferPointer<QueuedRequest>, queuedItems: Int, inflight: Int, limits: QueueLimits
    ) {
        self.now = now
        self.queue = queue
        self.queuedItems = queuedItems
        self.inflight = inflight
        self.limits = limits
    }
}

/// What a policy decided.
public enum PolicyDecision: Equatable, Sendable {
    case wait(until: Int64)
    /// Whole requests from the head of the queue, up to `items`.
    case dispatch(items: Int, reason: PolicyReason = .unspecified)
    /// Exactly these queue indices, in this order (ABI 1.2). A selection the queue refuses (an index
    /// out of range or twice, mixed batch groups, over max_batch_items) counts as a policy failure and
    /// `items` go from the head instead.
    case select(indices: [Int], items: Int, reason: PolicyReason = .unspecified)
    case shed(indices: [Int], reason: String)
}

/// Why a policy sent a batch when it did (ABI 1.2's `mlp_dispatch_reason`, same numbers), so each
/// batch can be explained: the admin batch log, a response header and a counter per reason.
public enum PolicyReason: UInt32, Sendable, CaseIterable {
    case unspecified = 0
    case full, deadline, timer, noGain, probe, priority
    /// A number this host does not know (a newer plugin's).
    case other = 0xFFFF_FFFF

    public init(code: UInt32) { self = PolicyReason(rawValue: code) ?? .other }

    /// The name the header documents for it (`mlp_dispatch_reason`'s brackets).
    public var label: String {
        switch self {
        case .unspecified: return "policy"
        case .full: return "full"
        case .deadline: return "deadline"
        case .timer: return "timer"
        case .noGain: return "no-gain"
        case .probe: return "probe"
        case .priority: return "priority"
        case .other: return "other"
        }
    }
}

/// A policy could not decide. The queue falls back to sending what is queued, so no request is
/// stranded, and says so in that dispatch's reason (`DispatchReason.policyFailed`).
public struct PolicyFailure: Error, Sendable, Equatable, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// A batching policy as the scheduler sees it. Implemented by plugin and foreign policies (and by
/// tests); called under the model's lock from any event loop, so calls are serialized, as the ABI
/// promises plugins.
public protocol BatchingPolicy: AnyObject {
    func decide(_ input: PolicyInput) throws(PolicyFailure) -> PolicyDecision
    /// `arrivals` holds each request's arrival time, in queue order.
    /// A failure is the host's to count and log; the batch it reports on is already answered.
    func observe(items: Int, arrivals: [Int64], ok: Bool, dispatched: Int64, finished: Int64) throws(PolicyFailure)
}
