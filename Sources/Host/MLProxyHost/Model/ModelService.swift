import Logging
import NIOConcurrencyHelpers
import NIOCore

/// A client's share of a batch's outputs.
public struct InferResult: Sendable {
    public var outputs: [Tensor]
    public var parametersJSON: [UInt8]?
}

/// What one client gets back from its model: its outputs or an error, and the upstream batch that
/// answered it (nil when it never left the queue), so that every response can say so.
public struct InferReply: Sendable {
    public var result: Result<InferResult, RequestError>
    public var batch: BatchShape?
    public var queueNanos: Int64 = 0
    public var upstreamNanos: Int64 = 0
    /// Why the policy was bypassed for this request's batch, when it was (the policy failed).
    public var policyBypassed: String?
    /// Why the batch left when it did (`DispatchReason.name`): the mlproxy-batch-reason header.
    public var dispatchReason: String?

    static func refused(_ e: RequestError) -> InferReply { InferReply(result: .failure(e), batch: nil) }
}

/// A request waiting in a model's queue.
struct PendingInfer: Sendable {
    let request: DecodedRequest
    let promise: EventLoopPromise<InferReply>
}

@inline(__always) func monotonicNanos() -> Int64 { Int64(NIODeadline.now().uptimeNanoseconds) }

/// Makes a model's transport to its model server on one event loop; nil means HTTP (`UpstreamPool`).
/// Tests pass one that answers in memory.
public typealias UpstreamFactory = @Sendable (_ model: ModelConfig, _ loop: EventLoop) -> any UpstreamTransport

/// One model: its queue and policy, its backend adapter and upstream pools.
///
/// The queue is shared by every event loop under one lock, so a request is queued on the loop that
/// read it, with no hop: whichever loop makes the queue dispatch (an arrival, the model's timer, a
/// finished batch) does the batch's work itself (merge, encode, the upstream exchange with that loop's
/// pool, decode, split). Policy hooks run under the lock, so their calls stay serialized.
public final class ModelService: @unchecked Sendable {
    public let config: ModelConfig
    /// The loop that runs the model's timer.
    public let loop: EventLoop
    public let codecs: [CodecChain]
    /// Counters by model name; a model rebuilt by a reload keeps its predecessor's.
    public let metrics: ModelMetrics
    let backend: BackendInstance
    /// One upstream pool per event loop of the group, each used only on its own loop.
    let pools: [ObjectIdentifier: any UpstreamTransport]
    let logger: Logger
    let lock = NIOLock()
    // Guarded by `lock`.
    let queue: ModelQueue<PendingInfer>
    var wakeTask: Scheduled<Void>?
    var idleWaiters: [EventLoopPromise<Void>] = []
    /// The last batches, for the admin listener's batch log (carried over by a reload too).
    public let batches: BatchLog
    /// When the last policy-failure line was logged and how many failures came since.
    let policyLog = NIOLockedValueBox((lastLine: Int64(0), since: 0))
    var wake = WakeSchedule()
    /// The model server could not be reached: requests are refused with 503 until a probe connects.
    var upstreamDown = false
    var probeAttempt = 0
    var stopped = false
    var refreshTask: RepeatedTask?
    let budget: RetryBudget
    /// The signature read from the model server's metadata; its own lock, off the queue's, since every
    /// request reads it.
    let fetchedSignature = NIOLockedValueBox<ModelSignature?>(nil)
    /// The last problem reading the metadata, so that a refresh logs it once.
    let metadataProblem = NIOLockedValueBox<String?>(nil)
    let backoff = Backoff()

