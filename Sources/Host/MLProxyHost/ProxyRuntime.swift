import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore

/// The running proxy: plugins, models, embedded simulated servers and the HTTP listeners.
///
/// What a reload may change (models, plugins, defaults) lives in one immutable `ServingState`, swapped
/// whole: a request reads it once, so it sees the old config or the new one, never a mix. What a reload
/// cannot change (the listeners, the built-in model servers) is fixed at start-up.
public final class ProxyRuntime: @unchecked Sendable {
    /// The models and the plugins and config they were built from.
    struct ServingState {
        var config: ProxyConfig
        var registry: PluginRegistry
        var models: [String: ModelService]
        /// Models a reload replaced or removed that still have requests to answer.
        var retiring: [ObjectIdentifier: ModelService] = [:]
    }

    let state: NIOLockedValueBox<ServingState>
    /// The config the listeners were bound with.
    let startConfig: ProxyConfig
    public let group: EventLoopGroup
    public private(set) var simulated: [BuiltInModelServer] = []
    let upstreamFactory: UpstreamFactory?
    var serverChannel: Channel?
    var router = Router()
    var adminRouter = Router()
    var adminChannel: Channel?
    /// The inference listener's connection counters (/metrics).
    public let connections = ServerStats()
    /// Set on SIGTERM: readiness answers 503 from then on, so the platform stops routing here.
    let shuttingDown = NIOLockedValueBox(false)
    /// One reload at a time.
    let reloadLock = NIOLock()
    let logger = Logger(label: "mlproxy")

    /// The config in force (the last one a reload accepted).
    public var config: ProxyConfig { state.withLockedValue { $0.config } }
    public var models: [String: ModelService] { state.withLockedValue { $0.models } }
    public var registry: PluginRegistry { state.withLockedValue { $0.registry } }
    public var port: Int { serverChannel?.localAddress?.port ?? 0 }
    /// The admin listener's port (0 when there is none).
    public var adminPort: Int { adminChannel?.localAddress?.port ?? 0 }

    private init(config: ProxyConfig, group: EventLoopGroup, upstream: UpstreamFactory?) {
        self.startConfig = config
        self.group = group
        self.upstreamFactory = upstream
        self.state = NIOLockedValueBox(
            ServingState(config: config, registry: PluginRegistry(configPaths: config.pluginPaths), models: [:]))
    }

    /// Loads plugins, starts the simulated servers and models, and binds the listener.
    /// Throws on configuration errors, a plugin file that cannot be loaded among them: start-up stops
    /// rather than serve some models and not others. `listen: false` binds nothing: tests then call
    /// `respond(to:)`, and with `upstream` they keep the model servers in memory too.
    public static func start(
        config: ProxyConfig, group: EventLoopGroup, listen: Bool = true, upstream: UpstreamFactory? = nil
    ) throws -> ProxyRuntime {
        let rt = ProxyRuntime(config: config, group: group, upstream: upstream)
        rt.router = rt.makeRouter()
        rt.adminRouter = rt.makeAdminRouter()
        let registry = rt.registry
        try loadPlugins(config, into: registry)
        if !config.simulatedServers.isEmpty {
            let codec = try CodecInstance(try registry.component(.codec, config.defaults.v2JSONCodec))
            for sim in config.simulatedServers {
                let server = BuiltInModelServer(config: sim, codec: codec, loop: group.next())
                try server.start(group: group)
                rt.simulated.append(server)
                rt.logger.info(
                    "simulated model server on \(sim.listen.host):\(server.port), \(sim.replicas) replica(s)")
            }
        }
        var models: [String: ModelService] = [:]
        for m in config.models {
            models[m.name] = try rt.makeModel(m, config: config, registry: registry)
        }
        rt.state.withLockedValue { $0.models = models }
        for model in models.values { model.start() }
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
        let rt = ProxyRuntime(config: config, group: group, upstream: nil)
        let registry = rt.registry
        try loadPlugins(config, into: registry)
        if !config.simulatedServers.isEmpty {
            _ = try CodecInstance(try registry.component(.codec, config.defaults.v2JSONCodec))
        }
        for m in config.models { _ = try rt.makeModel(m, config: config, registry: registry) }
    }

    /// The bundled plugins and the config's; any file that cannot be loaded is a configuration error.
    static func loadPlugins(_ config: ProxyConfig, into registry: PluginRegistry) throws {
        let errors = registry.loadAll(extra: config.plugins)
        guard errors.isEmpty else {
            throw ConfigError(message: errors.map(\.description).joined(separator: "; "))
        }
    }

