import Foundation
import MLProxyHost
import NIOCore
import NIOHTTP1
import NIOPosix
import Testing

/// Hot reload and graceful shutdown on the in-memory proxy: the model servers answer in memory, so
/// what a reload swaps, keeps and drains is all there is to see.
@Suite("Reload and shutdown", .serialized)
struct ReloadTests {
    typealias Harness = InMemoryProxyTests.Harness

    /// Requests to `model`, sent at once without waiting.
    func infer(_ h: Harness, _ model: String, count: Int, from first: Int = 0) -> [EventLoopFuture<OutgoingResponse>] {
        let loop = h.group.next()
        return (first..<first + count).map { i in
            h.proxy.respond(
                to: IncomingRequest(
                    method: .POST, uri: "/v2/models/\(model)/infer", headers: ["content-type": "application/json"],
                    body: ByteBuffer(string: v2Request(id: "\(i)", rows: [[Double(i)]])), eventLoop: loop))
        }
    }

    func header(_ r: OutgoingResponse, _ name: String) -> String? { r.headers.first { $0.0 == name }?.1 }

    static let models = """
          - {name: m, upstream: "http://in-memory:1", policy: static, policy_params: {max_delay_ms: 300}}
          - {name: gone, upstream: "http://in-memory:1", policy: static, policy_params: {max_delay_ms: 300}}
          - {name: same, upstream: "http://in-memory:1", policy: none}
        """

    @Test func addedChangedAndRemovedModelsTakeEffectAndNoRequestIsLost() throws {
        let h = try Harness(models: Self.models)
        let sameBefore = try #require(h.proxy.models["same"])
        // Queued under the old settings: the static policy holds them for 300 ms.
        let early = infer(h, "m", count: 6)
        let earlyGone = infer(h, "gone", count: 4, from: 100)
        try waitUntil("10 requests queued") {
            let m = String(
                buffer: try h.proxy.respondAdmin(
                    to: IncomingRequest(method: .GET, uri: "/metrics", eventLoop: h.group.next())
                ).wait().body)
            return m.contains("mlproxy_queued_requests{model=\"m\"} 6")
                && m.contains("mlproxy_queued_requests{model=\"gone\"} 4")
        }
        let summary = try h.proxy.reload(
            to: try ProxyConfig.parse(
                yaml: """
                    models:
                      - {name: m, upstream: "http://in-memory:1", policy: none, slo_ms: 500}
                      - {name: same, upstream: "http://in-memory:1", policy: none}
                      - {name: new, upstream: "http://in-memory:1", policy: none}
                    """))
        #expect(summary.added == ["new"] && summary.removed == ["gone"] && summary.unchanged == ["same"])
        #expect(summary.changed["m"]?.sorted() == ["policy", "policy_params", "slo_ms"], "\(summary.changed)")
        #expect(h.proxy.models["same"] === sameBefore, "an unchanged model keeps running as it was")

        // The old requests finish under the old policy; new ones go to the new model.
        for f in early + earlyGone {
            let r = try f.wait()
            #expect(r.status == 200, "\(String(buffer: r.body))")
            #expect(header(r, "mlproxy-policy") == "static")
        }
        for f in infer(h, "m", count: 4, from: 10) {
            let r = try f.wait()
            #expect(r.status == 200 && header(r, "mlproxy-policy") == "none", "\(String(buffer: r.body))")
        }
        #expect(try infer(h, "new", count: 1)[0].wait().status == 200)
        let removed = try infer(h, "gone", count: 1)[0].wait()
        #expect(removed.status == 404 && String(buffer: removed.body).contains("unknown model 'gone'"))
        // A rebuilt model keeps its counters: 6 answered before the change, 4 after.
        let metrics = try h.send(.GET, "/metrics").body
        #expect(metrics.contains("mlproxy_responses_total{model=\"m\",code=\"200\"} 10"), "\(metrics)")
        #expect(try h.send(.GET, "/v2/models/m").body.contains("\"slo_ms\":500"))
    }

    @Test func anInvalidConfigIsRefusedWholeAndTheRunningOneStays() throws {
        let h = try Harness(models: Self.models)
        let before = h.proxy.models
        let bad = try ProxyConfig.parse(
            yaml: """
                models:
                  - {name: m, upstream: "http://in-memory:1", policy: none}
                  - {name: added, upstream: "http://in-memory:1", policy: no-such-policy}
                """)
        #expect {
            try h.proxy.reload(to: bad)
        } throws: { e in
            let message = (e as? ConfigError)?.message ?? ""
            return message.contains("model 'added'") && message.contains("no policy named 'no-such-policy'")
        }
        #expect(h.proxy.models.keys.sorted() == ["gone", "m", "same"])
        #expect(h.proxy.models.allSatisfy { before[$0.key] === $0.value }, "nothing was swapped")
        #expect(try h.send(.GET, "/v2/models/added").status == 404)

