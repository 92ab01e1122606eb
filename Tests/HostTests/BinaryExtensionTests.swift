import Foundation
import MLProxyHost
import Testing

/// The v2 binary tensor extension (JSON head + raw tensors, Inference-Header-Content-Length), sent
/// with curl through the proxy to the simulated server.
@Suite("v2 binary tensor extension", .serialized)
struct BinaryExtensionTests {
    /// Posts `head` + `binary` with the extension's header; returns status, headers and body bytes.
    func post(_ url: String, head: String, binary: Data, headerLength: Int? = nil) throws -> (Int, [String: String], Data) {
        let dir = try scratchDir("binary")
        defer { try? FileManager.default.removeItem(at: dir) }
        let body = dir.appendingPathComponent("body")
        try (Data(head.utf8) + binary).write(to: body)
        let out = dir.appendingPathComponent("out"), hdr = dir.appendingPathComponent("hdr")
        try run("/usr/bin/curl", ["-sS", "-o", out.path, "-D", hdr.path, "-H", "content-type: application/octet-stream",
                                  "-H", "inference-header-content-length: \(headerLength ?? head.utf8.count)",
                                  "--data-binary", "@\(body.path)", url])
        var headers: [String: String] = [:]
        var status = 0
        for line in try String(contentsOf: hdr, encoding: .utf8).split(whereSeparator: \.isNewline) {
            if line.hasPrefix("HTTP/") { status = Int(line.split(separator: " ")[1]) ?? 0 }
            else if let c = line.firstIndex(of: ":") {
                headers[line[..<c].lowercased()] = line[line.index(after: c)...].trimmingCharacters(in: .whitespaces)
            }
        }
        return (status, headers, try Data(contentsOf: out))
    }

    func floats(_ v: [Float]) -> Data { v.withUnsafeBytes { Data($0) } }

    @Test func binaryInputsAndOutputsRoundTrip() throws {
        let cluster = try TestCluster(models: """
              - {name: m, upstream: "UPSTREAM", policy: none}
            """)
        defer { cluster.stop() }
        let raw = floats([1, 2, 3, 4.5])
        let head = "{\"id\":\"b1\",\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[2,2],\"parameters\":{\"binary_data_size\":16}}],"
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
        let cluster = try TestCluster(models: """
              - {name: m, upstream: "UPSTREAM", policy: none}
            """)
        defer { cluster.stop() }
        let url = cluster.url + "/v2/models/m/infer"
        let head = "{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[2,2],\"parameters\":{\"binary_data_size\":16}}]}"
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
