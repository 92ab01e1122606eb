import Logging
import NIOConcurrencyHelpers
import NIOCore

/// One batch's way to the model server and back: encode, send, read, split, isolate failures, answer.
extension ModelService {
    /// Sends a batch from `io`, the loop that decided to send it, with that loop's upstream pool. A
    /// batch the model server rejects for its content is handed to a `BatchIsolator`, which splits it
    /// until only the culprits fail; the slot is held until every member is answered. A batch that
    /// succeeds (the usual case) never builds one.
    func dispatch(_ entries: [QueueEntry<PendingInfer>], on io: EventLoop, reason: DispatchReason) {
        let dispatched = monotonicNanos()
        let pool = self.pool(for: io)
        let items = entries.reduce(0) { $0 + $1.items }
        attempt(entries, pool: pool, on: io).whenSuccess { [self] result in
            let finished = monotonicNanos()
            switch result {
            case .success(let outputs):
                let shape = BatchShape(items: items, requests: entries.count, attempts: 1)
                for (entry, output) in zip(entries, outputs) {
                    answer(entry, .answered(output, shape), dispatched: dispatched, reason: reason)
                }
                batches.record(
                    items: items, queueNanos: entries.map { dispatched - $0.arrival },
                    upstreamNanos: finished - dispatched, reason: reason, outcome: "ok")
                batchDone(
                    items: items, arrivals: entries.map(\.arrival), ok: true, dispatched: dispatched,
                    finished: finished, on: io)
            case .failure(let failure):
                isolate(
                    entries, failure, items: items, pool: pool, dispatched: dispatched, finished: finished,
                    reason: reason, on: io)
            }
        }
    }

