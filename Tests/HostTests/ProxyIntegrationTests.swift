import Foundation
import MLProxyHost
import Testing

/// The proxy and a simulated model server on loopback, driven by curl.
@Suite("Proxy end to end", .serialized)
struct ProxyIntegrationTests {
    @Test func fiveHundredConcurrentClientsEachGetTheirOwnAnswer() throws {
        let cluster = try TestCluster(
            simLatency: "{1: 20, 100: 30}",
            models: """
                  - {name: m, upstream: "UPSTREAM", policy: adaptive-sla, slo_ms: 2000, max_batch_items: 64}
                """)
        defer { cluster.stop() }
        let bodies = (0..<500).map { v2Request(id: "req-\($0)", rows: [[Double($0), Double($0) * 2]]) }
        let results = try curlParallel(url: cluster.url + "/v2/models/m/infer", bodies: bodies, concurrency: 500)
        var batched = 0
        for (i, r) in results.enumerated() {
            #expect(r.status == 200, "request \(i): \(r.body)")
            #expect(r.json?["id"] as? String == "req-\(i)")
            #expect(r.output("sum") == [Double(i) * 3], "request \(i) got \(r.body)")
            #expect(r.headers["mlproxy-policy"] == "adaptive-sla")
            if let size = r.headers["mlproxy-batch-size"].flatMap(Int.init), size > 1 { batched += 1 }
        }
        #expect(batched > 250, "only \(batched) of 500 requests were served in batches larger than 1")
    }

    @Test func requestsOfOneThreeAndSevenItemsComeBackWithTheirOwnRows() throws {
        let cluster = try TestCluster(
            models: """
                  - {name: m, upstream: "UPSTREAM", policy: static, policy_params: {max_delay_ms: 200}, max_batch_items: 11}
                """)
        defer { cluster.stop() }
        let sizes = [1, 3, 7]
        let bodies = sizes.enumerated().map { k, n in
            v2Request(id: "r\(k)", rows: (0..<n).map { [Double(100 * k + $0), 0.5] })
        }
        let results = try curlParallel(url: cluster.url + "/v2/models/m/infer", bodies: bodies)
        for (k, (r, n)) in zip(results, sizes).enumerated() {
            #expect(r.status == 200, "\(r.body)")
            #expect(r.output("sum") == (0..<n).map { Double(100 * k + $0) + 0.5 })
            let shape = ((r.json?["outputs"] as? [[String: Any]])?.first?["shape"] as? [Int])
            #expect(shape == [n, 1])
            // All three fit one batch of 11 items and arrive well within the 200 ms window.
            #expect(r.headers["mlproxy-batch-size"] == "11")
            #expect(r.headers["mlproxy-batch-requests"] == "3")
        }
    }

