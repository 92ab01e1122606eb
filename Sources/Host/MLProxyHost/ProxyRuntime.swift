import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import PluginAPI

/// The running proxy: plugins, models, embedded simulated servers and the HTTP listener.
/// Built once at start-up; its tables are read-only afterwards.
public final class ProxyRuntime: @unchecked Sendable {
    public let config: ProxyConfig
    public let registry: PluginRegistry
    public let group: EventLoopGroup
    public private(set) var models: [String: ModelService] = [:]
    /// Models that could not start (a plugin they need failed to load), with the reason.
    public private(set) var unavailable: [String: String] = [:]
    public private(set) var simulated: [SimulatedModelServer] = []
    private var serverChannel: Channel?
    private let logger = Logger(label: "mlproxy")

    public var port: Int { serverChannel?.localAddress?.port ?? 0 }

    private init(config: ProxyConfig, group: EventLoopGroup) {
        self.config = config
        self.group = group
        self.registry = PluginRegistry(configPaths: config.pluginPaths)
    }

    /// Loads plugins, starts the simulated servers and models, and binds the listener.
    /// Throws on configuration errors; a plugin file that fails to load only takes down the models
    /// that need it.
    public static func start(config: ProxyConfig, group: EventLoopGroup) throws -> ProxyRuntime {
        let rt = ProxyRuntime(config: config, group: group)
        let loadErrors = rt.registry.loadAll(extra: config.plugins)
        if !config.simulatedServers.isEmpty {
            let codec = try CodecInstance(try rt.registry.component(.codec, "json"))
            for sim in config.simulatedServers {
                let server = SimulatedModelServer(config: sim, codec: codec, loop: group.next())
                try server.start(group: group)
                rt.simulated.append(server)
                rt.logger.info(
                    "simulated model server on \(sim.listen.host):\(server.port), \(sim.replicas) replica(s)")
            }
        }
        for m in config.models {
            do {
                let model = try rt.makeModel(m)
                rt.models[m.name] = model
                model.start()
            } catch let e as ConfigError where !loadErrors.isEmpty {
                let reason = "\(e.message); plugin errors: \(loadErrors.map(\.description).joined(separator: "; "))"
                rt.unavailable[m.name] = reason
                rt.logger.error("model '\(m.name)' is not available: \(reason)")
            }
        }
        rt.serverChannel = try HTTPServer.bind(group: group, address: config.listen, maxBodyBytes: config.maxBodyBytes)
        { [rt] in
            rt.route($0)
        }
        rt.logger.info(
            "mlproxy listening on \(config.listen.host):\(rt.port) with models \(config.models.map(\.name).joined(separator: ", "))"
        )
        return rt
    }

    private func makeModel(_ m: ModelConfig) throws -> ModelService {
        let codecs = try m.codecs.map { try makeChain($0, model: m.name) }
        let backend = try BackendInstance(try registry.component(.backend, m.backend), configJSON: m.backendParamsJSON)
        let policy: BatchingPolicy
        if let f = m.foreignPolicy {
            policy = try ForeignPolicy(library: f.library, signature: f.signature, pollMillis: f.pollMillis)
        } else {
            policy = try PluginPolicy(try registry.component(.policy, m.policy), configJSON: m.policyParamsJSON)
        }
        return ModelService(config: m, group: group, codecs: codecs, backend: backend, policy: policy)
    }

    /// Builds a codec chain; one that starts with a stage gets the `raw` codec (the body as one BYTES
    /// element) in front.
    private func makeChain(_ spec: CodecChainSpec, model: String) throws -> CodecChain {
        var elements = spec.elements
        if (try? registry.component(.codec, elements[0].name)) == nil,
            (try? registry.component(.stage, elements[0].name)) != nil
        {
            elements.insert(ChainElement(name: "raw"), at: 0)
        }
        do {
            let codec = try CodecInstance(
                try registry.component(.codec, elements[0].name), configJSON: elements[0].paramsJSON)
            let stages = try elements.dropFirst().map {
                try StageInstance(try registry.component(.stage, $0.name), configJSON: $0.paramsJSON)
            }
            return CodecChain(codec: codec, stages: stages, contentTypes: spec.contentTypes, rank: spec.rank)
        } catch let e as ConfigError {
            throw ConfigError(message: "model '\(model)': codec chain '\(spec)': \(e.message)")
        }
    }