    init(
        config: ModelConfig, group: EventLoopGroup, codecs: [CodecChain], backend: BackendInstance,
        policy: BatchingPolicy, upstream: UpstreamFactory? = nil, succeeding previous: ModelService? = nil
    ) {
        let loop = group.next()
        self.config = config
        self.metrics = previous?.metrics ?? ModelMetrics()
        self.batches = previous?.batches ?? BatchLog()
        self.loop = loop
        self.codecs = codecs
        self.backend = backend
        self.queue = ModelQueue(limits: config.limits, policy: policy)
        self.budget = RetryBudget(config.retryBudget)
        var pools: [ObjectIdentifier: any UpstreamTransport] = [:]
        let metrics = self.metrics
        for l in group.makeIterator() {
            let pool =
                upstream?(config, l)
                ?? UpstreamPool(
                    loop: l, address: config.upstream, timeoutMillis: config.upstreamTimeoutMillis,
                    connectTimeoutMillis: config.connectTimeoutMillis)
            pool.onRetry = { metrics.retried() }
            pools[ObjectIdentifier(l)] = pool
        }
        self.pools = pools
        var logger = Logger(label: "mlproxy.model")
        logger[metadataKey: "model"] = "\(config.name)"
        self.logger = logger
    }

    /// The codec chain that serves this protocol ("v2", "tfserving") and takes this content type:
    /// the highest rank, then the first in the config.
    public func codec(for contentType: String?, protocolName: String) -> CodecChain? {
        CodecChain.pick(codecs, contentType: contentType, protocolName: protocolName)
    }

    /// Queues a decoded, validated request; the promise is completed exactly once. Call it on the
    /// promise's event loop. False when the model has stopped (a reload retired it, or the proxy shut
    /// down) and the promise is left alone: the caller asks the running config for the model again.
    func submit(_ request: DecodedRequest, items: Int, arrival: Int64, promise: EventLoopPromise<InferReply>) -> Bool {
        let key = BatchAssembler.batchKey(of: request.inputs, padded: config.padValue != nil)
        var refused: RequestError?
        var accepted = true
        let effects = lock.withLock { () -> [QueueEffect<PendingInfer>] in
            if stopped {
                accepted = false
                return []
            }
            if upstreamDown {
                refused = unavailableError
                return []
            }
            refused = queue.admit(
                items: items, arrival: arrival, timeoutMicros: request.timeoutMicros,
                priority: request.priority, batchKey: key,
                payload: PendingInfer(request: request, promise: promise))
            return refused == nil ? pumpLocked() : []
        }
        guard accepted else { return false }
        if let refused {
            metrics.rejected(reason: refused.kind.metricLabel, count: 1)
            promise.succeed(.refused(refused))
            return true
        }
        run(effects, on: promise.futureResult.eventLoop)
        return true
    }

    /// The inputs and outputs requests are checked against: the config's, else the model server's
    /// metadata once fetched; nil while neither is known (requests then go unchecked).
    public var signature: ModelSignature? {
        guard config.checkSignature else { return nil }
        return config.signature ?? fetchedSignature.withLockedValue { $0 }
    }

    /// False while the model server cannot be reached.
    public var upstreamReady: Bool { lock.withLock { !upstreamDown } }

    var unavailableError: RequestError {
        RequestError(
            .unavailable, "the model server at \(config.upstream) cannot be reached; the proxy is reconnecting")
    }

    /// A GET to the model server (e.g. its model metadata), from `io` with that loop's pool.
    func fetch(path: String, on io: EventLoop) -> EventLoopFuture<UpstreamResponse> {
        let pool = self.pool(for: io)
        return io.flatSubmit { pool.send(path: path, headers: [], body: ByteBuffer(), method: .GET, retry: nil) }
    }

    func pool(for io: EventLoop) -> any UpstreamTransport {
        pools[ObjectIdentifier(io)] ?? pools[ObjectIdentifier(loop)]!
    }

    /// Queued requests and batches in flight.
    func load() -> (queued: Int, inflight: Int) {
        lock.withLock { (queue.count, queue.inflight) }
    }

    /// Completes once nothing is queued or in flight (at once if that is so now): what a drain waits for.
    func whenIdle(on loop: EventLoop) -> EventLoopFuture<Void> {
        let promise = loop.makePromise(of: Void.self)
        let idle = lock.withLock { () -> Bool in
            if queue.count == 0 && queue.inflight == 0 { return true }
            idleWaiters.append(promise)
            return false
        }
        if idle { promise.succeed() }
        return promise.futureResult
    }

