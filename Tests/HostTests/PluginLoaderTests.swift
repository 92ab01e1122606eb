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
        let so = dir.appendingPathComponent("libpairs_abi10.so").path
        try run(
            "/usr/bin/cc",
            [
                "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror",
                "-I", repoRoot.appendingPathComponent("Tests/Fixtures/abi-1.0").path, "-o", so,
                repoRoot.appendingPathComponent("samples/c-policy/pairs_policy.c").path, "-ljansson",
            ])
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

/// The libFuzzer-ready entry points of the JSON codecs survive malformed and random input.
@Suite("Codec fuzz entry points")
struct FuzzEntryTests {
    @Test func malformedAndRandomInputsNeverCrash() throws {
        let registry = PluginRegistry()
        let path = try #require(registry.resolve("libmlp_json.so"))
        let handle = try #require(dlopen(path, RTLD_NOW | RTLD_LOCAL))
        typealias Entry = @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32
        var rng = SplitMix64(seed: 99)
        let corpus = [
            "", "{", "[]",
            "\u{93}NUMPY\u{01}\u{00}\u{10}\u{00}{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }",
            "{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[1],\"data\":[1]}]}",
            "{\"instances\":[[1,2],[3]]}", "{\"instances\":[{\"b64\":\"@@@\"}]}", "{\"inputs\":{\"a\":[[[[[]]]]]}}",
            String(repeating: "[", count: 5000),
            "{\"inputs\":[{\"name\":\"x\",\"datatype\":\"BYTES\",\"shape\":[99999999999],\"data\":[]}]}",
        ]
        let tensorPath = try #require(registry.resolve("libmlp_tensor.so"))
        let tensorHandle = try #require(dlopen(tensorPath, RTLD_NOW | RTLD_LOCAL))
        for (lib, symbol) in [
            (handle, "mlp_v2_fuzz_decode_request"), (handle, "mlp_tfserving_fuzz_decode_request"),
            (tensorHandle, "mlp_npy_fuzz_decode_request"),
        ] {
            let entry = unsafeBitCast(try #require(dlsym(lib, symbol)), to: Entry.self)
            var statuses = Set<Int32>()
            for text in corpus {
                statuses.insert(Array(text.utf8).withUnsafeBufferPointer { entry($0.baseAddress, $0.count) })
            }
            for _ in 0..<2000 {
                // Mutations of a valid request: random bytes overwritten.
                var bytes = Array(corpus[3].utf8) + Array(corpus[4].utf8)
                for _ in 0..<3 { bytes[Int(rng.next() % UInt64(bytes.count))] = UInt8(truncatingIfNeeded: rng.next()) }
                statuses.insert(bytes.withUnsafeBufferPointer { entry($0.baseAddress, $0.count) })
            }
            #expect(statuses.contains(Int32(MLP_ERR_INVALID_INPUT.rawValue)), "\(symbol) never reported invalid input")
        }
        // The image decoder (libjpeg-turbo, libpng) on mutated JPEG and PNG files.
        let imagePath = try #require(registry.resolve("libmlp_image.so"))
        let imageHandle = try #require(dlopen(imagePath, RTLD_NOW | RTLD_LOCAL) as UnsafeMutableRawPointer?)
        let imageEntry = unsafeBitCast(
            try #require(dlsym(imageHandle, "mlp_image_fuzz_decode")),
            to: Entry.self)
        for file in ["red_16x8.jpg", "rgb_4x3.png"] {
            let original = Array(try Data(contentsOf: repoRoot.appendingPathComponent("Tests/Fixtures/images/\(file)")))
            var statuses = Set<Int32>()
            statuses.insert(original.withUnsafeBufferPointer { imageEntry($0.baseAddress, $0.count) })
            #expect(statuses == [Int32(MLP_OK.rawValue)], "\(file) must decode")
            for _ in 0..<2000 {
                var bytes = original
                for _ in 0..<3 { bytes[Int(rng.next() % UInt64(bytes.count))] = UInt8(truncatingIfNeeded: rng.next()) }
                if rng.next() % 4 == 0 { bytes.removeLast(Int(rng.next() % UInt64(bytes.count))) }
                statuses.insert(bytes.withUnsafeBufferPointer { imageEntry($0.baseAddress, $0.count) })
            }
            #expect(statuses.contains(Int32(MLP_ERR_INVALID_INPUT.rawValue)), "\(file): no mutation was refused")
        }
    }
}
