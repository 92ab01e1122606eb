import Foundation
import MLProxyHost
import NIOCore
import NIOPosix
import Testing

/// The repository root, found from this file's path.
let repoRoot: URL = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent()

enum TestFailure: Error, CustomStringConvertible {
    case command(String, Int32, String)
    var description: String {
        switch self {
        case .command(let c, let s, let o): return "\(c) exited \(s): \(o)"
        }
    }
}

/// Runs a command, returning stdout; throws with its output when it fails.
@discardableResult
func run(_ executable: String, _ args: [String], stdin: Data? = nil) throws -> String {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: executable)
    p.arguments = args
    let out = Pipe()
    let err = Pipe()
    p.standardOutput = out
    p.standardError = err
    try p.run()
    // Read before waiting so a large output cannot block the child.
    let data = out.fileHandleForReading.readDataToEndOfFile()
    let errData = err.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    let text = String(decoding: data, as: UTF8.self)
    guard p.terminationStatus == 0 else {
        throw TestFailure.command(
            "\(executable) \(args.joined(separator: " "))", p.terminationStatus,
            text + String(decoding: errData, as: UTF8.self))
    }
    return text
}

/// The Python of an interop virtual environment: `.venv-interop` (MLServer, tritonclient, Pillow,
/// NumPy), `.venv-kserve` or `.venv-seldon`; a test that needs it fails, not skips, when it is missing.
func interopPython(_ venv: String = ".venv-interop") throws -> String {
    let python = repoRoot.appendingPathComponent("\(venv)/bin/python").path
    guard FileManager.default.isExecutableFile(atPath: python) else {
        throw TestFailure.command(python, -1, "missing: run `make interop-deps` (make test does)")
    }
    return python
}

/// Stops a process this test started: SIGTERM, then SIGKILL if it has not gone within 3 s (a child of
/// the test runner may not see SIGTERM); only that process, by its own pid.
func terminate(_ process: Process) {
    guard process.isRunning else { return }
    process.terminate()
    let deadline = Date().addingTimeInterval(3)
    while process.isRunning && Date() < deadline { usleep(100_000) }
    if process.isRunning { kill(process.processIdentifier, SIGKILL) }
    process.waitUntilExit()
}

/// Polls `condition` every 10 ms until it holds; fails the test after `seconds`. For waiting on a
/// state another process or loop reaches, instead of sleeping for a guessed time.
func waitUntil(_ what: String, seconds: Double = 10, _ condition: () throws -> Bool) throws {
    let deadline = Date().addingTimeInterval(seconds)
    while try !condition() {
        guard Date() < deadline else { throw TestFailure.command("waiting for \(what)", -1, "timed out") }
        usleep(10_000)
    }
}

/// A call that throws a `RequestError` as a `Result`, for tests that look at the failure.
func outcome<T>(_ body: () throws(RequestError) -> T) -> Result<T, RequestError> {
    Result(catching: body)
}

