import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore

/// The running proxy: plugins, models, embedded simulated servers and the HTTP listener.
/// Built once at start-up; its tables are read-only afterwards.
public final class ProxyRuntime: @unchecked Sendable {
    public let config: ProxyConfig
    public let registry: PluginRegistry
    public let group: EventLoopGroup
    public private(set) var models: [String: ModelService] = [:]
    public private(set) var simulated: [BuiltInModelServer] = []
    var serverChannel: Channel?
    var router = Router()
    var adminRouter = Router()
    var adminChannel: Channel?
    /// The inference listener's connection counters (/metrics).
    public let connections = ServerStats()
    let logger = Logger(label: "mlproxy")

    public var port: Int { serverChannel?.localAddress?.port ?? 0 }
    /// The admin listener's port (0 when there is none).
    public var adminPort: Int { adminChannel?.localAddress?.port ?? 0 }

    private init(config: ProxyConfig, group: EventLoopGroup) {
        self.config = config
        self.group = group
        self.registry = PluginRegistry(configPaths: config.pluginPaths)
    }

    /// Loads plugins, starts the simulated servers and models, and binds the listener.
    /// Throws on configuration errors, a plugin file that cannot be loaded among them: start-up stops
    /// rather than serve some models and not others. `listen: false` binds nothing: tests then call
    /// `respond(to:)`, and with `upstream` they keep the model servers in memory too.
    public static func start(
        config: ProxyConfig, group: EventLoopGroup, listen: Bool = true, upstream: UpstreamFactory? = nil
    ) throws -> ProxyRuntime {
        let rt = ProxyRuntime(config: config, group: group)
        rt.router = rt.makeRouter()
        rt.adminRouter = rt.makeAdminRouter()
        try rt.loadPlugins()
        if !config.simulatedServers.isEmpty {
            let codec = try CodecInstance(try rt.registry.component(.codec, config.defaults.v2JSONCodec))
            for sim in config.simulatedServers {
                let server = BuiltInModelServer(config: sim, codec: codec, loop: group.next())
                try server.start(group: group)
                rt.simulated.append(server)
                rt.logger.info(
                    "simulated model server on \(sim.listen.host):\(server.port), \(sim.replicas) replica(s)")
            }
        }
        for m in config.models {
            let model = try rt.makeModel(m, upstream: upstream)
            rt.models[m.name] = model
            model.start()
        }
        guard listen else { return rt }
        rt.serverChannel = try HTTPServer.bind(
            group: group, address: config.listen, limits: config.server, stats: rt.connections
        ) { [rt] in
            rt.respond(to: $0)
        }
        if let admin = config.adminListen {
            rt.adminChannel = try HTTPServer.bind(group: group, address: admin, limits: ServerLimits()) { [rt] in
                rt.respondAdmin(to: $0)
            }
            rt.logger.info("admin listener on \(admin.host):\(rt.adminPort)")
        }
        let names = config.models.map(\.name).joined(separator: ", ")
        rt.logger.info("mlproxy listening on \(config.listen.host):\(rt.port) with models \(names)")
        return rt
    }

    /// Checks a config as start-up would, without serving: every plugin loads, every model's
    /// codecs, stages, backend and policy accept their parameters (`mlproxy check`). Nothing is
    /// bound, started or connected.
    public static func check(config: ProxyConfig, group: EventLoopGroup) throws {
        let rt = ProxyRuntime(config: config, group: group)
        try rt.loadPlugins()
        if !config.simulatedServers.isEmpty {
            _ = try CodecInstance(try rt.registry.component(.codec, config.defaults.v2JSONCodec))
        }
        for m in config.models { _ = try rt.makeModel(m, upstream: nil) }
    }

    /// The bundled plugins and the config's; any file that cannot be loaded is a configuration error.
    func loadPlugins() throws {
        let errors = registry.loadAll(extra: config.plugins)
        guard errors.isEmpty else {
            throw ConfigError(message: errors.map(\.description).joined(separator: "; "))
        }
    }

