import Foundation
import MLProxyHost
import Testing

/// NumPy .npy bodies through the proxy, from a real NumPy client.
@Suite("npy codec", .serialized)
struct NpyCodecTests {
    @Test func numpyArraysRoundTripAndBadFilesAreRefused() throws {
        let python = try interopPython()
        let cluster = try TestCluster(
            models: """
                  - {name: m, upstream: "UPSTREAM", policy: none, codecs: [json, {name: npy, params: {input_name: features}}]}
                """)
        defer { cluster.stop() }
        let out = try run(
            python,
            [repoRoot.appendingPathComponent("Tests/interop/npy_client.py").path, cluster.url + "/v2/models/m/infer"])
        let r = try #require(try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: Any])
        #expect(r["ok_status"] as? Int == 200, "\(out)")
        #expect(r["ok_type"] as? String == "application/x-npy")
        #expect(r["ok_dtype"] as? String == "float64")
        #expect(r["ok_shape"] as? [Int] == [3, 1])
        #expect(r["ok_values"] as? [Double] == r["expected"] as? [Double])
        #expect(r["int16"] as? [Double] == [3, 7])
        for (key, status, message) in [
            ("big_endian", 415, "not supported"), ("fortran", 400, "Fortran order"),
            ("truncated", 400, "data is"), ("not_npy", 400, "not a .npy file"),
        ] {
            let got = try #require(r[key] as? [Any])
            #expect(got.first as? Int == status, "\(key): \(got)")
            #expect((got.last as? String)?.contains(message) == true, "\(key): \(got)")
        }
    }
}
