import Foundation
import NIOCore
import PluginAPI
import Yams

/// Reads a YAML mapping strictly: every key must be known and every value of the right kind.
struct ConfigNode {
    let file: String
    let path: String
    let value: Any

    func fail(_ reason: String) -> ConfigError {
        ConfigError(message: "\(file): \(path.isEmpty ? "top level" : path): \(reason)")
    }

    /// The mapping's values by key; every key must be in `known` (nil: any key, e.g. names).
    func mapping(known: [String]?) throws -> [String: ConfigNode] {
        guard let dict = value as? [String: Any] else { throw fail("expected a mapping") }
        var out: [String: ConfigNode] = [:]
        for (k, v) in dict {
            if let known, !known.contains(k) {
                throw ConfigError(
                    message:
                        "\(file): \(path.isEmpty ? "" : path + ".")\(k): unknown key (known here: "
                        + "\(known.joined(separator: ", ")))"
                )
            }
            out[k] = ConfigNode(file: file, path: path.isEmpty ? k : "\(path).\(k)", value: v)
        }
        return out
    }

    func string() throws -> String {
        if let s = value as? String { return s }
        throw fail("expected a string")
    }

    func int(min: Int = Int.min, max: Int = Int.max) throws -> Int {
        guard let i = value as? Int else { throw fail("expected an integer") }
        guard i >= min && i <= max else { throw fail("\(i) is outside [\(min), \(max)]") }
        return i
    }

    func double(min: Double) throws -> Double {
        let d: Double
        if let i = value as? Int {
            d = Double(i)
        } else if let x = value as? Double {
            d = x
        } else {
            throw fail("expected a number")
        }
        guard d >= min, d.isFinite else { throw fail("\(d) must be at least \(min)") }
        return d
    }

    func bool() throws -> Bool {
        guard let b = value as? Bool else { throw fail("expected true or false") }
        return b
    }

    func list() throws -> [ConfigNode] {
        guard let a = value as? [Any] else { throw fail("expected a list") }
        return a.enumerated().map { ConfigNode(file: file, path: "\(path)[\($0.offset)]", value: $0.element) }
    }

    func address() throws -> ListenAddress {
        let s = try string()
        guard let colon = s.lastIndex(of: ":"), let port = Int(s[s.index(after: colon)...]), port >= 0, port < 65536
        else {
            throw fail("'\(s)' is not host:port")
        }
        return ListenAddress(host: String(s[..<colon]), port: port)
    }

    func url() throws -> ListenAddress {
        var s = try string()
        guard s.hasPrefix("http://") else {
            throw fail("'\(s)' must start with http:// (TLS upstreams are not supported yet)")
        }
        s.removeFirst("http://".count)
        if s.hasSuffix("/") { s.removeLast() }
        guard !s.contains("/") else { throw fail("'\(s)' must be http://host[:port] without a path") }
        // No port: HTTP's own, 80 (e.g. a Knative Service's cluster-local address).
        if !s.contains(":") { s += ":80" }
        return try ConfigNode(file: file, path: path, value: s).address()
    }
}

extension ProxyConfig {
    public static func load(file: String) throws -> ProxyConfig {
        guard let text = try? String(contentsOfFile: file, encoding: .utf8) else {
            throw ConfigError(message: "\(file): cannot read the file")
        }
        var config = try parse(yaml: text, file: file)
        config.file = file
        config.resolvePaths(relativeTo: (file as NSString).deletingLastPathComponent)
        return config
    }

