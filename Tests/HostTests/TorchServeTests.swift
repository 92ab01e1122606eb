import Foundation
import MLProxyHost
import NIOCore
import Testing

/// The `torchserve` backend: a batch goes to POST /predictions/{m} as one JSON list of rows, and the
/// reply's list is split back to the clients.
@Suite("TorchServe backend", .serialized)
struct TorchServeTests {
    @Test func batchesGoAsOneListAndComeBackRowByRow() throws {
        let cluster = try TestCluster(
            models: """
                  - name: ts
                    backend: torchserve
                    upstream: "UPSTREAM"
                    policy: static
                    policy_params: {batch_items: 4, max_delay_ms: 30}
                """)
        defer { cluster.stop() }
        let rows = (0..<16).map { [Double($0), 0.5] }
        let results = try curlParallel(
            url: cluster.url + "/v2/models/ts/infer",
            bodies: rows.enumerated().map { v2Request(id: "r\($0.offset)", rows: [$0.element]) })
        var batched = 0
        for (i, r) in results.enumerated() {
            #expect(r.status == 200, "\(i): \(r.body)")
            #expect(r.output("predictions") == [Double(i) + 0.5], "\(i): \(r.body)")
            #expect(r.json?["id"] as? String == "r\(i)")
            if Int(r.headers["mlproxy-batch-requests"] ?? "") ?? 0 > 1 { batched += 1 }
        }
        #expect(batched > 0, "requests were batched into one TorchServe request")
        // Two inputs go as an object of named values per row.
        let two =
            "{\"inputs\":[{\"name\":\"a\",\"datatype\":\"FP32\",\"shape\":[2,2],\"data\":[1,2,3,4]},{\"name\":\"b\",\"datatype\":\"INT32\",\"shape\":[2,1],\"data\":[10,20]}]}"
        let r = try curlParallel(url: cluster.url + "/v2/models/ts/infer", bodies: [two])[0]
        #expect(r.output("predictions") == [13, 27], "\(r.body)")
    }

    @Test func pathBodyAndBadRepliesAreExact() throws {
        let backend = try BackendInstance(try bundledPlugins.component(.backend, "torchserve"))
        let x = Tensor.fp64(name: "x", shape: [2, 2], values: [1, 2, 3, 4])
        let message = try backend.encode(
            inputs: [x], items: 2, model: "resnet", version: "2.0", requestedOutputs: [],
            allocator: ByteBufferAllocator()
        )
        #expect(message.path == "/predictions/resnet/2.0")
        #expect(message.contentType == "application/json")
        #expect(
            String(buffer: message.body) == "[[1.0,2.0],[3.0,4.0]]" || String(buffer: message.body) == "[[1,2],[3,4]]",
            "\(String(buffer: message.body))")
        func decode(_ status: Int, _ body: String, items: Int) -> Result<UpstreamOutputs, RequestError> {
            outcome { () throws(RequestError) in
                try backend.decode(
                    status: status, body: ByteBuffer(string: body), contentType: "application/json", model: "resnet",
                    items: items)
            }
        }
        let ok = try decode(200, "[[0.25, 0.75], [0.5, 0.5]]", items: 2).get()
        #expect(ok.outputs.map(\.name) == ["predictions"] && ok.outputs[0].shape == [2, 2])
        #expect(ok.outputs[0].doubles() == [0.25, 0.75, 0.5, 0.5])
        let named = try decode(200, "[{\"label\": \"cat\", \"p\": 0.9}]", items: 1).get()
        #expect(Set(named.outputs.map(\.name)) == ["label", "p"])
        let v1 = try decode(200, "{\"predictions\": [1.5, 2.5]}", items: 2).get()
        #expect(v1.outputs[0].doubles() == [1.5, 2.5])
        for (status, body, items, words) in [
            (200, "[1]", 2, "1 results for a batch of 2"),
            (
                503,
                "{\"code\": 503, \"type\": \"ServiceUnavailableException\", \"message\": \"Model resnet has no worker\"}",
                1, "has no worker"
            ),
            (200, "{\"oops\": 1}", 1, "not a JSON list"), (200, "not json", 1, "not JSON"),
        ] {
            guard case .failure(let e) = decode(status, body, items: items) else {
                Issue.record("\(body) decoded but must fail")
                continue
            }
            #expect(e.status == 502 && e.message.contains(words), "\(e.message)")
        }
    }
}
