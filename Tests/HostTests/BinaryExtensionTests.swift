import Foundation
import MLProxyHost
import NIOCore
import Testing

/// The v2 binary tensor extension (JSON head + raw tensors, Inference-Header-Content-Length), sent
/// with curl through the proxy to the simulated server.
@Suite("v2 binary tensor extension", .serialized)
struct BinaryExtensionTests {
    /// Posts `head` + `binary` with the extension's header; returns status, headers and body bytes.
    func post(_ url: String, head: String, binary: Data, headerLength: Int? = nil) throws -> (
        Int, [String: String], Data
    ) {
        let dir = try scratchDir("binary")
        defer { try? FileManager.default.removeItem(at: dir) }
        let body = dir.appendingPathComponent("body")
        try (Data(head.utf8) + binary).write(to: body)
        let out = dir.appendingPathComponent("out")
        let hdr = dir.appendingPathComponent("hdr")
        try run(
            "/usr/bin/curl",
            [
                "-sS", "-o", out.path, "-D", hdr.path, "-H", "content-type: application/octet-stream",
                "-H", "inference-header-content-length: \(headerLength ?? head.utf8.count)",
                "--data-binary", "@\(body.path)", url,
            ])
        var headers: [String: String] = [:]
        var status = 0
        for line in try String(contentsOf: hdr, encoding: .utf8).split(whereSeparator: \.isNewline) {
            if line.hasPrefix("HTTP/") {
                status = Int(line.split(separator: " ")[1]) ?? 0
            } else if let c = line.firstIndex(of: ":") {
                headers[line[..<c].lowercased()] = line[line.index(after: c)...].trimmingCharacters(in: .whitespaces)
            }
        }
        return (status, headers, try Data(contentsOf: out))
    }

    func floats(_ v: [Float]) -> Data { v.withUnsafeBytes { Data($0) } }

    @Test func binaryInputsAndOutputsRoundTrip() throws {
        let cluster = try TestCluster(
            models: """
                  - {name: m, upstream: "UPSTREAM", policy: none}
                """)
        defer { cluster.stop() }
        let raw = floats([1, 2, 3, 4.5])
        let head =
            "{\"id\":\"b1\",\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[2,2],\"parameters\":{\"binary_data_size\":16}}],"
            + "\"outputs\":[{\"name\":\"sum\",\"parameters\":{\"binary_data\":true}}]}"
        let (status, headers, body) = try post(cluster.url + "/v2/models/m/infer", head: head, binary: raw)
        #expect(status == 200, "\(String(decoding: body, as: UTF8.self))")
        let jsonLength = try #require(headers["inference-header-content-length"].flatMap(Int.init))
        let json = try #require(try JSONSerialization.jsonObject(with: body.prefix(jsonLength)) as? [String: Any])
        #expect(json["id"] as? String == "b1")
        let output = try #require((json["outputs"] as? [[String: Any]])?.first)
        #expect(output["data"] == nil)
        #expect((output["parameters"] as? [String: Any])?["binary_data_size"] as? Int == 16)
        let sums = body.dropFirst(jsonLength).withUnsafeBytes { Array($0.bindMemory(to: Double.self)) }
        #expect(sums == [3, 7.5])
    }

    @Test func binaryMistakesGetA400ThatNamesThem() throws {
        let cluster = try TestCluster(
            models: """
                  - {name: m, upstream: "UPSTREAM", policy: none}
                """)
        defer { cluster.stop() }
        let url = cluster.url + "/v2/models/m/infer"
        let head =
            "{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[2,2],\"parameters\":{\"binary_data_size\":16}}]}"
        let cases: [(String, Data, Int?, String)] = [
            (head, floats([1, 2, 3]), nil, "runs past the end of the body"),
            (head, floats([1, 2, 3, 4]), 10_000, "larger than the body"),
            (head.replacingOccurrences(of: "16", with: "12"), floats([1, 2, 3]), nil, "does not match shape"),
            (head, floats([1, 2, 3, 4, 5]), nil, "no input's binary_data_size claims them"),
        ]
        for (h, bin, length, message) in cases {
            let (status, _, body) = try post(url, head: h, binary: bin, headerLength: length)
            let text = String(decoding: body, as: UTF8.self)
            #expect(status == 400, "\(message): \(text)")
            #expect(text.contains(message), "\(text)")
        }
        // And the proxy still serves.
        let (status, _, _) = try post(url, head: head, binary: floats([1, 2, 3, 4]))
        #expect(status == 200)
    }
}

/// tritonclient (PyPI) with many datatypes, binary and JSON mixed, through the proxy.
@Suite("tritonclient datatypes", .serialized)
struct TritonClientDatatypeTests {
    @Test func fp16BytesBoolAndIntegersRoundTripInBinaryAndJSON() throws {
        let cluster = try TestCluster(
            simEcho: true,
            models: """
                  - {name: m, upstream: "UPSTREAM", policy: static, policy_params: {batch_items: 16, max_delay_ms: 50}}
                """)
        defer { cluster.stop() }
        let r = try runChecker("tritonclient_types.py", ["127.0.0.1:\(cluster.proxy.port)", "m"])
        #expect(r.checked == 8, "\(r.output)")
        #expect(r.problems == [], "\(r.output)")
        // They were batched: the simulated server saw fewer requests than the client sent.
        #expect(try cluster.upstreamRequests() < 8)
    }
}

@Suite("kserve-v2 backend binary modes", .serialized)
struct BackendBinaryModeTests {
    @Test func alwaysSendsBinaryAndBadModesAreRefused() throws {
        let backend = try BackendInstance(
            try bundledPlugins.component(.backend, "kserve-v2"), configJSON: "{\"binary\":\"always\"}")
        let x = Tensor.fp64(name: "x", shape: [2, 1], values: [1.5, 2.5])
        let m = try backend.encode(
            inputs: [x], items: 2, model: "m", version: "", requestedOutputs: [], allocator: ByteBufferAllocator()
        )
        let headLength = try #require(
            m.headers.first { $0.0 == "inference-header-content-length" }.flatMap { Int($0.1) })
        #expect(m.body.readableBytes == headLength + 16, "the JSON head, then 2 FP64 values")
        let head = String(buffer: m.body.getSlice(at: m.body.readerIndex, length: headLength)!)
        #expect(head.contains("\"binary_data_size\":16") && head.contains("\"binary_data_output\":true"), "\(head)")
        // The default sends JSON when JSON can carry it.
        let auto = try BackendInstance(try bundledPlugins.component(.backend, "kserve-v2"))
        let j = try auto.encode(
            inputs: [x], items: 2, model: "m", version: "", requestedOutputs: [], allocator: ByteBufferAllocator()
        )
        #expect(
            j.contentType == "application/json" && !j.headers.contains { $0.0 == "inference-header-content-length" })
        #expect(throws: ConfigError.self) {
            try BackendInstance(
                try bundledPlugins.component(.backend, "kserve-v2"), configJSON: "{\"binary\":\"sometimes\"}")
        }
        // End to end: the simulated server reads the binary batch and answers each client its rows.
        let cluster = try TestCluster(
            models: """
                  - {name: m, upstream: "UPSTREAM", backend_params: {binary: always}, policy: static, policy_params: {batch_items: 4, max_delay_ms: 30}}
                """)
        defer { cluster.stop() }
        let results = try curlParallel(
            url: cluster.url + "/v2/models/m/infer",
            bodies: (0..<8).map { v2Request(id: "\($0)", rows: [[Double($0), 1]]) })
        #expect(results.map { $0.output("sum") } == (0..<8).map { [Double($0) + 1] })
    }
}