    // MARK: Routes

    private func route(_ req: IncomingRequest) -> EventLoopFuture<OutgoingResponse> {
        let loop = req.eventLoop
        let parts = req.path.split(separator: "/").map(String.init)
        if req.method == .GET && parts == ["metrics"] {
            return loop.makeSucceededFuture(metricsResponse())
        }
        if parts.first == "v1", parts.count >= 3, parts[1] == "models", let last = parts.last,
            last.hasSuffix(":predict"),
            parts.count == 3 || (parts.count == 5 && parts[3] == "versions")
        {
            // TF Serving REST: /v1/models/{m}:predict or /v1/models/{m}/versions/{v}:predict.
            guard req.method == .POST else { return loop.makeSucceededFuture(.error(405, "use POST for predict")) }
            let model = parts.count == 3 ? String(last.dropLast(":predict".count)) : parts[2]
            return infer(model: model, req, protocolName: "tfserving")
        }
        guard parts.first == "v2" else {
            return loop.makeSucceededFuture(
                .error(
                    404,
                    "no route for \(req.method) \(req.path); the proxy serves the v2 (Open Inference Protocol) endpoints under /v2 and TF Serving's /v1/models/{m}:predict"
                ))
        }
        // /v2/models/{m}/versions/{v}/... is served like /v2/models/{m}/...: the proxy has one version.
        var segs = Array(parts.dropFirst())
        if segs.count >= 4 && segs[0] == "models" && segs[2] == "versions" { segs.removeSubrange(2...3) }
        let model = segs.count >= 2 && segs[0] == "models" ? segs[1] : ""
        let action = segs.count >= 3 && segs[0] == "models" ? segs[2] : ""
        switch (req.method, segs.count, segs.first ?? "") {
        case (.GET, 0, _):
            return loop.makeSucceededFuture(
                .json(200, "{\"name\":\"mlproxy\",\"version\":\"0.1.0\",\"extensions\":[]}"))
        case (.GET, 2, "health") where segs[1] == "live":
            return loop.makeSucceededFuture(.json(200, "{\"live\":true}"))
        case (.GET, 2, "health") where segs[1] == "ready":
            let ready = unavailable.isEmpty
            return loop.makeSucceededFuture(.json(ready ? 200 : 503, "{\"ready\":\(ready)}"))
        case (.GET, 2, "models"):
            return metadata(model, loop: loop)
        case (.GET, 3, "models") where action == "ready":
            // Not ready while its model server cannot be reached.
            if let m = models[model] {
                let ready = m.upstreamReady
                return loop.makeSucceededFuture(
                    .json(ready ? 200 : 503, "{\"name\":\(jsonString(model)),\"ready\":\(ready)}"))
            }
            return loop.makeSucceededFuture(modelMissing(model))
        case (.POST, 3, "models") where action == "infer":
            return infer(model: model, req, protocolName: "v2")
        case (_, 3, "models") where action == "infer":
            return loop.makeSucceededFuture(.error(405, "use POST for inference"))
        default:
            return loop.makeSucceededFuture(.error(404, "no route for \(req.method) \(req.path)"))
        }
    }

    private func modelMissing(_ m: String) -> OutgoingResponse {
        if let why = unavailable[m] { return .error(503, "model '\(m)' is not available: \(why)") }
        return .error(404, "unknown model '\(m)'; this proxy serves: \(models.keys.sorted().joined(separator: ", "))")
    }

