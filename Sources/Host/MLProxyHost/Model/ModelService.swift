import Logging
import NIOConcurrencyHelpers
import NIOCore
import PluginAPI

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

    static func refused(_ e: RequestError) -> InferReply { InferReply(result: .failure(e), batch: nil) }
}

/// A request waiting in a model's queue.
struct PendingInfer: Sendable {
    let request: DecodedRequest
    let promise: EventLoopPromise<InferReply>
}

@inline(__always) func monotonicNanos() -> Int64 { Int64(NIODeadline.now().uptimeNanoseconds) }

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
    public let metrics = ModelMetrics()
    let backend: BackendInstance
    /// One upstream pool per event loop of the group, each used only on its own loop.
    private let pools: [ObjectIdentifier: UpstreamPool]
    private let logger: Logger
    private let lock = NIOLock()
    // Guarded by `lock`.
    private let queue: ModelQueue<PendingInfer>
    private var wakeTask: Scheduled<Void>?
    private var wakeAt: Int64 = .max
    private var wakeGeneration = 0
    /// The model server could not be reached: requests are refused with 503 until a probe connects.
    private var upstreamDown = false
    private var probeAttempt = 0
    private var stopped = false
    private var refreshTask: RepeatedTask?
    private let budget: RetryBudget
    /// The signature read from the model server's metadata; its own lock, off the queue's, since every
    /// request reads it.
    private let fetchedSignature = NIOLockedValueBox<ModelSignature?>(nil)
    /// The last problem reading the metadata, so that a refresh logs it once.
    private let metadataProblem = NIOLockedValueBox<String?>(nil)
    private let backoff = Backoff()

    init(
        config: ModelConfig, group: EventLoopGroup, codecs: [CodecChain], backend: BackendInstance,
        policy: BatchingPolicy
    ) {
        let loop = group.next()
        self.config = config
        self.loop = loop
        self.codecs = codecs
        self.backend = backend
        self.queue = ModelQueue(limits: config.limits, policy: policy)
        self.budget = RetryBudget(config.retryBudget)
        var pools: [ObjectIdentifier: UpstreamPool] = [:]
        let metrics = self.metrics
        for l in group.makeIterator() {
            let pool = UpstreamPool(loop: l, address: config.upstream, timeoutMillis: config.upstreamTimeoutMillis)
            pool.onRetry = { metrics.retried() }
            pools[ObjectIdentifier(l)] = pool
        }
        self.pools = pools
        var logger = Logger(label: "mlproxy.model")
        logger[metadataKey: "model"] = "\(config.name)"
        self.logger = logger
        let log = logger
        queue.onPolicyError = { e in log.error("policy failed, sending queued requests without it: \(e.message)") }
    }

    /// The codec chain that serves this protocol ("v2", "tfserving") and takes this content type:
    /// the highest rank, then the first in the config.
    public func codec(for contentType: String?, protocolName: String) -> CodecChain? {
        CodecChain.pick(codecs, contentType: contentType, protocolName: protocolName)
    }

    /// Queues a decoded, validated request; the promise is completed exactly once. Call it on the
    /// promise's event loop.
    func submit(_ request: DecodedRequest, items: Int, arrival: Int64, promise: EventLoopPromise<InferReply>) {
        let key = BatchAssembler.batchKey(of: request.inputs, padded: config.padValue != nil)
        var refused: RequestError?
        let effects = lock.withLock { () -> [QueueEffect<PendingInfer>] in
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
        if let refused {
            metrics.rejected(
                reason: refused.status == 429 ? "queue_full" : refused.status == 503 ? "unavailable" : "invalid",
                count: 1)
            return promise.succeed(.refused(refused))
        }
        run(effects, on: promise.futureResult.eventLoop)
    }

    /// The inputs and outputs requests are checked against: the config's, else the model server's
    /// metadata once fetched; nil while neither is known (requests then go unchecked).
    public var signature: ModelSignature? {
        guard config.checkSignature else { return nil }
        return config.signature ?? fetchedSignature.withLockedValue { $0 }
    }

    /// False while the model server cannot be reached.
    public var upstreamReady: Bool { lock.withLock { !upstreamDown } }

    private var unavailableError: RequestError {
        RequestError(
            status: 503, message: "the model server at \(config.upstream) cannot be reached; the proxy is reconnecting",
            cause: .upstream, retryAfterSeconds: 1)
    }

    /// A GET to the model server (e.g. its model metadata), from `io` with that loop's pool.
    func fetch(path: String, on io: EventLoop) -> EventLoopFuture<UpstreamResponse> {
        let pool = self.pool(for: io)
        return io.flatSubmit { pool.send(path: path, headers: [], body: ByteBuffer(), method: .GET) }
    }

    private func pool(for io: EventLoop) -> UpstreamPool {
        pools[ObjectIdentifier(io)] ?? pools[ObjectIdentifier(loop)]!
    }

    // MARK: The model server's health and signature

    /// Where the model server publishes the model's metadata, for the backends whose protocol has it.
    var metadataPath: String? {
        let v = config.upstreamVersion
        switch config.backend {
        case "kserve-v2": return "/v2/models/\(config.upstreamModel)" + (v.isEmpty ? "" : "/versions/\(v)")
        case "tfserving":
            return "/v1/models/\(config.upstreamModel)" + (v.isEmpty ? "" : "/versions/\(v)") + "/metadata"
        default: return nil
        }
    }

    /// Fetches the signature now and then every `refreshSeconds` (a new model version may bring a new
    /// one), unless the config declares it or checking is off.
    func start(refreshSeconds: Int64 = 60) {
        refreshSignature()
        guard config.checkSignature, config.signature == nil, metadataPath != nil else { return }
        let task = loop.scheduleRepeatedTask(initialDelay: .seconds(refreshSeconds), delay: .seconds(refreshSeconds)) {
            [self] _ in
            refreshSignature()
        }
        lock.withLock { refreshTask = task }
    }

    /// Reads the model server's metadata; a server that cannot be reached is marked down.
    private func refreshSignature() {
        guard config.checkSignature, config.signature == nil, let path = metadataPath else { return }
        let tf = config.backend == "tfserving"
        fetch(path: path, on: loop).whenComplete { [self] result in
            switch result {
            case .success(let r) where r.status == 200:
                warnOnce(nil)
                let body = Array(r.body.readableBytesView)
                let sig = tf ? ModelSignature.fromTFServingMetadata(body) : ModelSignature.fromV2Metadata(body)
                let changed = fetchedSignature.withLockedValue { current -> Bool in
                    defer { current = sig }
                    return current != sig
                }
                if changed {
                    if let sig {
                        logger.info(
                            "signature from the model server: inputs \(sig.inputs.map(\.description).joined(separator: ", "))"
                        )
                    } else {
                        logger.info(
                            "the model server's metadata declares no inputs; requests are not checked against a signature"
                        )
                    }
                }
            case .success(let r):
                warnOnce(
                    "the model server answered \(r.status) to \(path); requests are not checked against a signature")
            case .failure(let e as UpstreamError):
                if case .connect = e { markDown("\(e)") }
            case .failure(let e):
                warnOnce("reading \(path) failed: \(e)")
            }
        }
    }

    /// Logs a metadata problem when it is new, not on every refresh; nil: the problem is gone.
    private func warnOnce(_ problem: String?) {
        let isNew = metadataProblem.withLockedValue { last -> Bool in
            defer { last = problem }
            return last != problem
        }
        if isNew, let problem { logger.warning("\(problem)") }
    }

    /// The model server cannot be reached: queued requests are answered 503 at once, new ones too,
    /// until a probe (capped, jittered backoff) connects again.
    private func markDown(_ why: String) {
        let queued = lock.withLock { () -> [QueueEntry<PendingInfer>]? in
            guard !upstreamDown, !stopped else { return nil }
            upstreamDown = true
            probeAttempt = 0
            return queue.removeAllQueued()
        }
        guard let queued else { return }
        logger.error("model server unreachable, answering 503 until it is back: \(why)")
        metrics.upstreamUp(false)
        if !queued.isEmpty { metrics.rejected(reason: "unavailable", count: queued.count) }
        let e = unavailableError
        for entry in queued { entry.payload.promise.succeed(.refused(e)) }
        scheduleProbe()
    }

    private func scheduleProbe() {
        let attempt = lock.withLock { () -> Int? in
            guard !stopped else { return nil }
            defer { probeAttempt += 1 }
            return probeAttempt
        }
        guard let attempt else { return }
        let pool = self.pool(for: loop)
        loop.scheduleTask(in: .nanoseconds(backoff.delay(attempt: attempt, unit: Double.random(in: 0..<1)))) { [self] in
            pool.probe().whenComplete { [self] result in
                switch result {
                case .success: markUp()
                case .failure: scheduleProbe()
                }
            }
        }
    }

    private func markUp() {
        let wasDown = lock.withLock { () -> Bool in
            defer { upstreamDown = false }
            return upstreamDown
        }
        guard wasDown else { return }
        logger.info("model server reachable again")
        metrics.upstreamUp(true)
        refreshSignature()
    }

    /// Queued requests and batches in flight.
    func load() -> (queued: Int, inflight: Int) {
        lock.withLock { (queue.count, queue.inflight) }
    }

    /// Asks the queue what to do now and arranges the timer. Call with the lock held; carry out the
    /// returned effects after releasing it.
    private func pumpLocked() -> [QueueEffect<PendingInfer>] {
        let effects = queue.pump(now: monotonicNanos())
        var wake: Int64?
        for case .wake(let at) in effects { wake = at }
        if let at = wake {
            if wakeTask == nil || wakeAt != at {
                wakeTask?.cancel()
                wakeAt = at
                wakeGeneration += 1
                let generation = wakeGeneration
                wakeTask = loop.scheduleTask(deadline: .uptimeNanoseconds(UInt64(max(at, 0)))) { [self] in
                    let effects = lock.withLock { () -> [QueueEffect<PendingInfer>] in
                        if generation == wakeGeneration {
                            wakeTask = nil
                            wakeAt = .max
                        }
                        return pumpLocked()
                    }
                    run(effects, on: loop)
                }
            }
        } else if let t = wakeTask {
            t.cancel()
            wakeTask = nil
            wakeAt = .max
        }
        return effects
    }

    /// Carries out dispatches and rejections, outside the lock, on `io` (the caller's loop).
    private func run(_ effects: [QueueEffect<PendingInfer>], on io: EventLoop) {
        for effect in effects {
            switch effect {
            case .dispatch(let entries): dispatch(entries, on: io)
            case .reject(let entries, let error):
                metrics.rejected(reason: error.status == 504 ? "deadline" : "shed", count: entries.count)
                for e in entries { e.payload.promise.succeed(.refused(error)) }
            case .wake: break
            }
        }
    }

    /// Sends a batch from `io`, the loop that decided to send it, with that loop's upstream pool. A
    /// batch the model server rejects for its content is handed to a `BatchIsolator`, which splits it
    /// until only the culprits fail; the slot is held until every member is answered. A batch that
    /// succeeds (the usual case) never builds one.
    private func dispatch(_ entries: [QueueEntry<PendingInfer>], on io: EventLoop) {
        let dispatched = monotonicNanos()
        let pool = self.pool(for: io)
        let items = entries.reduce(0) { $0 + $1.items }
        attempt(entries, pool: pool, on: io).whenSuccess { [self] result in
            let finished = monotonicNanos()
            switch result {
            case .success(let outputs):
                let shape = BatchShape(items: items, requests: entries.count, attempts: 1)
                for (entry, output) in zip(entries, outputs) {
                    answer(entry, .answered(output, shape), dispatched: dispatched)
                }
                batchDone(
                    items: items, arrivals: entries.map(\.arrival), ok: true, dispatched: dispatched,
                    finished: finished, on: io)
            case .failure(let failure):
                isolate(entries, failure, items: items, pool: pool, dispatched: dispatched, finished: finished, on: io)
            }
        }
    }

    /// The rest of a batch whose first attempt failed: bisection for content failures, an answer for
    /// each member, one log line, and then the slot is freed.
    private func isolate(
        _ entries: [QueueEntry<PendingInfer>], _ failure: BatchFailure, items: Int, pool: UpstreamPool,
        dispatched: Int64, finished: Int64, on io: EventLoop
    ) {
        let isolator = BatchIsolator<QueueEntry<PendingInfer>, InferResult>(
            // With late_requests: dispatch the model answers late rather than fail, so isolation goes on
            // past the SLO (bounded by its ceil(log2 n) rounds); with reject, it stops at the deadline.
            bisect: config.bisectFailures, now: { monotonicNanos() },
            deadline: { [rejectLate = config.limits.rejectLate] in rejectLate ? $0.deadline : .max },
            items: { $0.items },
            attempt: { [self] part in attempt(part, pool: pool, on: io) },
            finish: { [self] entry, outcome in answer(entry, outcome, dispatched: dispatched) })
        isolator.isolate(entries, after: failure, finished: finished, on: io).whenComplete { [self] _ in
            let c = isolator.counters
            metrics.isolation(splits: c.splits)
            if entries.count > 1 && failure.kind == .content {
                let what =
                    config.bisectFailures
                    ? "split \(c.splits) times over \(c.attempts) upstream requests: \(c.culprits) failed on their own, "
                        + "\(c.unisolated) could not be isolated, the rest answered"
                    : "isolate_failures is off: all failed"
                logger.warning(
                    "batch of \(entries.count) requests (\(items) items) rejected: \(failure.message); \(what)")
            } else {
                logger.warning("batch of \(entries.count) requests (\(items) items) failed: \(failure.message)")
            }
            batchDone(
                items: items, arrivals: entries.map(\.arrival), ok: false, dispatched: dispatched, finished: finished,
                on: io)
        }
    }

    /// One upstream request for `part` of a batch: merge, encode, send, decode, split.
    private func attempt(
        _ part: [QueueEntry<PendingInfer>], pool: UpstreamPool,
        on io: EventLoop
    ) -> EventLoopFuture<Result<[InferResult], BatchFailure>> {
        let items = part.reduce(0) { $0 + $1.items }
        let requests = part.map(\.payload.request)
        let inputs = BatchAssembler.merge(requests.map(\.inputs), padValue: config.padValue)
        // Ask upstream for the union of requested outputs, or all when anyone wants all.
        var wanted: [String] = []
        if !requests.contains(where: { $0.requestedOutputs.isEmpty }) {
            for r in requests { for n in r.requestedOutputs where !wanted.contains(n) { wanted.append(n) } }
        }
        let message: EncodedMessage
        switch backend.encode(
            inputs: inputs, items: items, model: config.upstreamModel, version: config.upstreamVersion,
            requestedOutputs: wanted, allocator: ByteBufferAllocator())
        {
        case .success(let m): message = m
        case .failure(let e):
            // A value the upstream's wire format cannot carry (400/415) belongs to one request: isolate it.
            let content = e.status == 400 || e.status == 415
            return io.makeSucceededFuture(
                .failure(
                    BatchFailure(
                        kind: content ? .content : .upstream, status: e.status, message: e.message,
                        summary: content
                            ? "the backend could not encode it for the model server"
                            : "the backend failed to encode it (status \(e.status))")))
        }
        let sent = monotonicNanos()
        let outcome = io.makePromise(of: Result<[InferResult], BatchFailure>.self)
        pool.send(
            path: message.path ?? "/", headers: message.headers, body: message.body,
            retry: config.retryOnReset ? budget : nil
        ).whenComplete { [self] result in
            switch result {
            case .success(let response):
                metrics.batch(items: items, upstreamNanos: monotonicNanos() - sent, ok: response.status == 200)
                outcome.succeed(read(response, items: items, itemCounts: part.map(\.items)))
            case .failure(let error):
                metrics.batch(items: items, upstreamNanos: monotonicNanos() - sent, ok: false)
                let e = error as? UpstreamError ?? .io("\(error)")
                if case .connect = e { markDown("\(e)") }
                outcome.succeed(
                    .failure(
                        BatchFailure(
                            kind: .upstream, status: e.httpStatus, message: "\(e)", summary: "\(e)",
                            retryAfterSeconds: e.httpStatus == 503 ? 1 : nil)))
            }
        }
        return outcome.futureResult
    }

    /// The model server's reply to one upstream request, split by the members' item counts.
    private func read(_ response: UpstreamResponse, items: Int, itemCounts: [Int]) -> Result<
        [InferResult], BatchFailure
    > {
        let decoded = backend.decode(
            status: response.status, body: response.body,
            contentType: response.headers.first(name: "content-type"),
            model: config.upstreamModel, items: items,
            headers: response.headers.map { ($0.name, $0.value) })
        let out: UpstreamOutputs
        switch decoded {
        case .success(let o) where response.status == 200: out = o
        case .success, .failure:
            var words = "the model server answered \(response.status)"
            if case .failure(let e) = decoded { words = e.message }
            if response.status != 200 && BatchFailure.isContentStatus(response.status) {
                return .failure(
                    BatchFailure(
                        kind: .content, status: response.status, message: words,
                        summary: "the model server answered \(response.status)"))
            }
            let status = response.status == 503 || response.status == 504 ? response.status : 502
            let retryAfter = response.status == 503 ? Int(response.headers.first(name: "retry-after") ?? "") ?? 1 : nil
            let summary =
                response.status == 200
                ? "the model server's reply could not be read" : "the model server answered \(response.status)"
            return .failure(
                BatchFailure(
                    kind: .upstream, status: status, message: words, summary: summary, retryAfterSeconds: retryAfter))
        }
        switch BatchAssembler.split(out.outputs, itemCounts: itemCounts) {
        case .success(let parts):
            return .success(parts.map { InferResult(outputs: $0, parametersJSON: out.parametersJSON) })
        case .failure(let e):
            return .failure(BatchFailure(kind: .upstream, status: 502, message: e.message, summary: e.message))
        }
    }

    /// Answers one member, as soon as its outcome is known.
    private func answer(_ entry: QueueEntry<PendingInfer>, _ outcome: MemberOutcome<InferResult>, dispatched: Int64) {
        var reply: InferReply
        switch outcome {
        case .answered(var r, let shape):
            reply = InferReply(result: .success(r), batch: shape)
            let wanted = entry.payload.request.requestedOutputs
            if !wanted.isEmpty {
                if let missing = wanted.first(where: { n in !r.outputs.contains { $0.name == n } }) {
                    reply.result = .failure(
                        .badRequest(
                            "the model has no output '\(missing)'; the model server returned \(r.outputs.map(\.name).joined(separator: ", "))"
                        ))
                } else {
                    r.outputs = r.outputs.filter { wanted.contains($0.name) }
                    reply.result = .success(r)
                }
            }
        case .failed(let e, let shape):
            reply = InferReply(result: .failure(e), batch: shape)
        }
        reply.queueNanos = dispatched - entry.arrival
        reply.upstreamNanos = monotonicNanos() - dispatched
        if case .failure(let e) = reply.result { metrics.failed(cause: e.cause) }
        entry.payload.promise.succeed(reply)
    }

    /// Frees the batch's slot and lets the queue move on, from the loop the batch finished on.
    private func batchDone(
        items: Int, arrivals: [Int64], ok: Bool, dispatched: Int64, finished: Int64, on io: EventLoop
    ) {
        for a in arrivals { metrics.queued(nanos: dispatched - a) }
        let effects = lock.withLock { () -> [QueueEffect<PendingInfer>] in
            queue.batchFinished(items: items, arrivals: arrivals, ok: ok, dispatched: dispatched, finished: finished)
            return pumpLocked()
        }
        run(effects, on: io)
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