    /// The rest of a batch whose first attempt failed: bisection for content failures, an answer for
    /// each member, one log line, and then the slot is freed.
    func isolate(
        _ entries: [QueueEntry<PendingInfer>], _ failure: BatchFailure, items: Int, pool: any UpstreamTransport,
        dispatched: Int64, finished: Int64, reason: DispatchReason, on io: EventLoop
    ) {
        let isolator = BatchIsolator<QueueEntry<PendingInfer>, InferResult>(
            // With late_requests: dispatch the model answers late rather than fail, so isolation goes on
            // past the SLO (bounded by its ceil(log2 n) rounds); with reject, it stops at the deadline.
            bisect: config.bisectFailures, now: { monotonicNanos() },
            deadline: { [rejectLate = config.limits.rejectLate] in rejectLate ? $0.deadline : .max },
            items: { $0.items },
            attempt: { [self] part in attempt(part, pool: pool, on: io) },
            finish: { [self] entry, outcome in answer(entry, outcome, dispatched: dispatched, reason: reason) })
        isolator.isolate(entries, after: failure, finished: finished, on: io).whenComplete { [self] _ in
            let c = isolator.counters
            let splitNote = c.splits > 0 ? "; split \(c.splits) times, \(c.culprits) failed alone" : ""
            batches.record(
                items: items, queueNanos: entries.map { dispatched - $0.arrival },
                upstreamNanos: monotonicNanos() - dispatched, reason: reason,
                outcome: "failed: \(failure.summary)\(splitNote)")
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
    func attempt(
        _ part: [QueueEntry<PendingInfer>], pool: any UpstreamTransport,
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
        do {
            message = try backend.encode(
                inputs: inputs, items: items, model: config.upstreamModel, version: config.upstreamVersion,
                requestedOutputs: wanted, allocator: ByteBufferAllocator())
        } catch let e {
            // A value the upstream's wire format cannot carry belongs to one request: isolate it.
            let content = e.kind == .invalid || e.kind == .unsupported
            return io.makeSucceededFuture(
                .failure(
                    BatchFailure(
                        kind: content ? .content : .upstream, alone: e,
                        summary: content
                            ? "the backend could not encode it for the model server"
                            : "the backend failed to encode it (status \(e.status))")))
        }
        let sent = monotonicNanos()
        let outcome = io.makePromise(of: Result<[InferResult], BatchFailure>.self)
        pool.send(
            path: message.path ?? "/", headers: message.headers, body: message.body, method: .POST,
            retry: config.retryOnReset ? budget : nil
        ).whenComplete { [self] result in
            switch result {
            case .success(let response):
                metrics.batch(items: items, upstreamNanos: monotonicNanos() - sent, ok: response.httpStatus == .ok)
                outcome.succeed(read(response, items: items, itemCounts: part.map(\.items)))
            case .failure(let error):
                metrics.batch(items: items, upstreamNanos: monotonicNanos() - sent, ok: false)
                let e = error as? UpstreamError ?? .io("\(error)")
                if case .connect = e { markDown("\(e)") }
                outcome.succeed(
                    .failure(BatchFailure(kind: .upstream, alone: RequestError(e.outcome, "\(e)"), summary: "\(e)")))
            }
        }
        return outcome.futureResult
    }

    /// The model server's reply to one upstream request, split by the members' item counts.
    func read(_ response: UpstreamResponse, items: Int, itemCounts: [Int]) -> Result<
        [InferResult], BatchFailure
    > {
        let decoded = Result { () throws(RequestError) -> UpstreamOutputs in
            try backend.decode(
                status: response.status, body: response.body,
                contentType: response.headers.first(name: "content-type"),
                model: config.upstreamModel, items: items,
                headers: response.headers.map { ($0.name, $0.value) })
        }
        let out: UpstreamOutputs
        switch decoded {
        case .success(let o) where response.httpStatus == .ok: out = o
        case .success, .failure:
            var words = "the model server answered \(response.status)"
            if case .failure(let e) = decoded { words = e.message }
            guard response.httpStatus != .ok else {
                return .failure(
                    BatchFailure(
                        kind: .upstream, alone: .upstream(words), summary: "the model server's reply could not be read")
                )
            }
            let retryAfter =
                response.httpStatus == .serviceUnavailable
                ? Int(response.headers.first(name: "retry-after") ?? "") : nil
            return .failure(.modelServer(status: response.status, words: words, retryAfterSeconds: retryAfter))
        }
        do {
            let parts = try BatchAssembler.split(out.outputs, itemCounts: itemCounts)
            return .success(parts.map { InferResult(outputs: $0, parametersJSON: out.parametersJSON) })
        } catch {
            return .failure(BatchFailure(kind: .upstream, alone: error, summary: error.message))
        }
    }

    /// Answers one member, as soon as its outcome is known.
    func answer(
        _ entry: QueueEntry<PendingInfer>, _ outcome: MemberOutcome<InferResult>, dispatched: Int64,
        reason: DispatchReason
    ) {
        var reply: InferReply
        switch outcome {
        case .answered(var r, let shape):
            reply = InferReply(result: .success(r), batch: shape)
            let wanted = entry.payload.request.requestedOutputs
            if !wanted.isEmpty {
                if let missing = wanted.first(where: { n in !r.outputs.contains { $0.name == n } }) {
                    reply.result = .failure(
                        .invalid(
                            "the model has no output '\(missing)'; the model server returned "
                                + "\(r.outputs.map(\.name).joined(separator: ", "))"
                        ))
                } else {
                    r.outputs = r.outputs.filter { wanted.contains($0.name) }
                    reply.result = .success(r)
                }
            }
        case .failed(let e, let shape):
            reply = InferReply(result: .failure(e), batch: shape)
        }
        if case .policyFailed(let f) = reason { reply.policyBypassed = f.message }
        reply.dispatchReason = reason.name
        reply.queueNanos = dispatched - entry.arrival
        reply.upstreamNanos = monotonicNanos() - dispatched
        if case .failure(let e) = reply.result { metrics.failed(cause: e.cause) }
        entry.payload.promise.succeed(reply)
    }

    /// Frees the batch's slot and lets the queue move on, from the loop the batch finished on.
    func batchDone(
        items: Int, arrivals: [Int64], ok: Bool, dispatched: Int64, finished: Int64, on io: EventLoop
    ) {
        for a in arrivals { metrics.queued(nanos: dispatched - a) }
        let (failure, effects) = lock.withLock { () -> (PolicyFailure?, [QueueEffect<PendingInfer>]) in
            let failure = queue.batchFinished(
                items: items, arrivals: arrivals, ok: ok, dispatched: dispatched, finished: finished)
            return (failure, pumpLocked())
        }
        if let failure { policyFailed(failure, hook: "observe") }
        run(effects, on: io)
    }
}