/// A fresh scratch directory.
func scratchDir(_ name: String) throws -> URL {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent(
        "mlproxy-tests-\(name)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    return dir
}

/// Builds a C plugin the way a user would: plain cc, our header, nothing else of ours (`libs`, e.g.
/// ["-ljansson"], after the source). `headers`: the folder holding mlproxy/mlproxy.h, e.g. a frozen
/// older version's (Tests/Fixtures/abi-1.0).
func compilePlugin(
    source: URL, into dir: URL, name: String, libs: [String] = [], headers: String = "include"
) throws -> String {
    let out = dir.appendingPathComponent("lib\(name).so").path
    try run(
        "/usr/bin/cc",
        [
            "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror",
            "-I", repoRoot.appendingPathComponent(headers).path, "-o", out, source.path,
        ] + libs)
    return out
}

/// A proxy in this process from `yaml` (listen on port 0), on its own two-thread event loop group,
/// drained and stopped after `body`, which gets the running proxy and the group (for more servers).
func withProxy(yaml: String, _ body: (ProxyRuntime, EventLoopGroup) throws -> Void) throws {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
    defer { try? group.syncShutdownGracefully() }
    let rt = try ProxyRuntime.start(config: try ProxyConfig.parse(yaml: yaml), group: group)
    defer { rt.drainAndStop() }
    try body(rt, group)
}

/// A proxy in front of a simulated model server, both in this process on loopback ports.
final class TestCluster: @unchecked Sendable {
    let group: MultiThreadedEventLoopGroup
    let sim: ProxyRuntime
    let proxy: ProxyRuntime

    var simPort: Int { sim.simulated[0].port }
    var url: String { "http://127.0.0.1:\(proxy.port)" }

    /// `models` is the YAML list of models; `UPSTREAM` in it is replaced by the simulated server's URL.
    /// `simExtra`: more keys for the simulated server's mapping (e.g. `reject_negative: true`).
    init(
        simLatency: String = "{1: 2, 100: 6}", replicas: Int = 1, simEcho: Bool = false, simExtra: String = "",
        extraTop: String = "", models: String
    ) throws {
        group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        sim = try ProxyRuntime.start(
            config: try ProxyConfig.parse(
                yaml: """
                    listen: "127.0.0.1:0"
                    simulated_servers:
                      - {listen: "127.0.0.1:0", replicas: \(replicas), latency_ms: \(simLatency), echo: \(simEcho)\(simExtra.isEmpty ? "" : ", " + simExtra)}
                    models:
                      - {name: unused, upstream: "http://127.0.0.1:1", check_signature: false}
                    """), group: group)
        let upstream = "http://127.0.0.1:\(sim.simulated[0].port)"
        proxy = try ProxyRuntime.start(
            config: try ProxyConfig.parse(
                yaml: """
                    listen: "127.0.0.1:0"
                    \(extraTop)
                    models:
                    \(models.replacingOccurrences(of: "UPSTREAM", with: upstream))
                    """), group: group)
    }

    func stop() {
        proxy.drainAndStop()
        sim.drainAndStop()
        try? group.syncShutdownGracefully()
    }
}

extension TestCluster {
    /// Upstream requests the simulated model server has received (one per batch).
    func upstreamRequests() throws -> Int {
        let stats = try run("/usr/bin/curl", ["-sS", "http://127.0.0.1:\(simPort)/sim/stats"])
        guard let n = (try JSONSerialization.jsonObject(with: Data(stats.utf8)) as? [String: Any])?["requests"] as? Int
        else {
            throw TestFailure.command("GET /sim/stats", 0, stats)
        }
        return n
    }
}

/// Runs a Tests/interop checker script with the interop Python; it prints {"checked": N, "problems": [...]}.
func runChecker(_ script: String, _ args: [String]) throws -> (checked: Int?, problems: [String]?, output: String) {
    let out = try run(try interopPython(), [repoRoot.appendingPathComponent("Tests/interop/\(script)").path] + args)
    let r = (try? JSONSerialization.jsonObject(with: Data(out.utf8))) as? [String: Any]
    return (r?["checked"] as? Int, r?["problems"] as? [String], out)
}

/// One response as curl saw it.
struct CurlResult {
    let status: Int
    let headers: [String: String]
    let body: String

    var json: [String: Any]? {
        (try? JSONSerialization.jsonObject(with: Data(body.utf8))) as? [String: Any]
    }

    /// The values of output `name` in a v2 JSON response.
    func output(_ name: String) -> [Double]? {
        guard let outs = json?["outputs"] as? [[String: Any]],
            let o = outs.first(where: { $0["name"] as? String == name }),
            let data = o["data"] as? [Any]
        else { return nil }
        return data.compactMap { ($0 as? NSNumber)?.doubleValue }
    }
}

/// Sends every body as its own POST, all at once (curl --parallel, up to `concurrency` connections),
/// and returns the responses in the order of `bodies`.
func curlParallel(
    url: String, bodies: [String], contentType: String = "application/json",
    concurrency: Int = 500
) throws -> [CurlResult] {
    try curlParallel(url: url, requests: bodies.map { (Data($0.utf8), contentType) }, concurrency: concurrency)
}

/// The same with raw bodies, each with its own content type.
func curlParallel(url: String, requests: [(body: Data, contentType: String)], concurrency: Int = 500) throws
    -> [CurlResult]
{
    let dir = try scratchDir("curl")
    defer { try? FileManager.default.removeItem(at: dir) }
    var config = ""
    for (i, request) in requests.enumerated() {
        try request.body.write(to: dir.appendingPathComponent("\(i).req"))
        if i > 0 { config += "next\n" }
        config += """
            url = "\(url)"
            data-binary = "@\(dir.path)/\(i).req"
            header = "content-type: \(request.contentType)"
            output = "\(dir.path)/\(i).out"
            dump-header = "\(dir.path)/\(i).hdr"
            max-time = 60

            """
    }
    let cfg = dir.appendingPathComponent("curl.cfg")
    try config.write(to: cfg, atomically: false, encoding: .utf8)
    try run(
        "/usr/bin/curl",
        [
            "--no-progress-meter", "--parallel", "--parallel-immediate",
            "--parallel-max", String(concurrency), "-K", cfg.path,
        ])
    return try requests.indices.map { i in
        let raw = try String(contentsOf: dir.appendingPathComponent("\(i).hdr"), encoding: .utf8)
        var status = 0
        var headers: [String: String] = [:]
        for line in raw.split(whereSeparator: \.isNewline) {
            if line.hasPrefix("HTTP/") {
                status = Int(line.split(separator: " ")[1]) ?? 0
            } else if let colon = line.firstIndex(of: ":") {
                headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(
                    in: .whitespaces)
            }
        }
        let body = (try? String(contentsOf: dir.appendingPathComponent("\(i).out"), encoding: .utf8)) ?? ""
        return CurlResult(status: status, headers: headers, body: body)
    }
}

/// The same bodies sent straight to a model server (`direct`, few connections, as its own clients
/// would) and through the proxy (`proxied`, all at once), for tests that compare the answers.
func directAndProxied(
    direct: String, proxied: String, bodies: [String], directConcurrency: Int,
    proxiedConcurrency: Int
) throws -> (direct: [CurlResult], proxied: [CurlResult]) {
    (
        try curlParallel(url: direct, bodies: bodies, concurrency: directConcurrency),
        try curlParallel(url: proxied, bodies: bodies, concurrency: proxiedConcurrency)
    )
}

/// A v2 JSON request with one FP64 input "x" of `rows`.
func v2Request(id: String, rows: [[Double]]) -> String {
    let data = rows.map { "[" + $0.map { String($0) }.joined(separator: ",") + "]" }.joined(separator: ",")
    return
        "{\"id\":\"\(id)\",\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP64\",\"shape\":[\(rows.count),\(rows.first?.count ?? 0)],\"data\":[\(data)]}]}"
}

/// Waits (10 s at most) until the proxy at `url` checks `model`'s requests against a signature from
/// `source`, as its metadata answer says (`parameters.mlproxy.signature`).
func awaitSignature(_ url: String, model: String, source: String = "the model server's metadata") throws {
    let deadline = Date().addingTimeInterval(10)
    while Date() < deadline {
        let meta = (try? run("/usr/bin/curl", ["-s", url + "/v2/models/\(model)"])) ?? ""
        let doc = (try? JSONSerialization.jsonObject(with: Data(meta.utf8))) as? [String: Any]
        let mlproxy = (doc?["parameters"] as? [String: Any])?["mlproxy"] as? [String: Any]
        if mlproxy?["signature"] as? String == source { return }
        usleep(20_000)
    }
    throw TestFailure.command("awaitSignature", -1, "\(model) has no signature from \(source) after 10 s")
}

/// A NumPy .npy (version 1.0) body of FP64 `values` in `rows` rows.
func npyBody(_ values: [Double], rows: Int) -> Data {
    var header = "{'descr': '<f8', 'fortran_order': False, 'shape': (\(rows), \(values.count / rows)), }"
    while (10 + header.utf8.count + 1) % 64 != 0 { header += " " }
    header += "\n"
    var data = Data(
        [0x93] + Array("NUMPY".utf8) + [1, 0, UInt8(header.utf8.count & 0xff), UInt8(header.utf8.count >> 8)])
    data.append(Data(header.utf8))
    for v in values { withUnsafeBytes(of: v.bitPattern.littleEndian) { data.append(contentsOf: $0) } }
    return data
}

/// A port nothing listens on right now.
func freePort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    addr.sin_port = 0
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } }
    _ = withUnsafeMutablePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
    }
    return Int(UInt16(bigEndian: addr.sin_port))
}

