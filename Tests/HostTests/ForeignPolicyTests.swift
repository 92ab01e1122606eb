import Foundation
import MLProxyHost
import Testing

/// Policies as plain C functions of numbers, bound with libffi.
@Suite("Foreign policies (libffi)", .serialized)
struct ForeignPolicyTests {
    static let ms: Int64 = 1_000_000
    static let signature = "int pick(double queued_items, double oldest_wait_ms, double slo_ms, double p95_ms)"

    /// The sample, built with plain cc and without our header.
    static func buildSample() throws -> (URL, String) {
        let dir = try scratchDir("ffi")
        let so = dir.appendingPathComponent("libpick.so").path
        try run(
            "/usr/bin/cc",
            [
                "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror", "-o", so,
                repoRoot.appendingPathComponent("samples/ffi-policy/pick.c").path,
            ])
        return (dir, so)
    }

    @Test func signaturesAreCheckedWithClearErrors() throws {
        let good = try ForeignPolicy.Signature.parse(Self.signature)
        #expect(good.symbol == "pick")
        #expect(good.returns == .int32)
        #expect(good.args.map(\.input) == [.queuedItems, .oldestWaitMs, .sloMs, .p95Ms])
        #expect(
            try ForeignPolicy.Signature.parse("int64_t f(int64_t queued_items, float slo_ms)").args.map(\.type) == [
                .int64, .float,
            ])
        #expect(try ForeignPolicy.Signature.parse("double f(void)").args.isEmpty)
        let bad: [(String, String)] = [
            ("int pick(double queued_items, double temperature)", "unknown argument 'temperature'"),
            ("int pick(char *queued_items)", "types are double, float, int, int64"),
            ("void pick(double queued_items)", "return type"),
            ("int pick", "expected 'type name(type arg, ...)'"),
        ]
        for (text, message) in bad {
            do {
                _ = try ForeignPolicy.Signature.parse(text)
                Issue.record("'\(text)' was accepted")
            } catch let e as ConfigError {
                #expect(e.message.contains(message), "\(e.message)")
            }
        }
    }

    @Test func theSampleDecidesThroughLibffi() throws {
        let (dir, so) = try Self.buildSample()
        defer { try? FileManager.default.removeItem(at: dir) }
        let policy = try ForeignPolicy(library: so, signature: Self.signature, pollMillis: 5)
        let q = ModelQueue<Int>(
            limits: QueueLimits(
                maxBatchItems: 64, maxQueuedItems: 1000, maxInflightBatches: 4,
                sloNanos: 200 * Self.ms, rejectLate: false), policy: policy)
        _ = q.admit(items: 1, arrival: 0, timeoutMicros: nil, priority: 0, batchKey: "k", payload: 0)
        // 0 + 2 x 0 < 160: wait, and ask again after poll_ms.
        var effects = q.pump(now: 0)
        #expect(effects.contains { if case .wake(let at) = $0 { return at == 5 * Self.ms } else { return false } })
        // At 160 ms (0.8 x SLO) the function sends what is queued.
        effects = q.pump(now: 160 * Self.ms)
        #expect(
            effects.contains {
                if case .dispatch(let e, _) = $0 { return e.map(\.payload) == [0] } else { return false }
            })
        // 40 items queued: it sends 32.
        for i in 1...40 {
            _ = q.admit(items: 1, arrival: 200 * Self.ms, timeoutMicros: nil, priority: 0, batchKey: "k", payload: i)
        }
        effects = q.pump(now: 200 * Self.ms)
        guard case .dispatch(let first, _) = effects.first else {
            Issue.record("no dispatch")
            return
        }
        #expect(first.count == 32)
    }

    @Test func aMissingSymbolOrLibraryIsAClearError() throws {
        let (dir, so) = try Self.buildSample()
        defer { try? FileManager.default.removeItem(at: dir) }
        #expect(throws: ConfigError.self) {
            try ForeignPolicy(library: so, signature: "int choose(double queued_items)")
        }
        do { _ = try ForeignPolicy(library: so, signature: "int choose(double queued_items)") } catch let e
            as ConfigError
        {
            #expect(e.message.contains("does not export 'choose'"))
        }
        do { _ = try ForeignPolicy(library: "/nonexistent/libx.so", signature: Self.signature) } catch let e
            as ConfigError
        {
            #expect(e.message.contains("cannot be loaded"))
        }
        // In a config, a bad signature stops start-up naming the key.
        do {
            _ = try ProxyConfig.parse(
                yaml: """
                    models:
                      - name: m
                        upstream: "http://127.0.0.1:1"
                        foreign_policy: {library: x.so, signature: "int pick(double colour)"}
                    """, file: "f.yaml")
            Issue.record("a bad signature was accepted")
        } catch let e as ConfigError {
            #expect(e.message.contains("f.yaml"))
            #expect(e.message.contains("models[0].foreign_policy.signature"))
            #expect(e.message.contains("unknown argument 'colour'"))
        }
    }

    @Test func aForeignPolicyServesLiveTraffic() throws {
        let (dir, so) = try Self.buildSample()
        defer { try? FileManager.default.removeItem(at: dir) }
        let cluster = try TestCluster(
            models: """
                  - name: m
                    upstream: "UPSTREAM"
                    slo_ms: 100
                    foreign_policy: {library: "\(so)", signature: "\(Self.signature)"}
                """)
        defer { cluster.stop() }
        let results = try curlParallel(
            url: cluster.url + "/v2/models/m/infer",
            bodies: (0..<40).map { v2Request(id: "\($0)", rows: [[Double($0)]]) })
        var batched = 0
        for (i, r) in results.enumerated() {
            #expect(r.status == 200, "\(r.body)")
            #expect(r.output("sum") == [Double(i)])
            #expect(r.headers["mlproxy-policy"] == "foreign:pick")
            if (Int(r.headers["mlproxy-batch-size"] ?? "") ?? 0) > 1 { batched += 1 }
        }
        #expect(batched > 0)
    }

    @Test func aForeignPolicyRunsInTheSimulator() throws {
        let (dir, so) = try Self.buildSample()
        defer { try? FileManager.default.removeItem(at: dir) }
        let trace = ArrivalTrace(name: "steady", rates: [300], segmentSeconds: 20)
        let setup = SimulationSetup(
            trace: trace, profile: .iris, platform: PlatformConfig(),
            limits: QueueLimits(
                maxBatchItems: 64, maxQueuedItems: 100_000, maxInflightBatches: 1000,
                sloNanos: 200 * Self.ms, rejectLate: false), seed: 1)
        let a = Simulator.run(
            policyName: "pick", policy: try ForeignPolicy(library: so, signature: Self.signature), setup: setup)
        let b = Simulator.run(
            policyName: "pick", policy: try ForeignPolicy(library: so, signature: Self.signature), setup: setup)
        #expect(a.served == a.requests)
        #expect(a.meanBatch > 5)
        #expect(a.replicaSeconds == b.replicaSeconds)
    }
}
