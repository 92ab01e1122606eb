import MLProxyHost
import NIOPosix
import Testing

@Suite("Configuration")
struct ConfigTests {
    func error(_ yaml: String) -> String {
        do {
            _ = try ProxyConfig.parse(yaml: yaml, file: "test.yaml")
            return ""
        } catch let e as ConfigError {
            return e.message
        } catch {
            return "\(error)"
        }
    }

    @Test func unknownKeysNameFileAndKey() {
        let m = error("models:\n  - {name: a, upstream: \"http://127.0.0.1:1\", slo: 5}\n")
        #expect(m.contains("test.yaml"))
        #expect(m.contains("models[0].slo"))
        #expect(m.contains("unknown key"))
    }

    /// A Knative Service's cluster-local address has no port: HTTP's 80.
    @Test func anUpstreamWithoutAPortIsPort80() throws {
        let c = try ProxyConfig.parse(
            yaml: "models:\n  - {name: a, upstream: \"http://iris.default.svc.cluster.local\"}\n"
                + "shutdown_delay_ms: 2500\n")
        #expect(c.models[0].upstream == ListenAddress(host: "iris.default.svc.cluster.local", port: 80))
        #expect(c.shutdownDelayMillis == 2500)
        #expect(error("models:\n  - {name: a, upstream: \"http://x/v2\"}\n").contains("without a path"))
    }