    /// A model's components from `registry`; a refusal names the model. `previous`: the model it
    /// replaces on a reload, whose counters it keeps.
    func makeModel(
        _ m: ModelConfig, config: ProxyConfig, registry: PluginRegistry, succeeding previous: ModelService? = nil
    ) throws -> ModelService {
        do {
            let codecs = try m.codecs.map { try Self.makeChain($0, registry: registry, defaults: config.defaults) }
            let backend = try BackendInstance(
                try registry.component(.backend, m.backend), configJSON: m.backendParamsJSON)
            let policy: BatchingPolicy
            if let f = m.foreignPolicy {
                policy = try ForeignPolicy(library: f.library, signature: f.signature, pollMillis: f.pollMillis)
            } else {
                policy = try PluginPolicy(try registry.component(.policy, m.policy), configJSON: m.policyParamsJSON)
            }
            return ModelService(
                config: m, group: group, codecs: codecs, backend: backend, policy: policy, upstream: upstreamFactory,
                succeeding: previous)
        } catch let e as ConfigError {
            throw ConfigError(message: "model '\(m.name)': \(e.message)")
        }
    }

    /// Builds a codec chain. One that starts with a stage has no codec to read the body: the host
    /// hands the stages the whole body, and the defaults' v2 JSON codec writes the reply.
    static func makeChain(
        _ spec: CodecChainSpec, registry: PluginRegistry, defaults: ModelDefaults
    ) throws -> CodecChain {
        let first = spec.elements[0]
        let startsWithStage =
            (try? registry.component(.codec, first.name)) == nil && (try? registry.component(.stage, first.name)) != nil
        do {
            let stages = try spec.elements.dropFirst(startsWithStage ? 0 : 1).map {
                try StageInstance(try registry.component(.stage, $0.name), configJSON: $0.paramsJSON)
            }
            guard !startsWithStage else {
                let reply = try CodecInstance(try registry.component(.codec, defaults.v2JSONCodec))
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
        let (models, retiring) = state.withLockedValue { ($0.models, Array($0.retiring.values)) }
        for name in models.keys.sorted() {
            let model = models[name]!
            // A model a reload replaced still answers its own requests: count them under its name.
            var load = model.load()
            for old in retiring where old.config.name == name {
                let l = old.load()
                load.queued += l.queued
                load.inflight += l.inflight
            }
            model.metrics.render(model: name, queued: load.queued, inflight: load.inflight, into: &out)
        }
        ConnectionMetrics.render(connections.snapshot, into: &out)
        return OutgoingResponse(
            .ok, headers: [("content-type", "text/plain; version=0.0.4")], body: ByteBuffer(string: out))
    }

    // MARK: Shutdown

    /// The graceful shutdown a platform expects on SIGTERM: readiness answers 503 at once, the listener
    /// keeps accepting for `shutdown_delay_ms` (while the platform stops routing here), then closes;
    /// every queued and in-flight request is answered (or `drain_timeout_ms` passes); then the
    /// upstream connections, the built-in model servers and the admin listener close.
    public func shutdownGracefully() -> EventLoopFuture<Void> {
        shuttingDown.withLockedValue { $0 = true }
        let loop = group.next()
        let delay = config.shutdownDelayMillis
        if delay > 0 { logger.info("readiness is 503; accepting for \(delay) ms more before closing the listener") }
        return loop.scheduleTask(in: .milliseconds(delay)) {}.futureResult.flatMap { [self] in
            drain(on: loop)
        }
    }

    /// `shutdownGracefully`, waiting for it (tests, and callers off the event loops).
    public func drainAndStop() {
        try? shutdownGracefully().wait()
    }

    private func drain(on loop: EventLoop) -> EventLoopFuture<Void> {
        let closed = serverChannel?.close() ?? loop.makeSucceededVoidFuture()
        return closed.recover { _ in }.flatMap { [self] () -> EventLoopFuture<Void> in
            // Every model idle (those a reload retired too), or the drain timeout: whichever comes first.
            let drained = loop.makePromise(of: Void.self)
            let settled = NIOLockedValueBox(false)
            let finish: @Sendable () -> Void = {
                if settled.withLockedValue({ done in
                    defer { done = true }
                    return !done
                }) {
                    drained.succeed()
                }
            }
            let (models, retiring) = state.withLockedValue { ($0.models, Array($0.retiring.values)) }
            EventLoopFuture.andAllComplete((Array(models.values) + retiring).map { $0.whenIdle(on: loop) }, on: loop)
                .whenComplete { _ in finish() }
            let timeout = loop.scheduleTask(in: .milliseconds(config.drainTimeoutMillis)) { finish() }
            return drained.futureResult.flatMap {
                timeout.cancel()
                // Give the last responses time to be written.
                return loop.scheduleTask(in: .milliseconds(50)) {}.futureResult
            }.flatMap { [self] in
                for m in models.values { m.shutdown() }
                for m in retiring { m.shutdown() }
                for s in simulated { s.stop() }
                return adminChannel?.close().recover { _ in } ?? loop.makeSucceededVoidFuture()
            }
        }
    }
}

/// Milliseconds with three decimals, without going through printf (this is on every response).
func millis(_ nanos: Int64) -> String {
    let micros = max(nanos, 0) / 1000
    let frac = micros % 1000
    return "\(micros / 1000)." + (frac < 10 ? "00" : frac < 100 ? "0" : "") + String(frac)
}