    /// Completes the drain's waiters once the queue is empty with nothing in flight. Call with the
    /// lock held, after anything that can empty it; the promises complete on their own loops.
    func releaseIdleWaitersLocked() {
        guard !idleWaiters.isEmpty, queue.count == 0, queue.inflight == 0 else { return }
        for p in idleWaiters { p.futureResult.eventLoop.execute { p.succeed() } }
        idleWaiters = []
    }

    /// Asks the queue what to do now and arranges the timer. Call with the lock held; carry out the
    /// returned effects after releasing it.
    func pumpLocked() -> [QueueEffect<PendingInfer>] {
        let effects = queue.pump(now: monotonicNanos())
        switch wake.update(after: effects) {
        case .keep: break
        case .cancel:
            wakeTask?.cancel()
            wakeTask = nil
        case .arm(let at, let generation):
            wakeTask?.cancel()
            wakeTask = loop.scheduleTask(deadline: .uptimeNanoseconds(UInt64(max(at, 0)))) { [self] in
                let effects = lock.withLock { () -> [QueueEffect<PendingInfer>] in
                    guard wake.fired(generation: generation) else { return [] }
                    wakeTask = nil
                    return pumpLocked()
                }
                run(effects, on: loop)
            }
        }
        releaseIdleWaitersLocked()
        return effects
    }

    /// Carries out dispatches and rejections, outside the lock, on `io` (the caller's loop).
    func run(_ effects: [QueueEffect<PendingInfer>], on io: EventLoop) {
        for effect in effects {
            switch effect {
            case .dispatch(let entries, let reason):
                if case .policyFailed(let failure) = reason { policyFailed(failure, hook: "decide") }
                metrics.dispatched(reason: reason.name)
                dispatch(entries, on: io, reason: reason)
            case .reject(let entries, let error):
                metrics.rejected(reason: error.kind.metricLabel, count: entries.count)
                for e in entries { e.payload.promise.succeed(.refused(error)) }
            case .wake: break
            }
        }
    }

    /// Counts a failed policy hook (decide, observe) and logs it: the first at once, then at most
    /// one line a minute with how many failed since (a policy that keeps failing must not flood the log).
    func policyFailed(_ failure: PolicyFailure, hook: String) {
        metrics.policyFailed(hook: hook)
        let now = monotonicNanos()
        let line = policyLog.withLockedValue { log -> String? in
            log.since += 1
            guard now - log.lastLine >= 60_000_000_000 || log.lastLine == 0 else { return nil }
            let count = log.since
            log.lastLine = max(now, 1)
            log.since = 0
            let what = hook == "decide" ? "failed, sending queued requests without it" : "failed in \(hook)"
            return count == 1
                ? "policy '\(config.policy)' \(what): \(failure.message)"
                : "policy '\(config.policy)' failed \(count) times since the last line; latest (\(hook)): \(failure.message)"
        }
        if let line { logger.error("\(line)") }
    }

    /// Takes a model out of service after a reload replaced or removed it: its queued and in-flight
    /// requests finish under its own settings, then it stops. Idleness is checked again under the lock
    /// as it stops, so a request that was routed to it just before the swap is still served.
    func retire(on loop: EventLoop) -> EventLoopFuture<Void> {
        whenIdle(on: loop).flatMap { [self] in
            let stop = lock.withLock { () -> Bool in
                guard queue.count == 0, queue.inflight == 0 else { return false }
                stopped = true
                return true
            }
            guard stop else { return retire(on: loop) }
            shutdown()
            return loop.makeSucceededVoidFuture()
        }
    }

    func shutdown() {
        let task = lock.withLock { () -> RepeatedTask? in
            stopped = true
            return refreshTask
        }
        task?.cancel()
        for p in pools.values { p.loop.execute { p.close() } }
    }
}
