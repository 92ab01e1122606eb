import Foundation
import MLProxyHost
import Testing

/// Every status each hook can return, through a real proxy and curl, against the HTTP status that
/// include/mlproxy/mlproxy.h promises for it (its status table and the exceptions listed under it).
@Suite("Hook statuses as HTTP statuses")
struct StatusMappingTests {
    /// The statuses a hook can return, and a value no ABI version defines.
    static let statuses = [1, 2, 3, 4, 5, 6, 99]

    /// The header's table: invalid input 400, unsupported 415, upstream 502, the rest 500.
    static func table(_ s: Int) -> Int { [1: 400, 2: 415, 3: 502][s] ?? 500 }

    @Test func eachHooksStatusesGiveTheHTTPStatusesTheHeaderPromises() throws {
        let dir = try scratchDir("statuses")
        defer { try? FileManager.default.removeItem(at: dir) }
        let plugin = try compilePlugin(
            source: repoRoot.appendingPathComponent("Tests/Fixtures/plugins/status_plugin.c"), into: dir,
            name: "status_plugin", libs: ["-ljansson"])
        // (model, hook, expected HTTP status) for each status; one model per case.
        var cases: [(model: String, hook: String, status: Int, http: Int)] = []
        var models = ""
        let codec = "{name: status-codec}"
        for s in Self.statuses {
            let base = "upstream: \"UPSTREAM\", check_signature: false"
            models +=
                "  - {name: decode\(s), \(base), codecs: [{chain: [{name: status-codec, params: {decode: \(s)}}]}]}\n"
            // A codec decoding a client's request sees no model server either: "upstream" is a 400.
            cases.append(("decode\(s)", "decode_request", s, s == 3 ? 400 : Self.table(s)))
            models +=
                "  - {name: encode\(s), \(base), codecs: [{chain: [{name: status-codec, params: {encode: \(s)}}]}]}\n"
            cases.append(("encode\(s)", "encode_response", s, Self.table(s)))
            // A stage sees no model server: its "upstream" failure is the request's (400).
            models += "  - {name: stage\(s), \(base), codecs: [{chain: [\(codec)], stages: [\"status(\(s))\"]}]}\n"
            cases.append(("stage\(s)", "apply", s, s == 3 ? 400 : Self.table(s)))
            // A backend's encode_request: only invalid input and unsupported are the request's own;
            // upstream is the batch's 502, the rest its 500.
            models +=
                "  - {name: bencode\(s), \(base), codecs: [{chain: [\(codec)]}], backend: status-backend, "
                + "backend_params: {encode: \(s)}}\n"
            cases.append(("bencode\(s)", "encode_request", s, [1: 400, 2: 415, 3: 502][s] ?? 500))
            // A backend's decode_response: the reply cannot be used, whatever the status.
            models +=
                "  - {name: bdecode\(s), \(base), codecs: [{chain: [\(codec)]}], backend: status-backend, "
                + "backend_params: {decode: \(s)}}\n"
            cases.append(("bdecode\(s)", "decode_response", s, 502))
            // A policy's failures answer nobody: decide is bypassed, observe is counted.
            models +=
                "  - {name: decide\(s), \(base), codecs: [{chain: [\(codec)]}], policy: status-policy, "
                + "policy_params: {decide: \(s)}}\n"
            cases.append(("decide\(s)", "decide", s, 200))
            models +=
                "  - {name: observe\(s), \(base), codecs: [{chain: [\(codec)]}], policy: status-policy, "
                + "policy_params: {observe: \(s)}}\n"
            cases.append(("observe\(s)", "observe", s, 200))
        }
        let cluster = try TestCluster(extraTop: "plugins: [\"\(plugin)\"]", models: models)
        defer { cluster.stop() }
        for c in cases {
            let r = try curlParallel(
                url: cluster.url + "/v2/models/\(c.model)/infer", requests: [(Data("abc".utf8), "application/x-status")]
            )[0]
            #expect(r.status == c.http, "\(c.hook) returning \(c.status): \(r.status) \(r.body)")
            let words = "\(c.hook) says \(c.status)"
            switch c.hook {
            case "decide":
                #expect(r.headers["mlproxy-policy"] == "status-policy (bypassed: \(words))", "\(r.headers)")
                #expect(r.headers["mlproxy-batch-reason"] == "host-policy-failed")
            case "observe":
                #expect(r.headers["mlproxy-batch-reason"] == "no-gain", "\(r.headers)")
            case "decode_response":
                #expect(r.body.contains(words) || r.body.contains("status-backend"), "\(r.body)")
            default:
                #expect(r.body.contains(words), "the client reads the hook's message: \(r.body)")
            }
        }
        // observe runs once the batch is answered: wait for the count.
        try waitUntil("observe failures counted") {
            let metrics = try run("/usr/bin/curl", ["-s", cluster.url + "/metrics"])
            return Self.statuses.allSatisfy {
                metrics.contains("mlproxy_policy_failures_total{model=\"observe\($0)\",hook=\"observe\"} 1")
            }
        }
    }
}