    /// Plugin folders, plugin files given by path and foreign policy libraries written relative in a
    /// config file are relative to that file's folder, not to wherever the proxy was started.
    mutating func resolvePaths(relativeTo dir: String) {
        func resolve(_ p: String) -> String {
            p.hasPrefix("/") || !p.contains("/") && !p.hasPrefix(".") ? p : (dir as NSString).appendingPathComponent(p)
        }
        func resolveDir(_ p: String) -> String { p.hasPrefix("/") ? p : (dir as NSString).appendingPathComponent(p) }
        guard !dir.isEmpty else { return }
        pluginPaths = pluginPaths.map(resolveDir)
        plugins = plugins.map(resolve)
        for i in models.indices {
            if let lib = models[i].foreignPolicy?.library { models[i].foreignPolicy?.library = resolve(lib) }
        }
    }

    public static func parse(yaml: String, file: String = "<config>") throws -> ProxyConfig {
        let root: Any?
        do { root = try Yams.load(yaml: yaml) } catch {
            throw ConfigError(message: "\(file): not valid YAML: \(error)")
        }
        let top = try ConfigNode(file: file, path: "", value: root ?? [String: Any]()).mapping(known: [
            "listen", "max_body_bytes", "plugin_paths", "plugins", "drain_timeout_ms", "simulated_servers", "models",
            "defaults", "server", "admin_listen", "inference_metrics", "shutdown_delay_ms",
        ])
        var config = ProxyConfig(
            listen: try top["listen"]?.address() ?? ListenAddress(host: "127.0.0.1", port: 8080),
            pluginPaths: try top["plugin_paths"]?.list().map { try $0.string() } ?? [],
            plugins: try top["plugins"]?.list().map { try $0.string() } ?? [],
            drainTimeoutMillis: Int64(try top["drain_timeout_ms"]?.int(min: 0) ?? 30_000),
            simulatedServers: [], models: [])
        if let d = top["defaults"] { config.defaults = try parseDefaults(d) }
        if let s = top["server"] { config.server = try parseServer(s) }
        config.adminListen = try top["admin_listen"]?.address()
        config.inferenceMetrics = try top["inference_metrics"]?.bool() ?? true
        config.shutdownDelayMillis = Int64(try top["shutdown_delay_ms"]?.int(min: 0) ?? 0)
        config.source = yaml
        if let b = top["max_body_bytes"] {
            if top["server"].flatMap({ $0.value as? [String: Any] })?["max_body_bytes"] != nil {
                throw b.fail("set it in 'server:' or here, not both")
            }
            config.server.maxBodyBytes = try b.int(min: 1024)
        }
        for node in try top["simulated_servers"]?.list() ?? [] {
            config.simulatedServers.append(try parseSimulated(node))
        }
        guard let models = top["models"] else {
            throw ConfigError(message: "\(file): models: at least one model is required")
        }
        for node in try models.list() {
            let m = try parseModel(node, defaults: config.defaults)
            if config.models.contains(where: { $0.name == m.name }) {
                throw node.fail("model '\(m.name)' is defined twice")
            }
            config.models.append(m)
        }
        if config.models.isEmpty { throw models.fail("at least one model is required") }
        return config
    }

    /// The listener's limits (`server:`); times in milliseconds.
    static func parseServer(_ node: ConfigNode) throws -> ServerLimits {
        let m = try node.mapping(known: [
            "header_timeout_ms", "body_timeout_ms", "idle_timeout_ms", "max_header_bytes", "max_body_bytes",
            "max_connections",
        ])
        var l = ServerLimits()
        func millis(_ key: String, _ current: TimeAmount) throws -> TimeAmount {
            guard let v = m[key] else { return current }
            return .milliseconds(Int64(try v.int(min: 1, max: 86_400_000)))
        }
        l.headerTimeout = try millis("header_timeout_ms", l.headerTimeout)
        l.bodyTimeout = try millis("body_timeout_ms", l.bodyTimeout)
        l.idleTimeout = try millis("idle_timeout_ms", l.idleTimeout)
        l.maxHeaderBytes = try m["max_header_bytes"]?.int(min: 1024, max: 1 << 24) ?? l.maxHeaderBytes
        l.maxBodyBytes = try m["max_body_bytes"]?.int(min: 1024) ?? l.maxBodyBytes
        l.maxConnections = try m["max_connections"]?.int(min: 1, max: 1_000_000) ?? l.maxConnections
        return l
    }