    /// The model's metadata: the upstream's own (inputs, outputs, platform) for v2 backends, under the
    /// proxy's model name, with the proxy's settings in `parameters.mlproxy`; the proxy's alone when the
    /// upstream does not answer.
    private func metadata(_ m: String, loop: EventLoop) -> EventLoopFuture<OutgoingResponse> {
        guard let model = models[m] else { return loop.makeSucceededFuture(modelMissing(m)) }
        let c = model.config
        // `signature`: where the inputs requests are checked against come from, or "none" (unchecked).
        let settings: [String: Any] = [
            "backend": c.backend, "policy": c.policy, "slo_ms": Double(c.limits.sloNanos) / 1e6,
            "max_batch_items": c.limits.maxBatchItems, "upstream_model": c.upstreamModel,
            "signature": model.signature?.source ?? "none",
        ]
        let mine = (try? JSONSerialization.data(withJSONObject: settings, options: [.sortedKeys])) ?? Data("{}".utf8)
        guard c.backend == "kserve-v2" else { return loop.makeSucceededFuture(Self.localMetadata(m, mine, note: nil)) }
        let path = "/v2/models/\(c.upstreamModel)" + (c.upstreamVersion.isEmpty ? "" : "/versions/\(c.upstreamVersion)")
        return model.fetch(path: path, on: loop).map { response in
            guard response.status == 200,
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
    private static func localMetadata(_ name: String, _ settings: Data, note: String?) -> OutgoingResponse {
        var params = (try? JSONSerialization.jsonObject(with: settings)) as? [String: Any] ?? [:]
        if let note { params["upstream_metadata"] = note }
        return jsonResponse([
            "name": name, "versions": [], "platform": "mlproxy", "inputs": [], "outputs": [],
            "parameters": ["mlproxy": params],
        ])
    }

    private static func jsonResponse(_ object: [String: Any]) -> OutgoingResponse {
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data("{}".utf8)
        return OutgoingResponse(
            status: 200, headers: [("content-type", "application/json")], body: ByteBuffer(bytes: data))
    }

    private func infer(model name: String, _ req: IncomingRequest, protocolName: String) -> EventLoopFuture<
        OutgoingResponse
    > {
        let loop = req.eventLoop
        let arrival = monotonicNanos()
        guard let model = models[name] else { return loop.makeSucceededFuture(modelMissing(name)) }
        let contentType = req.headers.first(name: "content-type")
        guard let codec = model.codec(for: contentType, protocolName: protocolName) else {
            let serving = model.codecs.filter { $0.protocolName == protocolName }
            if serving.isEmpty {
                return loop.makeSucceededFuture(
                    .error(
                        404,
                        "model '\(name)' does not serve \(protocolName) requests; its codecs are \(model.codecs.map(\.summary).joined(separator: ", ")) (add \(protocolName == "tfserving" ? "tfserving" : "json") to its codecs)"
                    ))
            }
            var accepted: [String] = []
            for t in serving.flatMap(\.contentTypes) where !t.isEmpty && !accepted.contains(t) { accepted.append(t) }
            return loop.makeSucceededFuture(
                .error(
                    415,
                    "content type '\(contentType ?? "")' is not accepted by model '\(name)'; accepted: \(accepted.joined(separator: ", "))"
                ))
        }
        var decoded: DecodedRequest
        switch codec.decode(
            body: req.body, contentType: contentType, model: name, headers: req.headers.map { ($0.name, $0.value) })
        {
        case .failure(let e):
            model.metrics.response(status: e.status)
            return loop.makeSucceededFuture(Self.failure(e, batch: nil))
        case .success(let d): decoded = d
        }
        let items: Int
        switch BatchAssembler.validate(inputs: decoded.inputs) {
        case .failure(let e):
            model.metrics.response(status: e.status)
            return loop.makeSucceededFuture(Self.failure(e, batch: nil))
        case .success(let n): items = n
        }
        // A request that does not fit the model's inputs is refused here, so it never shares a batch.
        if let signature = model.signature {
            switch signature.check(
                model: name, inputs: decoded.inputs, requestedOutputs: decoded.requestedOutputs,
                guessedTypes: protocolName == "tfserving")
            {
            case .failure(let e):
                model.metrics.rejected(reason: "signature", count: 1)
                model.metrics.response(status: e.status)
                return loop.makeSucceededFuture(Self.failure(e, batch: nil))
            case .success(let inputs): decoded.inputs = inputs
            }
        }
        let promise = loop.makePromise(of: InferReply.self)
        model.submit(decoded, items: items, arrival: arrival, promise: promise)
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
                switch codec.codec.encode(
                    model: name, version: version, id: request.id, outputs: r.outputs,
                    parametersJSON: r.parametersJSON, codecState: request.codecState,
                    allocator: req.allocator)
                {
                case .failure(let e):
                    response = Self.failure(e, batch: reply.batch)
                case .success(let m):
                    response = OutgoingResponse(status: 200, headers: m.headers, body: m.body)
                }
            }
            if let batch = reply.batch {
                response.headers.append(("mlproxy-policy", policy))
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

    /// An error response with the headers that say whose failure it was and when to come back.
    private static func failure(_ e: RequestError, batch: BatchShape?) -> OutgoingResponse {
        var r = OutgoingResponse.error(e.status, e.message)
        r.headers.append(("mlproxy-failure", e.cause.rawValue))
        if let s = e.retryAfterSeconds { r.headers.append(("retry-after", String(s))) }
        return r
    }

    // MARK: Metrics

    /// Every model's counters in the Prometheus text format (GET /metrics).
    private func metricsResponse() -> OutgoingResponse {
        var out =
            "# HELP mlproxy_responses_total Inference responses by HTTP status.\n# TYPE mlproxy_responses_total counter\n"
            + "# HELP mlproxy_rejected_total Requests answered without reaching the model: queue_full, invalid, signature, unavailable, shed, deadline.\n# TYPE mlproxy_rejected_total counter\n"
            + "# HELP mlproxy_batches_total Upstream requests (batches) sent.\n# TYPE mlproxy_batches_total counter\n"
            + "# HELP mlproxy_upstream_failures_total Batches whose upstream request failed.\n# TYPE mlproxy_upstream_failures_total counter\n"
            + "# HELP mlproxy_split_batches_total Batches the model server rejected and the proxy split to isolate the cause.\n# TYPE mlproxy_split_batches_total counter\n"
            + "# HELP mlproxy_batch_splits_total Splits made while isolating failures (each sends two smaller upstream requests).\n# TYPE mlproxy_batch_splits_total counter\n"
            + "# HELP mlproxy_upstream_retries_total Upstream requests sent again after a reused connection was lost before the reply.\n# TYPE mlproxy_upstream_retries_total counter\n"
            + "# HELP mlproxy_upstream_up Whether the model server can be reached (0 while the proxy answers 503 and reconnects).\n# TYPE mlproxy_upstream_up gauge\n"
            + "# HELP mlproxy_failed_after_dispatch_total Requests that left the queue and got an error, by cause: own, batch, upstream.\n# TYPE mlproxy_failed_after_dispatch_total counter\n"
            + "# HELP mlproxy_batch_items Items per batch.\n# TYPE mlproxy_batch_items histogram\n"
            + "# HELP mlproxy_queue_seconds Time requests waited in the proxy's queue.\n# TYPE mlproxy_queue_seconds histogram\n"
            + "# HELP mlproxy_upstream_seconds Upstream latency per batch.\n# TYPE mlproxy_upstream_seconds histogram\n"
            + "# HELP mlproxy_queued_requests Requests waiting now.\n# TYPE mlproxy_queued_requests gauge\n"
            + "# HELP mlproxy_inflight_batches Batches at the model server now.\n# TYPE mlproxy_inflight_batches gauge\n"
        for name in models.keys.sorted() {
            let model = models[name]!
            let load = model.load()
            model.metrics.render(model: name, queued: load.queued, inflight: load.inflight, into: &out)
        }
        return OutgoingResponse(
            status: 200, headers: [("content-type", "text/plain; version=0.0.4")], body: ByteBuffer(string: out))
    }

    // MARK: Shutdown

    /// Stops accepting connections, waits until every queued and in-flight request is answered
    /// (or `drain_timeout_ms` passes), then closes upstream connections and simulated servers.
    public func drainAndStop() {
        try? serverChannel?.close().wait()
        let deadline = monotonicNanos() + config.drainTimeoutMillis * 1_000_000
        while monotonicNanos() < deadline {
            var busy = 0
            for m in models.values {
                let l = m.load()
                busy += l.queued + l.inflight
            }
            if busy == 0 { break }
            usleep(20_000)
        }
        // Give the last responses time to be written.
        usleep(50_000)
        for m in models.values { m.shutdown() }
        for s in simulated { s.stop() }
    }
}

/// Milliseconds with three decimals, without going through printf (this is on every response).
func millis(_ nanos: Int64) -> String {
    let micros = max(nanos, 0) / 1000
    let frac = micros % 1000
    return "\(micros / 1000)." + (frac < 10 ? "00" : frac < 100 ? "0" : "") + String(frac)
}
