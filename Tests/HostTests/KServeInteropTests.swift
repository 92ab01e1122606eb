import Foundation
import MLProxyHost
import NIOPosix
import Testing

/// The proxy in front of KServe's Python ModelServer (PyPI `kserve`, installed by `make interop-deps`)
/// through the `tfserving` backend (KServe's v1 protocol), fed by TF Serving-style clients (curl).
/// If the server cannot be installed or started, the test fails; it never skips.
@Suite("KServe ModelServer behind the proxy", .serialized)
struct KServeInteropTests {
    @Test func answersThroughTheProxyEqualKServesOwnUnderConcurrentLoad() throws {
        let python = try interopPython(".venv-kserve")
        let port = try freePort()
        let dir = try scratchDir("kserve")
        defer { try? FileManager.default.removeItem(at: dir) }
        let log = dir.appendingPathComponent("kserve.log")
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        let server = Process()
        server.executableURL = URL(fileURLWithPath: python)
        server.arguments = [
            repoRoot.appendingPathComponent("Tests/interop/kserve_sum_model.py").path, String(port),
            String(try freePort()),
        ]
        let handle = try FileHandle(forWritingTo: log)
        server.standardOutput = handle
        server.standardError = handle
        try server.run()
        defer { terminate(server) }
        var ready = false
        for _ in 0..<120 where !ready {
            ready = (try? run("/usr/bin/curl", ["-sf", "http://127.0.0.1:\(port)/v1/models/sum"])) != nil
            if !ready { usleep(250_000) }
        }
        guard ready else {
            throw TestFailure.command(
                "kserve model server", -1, String(((try? String(contentsOf: log, encoding: .utf8)) ?? "").suffix(3000)))
        }
        try withProxy(
            yaml: """
                listen: "127.0.0.1:0"
                models:
                  - {name: s, upstream: "http://127.0.0.1:\(port)", upstream_model: sum, backend: tfserving, codecs: [tfserving],
                     policy: static, policy_params: {max_delay_ms: 50}, max_batch_items: 32}
                """
        ) { proxy, _ in
            let bodies = (0..<60).map { "{\"instances\": [[\(Double($0)), 1.5, 2]]}" }
            let (direct, proxied) = try directAndProxied(
                direct: "http://127.0.0.1:\(port)/v1/models/sum:predict",
                proxied: "http://127.0.0.1:\(proxy.port)/v1/models/s:predict", bodies: bodies,
                directConcurrency: 4, proxiedConcurrency: 60)
            var batched = 0
            for i in bodies.indices {
                #expect(direct[i].status == 200, "direct \(i): \(direct[i].body)")
                #expect(proxied[i].status == 200, "proxy \(i): \(proxied[i].body)")
                let want = try #require(direct[i].json?["predictions"] as? [[Double]])
                #expect(want == [[Double(i) + 3.5, Double(i) * 2]])
                #expect(proxied[i].json?["predictions"] as? [[Double]] == want, "\(i): \(proxied[i].body)")
                if (Int(proxied[i].headers["mlproxy-batch-size"] ?? "") ?? 0) > 1 { batched += 1 }
            }
            #expect(batched > 10, "only \(batched) of 60 requests were batched")
        }
    }
}