    /// A model's components; a refusal names the model.
    func makeModel(_ m: ModelConfig, upstream: UpstreamFactory?) throws -> ModelService {
        do {
            let codecs = try m.codecs.map { try makeChain($0) }
            let backend = try BackendInstance(
                try registry.component(.backend, m.backend), configJSON: m.backendParamsJSON)
            let policy: BatchingPolicy
            if let f = m.foreignPolicy {
                policy = try ForeignPolicy(library: f.library, signature: f.signature, pollMillis: f.pollMillis)
            } else {
                policy = try PluginPolicy(try registry.component(.policy, m.policy), configJSON: m.policyParamsJSON)
            }
            return ModelService(
                config: m, group: group, codecs: codecs, backend: backend, policy: policy, upstream: upstream)
        } catch let e as ConfigError {
            throw ConfigError(message: "model '\(m.name)': \(e.message)")
        }
    }

    /// Builds a codec chain. One that starts with a stage has no codec to read the body: the host
    /// hands the stages the whole body, and the defaults' v2 JSON codec writes the reply.
    func makeChain(_ spec: CodecChainSpec) throws -> CodecChain {
        let first = spec.elements[0]
        let startsWithStage =
            (try? registry.component(.codec, first.name)) == nil && (try? registry.component(.stage, first.name)) != nil
        do {
            let stages = try spec.elements.dropFirst(startsWithStage ? 0 : 1).map {
                try StageInstance(try registry.component(.stage, $0.name), configJSON: $0.paramsJSON)
            }
            guard !startsWithStage else {
                let reply = try CodecInstance(try registry.component(.codec, config.defaults.v2JSONCodec))
                return CodecChain(
                    bodyStages: stages, replyCodec: reply, contentTypes: spec.contentTypes, rank: spec.rank)
            }
            let codec = try CodecInstance(try registry.component(.codec, first.name), configJSON: first.paramsJSON)
            return CodecChain(codec: codec, stages: stages, contentTypes: spec.contentTypes, rank: spec.rank)
        } catch let e as ConfigError {
            throw ConfigError(message: "codec chain '\(spec)': \(e.message)")
        }
    }

    // MARK: Metrics

    /// Every model's counters in the Prometheus text format (GET /metrics).
    func metricsResponse() -> OutgoingResponse {
        var out = ModelMetrics.help
        for name in models.keys.sorted() {
            let model = models[name]!
            let load = model.load()
            model.metrics.render(model: name, queued: load.queued, inflight: load.inflight, into: &out)
        }
        ConnectionMetrics.render(connections.snapshot, into: &out)
        return OutgoingResponse(
            .ok, headers: [("content-type", "text/plain; version=0.0.4")], body: ByteBuffer(string: out))
    }

    // MARK: Shutdown

    /// Stops accepting connections, waits until every queued and in-flight request is answered
    /// (or `drain_timeout_ms` passes), then closes upstream connections and simulated servers.
    public func drainAndStop() {
        try? serverChannel?.close().wait()
        // Every model idle, or the drain timeout: whichever comes first.
        let loop = group.next()
        let drained = loop.makePromise(of: Void.self)
        let settled = NIOLockedValueBox(false)
        let finish: @Sendable () -> Void = {
            let first = settled.withLockedValue { done -> Bool in
                defer { done = true }
                return !done
            }
            if first { drained.succeed() }
        }
        EventLoopFuture.andAllComplete(models.values.map { $0.whenIdle(on: loop) }, on: loop).whenComplete { _ in
            finish()
        }
        let timeout = loop.scheduleTask(in: .milliseconds(config.drainTimeoutMillis)) { finish() }
        try? drained.futureResult.wait()
        timeout.cancel()
        // Give the last responses time to be written.
        usleep(50_000)
        for m in models.values { m.shutdown() }
        for s in simulated { s.stop() }
        try? adminChannel?.close().wait()
    }
}

/// Milliseconds with three decimals, without going through printf (this is on every response).
func millis(_ nanos: Int64) -> String {
    let micros = max(nanos, 0) / 1000
    let frac = micros % 1000
    return "\(micros / 1000)." + (frac < 10 ? "00" : frac < 100 ? "0" : "") + String(frac)
}
