import Foundation
import MLProxyHost
import NIOPosix
import Testing

/// Plugins written in Swift with the MLProxyPlugin SDK: samples/swift-plugin, built by `swift build`
/// as libmlp_swift_sample.so next to the mlproxy executable.
@Suite("Swift plugins", .serialized)
struct SwiftPluginTests {
    let bin = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
    var binary: String { bin.appendingPathComponent("mlproxy").path }
    var swiftSample: String { bin.appendingPathComponent("libmlp_swift_sample.so").path }

    /// The mlproxy executable loads the Swift sample: `mlproxy plugins` describes it, and a model
    /// served with its policy and its stage answers every request, level-1 requests sent after 48
    /// level-2 ones wait much less (the policy picks them), and the stage's clipping reaches the
    /// model server (which echoes its inputs).
    @Test func theMlproxyExecutableServesWithASwiftPolicyAndStage() throws {
        let dir = try scratchDir("swift-plugins")
        defer { try? FileManager.default.removeItem(at: dir) }
        let config = dir.appendingPathComponent("c.yaml")
        try """
        plugins: ["\(swiftSample)"]
        models: [{name: m, upstream: "http://127.0.0.1:1"}]
        """.write(to: config, atomically: true, encoding: .utf8)
        let listed = try run(binary, ["plugins", "--config", config.path])
        let row = try #require(
            listed.split(separator: "\n").first { $0.hasPrefix("plugin\tswift-sample\t") }, "\(listed)")
        #expect(row.contains("\t1.0.0\t") && row.contains("edf + priority policy and a clip stage"), "\(row)")
        #expect(listed.contains("edf-priority") && listed.contains("clip"), "\(listed)")

        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let sim = try ProxyRuntime.start(
            config: try ProxyConfig.parse(
                yaml: """
                    listen: "127.0.0.1:0"
                    simulated_servers: [{listen: "127.0.0.1:0", latency_ms: {1: 100, 8: 100}, echo: true}]
                    models: [{name: unused, upstream: "http://127.0.0.1:1", check_signature: false}]
                    """), group: group)
        defer {
            sim.drainAndStop()
            try? group.syncShutdownGracefully()
        }
        let (proxy, url) = try ProcessTests().serve(
            config: """
                listen: "127.0.0.1:0"
                plugins: ["\(swiftSample)"]
                models:
                  - name: m
                    upstream: "http://127.0.0.1:\(sim.simulated[0].port)"
                    policy: edf-priority
                    policy_params: {max_items: 8, margin_ms: 100}
                    max_batch_items: 8
                    slo_ms: 60000
                    priority_levels: 2
                    default_priority_level: 2
                    codecs: ["json -> clip(0, 1)"]
                """)
        defer { terminate(proxy) }
        func body(_ i: Int, level: Int) -> String {
            """
            {"id": "r\(i)", "parameters": {"priority": \(level)},
             "inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [-3, 0.5, \(i + 2)]}]}
            """
        }
        let (lows, highs) = try sendLowThenHigh(
            url: url + "/v2/models/m/infer", metrics: url + "/metrics", model: "m",
            low: (0..<48).map { body($0, level: 2) }, high: (48..<56).map { body($0, level: 1) }, batchItems: 8)
        #expect(lows.count == 48 && highs.count == 8)
        for r in lows + highs {
            #expect(r.status == 200, "\(r.body)")
            #expect(r.output("x_echo") == [0, 0.5, 1], "the stage clipped the inputs: \(r.body)")
        }
        let (l, h) = (medianQueueMillis(lows), medianQueueMillis(highs))
        #expect(h < l / 2, "level 1 median wait \(h) ms, level 2 \(l) ms")
        let reasons = Set((lows + highs).compactMap { $0.headers["mlproxy-batch-reason"] })
        #expect(reasons.isSubset(of: ["full", "deadline"]) && reasons.contains("full"), "\(reasons)")
    }

    /// The simulator runs the Swift policy through the same ABI as the C one it mirrors, decision for
    /// decision: on one trace with a priority mix both give the same figures, row for row.
    @Test func theSimulatorGivesTheSwiftPolicyTheCPolicysFigures() throws {
        let dir = try scratchDir("swift-vs-c")
        defer { try? FileManager.default.removeItem(at: dir) }
        let c = try compilePlugin(
            source: repoRoot.appendingPathComponent("samples/c-policy/edf_priority.c"), into: dir,
            name: "edf_priority", libs: ["-ljansson"])
        func simulate(_ plugin: String, _ csv: String) throws -> String {
            let file = dir.appendingPathComponent(csv).path
            _ = try run(
                binary,
                [
                    "simulate", "--plugin", plugin, "--policy", "edf-priority:max_items=16,margin_ms=40",
                    "--trace", "spike", "--minutes", "3", "--priority-mix", "9:0.2,0:0.8", "--seed", "7",
                    "--csv", file,
                ])
            return try String(contentsOfFile: file, encoding: .utf8)
        }
        let fromC = try simulate(c, "c.csv")
        let fromSwift = try simulate(swiftSample, "swift.csv")
        #expect(fromC == fromSwift)
        let rows = fromC.split(separator: "\n")
        #expect(rows.count >= 2 && rows[1].contains("edf-priority"), "\(fromC)")
    }
}
