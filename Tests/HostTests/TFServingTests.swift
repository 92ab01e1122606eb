import Foundation
import MLProxyHost
import Testing

/// TF Serving REST through the proxy: the `tfserving` codec for clients, the `tfserving` backend for
/// upstreams, with curl.
@Suite("TF Serving REST", .serialized)
struct TFServingTests {
    func post(_ url: String, _ body: String) throws -> CurlResult {
        try curlParallel(url: url, bodies: [body])[0]
    }

    @Test func rowsColumnsNamesAndB64() throws {
        let cluster = try TestCluster(
            models: """
                  - {name: m, upstream: "UPSTREAM", policy: none, codecs: [json, tfserving]}
                """)
        defer { cluster.stop() }
        let url = cluster.url + "/v1/models/m:predict"
        var r = try post(url, "{\"instances\": [[1, 2], [3, 4.5]]}")
        #expect(r.status == 200, "\(r.body)")
        #expect(r.json?["predictions"] as? [[Double]] == [[3], [7.5]])
        r = try post(
            url,
            "{\"signature_name\": \"serving_default\", \"instances\": [{\"a\": [1, 2], \"b\": 10}, {\"a\": [3, 4], \"b\": 20}]}"
        )
        #expect(r.json?["predictions"] as? [[Double]] == [[13], [27]], "\(r.body)")
        r = try post(url, "{\"inputs\": {\"a\": [[1, 2], [3, 4]]}}")
        #expect(r.json?["outputs"] as? [[Double]] == [[3], [7]], "\(r.body)")
        r = try post(url, "{\"inputs\": [[5, 5]]}")
        #expect(r.json?["outputs"] as? [[Double]] == [[10]], "\(r.body)")
        // {"b64": ...} is BYTES; the simulated server sums element lengths: "hello" = 5, "" + "abc" = 3.
        r = try post(url, "{\"instances\": [{\"b64\": \"aGVsbG8=\"}, {\"b64\": \"YWJj\"}]}")
        #expect(r.json?["predictions"] as? [[Double]] == [[5], [3]], "\(r.body)")
        r = try post(cluster.url + "/v1/models/m/versions/3:predict", "{\"instances\": [[1, 1]]}")
        #expect(r.json?["predictions"] as? [[Double]] == [[2]], "\(r.body)")
        // The same model still answers v2 clients.
        r = try post(cluster.url + "/v2/models/m/infer", v2Request(id: "v2", rows: [[1, 2]]))
        #expect(r.output("sum") == [3])
    }

    @Test func mistakesGetA400ThatNamesThem() throws {
        let cluster = try TestCluster(
            models: """
                  - {name: m, upstream: "UPSTREAM", policy: none, codecs: [tfserving]}
                """)
        defer { cluster.stop() }
        let url = cluster.url + "/v1/models/m:predict"
        for (body, message) in [
            ("{\"instances\": [[1, 2], [3]]}", "ragged"),
            ("{\"instances\": [{\"b64\": \"not base64!\"}]}", "not base64"),
            ("{\"instances\": [[1, \"x\"]]}", "mixes numbers"),
            ("{\"rows\": [1]}", "needs 'instances'"),
            ("{\"instances\": [{\"a\": 1}, {\"b\": 2}]}", "does not have the same named inputs"),
            ("[1, 2]", "must be a JSON object"),
        ] {
            let r = try post(url, body)
            #expect(r.status == 400, "\(body): \(r.body)")
            #expect((r.json?["error"] as? String)?.contains(message) == true, "\(body): \(r.body)")
        }
        // A v2 client at a model that only speaks TF Serving is told so.
        let v2 = try post(cluster.url + "/v2/models/m/infer", v2Request(id: "x", rows: [[1]]))
        #expect(v2.status == 404)
        #expect(v2.body.contains("does not serve v2"))
    }

    @Test func theTFServingBackendTalksToATFServingStyleUpstream() throws {
        // Upstream: a proxy that serves TF Serving REST in front of the simulated server; in front of
        // it, a proxy whose backend is `tfserving`, fed by v2 clients. Concurrent requests are
        // batched by the front proxy into one :predict call and split back.
        let cluster = try TestCluster(
            models: """
                  - {name: m, upstream: "UPSTREAM", policy: none, codecs: [tfserving]}
                """)
        defer { cluster.stop() }
        let front = try TestCluster(
            models: """
                  - {name: f, upstream: "http://127.0.0.1:\(cluster.proxy.port)", upstream_model: m, backend: tfserving,
                     policy: static, policy_params: {max_delay_ms: 100}, max_batch_items: 16}
                """)
        defer { front.stop() }
        let results = try curlParallel(
            url: front.url + "/v2/models/f/infer",
            bodies: (0..<10).map { v2Request(id: "\($0)", rows: [[Double($0), 2]]) })
        var batched = 0
        for (i, r) in results.enumerated() {
            #expect(r.status == 200, "\(r.body)")
            // The TF reply's numbers come back as FP64 ("predictions"), [1, 1] per request.
            #expect(r.output("predictions") == [Double(i) + 2], "\(r.body)")
            if (Int(r.headers["mlproxy-batch-size"] ?? "") ?? 0) > 1 { batched += 1 }
        }
        #expect(batched > 0)
    }
}
