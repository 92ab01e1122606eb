import Foundation
import NIOCore
import NIOHTTP1

/// The proxy's endpoints and what answers them.
extension ProxyRuntime {
    // MARK: Routes

    /// The proxy's endpoints. `/v2/models/{m}/versions/{v}/...` is served like `/v2/models/{m}/...`:
    /// the proxy has one version of each model.
    func makeRouter() -> Router {
        var r = Router()
        if startConfig.inferenceMetrics {
            r.add(.GET, "/metrics") { [self] req, _ in req.eventLoop.makeSucceededFuture(metricsResponse()) }
        }
        r.add(.GET, "/v2") { req, _ in
            req.eventLoop.makeSucceededFuture(
                .json(.ok, "{\"name\":\"mlproxy\",\"version\":\"0.1.0\",\"extensions\":[]}"))
        }
        r.add(.GET, "/v2/health/live") { req, _ in req.eventLoop.makeSucceededFuture(.json(.ok, "{\"live\":true}")) }
        r.add(.GET, "/v2/health/ready") { [self] req, _ in
            // The v2 protocol's server readiness: every model ready (its model server reachable), and
            // not shutting down (so that the platform stops routing here at once on SIGTERM).
            let ready = !isShuttingDown && models.values.allSatisfy(\.upstreamReady)
            return req.eventLoop.makeSucceededFuture(.json(ready ? .ok : .serviceUnavailable, "{\"ready\":\(ready)}"))
        }
        for prefix in ["/v2/models/{model}", "/v2/models/{model}/versions/{version}"] {
            r.add(.GET, prefix) { [self] req, p in metadata(p["model"]!, loop: req.eventLoop) }
            r.add(.GET, prefix + "/ready") { [self] req, p in ready(p["model"]!, loop: req.eventLoop) }
            r.add(.POST, prefix + "/infer") { [self] req, p in infer(model: p["model"]!, req, protocolName: "v2") }
        }
        // TF Serving REST; the version, when given, is the proxy's one version.
        for pattern in ["/v1/models/{model}:predict", "/v1/models/{model}/versions/{version}:predict"] {
            r.add(.POST, pattern) { [self] req, p in infer(model: p["model"]!, req, protocolName: "tfserving") }
        }
        return r
    }

    /// The admin listener's endpoints, for operators.
    func makeAdminRouter() -> Router {
        var r = Router()
        r.add(.GET, "/metrics") { [self] req, _ in req.eventLoop.makeSucceededFuture(metricsResponse()) }
        r.add(.GET, "/admin/config") { [self] req, _ in
            req.eventLoop.makeSucceededFuture(
                OutgoingResponse(
                    .ok, headers: [("content-type", "application/yaml")], body: ByteBuffer(string: config.source)))
        }
        r.add(.POST, "/admin/reload") { [self] req, _ in
            // Reading files and loading plugins blocks: off the event loop.
            let promise = req.eventLoop.makePromise(of: OutgoingResponse.self)
            DispatchQueue.global().async { [self] in
                do {
                    promise.succeed(.json(.ok, try reload().json))
                } catch let e as ConfigError {
                    logger.error("reload refused, the running config stays: \(e.message)")
                    promise.succeed(Self.failure(RequestError(.invalid, "reload refused: \(e.message)"), batch: nil))
                } catch {
                    promise.succeed(Self.failure(RequestError(.internal, "reload failed: \(error)"), batch: nil))
                }
            }
            return promise.futureResult
        }
        r.add(.GET, "/admin/models/{model}/batches") { [self] req, p in
            guard let model = models[p["model"]!] else {
                return req.eventLoop.makeSucceededFuture(Self.failure(modelMissing(p["model"]!), batch: nil))
            }
            // ?limit=N, the newest N (default 100).
            let query = req.uri.split(separator: "?", maxSplits: 1).dropFirst().first ?? ""
            let limit =
                query.split(separator: "&").compactMap { pair -> Int? in
                    let kv = pair.split(separator: "=", maxSplits: 1)
                    return kv.count == 2 && kv[0] == "limit" ? Int(kv[1]) : nil
                }.first ?? 100
            let records = model.batches.recent(limit).map(\.json)
            return req.eventLoop.makeSucceededFuture(.json(.ok, JSONText.write(["batches": records]) ?? "{}"))
        }
        return r
    }

