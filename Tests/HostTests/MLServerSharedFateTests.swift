import Foundation
import MLProxyHost
import NIOCore
import NIOPosix
import Testing

/// Batch-mates never share fate in front of a real MLServer (PyPI, mlserver-sklearn): a regressor
/// whose model-settings declare `features` FP64 [-1, 10]. MLServer rejects a whole batch when one row
/// holds a NaN (500, a traceback), answers a 400 for an extra input, takes any input name, and closes
/// the connection after a 500. These tests fail, never skip, when MLServer cannot be installed.
@Suite("Shared fate against MLServer", .serialized)
struct MLServerSharedFateTests {
    typealias MLServer = MLServerInteropTests.MLServer

    enum Kind: String, CaseIterable { case good, wrongName, wrongWidth, wrongType, extraInput, nan }

    /// A request of one row whose values are unique to `i`; bad kinds as a careless client sends them.
    static func request(_ i: Int, _ kind: Kind) -> (body: Data, contentType: String) {
        let row: [Double] = (0..<10).map { Double(i) + Double($0) / 8 }
        func v2(_ name: String, _ dt: String, _ values: [Double], extra: String = "") -> Data {
            let data: String = values.map { String($0) }.joined(separator: ",")
            let text: String =
                "{\"id\":\"r\(i)\",\"inputs\":[{\"name\":\"\(name)\",\"datatype\":\"\(dt)\",\"shape\":[1,\(values.count)],\"data\":[\(data)]}\(extra)]}"
            return Data(text.utf8)
        }
        switch kind {
        case .good: return (v2("features", "FP64", row), "application/json")
        case .wrongName: return (v2("feature", "FP64", row), "application/json")
        case .wrongWidth: return (v2("features", "FP64", Array(row.prefix(9))), "application/json")
        case .wrongType: return (v2("features", "FP32", row), "application/json")
        case .extraInput:
            return (
                v2(
                    "features", "FP64", row,
                    extra: ",{\"name\":\"weights\",\"datatype\":\"FP64\",\"shape\":[1,1],\"data\":[1]}"),
                "application/json"
            )
        case .nan:
            // JSON cannot carry a NaN; a NumPy client's .npy body can, and it batches with the good rows.
            var values = row
            values[3] = .nan
            return (npyBody(values, rows: 1), "application/x-npy")
        }
    }

    /// Equal to the last few bits: scikit-learn's matrix product rounds differently for a batch of 40
    /// rows than for one row (BLAS blocking), so the same request's prediction may differ in the last
    /// digit; another request's answer differs in the first.
    static func close(_ a: [Double]?, _ b: [Double]?) -> Bool {
        guard let a, let b, a.count == b.count, !a.isEmpty else { return false }
        return zip(a, b).allSatisfy { abs($0 - $1) <= 1e-9 * max(1, abs($1)) }
    }

    /// 300 good requests shuffled with 10 of each bad kind (deterministically).
    static func mix() -> [Kind] {
        var kinds = Array(repeating: Kind.good, count: 300)
        for k in Kind.allCases where k != .good { kinds += Array(repeating: k, count: 10) }
        var g = SeededShuffle(seed: 42)
        return kinds.shuffled(using: &g)
    }

    struct SeededShuffle: RandomNumberGenerator {
        var state: UInt64
        init(seed: UInt64) { state = seed }
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    /// MLServer serving the regressor and a proxy in front of it (`extra`: more model keys), both
    /// stopped after `body`, which gets the server and the proxy's URL.
    func withRegressor(extra: String = "", _ body: (MLServer, String) throws -> Void) throws {
        try MLServerInteropTests.withServerAndProxy(
            script: "train_regressor.py", model: "regressor",
            keys:
                "slo_ms: 2000, max_batch_items: 64, codecs: [json, {name: npy, params: {input_name: features}}]\(extra)"
        ) { server, rt in try body(server, "http://127.0.0.1:\(rt.port)") }
    }

    /// The mix through the proxy at `url`, 48 clients at once, answers in the order of `kinds`.
    static func send(_ kinds: [Kind], to url: String) throws -> [CurlResult] {
        try curlParallel(
            url: url + "/v2/models/regressor/infer",
            requests: kinds.indices.map { request($0, kinds[$0]) }, concurrency: 48)
    }

