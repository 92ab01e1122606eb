import NIOConcurrencyHelpers
import NIOCore

/// How one upstream attempt at a batch (or at a part of one) failed.
public struct BatchFailure: Error, Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        /// A member's content may be the cause: the model server rejected the request with a 4xx or a
        /// 5xx other than 502/503/504, or the backend could not encode a member. Worth splitting.
        case content
        /// The model server itself failed: unreachable, timed out, answered 502/503/504, or sent a
        /// reply that cannot be read. Splitting would not help.
        case upstream
    }

    public var kind: Kind
    /// What a request that failed alone gets: the model server's status and whole story (its words
    /// included, which can only be about that request's data), or the proxy's error for I/O. Only
    /// that request and the log ever see its message.
    public var alone: RequestError
    /// The story without anything the model server wrote, for batch-mates: its words may quote
    /// another client's inputs.
    public var summary: String

    public init(kind: Kind, alone: RequestError, summary: String) {
        self.kind = kind
        self.alone = alone
        self.summary = summary
    }

    public var message: String { alone.message }

    /// A model server's answer with a status other than 200: content (worth splitting) when a
    /// request's data can cause it, an upstream failure for 502-504.
    public static func modelServer(status: Int, words: String, retryAfterSeconds: Int? = nil) -> BatchFailure {
        let kind = RequestError.Kind.fromModelServer(status: status)
        let alone = RequestError(kind, words, retryAfterSeconds: retryAfterSeconds)
        let summary = "the model server answered \(status)"
        if case .modelServer = kind { return BatchFailure(kind: .content, alone: alone, summary: summary) }
        return BatchFailure(kind: .upstream, alone: alone, summary: summary)
    }
}

/// The upstream batch a member was finally answered in (after any splits).
public struct BatchShape: Sendable, Equatable {
    public var items: Int
    public var requests: Int
    /// Upstream attempts this member took part in (1 unless its batch was split).
    public var attempts: Int
}

/// What one member of a batch gets.
public enum MemberOutcome<Output: Sendable>: Sendable {
    case answered(Output, BatchShape)
    case failed(RequestError, BatchShape)
}

/// Failure isolation for one batch: sends it and, when the model server rejects it for something a
/// member's content may have caused, splits it in halves and sends each again, recursively, so that
/// only the members that fail on their own get the model server's status and words; everyone else
/// gets its answer. At most ceil(log2 n) rounds of splits for n requests, and a member is never sent
/// again once its deadline has passed.
///
/// Time comes from `now` and every attempt's future may complete on any event loop, so the
/// bisection is tested with an `EmbeddedEventLoop` and a fake attempt. One instance per batch; its
/// counters are read after the future it returns completes.
public final class BatchIsolator<Member: Sendable, Output: Sendable>: @unchecked Sendable {
    public typealias Attempt = @Sendable ([Member]) -> EventLoopFuture<Result<[Output], BatchFailure>>
    public typealias Finish = @Sendable (Member, MemberOutcome<Output>) -> Void

    private let bisect: Bool
    private let now: @Sendable () -> Int64
    private let deadline: @Sendable (Member) -> Int64
    private let items: @Sendable (Member) -> Int
    private let attempt: Attempt
    private let finish: Finish
    // Updated from the attempts' callbacks; read once the returned future completes. A lock, because
    // the callbacks of two halves may run on different event loops.
    private let lock = NIOLockedValueBox(Counters())

    public struct Counters: Sendable, Equatable {
        /// Times a failed part was split in two.
        public var splits = 0
        /// Upstream attempts made, the first included.
        public var attempts = 0
        /// Members that failed on their own (the model server rejected them alone).
        public var culprits = 0
        /// Members answered with an error whose cause could not be isolated.
        public var unisolated = 0
        /// The first attempt's failure, for the log.
        public var firstFailure: BatchFailure?
        /// When the first attempt ended (`now`), for the policy's latency observations.
        public var firstFinished: Int64?
    }

    public var counters: Counters { lock.withLockedValue { $0 } }