    /// Answers one request on the admin listener (tests call it without a socket).
    public func respondAdmin(to req: IncomingRequest) -> EventLoopFuture<OutgoingResponse> {
        Self.route(
            req, on: adminRouter,
            serving:
                "the admin listener serves /metrics, /admin/config, POST /admin/reload and /admin/models/{m}/batches")
    }

    /// Answers one request: what `HTTPServer` calls for every request it reads, and what tests call
    /// directly, without a socket.
    public func respond(to req: IncomingRequest) -> EventLoopFuture<OutgoingResponse> {
        Self.route(
            req, on: router,
            serving: "the proxy serves the v2 (Open Inference Protocol) endpoints under /v2 and TF Serving's "
                + "/v1/models/{m}:predict")
    }

    /// A router's handler for the request, or the error that says why there is none (405 with the
    /// methods that would do, 404 with what `serving` says the listener offers).
    static func route(_ req: IncomingRequest, on router: Router, serving: String) -> EventLoopFuture<OutgoingResponse> {
        switch router.match(req.method, path: req.path) {
        case .success(let (handler, params)):
            return handler(req, params)
        case .failure(.methodNotAllowed(let allowed)):
            let methods = allowed.map { "\($0)" }.joined(separator: " or ")
            return req.eventLoop.makeSucceededFuture(
                failure(RequestError(.methodNotAllowed, "use \(methods) for \(req.path)"), batch: nil))
        case .failure(.notFound):
            return req.eventLoop.makeSucceededFuture(
                failure(RequestError(.notFound, "no route for \(req.method) \(req.path); \(serving)"), batch: nil))
        }
    }

    var isShuttingDown: Bool { shuttingDown.withLockedValue { $0 } }

    func ready(_ name: String, loop: EventLoop) -> EventLoopFuture<OutgoingResponse> {
        // Not ready while its model server cannot be reached.
        guard let m = models[name] else {
            return loop.makeSucceededFuture(Self.failure(modelMissing(name), batch: nil))
        }
        let ready = !isShuttingDown && m.upstreamReady
        return loop.makeSucceededFuture(
            .json(ready ? .ok : .serviceUnavailable, "{\"name\":\(JSONText.string(name)),\"ready\":\(ready)}"))
    }

    func modelMissing(_ m: String) -> RequestError {
        return RequestError(
            .notFound, "unknown model '\(m)'; this proxy serves: \(models.keys.sorted().joined(separator: ", "))")
    }