    static func parseDefaults(_ node: ConfigNode) throws -> ModelDefaults {
        let m = try node.mapping(known: ["backend", "codecs", "policy", "v2_json_codec", "metadata"])
        var d = ModelDefaults()
        if let b = m["backend"] { d.backend = try b.string() }
        if let list = m["codecs"] {
            d.codecs = try list.list().map(parseChain)
            if d.codecs.isEmpty { throw list.fail("at least one codec is required") }
        }
        if let p = m["policy"] { d.policy = try p.string() }
        if let c = m["v2_json_codec"] { d.v2JSONCodec = try c.string() }
        if let md = m["metadata"] {
            let byBackend = try md.mapping(known: nil)
            d.metadata = [:]
            for (backend, value) in byBackend { d.metadata[backend] = try parseMetadata(value) }
        }
        return d
    }

    /// `v2`, `tfserving`, or `none` (YAML's bare `none` is a string; `null` and `false` mean none too).
    static func parseMetadata(_ node: ConfigNode) throws -> MetadataProtocol? {
        if node.value is NSNull || node.value as? Bool == false { return nil }
        let s = try node.string()
        if s == "none" { return nil }
        guard let p = MetadataProtocol(rawValue: s) else { throw node.fail("must be v2, tfserving or none") }
        return p
    }

    static func parseSimulated(_ node: ConfigNode) throws -> BuiltInModelServerConfig {
        let m = try node.mapping(known: [
            "listen", "replicas", "latency_ms", "noise", "seed", "echo", "models", "reject_negative",
            "close_after_error", "drop_after_requests",
        ])
        guard let listen = m["listen"] else { throw node.fail("'listen' is required") }
        var points: [(Int, Double)] = []
        if let lat = m["latency_ms"] {
            guard let dict = lat.value as? [AnyHashable: Any] else {
                throw lat.fail("expected a mapping of batch items to milliseconds")
            }
            for (k, v) in dict {
                guard let items = (k as? Int) ?? Int("\(k)"), items >= 1 else {
                    throw lat.fail("key '\(k)' must be a batch size >= 1")
                }
                points.append(
                    (items, try ConfigNode(file: lat.file, path: "\(lat.path).\(items)", value: v).double(min: 0)))
            }
        }
        if points.isEmpty { points = [(1, 5.0), (100, 10.0)] }
        points.sort { $0.0 < $1.0 }
        var signatures: [String: ModelSignature] = [:]
        for n in try m["models"]?.list() ?? [] {
            let mm = try n.mapping(known: ["name", "inputs", "outputs"])
            guard let name = mm["name"] else { throw n.fail("'name' is required") }
            guard let inputs = mm["inputs"] else { throw n.fail("'inputs' is required") }
            signatures[try name.string()] = ModelSignature(
                inputs: try parseSpecs(inputs), outputs: try mm["outputs"].map(parseSpecs) ?? [],
                source: "the simulated server's config")
        }
        return BuiltInModelServerConfig(
            listen: try listen.address(),
            replicas: try m["replicas"]?.int(min: 1, max: 1_000_000) ?? 1,
            latencyMillis: points.map { (items: $0.0, ms: $0.1) },
            noise: try m["noise"]?.double(min: 0) ?? 0,
            seed: UInt64(try m["seed"]?.int(min: 0) ?? 1),
            echo: try m["echo"]?.bool() ?? false,
            signatures: signatures,
            rejectNegative: try m["reject_negative"]?.bool() ?? false,
            closeAfterError: try m["close_after_error"]?.bool() ?? false,
            dropAfterRequests: try m["drop_after_requests"]?.int(min: 1))
    }

    /// A list of tensor specs: `{name: x, datatype: FP32, shape: [-1, 4], optional: false}`.
}