    /// Whether good request `i` got MLServer's own answer for it.
    static func answeredRight(_ i: Int, _ r: CurlResult, _ want: [Int: [Double]]) -> Bool {
        #expect(r.status == 200, "good \(i): \(r.body)")
        let right = close(r.output("predict"), want[i])
        #expect(right, "good \(i): \(r.body) vs \(want[i] ?? [])")
        return r.status == 200 && right
    }

    /// Every good request's own answer, straight from MLServer.
    func directAnswers(_ server: MLServer, _ kinds: [Kind]) throws -> [Int: [Double]] {
        let good = kinds.indices.filter { kinds[$0] == .good }
        let direct = try curlParallel(
            url: "http://127.0.0.1:\(server.port)/v2/models/regressor/infer",
            requests: good.map { Self.request($0, .good) }, concurrency: 8)
        var out: [Int: [Double]] = [:]
        for (i, r) in zip(good, direct) {
            #expect(r.status == 200, "direct \(i): \(r.body)")
            out[i] = r.output("predict")
        }
        return out
    }

    @Test func withTheSignatureEveryGoodRequestIsAnsweredAndEveryBadOneGetsItsOwn4xx() throws {
        try withRegressor { server, url in
            try awaitSignature(url, model: "regressor")
            let kinds = Self.mix()
            let want = try directAnswers(server, kinds)
            let results = try Self.send(kinds, to: url)
            var lost = 0
            var batched = 0
            for (i, (kind, r)) in zip(kinds, results).enumerated() {
                let error = r.json?["error"] as? String ?? ""
                switch kind {
                case .good:
                    if !Self.answeredRight(i, r, want) { lost += 1 }
                    if (Int(r.headers["mlproxy-batch-requests"] ?? "") ?? 0) > 1 { batched += 1 }
                case .wrongName:
                    #expect(
                        r.status == 400
                            && error.contains("no input 'feature'; its inputs are features (FP64 [-1, 10])"),
                        "\(i): \(r.body)")
                case .wrongWidth:
                    #expect(
                        r.status == 400
                            && error.contains("has shape [1, 9] but model 'regressor' expects features (FP64 [-1, 10])"),
                        "\(i): \(r.body)")
                case .wrongType:
                    #expect(r.status == 400 && error.contains("input 'features' is FP32"), "\(i): \(r.body)")
                case .extraInput:
                    #expect(r.status == 400 && error.contains("no input 'weights'"), "\(i): \(r.body)")
                case .nan:
                    // Fits the signature, so it is batched; MLServer rejects its batch and it alone gets
                    // MLServer's own status and words.
                    #expect(r.status == 500 && error.contains("ValueError: Input X contains NaN"), "\(i): \(r.body)")
                    #expect(r.headers["mlproxy-batch-requests"] == "1")
                }
                if kind != .good {
                    #expect(r.headers["mlproxy-failure"] == "own", "\(i) \(kind): \(r.headers)")
                    #expect(!error.contains("Traceback"), "\(r.body)")
                }
            }
            #expect(lost == 0)
            #expect(batched > 100, "only \(batched) good requests shared a batch")
        }
    }

    @Test func withoutTheSignatureBisectionAloneKeepsEveryGoodRequestRight() throws {
        try withRegressor(extra: ", check_signature: false") { server, url in
            let kinds = Self.mix()
            let want = try directAnswers(server, kinds)
            // What MLServer says to each bad JSON request sent alone.
            let directBad = try curlParallel(
                url: "http://127.0.0.1:\(server.port)/v2/models/regressor/infer",
                requests: kinds.indices.filter { kinds[$0] != .good && kinds[$0] != .nan }.map {
                    Self.request($0, kinds[$0])
                },
                concurrency: 1)
            var directStatus: [Kind: Int] = [:]
            for (i, r) in zip(kinds.indices.filter { kinds[$0] != .good && kinds[$0] != .nan }, directBad) {
                directStatus[kinds[i]] = r.status
            }
            #expect(
                directStatus[.wrongName] == 200 && directStatus[.wrongType] == 200, "MLServer changed: \(directStatus)")
            #expect(
                directStatus[.wrongWidth] == 500 && directStatus[.extraInput] == 400,
                "MLServer changed: \(directStatus)")
            let results = try Self.send(kinds, to: url)
            var lost = 0
            for (i, (kind, r)) in zip(kinds, results).enumerated() {
                let error = r.json?["error"] as? String ?? ""
                switch kind {
                case .good:
                    if !Self.answeredRight(i, r, want) { lost += 1 }
                case .nan:
                    #expect(r.status == 500 && error.contains("ValueError: Input X contains NaN"), "\(i): \(r.body)")
                default:
                    // The status MLServer gives the request alone, and its words for an error.
                    #expect(r.status == directStatus[kind], "\(i) \(kind): \(r.body)")
                    if kind == .wrongWidth { #expect(error.contains("X has 9 features"), "\(r.body)") }
                    if kind == .extraInput {
                        #expect(error.contains("only supports a single input tensor"), "\(r.body)")
                    }
                }
                if r.status != 200 { #expect(r.headers["mlproxy-failure"] == "own", "\(i) \(kind): \(r.headers)") }
            }
            #expect(lost == 0)
            let metrics = try run("/usr/bin/curl", ["-s", url + "/metrics"])
            #expect(
                !metrics.contains("mlproxy_split_batches_total{model=\"regressor\"} 0\n"),
                "no batch was split: the test proves nothing")
        }
    }

    @Test func aCrashedServerFailsEveryRequestOnceAndIsUsedAgainWhenItIsBack() throws {
        try withRegressor { server, url in
            // 1,500 requests at 48 connections; MLServer is killed once 200 have been answered.
            let requests = (0..<1500).map { Self.request($0, .good) }
            let results = LoadResults()
            let load = Thread {
                results.set(
                    Result {
                        try curlParallel(url: url + "/v2/models/regressor/infer", requests: requests, concurrency: 48)
                    })
            }
            load.start()
            let started = Date()
            while Date().timeIntervalSince(started) < 30 {
                let metrics = (try? run("/usr/bin/curl", ["-s", url + "/metrics"])) ?? ""
                let line = metrics.split(separator: "\n").first {
                    $0.hasPrefix("mlproxy_responses_total{model=\"regressor\",code=\"200\"}")
                }
                if let n = line?.split(separator: " ").last.flatMap({ Int($0) }), n >= 200 { break }
                usleep(20_000)
            }
            server.crash()
            let all = try results.wait(seconds: 120)
            var byStatus: [Int: Int] = [:]
            for (i, r) in all.enumerated() {
                byStatus[r.status, default: 0] += 1
                if r.status == 200 { continue }
                #expect([502, 503, 504].contains(r.status), "\(i): \(r.status) \(r.body)")
                #expect(r.headers["mlproxy-failure"] == "upstream", "\(i): \(r.headers)")
                let reason = (r.json?["error"] as? String) ?? ""
                #expect(!reason.isEmpty, "\(i): no reason: \(r.body)")
            }
            print("MLServer killed under load: responses by status \(byStatus.sorted { $0.key < $1.key })")
            #expect(all.count == 1500 && byStatus[0] == nil, "some request got no response: \(byStatus)")
            #expect(
                (byStatus[200] ?? 0) > 0 && (byStatus[503] ?? 0) > 0,
                "the crash did not land inside the load: \(byStatus)")
            let ready = {
                try run(
                    "/usr/bin/curl",
                    ["-s", "-o", "/dev/null", "-w", "%{http_code}", url + "/v2/models/regressor/ready"])
            }
            #expect(try ready() == "503")
            // Back on the same port; the proxy was not restarted.
            try server.start()
            let back = Date()
            var answered = false
            while !answered && Date().timeIntervalSince(back) < 5 {
                answered =
                    try curlParallel(url: url + "/v2/models/regressor/infer", requests: [Self.request(1, .good)])[0]
                    .status == 200
                if !answered { usleep(100_000) }
            }
            #expect(answered, "no answer within 5 s of MLServer being back")
            #expect(try ready() == "200")
        }
    }
}

/// A value handed from a load thread to the test, waited for with a bound.
final class LoadResults: @unchecked Sendable {
    private let cond = NSCondition()
    private var value: Result<[CurlResult], Error>?

    func set(_ v: Result<[CurlResult], Error>) {
        cond.lock()
        value = v
        cond.signal()
        cond.unlock()
    }

    func wait(seconds: Double) throws -> [CurlResult] {
        cond.lock()
        defer { cond.unlock() }
        let deadline = Date().addingTimeInterval(seconds)
        while value == nil && cond.wait(until: deadline) {}
        guard let value else { throw TestFailure.command("load", -1, "did not finish in \(seconds) s") }
        return try value.get()
    }
}