/// The bundled plugins (policies, codecs, stages, backends), loaded once.
let bundledPlugins: PluginRegistry = {
    let r = PluginRegistry()
    r.loadAll(extra: [])
    return r
}()

/// A model queue around a bundled policy (`params` is extra JSON members), for manual-clock tests.
func policyQueue(
    _ policy: String, params: String = "", maxItems: Int, sloMillis: Int64, inflight: Int,
    maxQueued: Int = 100_000, rejectLate: Bool = false
) throws -> ModelQueue<Int> {
    let json =
        "{\"slo_ms\":\(sloMillis),\"max_batch_items\":\(maxItems),\"max_inflight_batches\":\(inflight)\(params.isEmpty ? "" : "," + params)}"
    let p = try PluginPolicy(try bundledPlugins.component(.policy, policy), configJSON: json)
    return ModelQueue(
        limits: QueueLimits(
            maxBatchItems: maxItems, maxQueuedItems: maxQueued, maxInflightBatches: inflight,
            sloNanos: sloMillis * 1_000_000, rejectLate: rejectLate), policy: p)
}

/// What a pump decided: the ids of each dispatched batch, the wake time if any, the rejected ids.
func summarize(_ effects: [QueueEffect<Int>]) -> (batches: [[Int]], wake: Int64?, rejected: [Int]) {
    var batches: [[Int]] = []
    var wake: Int64?
    var rejected: [Int] = []
    for e in effects {
        switch e {
        case .dispatch(let entries, _): batches.append(entries.map(\.payload))
        case .wake(let at): wake = at
        case .reject(let entries, _): rejected += entries.map(\.payload)
        }
    }
    return (batches, wake, rejected)
}
