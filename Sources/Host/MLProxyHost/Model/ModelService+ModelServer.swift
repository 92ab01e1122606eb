import Logging
import NIOConcurrencyHelpers
import NIOCore

/// The model server's health (down, probes, up) and the signature read from its metadata.
extension ModelService {
    // MARK: The model server's health and signature

    /// Where the model server publishes the model's metadata, when its protocol has it.
    var metadataPath: String? {
        let v = config.upstreamVersion
        switch config.metadata {
        case .v2: return "/v2/models/\(config.upstreamModel)" + (v.isEmpty ? "" : "/versions/\(v)")
        case .tfserving:
            return "/v1/models/\(config.upstreamModel)" + (v.isEmpty ? "" : "/versions/\(v)") + "/metadata"
        case nil: return nil
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
    func refreshSignature() {
        guard config.checkSignature, config.signature == nil, let path = metadataPath else { return }
        let tf = config.metadata == .tfserving
        fetch(path: path, on: loop).whenComplete { [self] result in
            switch result {
            case .success(let r) where r.httpStatus == .ok:
                warnOnce(nil)
                let body = Array(r.body.readableBytesView)
                let sig = tf ? ModelSignature.fromTFServingMetadata(body) : ModelSignature.fromV2Metadata(body)
                let changed = fetchedSignature.withLockedValue { current -> Bool in
                    defer { current = sig }
                    return current != sig
                }
                if changed {
                    if let sig {
                        let inputs = sig.inputs.map(\.description).joined(separator: ", ")
                        logger.info("signature from the model server: inputs \(inputs)")
                    } else {
                        logger.info("the model server's metadata declares no inputs; requests go unchecked")
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
    func warnOnce(_ problem: String?) {
        let isNew = metadataProblem.withLockedValue { last -> Bool in
            defer { last = problem }
            return last != problem
        }
        if isNew, let problem { logger.warning("\(problem)") }
    }

    /// The model server cannot be reached: queued requests are answered 503 at once, new ones too,
    /// until a probe (capped, jittered backoff) connects again.
    func markDown(_ why: String) {
        let queued = lock.withLock { () -> [QueueEntry<PendingInfer>]? in
            guard !upstreamDown, !stopped else { return nil }
            upstreamDown = true
            probeAttempt = 0
            defer { releaseIdleWaitersLocked() }
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

    func scheduleProbe() {
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

    func markUp() {
        let wasDown = lock.withLock { () -> Bool in
            defer { upstreamDown = false }
            return upstreamDown
        }
        guard wasDown else { return }
        logger.info("model server reachable again")
        metrics.upstreamUp(true)
        refreshSignature()
    }
}

extension UpstreamError {
    /// What a client sees for this failure: unavailable while the server cannot be reached (come
    /// back later), a timeout when it did not answer in time, an upstream error when the connection
    /// failed under a request.
    var outcome: RequestError.Kind {
        switch self {
        case .connect: return .unavailable
        case .timeout: return .upstreamTimeout
        case .closed, .io: return .upstreamError
        }
    }
}
