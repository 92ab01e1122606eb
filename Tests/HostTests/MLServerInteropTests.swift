import Foundation
import MLProxyHost
import NIOPosix
import Testing

/// The proxy in front of a real model server we did not write: MLServer with its scikit-learn runtime
/// (from PyPI, installed by `make interop-deps`), driven by curl and by tritonclient. If the server
/// cannot be installed or started, these tests fail; they never skip.
@Suite("MLServer behind the proxy", .serialized)
struct MLServerInteropTests {
    static let venv = repoRoot.appendingPathComponent(".venv-interop/bin")

    final class MLServer {
        private(set) var process = Process()
        let port: Int
        let log: URL
        let dir: URL
        let model: String

        /// `script` writes the model repository (Tests/interop/train_iris.py or train_regressor.py)
        /// for `model`.
        init(script: String = "train_iris.py", model: String = "iris") throws {
            let python = MLServerInteropTests.venv.appendingPathComponent("python").path
            guard FileManager.default.isExecutableFile(atPath: python) else {
                throw TestFailure.command(
                    python, -1, "missing: run `make interop-deps` (make test does) to install MLServer")
            }
            self.model = model
            dir = try scratchDir("mlserver")
            port = try freePort()
            try run(
                python,
                [
                    repoRoot.appendingPathComponent("Tests/interop/\(script)").path, dir.path, String(port),
                    String(try freePort()), String(try freePort()),
                ])
            log = dir.appendingPathComponent("mlserver.log")
            _ = FileManager.default.createFile(atPath: log.path, contents: nil)
            try start()
        }

        /// Starts `mlserver start` in the repository and waits until the model is ready (60 s at most).
        func start() throws {
            process = Process()
            process.executableURL = MLServerInteropTests.venv.appendingPathComponent("mlserver")
            process.arguments = ["start", "."]
            process.currentDirectoryURL = dir
            let handle = try FileHandle(forWritingTo: log)
            process.standardOutput = handle
            process.standardError = handle
            try process.run()
            // Ready within 60 s, or the test fails with the server's own log.
            let deadline = Date().addingTimeInterval(60)
            while Date() < deadline {
                if process.isRunning,
                    (try? run("/usr/bin/curl", ["-sf", "http://127.0.0.1:\(port)/v2/models/\(model)/ready"])) != nil
                {
                    return
                }
                if !process.isRunning { break }
                usleep(250_000)
            }
            let text = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
            stop()
            throw TestFailure.command(
                "mlserver start", process.isRunning ? -1 : process.terminationStatus, String(text.suffix(3000)))
        }

        /// SIGKILL, as when a model server crashes or its pod is evicted; only this process, by its pid.
        func crash() {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }

        func stop() {
            terminate(process)
            try? FileManager.default.removeItem(at: dir)
        }
    }

    /// MLServer (its repository written by `script`, serving `model`) and the proxy in front of it,
    /// the model configured with `keys`; both stopped after `body`.
    static func withServerAndProxy(
        script: String = "train_iris.py", model: String = "iris",
        keys: String = "policy: adaptive-sla, slo_ms: 1000, max_batch_items: 32",
        _ body: (MLServer, ProxyRuntime) throws -> Void
    ) throws {
        let server = try MLServer(script: script, model: model)
        defer { server.stop() }
        try withProxy(
            yaml: """
                listen: "127.0.0.1:0"
                models:
                  - {name: \(model), upstream: "http://127.0.0.1:\(server.port)", \(keys)}
                """
        ) { rt, _ in try body(server, rt) }
    }

    /// Iris-like rows, distinct per request.
    static func body(_ i: Int) -> String {
        let base: [[Double]] = [
            [5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3], [7.7, 3.0, 6.1, 2.3], [5.9, 3.0, 5.1, 1.8],
        ]
        let row = base[i % 4].enumerated().map { j, v in v + Double((i * 7 + j * 3) % 10) / 20 }
        return
            "{\"id\":\"r\(i)\",\"inputs\":[{\"name\":\"predict\",\"shape\":[1,4],\"datatype\":\"FP32\",\"data\":[\(row.map { String($0) }.joined(separator: ","))]}]}"
    }

    @Test func answersThroughTheProxyEqualMLServersOwnUnderConcurrentLoad() throws {
        try Self.withServerAndProxy { server, rt in
            let bodies = (0..<200).map(Self.body)
            let (direct, proxied) = try directAndProxied(
                direct: "http://127.0.0.1:\(server.port)/v2/models/iris/infer",
                proxied: "http://127.0.0.1:\(rt.port)/v2/models/iris/infer", bodies: bodies,
                directConcurrency: 8, proxiedConcurrency: 200)
            var batched = 0
            for i in bodies.indices {
                #expect(direct[i].status == 200, "direct \(i): \(direct[i].body)")
                #expect(proxied[i].status == 200, "proxy \(i): \(proxied[i].body)")
                let want = try #require(direct[i].output("predict"))
                #expect(want.count == 1)
                #expect(proxied[i].output("predict") == want, "request \(i): \(proxied[i].body) vs \(direct[i].body)")
                #expect(proxied[i].json?["id"] as? String == "r\(i)")
                if (Int(proxied[i].headers["mlproxy-batch-size"] ?? "") ?? 0) > 1 { batched += 1 }
            }
            #expect(batched > 50, "only \(batched) of 200 requests were batched")
        }
    }

    @Test func tritonclientGetsTheSameAnswersThroughTheProxy() throws {
        try Self.withServerAndProxy { server, rt in
            let out = try run(
                Self.venv.appendingPathComponent("python").path,
                [
                    repoRoot.appendingPathComponent("Tests/interop/tritonclient_check.py").path,
                    "127.0.0.1:\(rt.port)", "127.0.0.1:\(server.port)",
                ])
            let json = try #require(try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: Any])
            let proxied = try #require(json["proxy"] as? [[Int]])
            #expect(proxied.count == 4)
            #expect(proxied == json["direct"] as? [[Int]])
            #expect(json["proxy_id"] as? String == "tc-1")
            // tritonclient's default: the binary tensor extension, both ways.
            #expect(json["proxy_binary"] as? [[Int]] == json["direct"] as? [[Int]])
            #expect(json["proxy_binary_id"] as? String == "tc-1")
            // Model metadata is the server's own (versions, platform, parameters), plus the proxy's settings.
            let proxyMeta = try #require(json["proxy_meta"] as? [String: Any])
            let directMeta = try #require(json["direct_meta"] as? [String: Any])
            #expect(proxyMeta["name"] as? String == "iris")
            #expect(proxyMeta["versions"] as? [String] == directMeta["versions"] as? [String])
            #expect(proxyMeta["platform"] as? String == directMeta["platform"] as? String)
            let mlproxy = (proxyMeta["parameters"] as? [String: Any])?["mlproxy"] as? [String: Any]
            #expect(mlproxy?["policy"] as? String == "adaptive-sla")
        }
    }
}