    @Test func malformedRequestsGetTheir4xxWhileTheirBatchMatesSucceed() throws {
        let cluster = try TestCluster(
            simLatency: "{1: 30, 100: 40}",
            models: """
                  - {name: m, upstream: "UPSTREAM", policy: static, policy_params: {max_delay_ms: 50}, max_batch_items: 64}
                """)
        defer { cluster.stop() }
        var bodies = (0..<40).map { v2Request(id: "good-\($0)", rows: [[Double($0), 1]]) }
        let bad: [(Int, String, String)] = [
            (5, "{\"inputs\": [", "not valid JSON"),
            (
                12, "{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP64\",\"shape\":[1,2],\"data\":[1]}]}",
                "shape has 2 elements but data has 1"
            ),
            (
                20, "{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FLOAT\",\"shape\":[1,2],\"data\":[1,2]}]}",
                "unknown datatype 'FLOAT'"
            ),
            (
                27, "{\"inputs\":[{\"name\":\"x\",\"datatype\":\"INT8\",\"shape\":[1,2],\"data\":[1,\"a\"]}]}",
                "not an integer"
            ),
            // Valid but of another shape: batched on its own, never failing the others.
            (33, v2Request(id: "wide", rows: [[1, 2, 3]]), ""),
        ]
        for (i, body, _) in bad { bodies[i] = body }
        let results = try curlParallel(url: cluster.url + "/v2/models/m/infer", bodies: bodies)
        var batched = 0
        for (i, r) in results.enumerated() {
            if let (_, _, message) = bad.first(where: { $0.0 == i }), !message.isEmpty {
                #expect(r.status == 400, "request \(i): \(r.body)")
                #expect((r.json?["error"] as? String)?.contains(message) == true, "request \(i): \(r.body)")
            } else if i == 33 {
                #expect(r.status == 200)
                #expect(r.output("sum") == [6])
            } else {
                #expect(r.status == 200, "request \(i): \(r.body)")
                #expect(r.output("sum") == [Double(i) + 1])
                if (Int(r.headers["mlproxy-batch-size"] ?? "") ?? 0) > 1 { batched += 1 }
            }
        }
        #expect(batched > 0, "the good requests were never batched")
        // Every answer is counted in the Prometheus metrics, by status.
        let metrics = try run("/usr/bin/curl", ["-sS", cluster.url + "/metrics"])
        #expect(metrics.contains("mlproxy_responses_total{model=\"m\",code=\"200\"} 36"), "\(metrics)")
        #expect(metrics.contains("mlproxy_responses_total{model=\"m\",code=\"400\"} 4"), "\(metrics)")
        let batches = metrics.split(separator: "\n").first { $0.hasPrefix("mlproxy_batches_total{model=\"m\"}") }
        let batchCount = batches.flatMap { Int($0.split(separator: " ").last ?? "") } ?? 0
        #expect(batchCount >= 2 && batchCount < 36, "\(metrics)")
        #expect(metrics.contains("mlproxy_batch_items_count{model=\"m\"} \(batchCount)"))
        #expect(metrics.contains("mlproxy_queue_seconds_count{model=\"m\"} 36"))
        // And the proxy still serves.
        let after = try curlParallel(
            url: cluster.url + "/v2/models/m/infer", bodies: [v2Request(id: "after", rows: [[2, 2]])])
        #expect(after[0].status == 200)
        #expect(after[0].output("sum") == [4])
    }

    @Test func everyV2DatatypeRoundTripsThroughTheProxy() throws {
        let cluster = try TestCluster(
            models: """
                  - {name: m, upstream: "UPSTREAM", policy: none}
                """)
        defer { cluster.stop() }
        let cases: [(String, String, Double)] = [
            ("BOOL", "[true, false, true]", 2), ("UINT8", "[1, 2, 255]", 258), ("UINT16", "[1, 2, 65535]", 65538),
            ("UINT32", "[1, 2, 3]", 6), ("UINT64", "[1, 2, 3]", 6), ("INT8", "[-1, -2, 127]", 124),
            ("INT16", "[-300, 2, 3]", -295), ("INT32", "[-70000, 2, 3]", -69995), ("INT64", "[-5, 2, 3]", 0),
            ("FP16", "[0.5, 1.5, -2.25]", -0.25), ("FP32", "[0.5, 1.5, 2.0]", 4), ("FP64", "[0.5, 1.5, 2.0]", 4),
            ("BYTES", "[\"a\", \"bc\", \"\\u00e9\"]", 5),
        ]
        let bodies = cases.map { dt, data, _ in
            "{\"inputs\":[{\"name\":\"x\",\"datatype\":\"\(dt)\",\"shape\":[1,3],\"data\":\(data)}]}"
        }
        let results = try curlParallel(url: cluster.url + "/v2/models/m/infer", bodies: bodies)
        for ((dt, _, sum), r) in zip(cases, results) {
            #expect(r.status == 200, "\(dt): \(r.body)")
            #expect(r.output("sum") == [sum], "\(dt): \(r.body)")
        }
    }

