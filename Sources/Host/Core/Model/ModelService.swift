import Logging
import NIOConcurrencyHelpers
import NIOCore
import PluginAPI

/// What one client gets back from its model: its share of the batch's outputs, or an error.
public struct InferResult: Sendable {
    public var outputs: [Tensor]
    public var parametersJSON: [UInt8]?
    public var batchItems: Int
    public var batchRequests: Int
    public var queueNanos: Int64
    public var upstreamNanos: Int64
}

public typealias InferReply = Result<InferResult, RequestError>

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

    init(config: ModelConfig, group: EventLoopGroup, codecs: [CodecChain], backend: BackendInstance, policy: BatchingPolicy) {
        let loop = group.next()
        self.config = config
        self.loop = loop
        self.codecs = codecs
        self.backend = backend
        self.queue = ModelQueue(limits: config.limits, policy: policy)
        var pools: [ObjectIdentifier: UpstreamPool] = [:]
        for l in group.makeIterator() {
            pools[ObjectIdentifier(l)] = UpstreamPool(loop: l, address: config.upstream, timeoutMillis: config.upstreamTimeoutMillis)
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
            refused = queue.admit(items: items, arrival: arrival, timeoutMicros: request.timeoutMicros,
                                  priority: request.priority, batchKey: key,
                                  payload: PendingInfer(request: request, promise: promise))
            return refused == nil ? pumpLocked() : []
        }
        if let refused {
            metrics.rejected(reason: refused.status == 429 ? "queue_full" : "invalid", count: 1)
            return promise.succeed(.failure(refused))
        }
        run(effects, on: promise.futureResult.eventLoop)
    }

    /// A GET to the model server (e.g. its model metadata), from `io` with that loop's pool.
    func fetch(path: String, on io: EventLoop) -> EventLoopFuture<UpstreamResponse> {
        let pool = pools[ObjectIdentifier(io)] ?? pools[ObjectIdentifier(loop)]!
        return io.flatSubmit { pool.send(path: path, headers: [], body: ByteBuffer(), method: .GET) }
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
                for e in entries { e.payload.promise.succeed(.failure(error)) }
            case .wake: break
            }
        }
    }

    /// Sends a batch from `io`, the loop that decided to send it, with that loop's upstream pool.
    private func dispatch(_ entries: [QueueEntry<PendingInfer>], on io: EventLoop) {
        let dispatched = monotonicNanos()
        let pool = pools[ObjectIdentifier(io)] ?? pools[ObjectIdentifier(loop)]!
        do {  // a scope, so the early returns below end the dispatch
            let items = entries.reduce(0) { $0 + $1.items }
            let requests = entries.map(\.payload.request)
            let inputs = BatchAssembler.merge(requests.map(\.inputs), padValue: config.padValue)
            // Ask upstream for the union of requested outputs, or all when anyone wants all.
            var wanted: [String] = []
            if !requests.contains(where: { $0.requestedOutputs.isEmpty }) {
                for r in requests { for n in r.requestedOutputs where !wanted.contains(n) { wanted.append(n) } }
            }
            let encoded = backend.encode(inputs: inputs, items: items, model: config.upstreamModel,
                                         version: config.upstreamVersion, requestedOutputs: wanted,
                                         allocator: ByteBufferAllocator())
            guard case .success(let message) = encoded else {
                if case .failure(let e) = encoded { fail(entries, RequestError(status: 500, message: e.message), items: items, dispatched: dispatched, on: io) }
                return
            }
            pool.send(path: message.path ?? "/", headers: message.headers, body: message.body).whenComplete { result in
                let finished = monotonicNanos()
                let response: UpstreamResponse
                switch result {
                case .failure(let error):
                    let status = (error as? UpstreamError)?.httpStatus ?? 502
                    return self.fail(entries, RequestError(status: status, message: "\(error)"), items: items,
                                     dispatched: dispatched, finished: finished, on: io)
                case .success(let r): response = r
                }
                let split = self.backend.decode(status: response.status, body: response.body,
                                                contentType: response.headers.first(name: "content-type"),
                                                model: self.config.upstreamModel, items: items,
                                                headers: response.headers.map { ($0.name, $0.value) })
                    .mapError { RequestError(status: $0.status == 500 ? 500 : 502, message: $0.message) }
                    .flatMap { out in
                        BatchAssembler.split(out.outputs, itemCounts: entries.map(\.items)).map { ($0, out.parametersJSON) }
                    }
                guard case .success(let (parts, params)) = split else {
                    if case .failure(let e) = split { self.fail(entries, e, items: items, dispatched: dispatched, finished: finished, on: io) }
                    return
                }
                for (entry, outputs) in zip(entries, parts) {
                    let wantedByClient = entry.payload.request.requestedOutputs
                    let mine = wantedByClient.isEmpty ? outputs : outputs.filter { wantedByClient.contains($0.name) }
                    entry.payload.promise.succeed(.success(InferResult(
                        outputs: mine, parametersJSON: params, batchItems: items, batchRequests: entries.count,
                        queueNanos: dispatched - entry.arrival, upstreamNanos: finished - dispatched)))
                }
                self.batchDone(items: items, arrivals: entries.map(\.arrival), ok: true, dispatched: dispatched, finished: finished, on: io)
            }
        }
    }

    /// Answers every request of a failed batch with the same error.
    private func fail(_ entries: [QueueEntry<PendingInfer>], _ error: RequestError, items: Int, dispatched: Int64,
                      finished: Int64 = monotonicNanos(), on io: EventLoop) {
        logger.warning("batch of \(items) items failed: \(error.message)")
        for e in entries { e.payload.promise.succeed(.failure(error)) }
        batchDone(items: items, arrivals: entries.map(\.arrival), ok: false, dispatched: dispatched, finished: finished, on: io)
    }

    /// Frees the batch's slot and lets the queue move on, from the loop the batch finished on.
    private func batchDone(items: Int, arrivals: [Int64], ok: Bool, dispatched: Int64, finished: Int64, on io: EventLoop) {
        metrics.batch(items: items, upstreamNanos: finished - dispatched, ok: ok)
        for a in arrivals { metrics.queued(nanos: dispatched - a) }
        let effects = lock.withLock { () -> [QueueEffect<PendingInfer>] in
            queue.batchFinished(items: items, arrivals: arrivals, ok: ok, dispatched: dispatched, finished: finished)
            return pumpLocked()
        }
        run(effects, on: io)
    }

    func shutdown() { for p in pools.values { p.loop.execute { p.close() } } }
}
