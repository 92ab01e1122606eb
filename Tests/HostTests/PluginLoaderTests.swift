import Foundation
import MLProxyHost
import NIOPosix
import PluginAPI
import Testing

@Suite("Plugin loading and ABI versions")
struct PluginLoaderTests {
    let fixtures = repoRoot.appendingPathComponent("Tests/Fixtures/plugins")

    func loadError(_ fixture: String) throws -> PluginLoadError {
        let dir = try scratchDir("abi")
        defer { try? FileManager.default.removeItem(at: dir) }
        let so = try compilePlugin(source: fixtures.appendingPathComponent("\(fixture).c"), into: dir, name: fixture)
        let registry = PluginRegistry(configPaths: [])
        do {
            try registry.load(path: so)
        } catch let e as PluginLoadError {
            #expect(e.file == so)
            #expect(e.description.contains(so))
            #expect(registry.components.isEmpty)
            return e
        }
        Issue.record("\(fixture) loaded but must be refused")
        throw TestFailure.command(fixture, 0, "loaded")
    }

    @Test func wrongMajorIsRefusedNamingBothVersions() throws {
        let e = try loadError("wrong_major")
        #expect(e.reason.contains("ABI 2.0"))
        #expect(e.reason.contains("ABI \(ABIVersion.major).\(ABIVersion.minor)"))
        #expect(e.reason.contains("major"))
    }

    @Test func newerMinorIsRefused() throws {
        let e = try loadError("newer_minor")
        #expect(e.reason.contains("ABI 1.\(ABIVersion.minor + 1)"))
        #expect(e.reason.contains("newer"))
    }

    /// A plugin compiled against the frozen 1.0 header (Tests/Fixtures/abi-1.0), as users built them
    /// before 1.1, loads into this host and works: the C sample policy, which knows nothing of 1.1.
    @Test func pluginsBuiltForABI10StillLoad() throws {
        #expect(ABIVersion.minor >= 1)
        let dir = try scratchDir("abi10")
        defer { try? FileManager.default.removeItem(at: dir) }
        let so = try compilePlugin(
            source: repoRoot.appendingPathComponent("samples/c-policy/pairs_policy.c"), into: dir,
            name: "pairs_abi10", libs: ["-ljansson"], headers: "Tests/Fixtures/abi-1.0")
        // The frozen header really is 1.0, and really lacks what 1.1 added.
        let header = try String(
            contentsOf: repoRoot.appendingPathComponent("Tests/Fixtures/abi-1.0/mlproxy/mlproxy.h"), encoding: .utf8)
        #expect(header.contains("#define MLP_ABI_MINOR 0"))
        #expect(!header.contains("pass_tensor"))
        let registry = PluginRegistry(configPaths: [])
        try registry.load(path: so)
        let policy = try PluginPolicy(
            try registry.component(.policy, "pairs"),
            configJSON: "{\"slo_ms\":100,\"max_batch_items\":8,\"max_inflight_batches\":1}")
        let queue = ModelQueue<Int>(
            limits: QueueLimits(
                maxBatchItems: 8, maxQueuedItems: 100, maxInflightBatches: 1,
                sloNanos: 100_000_000, rejectLate: false), policy: policy)
        _ = queue.admit(items: 1, arrival: 0, timeoutMicros: nil, priority: 0, batchKey: "k", payload: 1)
        #expect(summarize(queue.pump(now: 1)).batches.isEmpty, "one request waits for its pair")
        _ = queue.admit(items: 1, arrival: 2, timeoutMicros: nil, priority: 0, batchKey: "k", payload: 2)
        #expect(summarize(queue.pump(now: 3)).batches == [[1, 2]])
    }

    @Test func missingEntrySymbolIsNamed() throws {
        let e = try loadError("no_entry")
        #expect(e.reason.contains("mlp_plugin_init"))
    }

    @Test func missingFileIsReported() {
        let registry = PluginRegistry(configPaths: ["/nonexistent"])
        let errors = registry.loadAll(extra: ["libdoes_not_exist.so"])
        #expect(errors.contains { $0.file == "libdoes_not_exist.so" && $0.reason.contains("not found") })
        // The bundled plugins still load from the build output.
        #expect((try? registry.component(.policy, "adaptive-sla")) != nil)
    }

    @Test func bundledPluginsRegisterTheirComponents() throws {
        let registry = PluginRegistry()
        let errors = registry.loadAll(extra: [])
        #expect(errors.isEmpty, "\(errors)")
        for (kind, name) in [
            (ComponentKind.codec, "json"), (.codec, "tfserving"), (.codec, "npy"), (.backend, "kserve-v2"),
            (.backend, "tfserving"), (.policy, "none"), (.policy, "mlproxy-aimd"), (.policy, "cork"), (.policy, "aimd"),
            (.policy, "static"), (.policy, "adaptive-sla"),
        ] {
            let c = try registry.component(kind, name)
            #expect(c.file.hasSuffix(".so"))
        }
        #expect(throws: ConfigError.self) { try registry.component(.policy, "no-such-policy") }
    }

    @Test func aFailingInitIsReportedAsSuch() throws {
        let e = try loadError("failing_init")
        #expect(e.reason.contains("mlp_plugin_init failed with status"), "\(e.reason)")
    }

    /// Any plugin that cannot be loaded, by path or by name, stops start-up with the file and the
    /// reason; a component no file provides names the model that wants it.
    @Test func aRefusedPluginStopsStartUp() throws {
        let dir = try scratchDir("refused")
        defer { try? FileManager.default.removeItem(at: dir) }
        let bad = try compilePlugin(
            source: fixtures.appendingPathComponent("wrong_major.c"), into: dir, name: "wrong_major")
        func startError(_ yaml: String) -> String {
            let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
            defer { try? group.syncShutdownGracefully() }
            do {
                let rt = try ProxyRuntime.start(config: try ProxyConfig.parse(yaml: yaml), group: group, listen: false)
                rt.drainAndStop()
                return ""
            } catch let e as ConfigError {
                return e.message
            } catch {
                return "\(error)"
            }
        }
        let model = "models: [{name: good, upstream: \"http://127.0.0.1:1\", policy: none}]"
        let byPath = startError("plugins: [\(bad)]\n\(model)")
        #expect(byPath.contains(bad) && byPath.contains("ABI 2.0"), "\(byPath)")
        let missing = startError("plugins: [\(dir.path)/nope.so]\n\(model)")
        #expect(missing.contains("nope.so") && missing.contains("not found"), "\(missing)")
        let byName = startError("plugins: [no-such-plugin]\n\(model)")
        #expect(byName.contains("no-such-plugin") && byName.contains("not found"), "\(byName)")
        let noPolicy = startError("models: [{name: m1, upstream: \"http://127.0.0.1:1\", policy: from-nowhere}]")
        #expect(noPolicy.contains("model 'm1'") && noPolicy.contains("from-nowhere"), "\(noPolicy)")
    }
}
