import ArgumentParser
import Dispatch
import Foundation
import Logging
import MLProxyHost
import NIOCore
import NIOPosix
import ServiceLifecycle
import UnixSignals

@main
struct MLProxyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mlproxy",
        abstract: "An SLA-aware batching reverse proxy for ML inference servers.",
        subcommands: [Serve.self, Check.self, SimServer.self, Simulate.self, Plugins.self],
        defaultSubcommand: Serve.self)
}

private func bootstrapLogging(_ level: String) {
    let parsed = Logger.Level(rawValue: level) ?? .info
    LoggingSystem.bootstrap { label in
        var h = StreamLogHandler.standardError(label: label)
        h.logLevel = parsed
        return h
    }
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the proxy from a YAML config (the default command).")

    @Option(name: .shortAndLong, help: "The YAML configuration file.")
    var config: String = "samples/quickstart.yaml"

    @Option(help: "Event loop threads (default: one per core).")
    var threads: Int = System.coreCount

    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = "info"

    func run() async throws {
        bootstrapLogging(logLevel)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, threads))
        let (cfg, runtime) = try exitingOnConfigErrors(config) {
            let cfg = try ProxyConfig.load(file: config)
            return (cfg, try ProxyRuntime.start(config: cfg, group: group))
        }
        try await serve(runtime, group: group, ready: "mlproxy ready on http://\(cfg.listen.host):\(runtime.port)")
    }
}

struct Check: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check a config as start-up would (plugins load, models accept their settings), without serving.")

    @Option(name: .shortAndLong, help: "The YAML configuration file.")
    var config: String = "samples/quickstart.yaml"

    func run() throws {
        bootstrapLogging("warning")
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { try? group.syncShutdownGracefully() }
        let cfg = try exitingOnConfigErrors(config) {
            let cfg = try ProxyConfig.load(file: config)
            try ProxyRuntime.check(config: cfg, group: group)
            return cfg
        }
        print("\(config): ok, \(cfg.models.count) model(s): \(cfg.models.map(\.name).joined(separator: ", "))")
    }
}

struct SimServer: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "simserver",
        abstract: "Run only a simulated v2 model server (latency by batch size, one request at a time per replica).")

    @Option(help: "host:port to listen on.")
    var listen: String = "127.0.0.1:9000"

    @Option(help: "Latency profile as items:ms pairs, e.g. 1:8.6,100:10.1 (linear in between).")
    var latency: String = "1:5,100:10"

    @Option(help: "Replicas, each serving one request at a time.")
    var replicas: Int = 1

    @Option(help: "Relative latency noise (standard deviation as a fraction, e.g. 0.05).")
    var noise: Double = 0

    @Option(help: "Seed for the noise.")
    var seed: UInt64 = 1

    @Option(help: "Event loop threads.")
    var threads: Int = 1

    func run() async throws {
        bootstrapLogging("info")
        var points = "{"
        for pair in latency.split(separator: ",") {
            let kv = pair.split(separator: ":")
            guard kv.count == 2, Int(kv[0]) != nil, Double(kv[1]) != nil else {
                throw ValidationError("--latency: '\(pair)' is not items:ms")
            }
            points += "\(kv[0]): \(kv[1]), "
        }
        points += "}"
        // One code path for configs: build the YAML the proxy would read.
        let yaml = """
            listen: "127.0.0.1:0"
            simulated_servers:
              - {listen: "\(listen)", replicas: \(replicas), noise: \(noise), seed: \(seed), latency_ms: \(points)}
            models:
              - {name: unused, upstream: "http://127.0.0.1:1"}
            """
        let cfg = try ProxyConfig.parse(yaml: yaml, file: "--options")
        let group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, threads))
        let runtime = try ProxyRuntime.start(config: cfg, group: group)
        try await serve(runtime, group: group, ready: "simulated model server ready on http://\(listen)")
    }
}

struct Plugins: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Load the plugins a config names and list their components.")

    @Option(name: .shortAndLong, help: "The YAML configuration file.")
    var config: String = "samples/quickstart.yaml"

    func run() throws {
        let cfg = try ProxyConfig.load(file: config)
        let registry = PluginRegistry(configPaths: cfg.pluginPaths)
        let errors = registry.loadAll(extra: cfg.plugins)
        let components = registry.components.values.sorted {
            ($0.kind.rawValue, $0.name) < ($1.kind.rawValue, $1.name)
        }
        // One line per plugin file (name, its version, license, ABI, file, description), then one per
        // component; tab-separated, "-" where a plugin does not say (ABI 1.0 and 1.1 plugins cannot).
        var files: [String: PluginAbout] = [:]
        for c in components { files[c.file] = c.plugin }
        for (file, p) in files.sorted(by: { $0.key < $1.key }) {
            print(
                ["plugin", p.name, p.version ?? "-", p.license ?? "-", "ABI \(p.abi)", file, p.description ?? "-"]
                    .joined(separator: "\t"))
        }
        for c in components { print("\(c.kind)\t\(c.name)\t\(c.summary)\t\(c.file)") }
        for e in errors { print("error\t\(e.description)") }
        if !errors.isEmpty { throw ExitCode(2) }
    }
}

/// Runs `body`; a configuration error in it is printed, naming the config file once, and ends the
/// command with exit status 2 (what serve and check share).
private func exitingOnConfigErrors<T>(_ file: String, _ body: () throws -> T) throws -> T {
    do { return try body() } catch let e as ConfigError {
        let message = e.message.hasPrefix(file) ? e.message : "\(file): \(e.message)"
        FileHandle.standardError.write(Data("mlproxy: configuration error: \(message)\n".utf8))
        throw ExitCode(2)
    }
}

/// Prints the ready line, then serves until SIGTERM or SIGINT (swift-service-lifecycle's graceful
/// shutdown): readiness turns 503, queued and in-flight requests are answered, then the command ends.
/// SIGHUP re-reads the config file meanwhile.
private func serve(_ runtime: ProxyRuntime, group: EventLoopGroup, ready: String) async throws {
    let logger = Logger(label: "mlproxy")
    let services = ServiceGroup(
        services: [ProxyService(runtime: runtime)], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
    printReady(ready)
    try await services.run()
    try await group.shutdownGracefully()
}

/// The running proxy as a service: reloads on SIGHUP until a graceful shutdown, then drains.
struct ProxyService: Service {
    let runtime: ProxyRuntime

    func run() async throws {
        let logger = Logger(label: "mlproxy")
        for await _ in await UnixSignalsSequence(trapping: .sighup).cancelOnGracefulShutdown() {
            logger.info("SIGHUP: reloading \(runtime.config.file ?? "the config")")
            do {
                _ = try runtime.reload()
            } catch let e as ConfigError {
                logger.error("reload refused, the running config stays: \(e.message)")
            }
        }
        logger.info("shutting down: readiness is 503; answering queued and in-flight requests")
        try await runtime.shutdownGracefully().get()
    }
}

/// The ready line scripts wait for, written unbuffered.
private func printReady(_ line: String) {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}
