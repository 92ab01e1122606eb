import Foundation
import MLProxyHost
import NIOCore
import NIOPosix
import Testing

/// Batch-mates never share fate, end to end on loopback: the simulated model server behaves like a
/// real one (rejects whole batches that hold a bad row, quoting it; closes the connection after every
/// error; declares and enforces a signature), and curl is the client.
@Suite("Shared fate, end to end", .serialized)
struct SharedFateTests {
    /// `n` requests of one row [v, 1]; every `badEvery`-th has a negative v.
    static func mixed(_ n: Int, badEvery: Int) -> (bodies: [String], bad: Set<Int>) {
        var bad = Set<Int>()
        let bodies = (0..<n).map { i -> String in
            let v = i % badEvery == 3 ? -Double(i) - 0.25 : Double(i)
            if v < 0 { bad.insert(i) }
            return v2Request(id: "r\(i)", rows: [[v, 1]])
        }
        return (bodies, bad)
    }

    @Test func aRejectedBatchFailsOnlyItsCulpritsAndNobodySeesTheirRows() throws {
        let cluster = try TestCluster(
            simLatency: "{1: 5, 100: 10}", simExtra: "reject_negative: true, close_after_error: true",
            models: """
                  - {name: m, upstream: "UPSTREAM", policy: static, policy_params: {max_delay_ms: 30}, max_batch_items: 64, slo_ms: 5000}
                """)
        defer { cluster.stop() }
        let (bodies, bad) = Self.mixed(150, badEvery: 10)
        let results = try curlParallel(url: cluster.url + "/v2/models/m/infer", bodies: bodies, concurrency: 150)
        var split = 0
        for (i, r) in results.enumerated() {
            if bad.contains(i) {
                #expect(r.status == 400, "bad \(i): \(r.body)")
                #expect(r.headers["mlproxy-failure"] == "own")
                // Its own row, as the model server quoted it when it was sent alone (row 0 is its first).
                #expect(
                    (r.json?["error"] as? String)?.contains(
                        "row 0 contains a negative value: [\(-Double(i) - 0.25), 1.0]") == true, "\(r.body)")
                #expect(r.headers["mlproxy-batch-requests"] == "1")
            } else {
                #expect(r.status == 200, "good \(i): \(r.body)")
                #expect(r.output("sum") == [Double(i) + 1], "\(i): \(r.body)")
                #expect(r.headers["mlproxy-failure"] == nil)
                if (Int(r.headers["mlproxy-batch-attempts"] ?? "1") ?? 1) > 1 { split += 1 }
            }
            #expect(!r.body.contains("negative") || bad.contains(i), "request \(i) saw another's error: \(r.body)")
        }
        #expect(split > 0, "no good request was ever in a rejected batch: the test proves nothing")
        let metrics = try run("/usr/bin/curl", ["-s", cluster.url + "/metrics"])
        #expect(
            metrics.contains("mlproxy_failed_after_dispatch_total{model=\"m\",cause=\"own\"} \(bad.count)"),
            "\(metrics)")
        #expect(!metrics.contains("cause=\"batch\""))
        #expect(!metrics.contains("mlproxy_split_batches_total{model=\"m\"} 0"))
    }

    @Test func withIsolationOffTheBatchMatesGetAMessageThatQuotesNobody() throws {
        let cluster = try TestCluster(
            simLatency: "{1: 5, 100: 10}", simExtra: "reject_negative: true",
            models: """
                  - {name: m, upstream: "UPSTREAM", policy: static, policy_params: {max_delay_ms: 100}, max_batch_items: 64, isolate_failures: off}
                """)
        defer { cluster.stop() }
        let results = try curlParallel(
            url: cluster.url + "/v2/models/m/infer",
            bodies: [v2Request(id: "a", rows: [[1, 1]]), v2Request(id: "b", rows: [[-7.5, 1]])])
        for r in results {
            #expect(r.status == 502, "\(r.body)")
            #expect(r.headers["mlproxy-failure"] == "batch")
            #expect(r.headers["mlproxy-batch-requests"] == "2")
            #expect(!r.body.contains("-7.5"), "\(r.body)")
        }
    }

    @Test func requestsThatDoNotFitTheServersSignatureNeverJoinABatch() throws {
        let cluster = try TestCluster(
            simExtra: """
                models: [{name: m, inputs: [{name: x, datatype: FP64, shape: [-1, 2]}, {name: mask, datatype: BOOL, shape: [-1, 2], optional: true}], outputs: [{name: sum, datatype: FP64, shape: [-1, 1]}]}]
                """,
            models: """
                  - {name: m, upstream: "UPSTREAM", policy: static, policy_params: {max_delay_ms: 20}}
                  - {name: declared, upstream: "UPSTREAM", upstream_model: m, inputs: [{name: x, datatype: FP64, shape: [-1, 3]}]}
                  - {name: unchecked, upstream: "UPSTREAM", upstream_model: m, check_signature: false}
                """)
        defer { cluster.stop() }
        // The proxy reads the signature from the server's metadata at start.
        try awaitSignature(cluster.url, model: "m")
        let cases: [(String, Int, String)] = [
            (v2Request(id: "ok", rows: [[1, 2]]), 200, ""),
            (
                "{\"inputs\":[{\"name\":\"y\",\"datatype\":\"FP64\",\"shape\":[1,2],\"data\":[1,2]}]}", 400,
                "model 'm' has no input 'y'; its inputs are x (FP64 [-1, 2])"
            ),
            (
                "{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[1,2],\"data\":[1,2]}]}", 400,
                "input 'x' is FP32 but model 'm' expects x (FP64 [-1, 2])"
            ),
            (
                v2Request(id: "wide", rows: [[1, 2, 3]]), 400,
                "input 'x' has shape [1, 3] but model 'm' expects x (FP64 [-1, 2])"
            ),
            (
                "{\"inputs\":[{\"name\":\"mask\",\"datatype\":\"BOOL\",\"shape\":[1,2],\"data\":[true,false]}]}", 400,
                "lacks input x (FP64 [-1, 2])"
            ),
            (
                "{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP64\",\"shape\":[1,2],\"data\":[1,2]}],\"outputs\":[{\"name\":\"nope\"}]}",
                400, "model 'm' has no output 'nope'; its outputs are sum"
            ),
        ]
        let before = try cluster.upstreamRequests()
        let results = try curlParallel(url: cluster.url + "/v2/models/m/infer", bodies: cases.map(\.0))
        for ((_, status, words), r) in zip(cases, results) {
            #expect(r.status == status, "\(r.body)")
            if status == 400 {
                #expect((r.json?["error"] as? String)?.contains(words) == true, "\(r.body)")
                #expect(r.headers["mlproxy-failure"] == "own")
                #expect(r.headers["mlproxy-batch-size"] == nil, "a refused request was batched")
            }
        }
        // Only the good request reached the model server.
        #expect(try cluster.upstreamRequests() - before == 1)
        // Declared in the config: the config wins over the server's metadata.
        let declared = try curlParallel(
            url: cluster.url + "/v2/models/declared/infer", bodies: [v2Request(id: "d", rows: [[1, 2]])])[0]
        #expect(declared.status == 400)
        #expect(
            (declared.json?["error"] as? String)?.contains("expects x (FP64 [-1, 3]); -1 is any size (from the config)")
                == true, "\(declared.body)")
        // Not checked: the request reaches the server, whose own 400 comes back to this client alone.
        let unchecked = try curlParallel(url: cluster.url + "/v2/models/unchecked/infer", bodies: [cases[3].0])[0]
        #expect(unchecked.status == 400)
        #expect(
            (unchecked.json?["error"] as? String)?.hasPrefix("model server answered 400") == true, "\(unchecked.body)")
        #expect(unchecked.headers["mlproxy-batch-size"] == "1")
    }

    @Test func aBatchLostOnAReusedConnectionIsSentAgainOnANewOne() throws {
        // Every connection of the server serves 3 requests and drops the 4th unanswered, the way an
        // idle timeout meets a reused keep-alive connection.
        let cluster = try TestCluster(
            simExtra: "drop_after_requests: 3",
            models: """
                  - {name: m, upstream: "UPSTREAM", policy: none}
                  - {name: noretry, upstream: "UPSTREAM", policy: none, retry_on_reset: false}
                """)
        defer { cluster.stop() }
        var results: [CurlResult] = []
        for i in 0..<40 {
            results += try curlParallel(
                url: cluster.url + "/v2/models/m/infer", bodies: [v2Request(id: "\(i)", rows: [[Double(i)]])])
        }
        for (i, r) in results.enumerated() {
            #expect(r.status == 200, "\(i): \(r.body)")
            #expect(r.output("sum") == [Double(i)])
        }
        let metrics = try run("/usr/bin/curl", ["-s", cluster.url + "/metrics"])
        // One request in four on each connection meets a dropped connection: about 10 of 40 resent (each
        // event loop has its own pool, and the metadata read uses one connection too).
        let line = metrics.split(separator: "\n").first { $0.hasPrefix("mlproxy_upstream_retries_total{model=\"m\"}") }
        let retries = line?.split(separator: " ").last.flatMap { Int($0) } ?? 0
        #expect(retries >= 8 && retries <= 13, "\(retries) resends")
        // Without retries the lost ones fail, with a 502 that says what happened.
        var failed = 0
        for i in 0..<8 {
            let r = try curlParallel(
                url: cluster.url + "/v2/models/noretry/infer", bodies: [v2Request(id: "\(i)", rows: [[1]])])[0]
            if r.status != 200 {
                failed += 1
                #expect(r.status == 502 && r.headers["mlproxy-failure"] == "upstream", "\(r.body)")
            }
        }
        #expect(failed >= 1)
    }

    @Test func aModelServerThatComesBackIsUsedWithoutRestartingTheProxy() throws {
        let port = try freePort()
        try withProxy(
            yaml: """
                listen: "127.0.0.1:0"
                models:
                  - {name: m, upstream: "http://127.0.0.1:\(port)", policy: none}
                """
        ) { proxy, group in try comesBack(url: "http://127.0.0.1:\(proxy.port)", port: port, group: group) }
    }

    /// The body of the test above: the server is down, then comes up on `port`.
    func comesBack(url: String, port: Int, group: EventLoopGroup) throws {
        func ready() throws -> String {
            try run("/usr/bin/curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", url + "/v2/models/m/ready"])
        }
        let down = try curlParallel(
            url: url + "/v2/models/m/infer", bodies: (0..<10).map { v2Request(id: "\($0)", rows: [[1]]) })
        for r in down {
            #expect(r.status == 503)
            #expect(r.headers["retry-after"] == "1")
            #expect(r.headers["mlproxy-failure"] == "upstream")
        }
        #expect(try ready() == "503")
        #expect(try run("/usr/bin/curl", ["-s", url + "/metrics"]).contains("mlproxy_upstream_up{model=\"m\"} 0"))
        // The model server starts on the port the proxy was told about.
        let server = try ProxyRuntime.start(
            config: try ProxyConfig.parse(
                yaml: """
                    listen: "127.0.0.1:0"
                    simulated_servers: [{listen: "127.0.0.1:\(port)", latency_ms: {1: 1}}]
                    models: [{name: unused, upstream: "http://127.0.0.1:\(port)"}]
                    """), group: group)
        defer { server.drainAndStop() }
        let started = Date()
        while try ready() != "200" && Date().timeIntervalSince(started) < 5 { usleep(50_000) }
        #expect(try ready() == "200", "not ready 5 s after the server came back")
        let r = try curlParallel(url: url + "/v2/models/m/infer", bodies: [v2Request(id: "back", rows: [[2, 3]])])[0]
        #expect(r.status == 200, "\(r.body)")
        #expect(r.output("sum") == [5])
    }

    /// The Seldon v1 backend sample (plain cc, the header, -ljansson) in front of a Seldon v1 server on
    /// loopback: Seldon Core's own REST microservice (Tests/interop/seldon_serve.py), or with
    /// `stubArgs` the stub (Tests/interop/seldon_stub.py, for an HTTP/1.0 server). `body` gets the
    /// proxy's URL.
    func withSeldon(
        stubArgs: [String]? = nil, policy: String = "static, policy_params: {max_delay_ms: 40}",
        _ body: (String) throws -> Void
    ) throws {
        let dir = try scratchDir("seldon")
        defer { try? FileManager.default.removeItem(at: dir) }
        let plugin = try compilePlugin(
            source: repoRoot.appendingPathComponent("samples/c-backend/seldon_v1.c"),
            into: dir, name: "seldon_v1", libs: ["-ljansson", "-lm"])
        let stub = Process()
        if let stubArgs {
            stub.executableURL = URL(fileURLWithPath: try interopPython())
            stub.arguments = [repoRoot.appendingPathComponent("Tests/interop/seldon_stub.py").path, "0"] + stubArgs
        } else {
            stub.executableURL = URL(fileURLWithPath: try interopPython(".venv-seldon"))
            stub.arguments = [repoRoot.appendingPathComponent("Tests/interop/seldon_serve.py").path]
        }
        let out = Pipe()
        stub.standardOutput = out
        try stub.run()
        defer { terminate(stub) }
        // "ready PORT": the stub binds port 0 and says which port it got.
        var ready = ""
        while !ready.hasSuffix("\n") {
            let chunk = out.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            ready += String(decoding: chunk, as: UTF8.self)
        }
        let port = try #require(
            ready.split(separator: " ").last.flatMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) })
        try withProxy(
            yaml: """
                listen: "127.0.0.1:0"
                plugins: ["\(plugin)"]
                models:
                  - {name: s, backend: seldon, upstream: "http://127.0.0.1:\(port)", codecs: [json, npy],
                     policy: \(policy), max_batch_items: 64, slo_ms: 5000}
                """
        ) { rt, _ in try body("http://127.0.0.1:\(rt.port)") }
    }

    /// An HTTP/1.0 server closes every connection after its reply: the proxy must not put such a
    /// connection back in its pool (a request written on it would be lost, or need a resend).
    @Test func anHTTP10ServersConnectionsAreNeverReused() throws {
        // One batch at a time, the next sent the moment the last reply is read: before the server's
        // close can arrive, so a pooled connection would be reused.
        try withSeldon(stubArgs: ["--http10"], policy: "none") { url in
            let results = try curlParallel(
                url: url + "/v2/models/s/infer",
                bodies: (0..<40).map { v2Request(id: "\($0)", rows: [[Double($0), 1]]) })
            for (i, r) in results.enumerated() {
                #expect(r.status == 200, "\(i): \(r.body)")
                #expect(r.output("predictions") == [Double(i) + 1])
            }
            let metrics = try run("/usr/bin/curl", ["-s", url + "/metrics"])
            #expect(metrics.contains("mlproxy_upstream_retries_total{model=\"s\"} 0"), "\(metrics)")
            #expect(metrics.contains("mlproxy_upstream_failures_total{model=\"s\"} 0"), "\(metrics)")
        }
    }

    /// A backend for another protocol (Seldon Core v1), built with plain cc from the header alone, in
    /// front of Seldon Core's own server, whose model rejects a whole request for one negative row
    /// (500, naming the rows, and the connection closed): batch-mates are answered and never see the
    /// row; a value the backend cannot encode fails its request alone.
    @Test func aThirdPartyBackendGetsTheSameIsolation() throws {
        try withSeldon { url in
            var requests: [(body: Data, contentType: String)] = []
            var kinds: [String] = []
            for i in 0..<90 {
                let row = [Double(i) + 0.5, 11.5, 3, 33.25]
                if i % 15 == 4 {
                    kinds.append("negative")
                    requests.append(
                        (
                            Data(v2Request(id: "\(i)", rows: [[Double(i) + 0.5, 11.5, -3, 33.25]]).utf8),
                            "application/json"
                        ))
                } else if i % 15 == 9 {
                    kinds.append("nan")
                    requests.append((npyBody([Double(i), .nan, 1, 2], rows: 1), "application/x-npy"))
                } else {
                    kinds.append("good")
                    requests.append((Data(v2Request(id: "\(i)", rows: [row]).utf8), "application/json"))
                }
            }
            let results = try curlParallel(url: url + "/v2/models/s/infer", requests: requests, concurrency: 90)
            var shared = 0
            for (i, (kind, r)) in zip(kinds, results).enumerated() {
                let error = r.json?["error"] as? String ?? ""
                switch kind {
                case "good":
                    #expect(r.status == 200, "\(i): \(r.body)")
                    #expect(r.output("predictions") == [Double(i) + 0.5 + 11.5 + 3 + 33.25], "\(i): \(r.body)")
                    if (Int(r.headers["mlproxy-batch-attempts"] ?? "1") ?? 1) > 1 { shared += 1 }
                case "negative":
                    #expect(r.status == 500, "\(i): \(r.body)")
                    #expect(error == "seldon answered 500: negative values in rows [0]", "\(i): \(r.body)")
                    #expect(r.headers["mlproxy-failure"] == "own")
                default:
                    #expect(r.status == 400, "\(i): \(r.body)")
                    #expect(error == "item 0 holds nan, which Seldon's JSON cannot carry", "\(i): \(r.body)")
                    #expect(r.headers["mlproxy-failure"] == "own")
                }
                // Nobody sees a row but its own.
                if kind == "good" { #expect(!r.body.contains("negative") && !r.body.contains("-3"), "\(i): \(r.body)") }
            }
            #expect(shared > 0, "no good request shared a rejected batch: the test proves nothing")
        }
    }
}