    @Test func badValuesSayWhy() {
        #expect(
            error("models:\n  - {name: a, upstream: \"http://127.0.0.1:1\", max_batch_items: 0}\n").contains(
                "models[0].max_batch_items: 0 is outside"))
        #expect(error("models:\n  - {name: a, upstream: \"https://x:1\"}\n").contains("must start with http://"))
        #expect(error("models:\n  - {name: a}\n").contains("'upstream'"))
        #expect(
            error("listen: nowhere\nmodels:\n  - {name: a, upstream: \"http://127.0.0.1:1\"}\n").contains(
                "listen: 'nowhere' is not host:port"))
        #expect(
            error("models:\n  - {name: a, upstream: \"http://127.0.0.1:1\", late_requests: drop}\n").contains(
                "'dispatch' or 'reject'"))
        #expect(error("models: []\n").contains("at least one model"))
    }

    @Test func theDefaultsSectionNamesThePluginsModelsLeaveOut() throws {
        let c = try ProxyConfig.parse(
            yaml: """
                defaults: {backend: tfserving, codecs: [tfserving, npy], policy: none, metadata: {tfserving: none}}
                models:
                  - {name: a, upstream: "http://127.0.0.1:1"}
                  - {name: b, upstream: "http://127.0.0.1:1", backend: kserve-v2, codecs: [json], policy: static}
                  - {name: c, upstream: "http://127.0.0.1:1", metadata: v2}
                """)
        #expect(c.models[0].backend == "tfserving" && c.models[0].policy == "none")
        #expect(c.models[0].codecs.map(\.elements[0].name) == ["tfserving", "npy"])
        #expect(c.models[0].metadata == nil)
        #expect(c.models[1].backend == "kserve-v2" && c.models[1].policy == "static")
        #expect(c.models[1].codecs.map(\.elements[0].name) == ["json"])
        // Not in the section's metadata table any more: a backend without metadata.
        #expect(c.models[1].metadata == nil)
        #expect(c.models[2].metadata == .v2)
        // Without the section: the built-in defaults.
        let plain = try ProxyConfig.parse(yaml: "models:\n  - {name: a, upstream: \"http://127.0.0.1:1\"}\n")
        #expect(plain.models[0].backend == "kserve-v2" && plain.models[0].policy == "adaptive-sla")
        #expect(plain.models[0].metadata == .v2 && plain.defaults.v2JSONCodec == "json")
        #expect(
            error("defaults: {codec: json}\nmodels:\n  - {name: a, upstream: \"http://127.0.0.1:1\"}\n").contains(
                "defaults.codec: unknown key"))
        #expect(
            error("models:\n  - {name: a, upstream: \"http://127.0.0.1:1\", metadata: grpc}\n").contains(
                "models[0].metadata: must be v2, tfserving or none"))
    }

    @Test func theServerSectionSetsTheListenersLimits() throws {
        let c = try ProxyConfig.parse(
            yaml: """
                server: {header_timeout_ms: 500, body_timeout_ms: 2000, idle_timeout_ms: 30000, max_header_bytes: 4096, max_connections: 7, max_body_bytes: 2048}
                models:
                  - {name: a, upstream: "http://127.0.0.1:1", connect_timeout_ms: 250}
                """)
        #expect(c.server.headerTimeout == .milliseconds(500) && c.server.bodyTimeout == .seconds(2))
        #expect(c.server.idleTimeout == .seconds(30) && c.server.maxHeaderBytes == 4096)
        #expect(c.server.maxConnections == 7 && c.maxBodyBytes == 2048)
        #expect(c.models[0].connectTimeoutMillis == 250)
        let plain = try ProxyConfig.parse(
            yaml: "max_body_bytes: 4096\nmodels:\n  - {name: a, upstream: \"http://127.0.0.1:1\"}\n")
        #expect(plain.maxBodyBytes == 4096 && plain.server.headerTimeout == .seconds(10))
        #expect(plain.server.idleTimeout == .seconds(75) && plain.models[0].connectTimeoutMillis == 5000)
        #expect(
            error(
                "max_body_bytes: 4096\nserver: {max_body_bytes: 4096}\nmodels:\n  - {name: a, upstream: \"http://127.0.0.1:1\"}\n"
            ).contains("not both"))
        #expect(
            error("server: {header_timeout: 5}\nmodels:\n  - {name: a, upstream: \"http://127.0.0.1:1\"}\n").contains(
                "server.header_timeout: unknown key"))
    }

    @Test func defaultsAndPolicyParameters() throws {
        let c = try ProxyConfig.parse(
            yaml: """
                models:
                  - {name: a, upstream: "http://127.0.0.1:9000", policy_params: {quantile: 0.9}, slo_ms: 250}
                """)
        let m = try #require(c.models.first)
        #expect(m.policy == "adaptive-sla")
        #expect(m.backend == "kserve-v2")
        #expect(m.codecs == [CodecChainSpec([ChainElement(name: "json")])])
        #expect(m.upstream == ListenAddress(host: "127.0.0.1", port: 9000))
        #expect(m.limits.sloNanos == 250_000_000)
        #expect(m.policyParamsJSON.contains("\"quantile\":0.9"))
        #expect(m.policyParamsJSON.contains("\"slo_ms\":250"))
    }

    @Test func codecsTakeParameters() throws {
        let c = try ProxyConfig.parse(
            yaml: """
                models:
                  - {name: a, upstream: "http://127.0.0.1:9000", codecs: [json, {name: npy, params: {input_name: x}}]}
                """)
        #expect(
            c.models[0].codecs.map(\.elements) == [
                [ChainElement(name: "json")], [ChainElement(name: "npy", paramsJSON: "{\"input_name\":\"x\"}")],
            ])
        #expect(
            error("models:\n  - {name: a, upstream: \"http://127.0.0.1:1\", codecs: [{params: {}}]}\n").contains(
                "'name' (a codec) or 'chain'"))
    }

    /// Each shipped config passes the checks start-up makes (`make test` builds the sample plugins
    /// first; their paths in the configs are relative to the configs' folders).
    @Test func theShippedSamplesPassTheStartUpChecks() throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { try? group.syncShutdownGracefully() }
        for file in ["samples/quickstart.yaml", "samples/c-policy/config.yaml", "samples/ffi-policy/config.yaml"] {
            let config = try ProxyConfig.load(file: repoRoot.appendingPathComponent(file).path)
            try ProxyRuntime.check(config: config, group: group)
        }
    }
}