        // What only a restart can change refuses the reload, naming the key.
        let moved = try ProxyConfig.parse(yaml: "listen: \"127.0.0.1:9\"\nmodels:\n\(Self.models)\n")
        #expect {
            try h.proxy.reload(to: moved)
        } throws: { e in
            ((e as? ConfigError)?.message ?? "").contains("listen cannot change while the proxy runs")
        }
        let unchanged = try h.proxy.reload(to: try ProxyConfig.parse(yaml: "models:\n\(Self.models)\n"))
        #expect(unchanged.unchanged.sorted() == ["gone", "m", "same"] && unchanged.changed.isEmpty)
    }

    /// A new build of a plugin at the same path is a new plugin instance: the models that use it are
    /// rebuilt with it, the others stay.
    @Test func aPluginRebuiltAtTheSamePathLoadsAsANewInstance() throws {
        let dir = try scratchDir("reload-plugin")
        defer { try? FileManager.default.removeItem(at: dir) }
        let source = repoRoot.appendingPathComponent("samples/c-policy/pairs_policy.c")
        let so = try compilePlugin(source: source, into: dir, name: "pairs_policy", libs: ["-ljansson"])
        let yaml = """
            plugins: [\(so)]
            models:
              - {name: pairs, upstream: "http://in-memory:1", policy: pairs, policy_params: {group: 2}}
              - {name: other, upstream: "http://in-memory:1", policy: none}
            """
        let h = try Harness(models: "  - {name: placeholder, upstream: \"http://in-memory:1\"}")
        _ = try h.proxy.reload(to: try ProxyConfig.parse(yaml: yaml))
        #expect(try h.proxy.reload(to: try ProxyConfig.parse(yaml: yaml)).unchanged.sorted() == ["other", "pairs"])
        // A new build, moved into place as a deployment would (a new file, not the old one rewritten).
        let build = try scratchDir("reload-plugin-build")
        defer { try? FileManager.default.removeItem(at: build) }
        let rebuilt = try compilePlugin(source: source, into: build, name: "pairs_policy", libs: ["-ljansson"])
        #expect(rename(rebuilt, so) == 0)
        let summary = try h.proxy.reload(to: try ProxyConfig.parse(yaml: yaml))
        #expect(summary.changed["pairs"] == ["plugin \(so)"], "\(summary)")
        #expect(summary.unchanged == ["other"])
        let pair = infer(h, "pairs", count: 2)
        for f in pair { #expect(try f.wait().status == 200) }
    }

    @Test func theAdminListenerReloadsTheConfigFile() throws {
        let dir = try scratchDir("reload-admin")
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("proxy.yaml")
        try "models:\n  - {name: m, upstream: \"http://in-memory:1\", policy: none}\n".write(
            to: file, atomically: true, encoding: .utf8)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { try? group.syncShutdownGracefully() }
        let proxy = try ProxyRuntime.start(
            config: try ProxyConfig.load(file: file.path), group: group, listen: false,
            upstream: { _, loop in
                InMemoryUpstream(loop: loop) { req in req.eventLoop.makeSucceededFuture(.json(.ok, "{}")) }
            })
        defer { proxy.drainAndStop() }
        func reload() throws -> (status: Int, body: String) {
            let r = try proxy.respondAdmin(
                to: IncomingRequest(method: .POST, uri: "/admin/reload", eventLoop: group.next())
            ).wait()
            return (r.status, String(buffer: r.body))
        }
        try
            "models:\n  - {name: m, upstream: \"http://in-memory:1\", policy: none}\n  - {name: n, upstream: \"http://in-memory:1\"}\n"
            .write(to: file, atomically: true, encoding: .utf8)
        let ok = try reload()
        #expect(ok.status == 200 && ok.body.contains("\"added\":[\"n\"]"), "\(ok.body)")
        #expect(proxy.models.keys.sorted() == ["m", "n"])
        #expect(proxy.config.source.contains("name: n"), "/admin/config shows the config in force")

        try "models:\n  - {name: m, upstream: \"http://in-memory:1\", slo: 5}\n".write(
            to: file, atomically: true, encoding: .utf8)
        let refused = try reload()
        #expect(refused.status == 400, "\(refused.body)")
        #expect(refused.body.contains("reload refused") && refused.body.contains("models[0].slo: unknown key"))
        #expect(proxy.models.keys.sorted() == ["m", "n"])
        #expect(
            try proxy.respondAdmin(to: IncomingRequest(method: .GET, uri: "/admin/reload", eventLoop: group.next()))
                .wait().status == 405)
    }

    /// On SIGTERM readiness turns 503 at once; during `shutdown_delay_ms` requests are still served,
    /// and every request queued when the drain starts is answered.
    @Test func shutdownTurnsReadinessOffFirstAndAnswersEveryQueuedRequest() throws {
        let h = try Harness(
            models:
                "  - {name: m, upstream: \"http://in-memory:1\", policy: static, policy_params: {max_delay_ms: 200}}",
            top: "shutdown_delay_ms: 300")
        let queued = infer(h, "m", count: 5)
        let stopped = h.proxy.shutdownGracefully()
        #expect(try h.send(.GET, "/v2/health/ready").status == 503)
        #expect(try h.send(.GET, "/v2/models/m/ready").status == 503)
        #expect(try h.send(.GET, "/v2/health/live").status == 200)
        let during = infer(h, "m", count: 3, from: 50)
        for f in queued + during { #expect(try f.wait().status == 200) }
        try stopped.wait()
        #expect(throws: ConfigError.self) { try h.proxy.reload(to: h.proxy.config) }
    }
}