    @Test func anUnreachableModelServerIsA503WithRetryAfter() throws {
        // Nothing listens on the upstream port: every request gets a 503 that says so, at once.
        let cluster = try TestCluster(
            models: """
                  - {name: down, upstream: "http://127.0.0.1:9", policy: static, policy_params: {max_delay_ms: 20}}
                  - {name: slow, upstream: "UPSTREAM", policy: none, upstream_timeout_ms: 50}
                """)
        defer { cluster.stop() }
        let down = try curlParallel(
            url: cluster.url + "/v2/models/down/infer",
            bodies: (0..<5).map { v2Request(id: "\($0)", rows: [[1]]) })
        for r in down {
            #expect(r.status == 503)
            #expect(r.headers["retry-after"] == "1")
            #expect(r.headers["mlproxy-failure"] == "upstream")
            let message = r.json?["error"] as? String ?? ""
            #expect(
                message.contains("cannot connect to the model server") || message.contains("cannot be reached"),
                "\(r.body)")
        }
        let ready = try run(
            "/usr/bin/curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", cluster.url + "/v2/models/down/ready"])
        #expect(ready == "503")
        #expect(try curlParallel(url: cluster.url + "/v2/models/nope/infer", bodies: ["{}"])[0].status == 404)
    }

    @Test func upstreamTimeoutIsA504() throws {
        let cluster = try TestCluster(
            simLatency: "{1: 400, 100: 400}",
            models: """
                  - {name: slow, upstream: "UPSTREAM", policy: none, upstream_timeout_ms: 50}
                """)
        defer { cluster.stop() }
        let r = try curlParallel(url: cluster.url + "/v2/models/slow/infer", bodies: [v2Request(id: "t", rows: [[1]])])[
            0]
        #expect(r.status == 504)
        #expect((r.json?["error"] as? String)?.contains("did not answer within 50 ms") == true, "\(r.body)")
    }

    @Test func aFailingPolicyStillAnswersEveryRequest() throws {
        let dir = try scratchDir("failing")
        defer { try? FileManager.default.removeItem(at: dir) }
        let so = try compilePlugin(
            source: repoRoot.appendingPathComponent("Tests/Fixtures/plugins/failing_policy.c"), into: dir,
            name: "failing_policy")
        let cluster = try TestCluster(
            extraTop: "plugins: [\(so)]\nadmin_listen: \"127.0.0.1:0\"",
            models: """
                  - {name: m, upstream: "UPSTREAM", policy: always-fails}
                """)
        defer { cluster.stop() }
        let results = try curlParallel(
            url: cluster.url + "/v2/models/m/infer",
            bodies: (0..<20).map { v2Request(id: "\($0)", rows: [[Double($0)]]) })
        for (i, r) in results.enumerated() {
            #expect(r.status == 200)
            #expect(r.output("sum") == [Double(i)])
            // Every batch went without the policy, and each response says so.
            #expect(r.headers["mlproxy-policy"] == "always-fails (bypassed: this policy always fails)", "\(r.headers)")
        }
        let metrics = try run("/usr/bin/curl", ["-s", cluster.url + "/metrics"])
        let failures = metrics.split(separator: "\n").first {
            $0.hasPrefix("mlproxy_policy_failures_total{model=\"m\",hook=\"decide\"}")
        }
        let count = failures.flatMap { Int($0.split(separator: " ").last ?? "") } ?? 0
        // One failed decide per batch at least: 20 requests, at most 20 batches, each counted.
        let batches =
            metrics.split(separator: "\n").first { $0.hasPrefix("mlproxy_batches_total{model=\"m\"}") }
            .flatMap { Int($0.split(separator: " ").last ?? "") } ?? -1
        #expect(count >= batches && batches > 0, "\(count) failures, \(batches) batches")
        // The admin listener's batch log says why each batch left.
        let log = try run(
            "/usr/bin/curl", ["-s", "http://127.0.0.1:\(cluster.proxy.adminPort)/admin/models/m/batches"])
        #expect(log.contains("policy failed (host): this policy always fails"), "\(log)")
    }

    @Test func theCSamplePolicyBuiltWithPlainCCIsUsed() throws {
        let dir = try scratchDir("sample")
        defer { try? FileManager.default.removeItem(at: dir) }
        let so = dir.appendingPathComponent("libpairs_policy.so").path
        // Exactly the command the sample's comment gives a user.
        try run(
            "/usr/bin/cc",
            [
                "-shared", "-fPIC", "-Wall", "-Wextra", "-Werror", "-I",
                repoRoot.appendingPathComponent("include").path,
                "-o", so, repoRoot.appendingPathComponent("samples/c-policy/pairs_policy.c").path, "-ljansson",
            ])
        let cluster = try TestCluster(
            extraTop: "plugins: [\(so)]",
            models: """
                  - {name: m, upstream: "UPSTREAM", policy: pairs, policy_params: {group: 2}, slo_ms: 10000, max_inflight_batches: 4}
                """)
        defer { cluster.stop() }
        let results = try curlParallel(
            url: cluster.url + "/v2/models/m/infer",
            bodies: (0..<2).map { v2Request(id: "\($0)", rows: [[Double($0), 1]]) })
        for (i, r) in results.enumerated() {
            #expect(r.status == 200)
            #expect(r.output("sum") == [Double(i) + 1])
            #expect(r.headers["mlproxy-policy"] == "pairs")
            // Two single-item requests within 5 s (half the SLO): the pairs policy sends them together.
            #expect(r.headers["mlproxy-batch-size"] == "2")
        }
    }

    @Test func healthAndMetadataEndpoints() throws {
        let cluster = try TestCluster(
            models: """
                  - {name: m, upstream: "UPSTREAM"}
                """)
        defer { cluster.stop() }
        for (path, want) in [
            ("/v2/health/live", "\"live\":true"), ("/v2/health/ready", "\"ready\":true"),
            ("/v2/models/m/ready", "\"ready\":true"), ("/v2/models/m", "\"name\":\"m\""),
            ("/v2/models/m/versions/1/ready", "\"ready\":true"),
        ] {
            let out = try run("/usr/bin/curl", ["-sS", "-w", " %{http_code}", cluster.url + path])
            #expect(out.hasSuffix(" 200"), "\(path): \(out)")
            #expect(out.contains(want), "\(path): \(out)")
        }
        let missing = try run("/usr/bin/curl", ["-sS", "-w", " %{http_code}", cluster.url + "/v2/models/zz/ready"])
        #expect(missing.hasSuffix(" 404"))
        let wrongType = try curlParallel(
            url: cluster.url + "/v2/models/m/infer", bodies: ["x"], contentType: "image/png")[0]
        #expect(wrongType.status == 415)
        #expect((wrongType.json?["error"] as? String)?.contains("application/json") == true)
    }

    /// Two requests of different widths: with `pad: true` they share one batch, the narrower padded
    /// with pad_value (the simulated model's row sum shows the padding); without it each goes alone.
    @Test func paddingBatchesDifferentShapesTogether() throws {
        let cluster = try TestCluster(
            models: """
                  - {name: padded, upstream: "UPSTREAM", pad: true, pad_value: 100, policy: static, policy_params: {batch_items: 2, max_delay_ms: 300}}
                  - {name: plain, upstream: "UPSTREAM", policy: static, policy_params: {batch_items: 2, max_delay_ms: 100}}
                """)
        defer { cluster.stop() }
        let bodies = [v2Request(id: "narrow", rows: [[1, 2]]), v2Request(id: "wide", rows: [[1, 2, 3]])]
        let padded = try curlParallel(url: cluster.url + "/v2/models/padded/infer", bodies: bodies)
        #expect(padded.map(\.status) == [200, 200], "\(padded.map(\.body))")
        #expect(padded[0].output("sum") == [103], "padded with 100: \(padded[0].body)")
        #expect(padded[1].output("sum") == [6])
        #expect(padded.map { $0.headers["mlproxy-batch-requests"] } == ["2", "2"])
        let plain = try curlParallel(url: cluster.url + "/v2/models/plain/infer", bodies: bodies)
        #expect(plain.map { $0.output("sum") } == [[3], [6]])
        #expect(plain.map { $0.headers["mlproxy-batch-requests"] } == ["1", "1"], "different shapes are batched apart")
    }
}