    /// The model's metadata: the upstream's own (inputs, outputs, platform) for v2 backends, under the
    /// proxy's model name, with the proxy's settings in `parameters.mlproxy`; the proxy's alone when the
    /// upstream does not answer.
    func metadata(_ m: String, loop: EventLoop) -> EventLoopFuture<OutgoingResponse> {
        guard let model = models[m] else { return loop.makeSucceededFuture(Self.failure(modelMissing(m), batch: nil)) }
        let c = model.config
        // `signature`: where the inputs requests are checked against come from, or "none" (unchecked).
        var settings: [String: Any] = [
            "backend": c.backend, "policy": c.policy, "slo_ms": Double(c.limits.sloNanos) / 1e6,
            "max_batch_items": c.limits.maxBatchItems, "max_queued_items": c.limits.maxQueuedItems,
            "max_inflight_batches": c.limits.maxInflightBatches,
            "late_requests": c.limits.rejectLate ? "reject" : "dispatch",
            "codecs": model.codecs.map(\.summary), "upstream_model": c.upstreamModel,
            "upstream_timeout_ms": Int(c.upstreamTimeoutMillis), "connect_timeout_ms": Int(c.connectTimeoutMillis),
            "isolate_failures": c.bisectFailures ? "bisect" : "off", "retry_on_reset": c.retryOnReset,
            "check_signature": c.checkSignature, "pad": c.padValue != nil,
            "signature": model.signature?.source ?? "none",
        ]
        if let levels = c.priorityLevels {
            settings["priority_levels"] = levels.count
            settings["default_priority_level"] = levels.defaultLevel
        }
        let mine = Data((JSONText.write(settings) ?? "{}").utf8)
        guard c.metadata == .v2 else { return loop.makeSucceededFuture(Self.localMetadata(m, mine, note: nil)) }
        let path = "/v2/models/\(c.upstreamModel)" + (c.upstreamVersion.isEmpty ? "" : "/versions/\(c.upstreamVersion)")
        return model.fetch(path: path, on: loop).map { response in
            guard response.httpStatus == .ok,
                var meta = (try? JSONSerialization.jsonObject(with: Data(response.body.readableBytesView)))
                    as? [String: Any]
            else { return Self.localMetadata(m, mine, note: "the model server answered \(response.status)") }
            meta["name"] = m
            var params = meta["parameters"] as? [String: Any] ?? [:]
            params["mlproxy"] = (try? JSONSerialization.jsonObject(with: mine)) ?? [:]
            meta["parameters"] = params
            return Self.jsonResponse(meta)
        }.recover { error in Self.localMetadata(m, mine, note: "\(error)") }
    }

    /// The proxy's own metadata for a model, with why the upstream's is missing when it is.
    static func localMetadata(_ name: String, _ settings: Data, note: String?) -> OutgoingResponse {
        var params = (try? JSONSerialization.jsonObject(with: settings)) as? [String: Any] ?? [:]
        if let note { params["upstream_metadata"] = note }
        return jsonResponse([
            "name": name, "versions": [], "platform": "mlproxy", "inputs": [], "outputs": [],
            "parameters": ["mlproxy": params],
        ])
    }

    static func jsonResponse(_ object: [String: Any]) -> OutgoingResponse {
        .json(.ok, JSONText.write(object) ?? "{}")
    }