    public init(
        bisect: Bool, now: @escaping @Sendable () -> Int64, deadline: @escaping @Sendable (Member) -> Int64,
        items: @escaping @Sendable (Member) -> Int, attempt: @escaping Attempt, finish: @escaping Finish
    ) {
        self.bisect = bisect
        self.now = now
        self.deadline = deadline
        self.items = items
        self.attempt = attempt
        self.finish = finish
    }

    /// Runs the batch; `finish` is called exactly once per member, as soon as its outcome is known.
    /// The future completes when every member is finished.
    public func run(_ members: [Member], on loop: EventLoop) -> EventLoopFuture<Void> {
        send(members, round: 1, on: loop)
    }

    /// Takes over a batch whose first attempt (made by the caller, so that a batch that succeeds
    /// costs nothing here) failed with `failure` at time `finished`.
    public func isolate(
        _ members: [Member], after failure: BatchFailure, finished: Int64,
        on loop: EventLoop
    ) -> EventLoopFuture<Void> {
        lock.withLockedValue {
            $0.attempts = 1
            $0.firstFailure = failure
            $0.firstFinished = finished
        }
        let shape = BatchShape(items: members.reduce(0) { $0 + items($1) }, requests: members.count, attempts: 1)
        return failed(members, failure, shape: shape, round: 1, on: loop)
    }

    private func send(_ members: [Member], round: Int, on loop: EventLoop) -> EventLoopFuture<Void> {
        lock.withLockedValue { $0.attempts += 1 }
        return attempt(members).flatMap { result -> EventLoopFuture<Void> in
            if round == 1 { self.lock.withLockedValue { $0.firstFinished = self.now() } }
            let shape = BatchShape(
                items: members.reduce(0) { $0 + self.items($1) }, requests: members.count, attempts: round)
            switch result {
            case .success(let outputs):
                for (m, o) in zip(members, outputs) { self.finish(m, .answered(o, shape)) }
                return loop.makeSucceededVoidFuture()
            case .failure(let f):
                self.lock.withLockedValue { if $0.firstFailure == nil { $0.firstFailure = f } }
                return self.failed(members, f, shape: shape, round: round, on: loop)
            }
        }
    }

    private func failed(
        _ members: [Member], _ f: BatchFailure, shape: BatchShape, round: Int,
        on loop: EventLoop
    ) -> EventLoopFuture<Void> {
        if members.count == 1 {
            // Alone, the failure is this member's own (or the model server's): its words are about it.
            if f.kind == .content { lock.withLockedValue { $0.culprits += 1 } }
            finish(members[0], .failed(f.alone, shape))
            return loop.makeSucceededVoidFuture()
        }
        guard f.kind == .content else {
            let e = RequestError(
                f.alone.kind, "the batch this request was in (\(members.count) requests) failed: \(f.summary)",
                retryAfterSeconds: f.alone.retryAfterSeconds)
            for m in members { finish(m, .failed(e, shape)) }
            return loop.makeSucceededVoidFuture()
        }
        guard bisect else {
            unisolated(members, f, shape, why: "isolate_failures is off for this model")
            return loop.makeSucceededVoidFuture()
        }
        let t = now()
        let expired = members.filter { deadline($0) <= t }
        let live = members.filter { deadline($0) > t }
        unisolated(expired, f, shape, why: "this request's deadline passed first")
        guard !live.isEmpty else { return loop.makeSucceededVoidFuture() }
        if live.count == 1 { return send(live, round: round + 1, on: loop) }
        lock.withLockedValue { $0.splits += 1 }
        // Halves by request count: ceil(log2 n) rounds reach single requests.
        let mid = live.count / 2
        let left = send(Array(live[..<mid]), round: round + 1, on: loop)
        let right = send(Array(live[mid...]), round: round + 1, on: loop)
        return left.and(right).map { _ in () }
    }

    private func unisolated(_ members: [Member], _ f: BatchFailure, _ shape: BatchShape, why: String) {
        guard !members.isEmpty else { return }
        lock.withLockedValue { $0.unisolated += members.count }
        let e = RequestError(
            .batchRejected,
            "the batch this request was in (\(shape.requests) requests) was rejected (\(f.summary)) and the "
                + "cause could not be isolated: \(why)"
        )
        for m in members { finish(m, .failed(e, shape)) }
    }
}
