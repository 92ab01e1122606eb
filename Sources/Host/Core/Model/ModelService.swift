import Logging
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

/// One model: its queue and policy, its backend adapter and upstream pool. Everything mutable is
/// confined to `loop`; `submit` may be called from any thread and hops there.
public final class ModelService: @unchecked Sendable {
    public let config: ModelConfig
    public let loop: EventLoop
    public let codecs: [CodecInstance]
    let backend: BackendInstance
    let queue: ModelQueue<PendingInfer>
    /// One upstream pool per event loop of the group, each used only on its own loop.
    private let pools: [ObjectIdentifier: UpstreamPool]
    private var wakeTask: Scheduled<Void>?
    private var wakeAt: Int64 = .max
    private let logger: Logger

    init(config: ModelConfig, group: EventLoopGroup, codecs: [CodecInstance], backend: BackendInstance, policy: BatchingPolicy) {
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

    /// The codec that takes this content type, if any.
    public func codec(for contentType: String?) -> CodecInstance? {
        codecs.first { $0.accepts(contentType: contentType) }
    }

    /// Queues a decoded, validated request; the promise is completed exactly once.
    func submit(_ request: DecodedRequest, items: Int, arrival: Int64, promise: EventLoopPromise<InferReply>) {
        let key = BatchAssembler.batchKey(of: request.inputs)
        loop.executeHere {
            if let error = self.queue.admit(items: items, arrival: arrival, timeoutMicros: request.timeoutMicros,
                                            priority: request.priority, batchKey: key,
                                            payload: PendingInfer(request: request, promise: promise)) {
                promise.succeed(.failure(error))
                return
            }
            self.pump()
        }
    }

    /// Queued requests and batches in flight; read on the loop.
    func load() -> EventLoopFuture<(queued: Int, inflight: Int)> {
        loop.submit { (self.queue.count, self.queue.inflight) }
    }

    private func pump() {
        var woke = false
        for effect in queue.pump(now: monotonicNanos()) {
            switch effect {
            case .dispatch(let entries): dispatch(entries)
            case .reject(let entries, let error): for e in entries { e.payload.promise.succeed(.failure(error)) }
            case .wake(let at): woke = true; schedule(at: at)
            }
        }
        if !woke, let t = wakeTask {
            t.cancel()
            wakeTask = nil
            wakeAt = .max
        }
    }

    private func schedule(at: Int64) {
        if wakeTask != nil && wakeAt == at { return }
        wakeTask?.cancel()
        wakeAt = at
        wakeTask = loop.scheduleTask(deadline: .uptimeNanoseconds(UInt64(max(at, 0)))) { [self] in
            wakeTask = nil
            wakeAt = .max
            pump()
        }
    }

    /// Sends a batch. Only the queue lives on the model's loop: merging, encoding, the upstream
    /// exchange, decoding and splitting run on the event loop of the batch's first client (each loop
    /// has its own upstream pool), so one model's traffic uses every core, and a batch of one never
    /// leaves its client's loop but to be queued.
    private func dispatch(_ entries: [QueueEntry<PendingInfer>]) {
        let dispatched = monotonicNanos()
        let io = entries[0].payload.promise.futureResult.eventLoop
        let pool = pools[ObjectIdentifier(io)] ?? pools[ObjectIdentifier(loop)]!
        io.executeHere { [self] in
            let items = entries.reduce(0) { $0 + $1.items }
            let requests = entries.map(\.payload.request)
            let inputs = BatchAssembler.merge(requests.map(\.inputs))
            // Ask upstream for the union of requested outputs, or all when anyone wants all.
            var wanted: [String] = []
            if !requests.contains(where: { $0.requestedOutputs.isEmpty }) {
                for r in requests { for n in r.requestedOutputs where !wanted.contains(n) { wanted.append(n) } }
            }
            let encoded = backend.encode(inputs: inputs, items: items, model: config.upstreamModel,
                                         version: config.upstreamVersion, requestedOutputs: wanted,
                                         allocator: ByteBufferAllocator())
            guard case .success(let message) = encoded else {
                if case .failure(let e) = encoded { fail(entries, RequestError(status: 500, message: e.message), items: items, dispatched: dispatched) }
                return
            }
            pool.send(path: message.path ?? "/", headers: message.headers, body: message.body).whenComplete { result in
                let finished = monotonicNanos()
                let response: UpstreamResponse
                switch result {
                case .failure(let error):
                    let status = (error as? UpstreamError)?.httpStatus ?? 502
                    return self.fail(entries, RequestError(status: status, message: "\(error)"), items: items,
                                     dispatched: dispatched, finished: finished)
                case .success(let r): response = r
                }
                let split = self.backend.decode(status: response.status, body: response.body,
                                                contentType: response.headers.first(name: "content-type"),
                                                model: self.config.upstreamModel, items: items)
                    .mapError { RequestError(status: $0.status == 500 ? 500 : 502, message: $0.message) }
                    .flatMap { out in
                        BatchAssembler.split(out.outputs, itemCounts: entries.map(\.items)).map { ($0, out.parametersJSON) }
                    }
                guard case .success(let (parts, params)) = split else {
                    if case .failure(let e) = split { self.fail(entries, e, items: items, dispatched: dispatched, finished: finished) }
                    return
                }
                for (entry, outputs) in zip(entries, parts) {
                    let wantedByClient = entry.payload.request.requestedOutputs
                    let mine = wantedByClient.isEmpty ? outputs : outputs.filter { wantedByClient.contains($0.name) }
                    entry.payload.promise.succeed(.success(InferResult(
                        outputs: mine, parametersJSON: params, batchItems: items, batchRequests: entries.count,
                        queueNanos: dispatched - entry.arrival, upstreamNanos: finished - dispatched)))
                }
                self.batchDone(items: items, requests: entries.count, ok: true, dispatched: dispatched, finished: finished)
            }
        }
    }

    /// Answers every request of a failed batch with the same error.
    private func fail(_ entries: [QueueEntry<PendingInfer>], _ error: RequestError, items: Int, dispatched: Int64,
                      finished: Int64 = monotonicNanos()) {
        logger.warning("batch of \(items) items failed: \(error.message)")
        for e in entries { e.payload.promise.succeed(.failure(error)) }
        batchDone(items: items, requests: entries.count, ok: false, dispatched: dispatched, finished: finished)
    }

    /// Frees the batch's slot on the model's loop and lets the queue move on.
    private func batchDone(items: Int, requests: Int, ok: Bool, dispatched: Int64, finished: Int64) {
        loop.executeHere { [self] in
            queue.batchFinished(items: items, requests: requests, ok: ok, dispatched: dispatched, finished: finished)
            pump()
        }
    }

    func shutdown() { for p in pools.values { p.loop.execute { p.close() } } }
}

extension EventLoop {
    /// Runs `work` now when already on this loop, else queues it there: a hop costs a task and
    /// often a wake-up of another thread, which the hot path should pay only when it must.
    @inline(__always)
    func executeHere(_ work: @escaping @Sendable () -> Void) {
        if inEventLoop { work() } else { execute(work) }
    }
}