    func infer(model name: String, _ req: IncomingRequest, protocolName: String) -> EventLoopFuture<
        OutgoingResponse
    > {
        let loop = req.eventLoop
        let arrival = monotonicNanos()
        guard let model = models[name] else {
            return loop.makeSucceededFuture(Self.failure(modelMissing(name), batch: nil))
        }
        let contentType = req.headers.first(name: "content-type")
        guard let codec = model.codec(for: contentType, protocolName: protocolName) else {
            let serving = model.codecs.filter { $0.protocolName == protocolName }
            if serving.isEmpty {
                return loop.makeSucceededFuture(
                    Self.failure(
                        RequestError(
                            .notFound,
                            "model '\(name)' does not serve \(protocolName) requests; its codecs are "
                                + "\(model.codecs.map(\.summary).joined(separator: ", ")) (add a codec that serves "
                                + "\(protocolName) requests; `mlproxy plugins` lists them)"
                        ), batch: nil))
            }
            var accepted: [String] = []
            for t in serving.flatMap(\.contentTypes) where !t.isEmpty && !accepted.contains(t) { accepted.append(t) }
            return loop.makeSucceededFuture(
                Self.failure(
                    RequestError(
                        .unsupported,
                        "content type '\(contentType ?? "")' is not accepted by model '\(name)'; accepted: "
                            + "\(accepted.joined(separator: ", "))"
                    ), batch: nil))
        }
        var decoded: DecodedRequest
        let items: Int
        do {
            decoded = try codec.decode(
                body: req.body, contentType: contentType, model: name, headers: req.headers.map { ($0.name, $0.value) })
            items = try BatchAssembler.validate(inputs: decoded.inputs)
            if let levels = model.config.priorityLevels {
                decoded.priority = try levels.policyPriority(Int64(decoded.priority))
            }
        } catch {
            model.metrics.response(status: error.status)
            return loop.makeSucceededFuture(Self.failure(error, batch: nil))
        }
        // A request that does not fit the model's inputs is refused here, so it never shares a batch.
        if let signature = model.signature {
            do {
                decoded.inputs = try signature.check(
                    model: name, inputs: decoded.inputs, requestedOutputs: decoded.requestedOutputs,
                    guessedTypes: protocolName == "tfserving")
            } catch {
                model.metrics.rejected(reason: "signature", count: 1)
                model.metrics.response(status: error.status)
                return loop.makeSucceededFuture(Self.failure(error, batch: nil))
            }
        }
        let promise = loop.makePromise(of: InferReply.self)
        if !model.submit(decoded, items: items, arrival: arrival, promise: promise) {
            // A reload retired the model between the lookup and now: its successor takes the request
            // (or none does, when the model was removed or the proxy is stopping).
            if let successor = models[name], successor !== model,
                successor.submit(decoded, items: items, arrival: arrival, promise: promise)
            {
            } else {
                promise.succeed(
                    .refused(RequestError(.unavailable, "model '\(name)' was removed or the proxy is stopping")))
            }
        }
        let version = model.config.upstreamVersion
        let metrics = model.metrics
        let policy = model.config.policy
        let request = decoded
        return promise.futureResult.map { reply in
            var response: OutgoingResponse
            switch reply.result {
            case .failure(let e):
                response = Self.failure(e, batch: reply.batch)
            case .success(let r):
                do throws(RequestError) {
                    let m = try codec.encoder.encode(
                        model: name, version: version, id: request.id, outputs: r.outputs,
                        parametersJSON: r.parametersJSON, codecState: request.codecState,
                        allocator: req.allocator)
                    response = OutgoingResponse(.ok, headers: m.headers, body: m.body)
                } catch {
                    response = Self.failure(error, batch: reply.batch)
                }
            }
            if let batch = reply.batch {
                response.headers.append(("mlproxy-policy", Self.policyHeader(policy, bypassed: reply.policyBypassed)))
                if let why = reply.dispatchReason { response.headers.append(("mlproxy-batch-reason", why)) }
                response.headers.append(("mlproxy-batch-size", String(batch.items)))
                response.headers.append(("mlproxy-batch-requests", String(batch.requests)))
                if batch.attempts > 1 { response.headers.append(("mlproxy-batch-attempts", String(batch.attempts))) }
                response.headers.append(("mlproxy-queue-ms", millis(reply.queueNanos)))
                response.headers.append(("mlproxy-upstream-ms", millis(reply.upstreamNanos)))
            }
            metrics.response(status: response.status)
            return response
        }
    }

    /// `mlproxy-policy`: the policy's name, and why it was bypassed for this batch when it was (its
    /// message on one line, at most 200 characters: a header is no place for a plugin's essay).
    static func policyHeader(_ policy: String, bypassed: String?) -> String {
        guard let why = bypassed else { return policy }
        let line = String(why.unicodeScalars.map { $0.value < 0x20 || $0.value == 0x7f ? " " : Character($0) })
        return "\(policy) (bypassed: \(line.prefix(200)))"
    }

    /// An error response with the headers that say whose failure it was and when to come back.
    static func failure(_ e: RequestError, batch: BatchShape?) -> OutgoingResponse {
        var r = OutgoingResponse.error(e.status, e.message)
        r.headers.append(("mlproxy-failure", e.cause.rawValue))
        if let s = e.retryAfterSeconds { r.headers.append(("retry-after", String(s))) }
        return r
    }
}
