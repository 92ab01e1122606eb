import Foundation
import MLProxyHost
import NIOPosix
import PluginAPI
import Testing

/// The `mlproxy` executable as users run it.
@Suite("The mlproxy command", .serialized)
struct ProcessTests {
    let binary = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
        .appendingPathComponent("mlproxy").path

    /// Runs `mlproxy` with `args` to its end; its exit status and standard error.
    func runFailing(_ args: [String]) throws -> (status: Int32, stderr: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: binary)
        p.arguments = args
        let err = Pipe()
        p.standardError = err
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        let text = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        return (p.terminationStatus, text)
    }

    /// Starts `mlproxy serve` (listening on a port the kernel picks) and waits for its ready line;
    /// returns the process and the URL it serves.
    func serve(config: String) throws -> (Process, String) {
        let (p, url, _) = try serveFile(config: config)
        return (p, url)
    }

    /// The same, and the config file it serves from (to rewrite before a SIGHUP).
    func serveFile(config: String) throws -> (Process, String, URL) {
        let dir = try scratchDir("serve")
        let file = dir.appendingPathComponent("config.yaml")
        try config.write(to: file, atomically: true, encoding: .utf8)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: binary)
        p.arguments = ["serve", "--config", file.path, "--log-level", "warning"]
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        try p.run()
        var seen = Data()
        while !String(decoding: seen, as: UTF8.self).contains("ready on") {
            let chunk = out.fileHandleForReading.availableData
            if chunk.isEmpty {
                throw TestFailure.command("mlproxy serve", p.terminationStatus, String(decoding: seen, as: UTF8.self))
            }
            seen += chunk
        }
        let text = String(decoding: seen, as: UTF8.self)
        let url = try #require(
            text.split(separator: "\n").first { $0.contains("ready on") }?.split(separator: " ").last)
        return (p, String(url), file)
    }

    @Test func sigtermDrainsQueuedAndInflightRequests() throws {
        // The model server runs in this process, so the proxy's port and the server's are both bound at 0.
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let sim = try ProxyRuntime.start(
            config: try ProxyConfig.parse(
                yaml: """
                    listen: "127.0.0.1:0"
                    simulated_servers: [{listen: "127.0.0.1:0", latency_ms: {1: 300, 100: 300}}]
                    models: [{name: unused, upstream: "http://127.0.0.1:1", check_signature: false}]
                    """), group: group)
        defer {
            sim.drainAndStop()
            try? group.syncShutdownGracefully()
        }
        let simPort = sim.simulated[0].port
        let (proxy, url) = try serve(
            config: """
                listen: "127.0.0.1:0"
                shutdown_delay_ms: 300
                models:
                  - {name: m, upstream: "http://127.0.0.1:\(simPort)", policy: static, policy_params: {max_delay_ms: 200}, max_batch_items: 8}
                """)
        // 20 requests: 8 go at once, the rest wait in the queue behind them when SIGTERM arrives.
        let bodies = (0..<20).map { v2Request(id: "\($0)", rows: [[Double($0)]]) }
        nonisolated(unsafe) var results: [CurlResult] = []
        nonisolated(unsafe) var clientError: Error?
        let done = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            do {
                results = try curlParallel(url: "\(url)/v2/models/m/infer", bodies: bodies)
            } catch { clientError = error }
            done.signal()
        }
        // Signal once a batch is at the model server and the rest wait in the queue, as /metrics says.
        try waitUntil("8 requests in flight and 12 queued") {
            let metrics = try run("/usr/bin/curl", ["-s", "\(url)/metrics"])
            return metrics.contains("mlproxy_queued_requests{model=\"m\"} 12")
                && metrics.contains("mlproxy_inflight_batches{model=\"m\"} 1")
        }
        proxy.terminate()  // SIGTERM
        // Readiness turns 503 at once, so that the platform stops routing here; the listener still
        // accepts for shutdown_delay_ms.
        try waitUntil("readiness 503 after SIGTERM", seconds: 0.3) {
            (try? run("/usr/bin/curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", "\(url)/v2/health/ready"]))
                == "503"
        }
        done.wait()
        proxy.waitUntilExit()
        #expect(clientError == nil, "\(String(describing: clientError))")
        #expect(results.count == 20)
        for (i, r) in results.enumerated() {
            #expect(r.status == 200, "request \(i): \(r.status) \(r.body)")
            #expect(r.output("sum") == [Double(i)])
        }
        #expect(proxy.terminationStatus == 0)
    }

    /// SIGHUP while 8 clients keep sending: the model they use changes, a new model appears, and
    /// every request is answered.
    @Test func sighupAddsAModelWhileClientsSendAndLosesNone() throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let sim = try ProxyRuntime.start(
            config: try ProxyConfig.parse(
                yaml: """
                    listen: "127.0.0.1:0"
                    simulated_servers: [{listen: "127.0.0.1:0", replicas: 2, latency_ms: {1: 15, 100: 20}}]
                    models: [{name: unused, upstream: "http://127.0.0.1:1", check_signature: false}]
                    """), group: group)
        defer {
            sim.drainAndStop()
            try? group.syncShutdownGracefully()
        }
        let upstream = "http://127.0.0.1:\(sim.simulated[0].port)"
        let model = "{name: a, upstream: \"\(upstream)\", policy: static, policy_params: {max_delay_ms: 5}"
        let (proxy, url, file) = try serveFile(config: "listen: \"127.0.0.1:0\"\nmodels:\n  - \(model)}\n")
        defer { terminate(proxy) }
        let total = 1200
        let bodies = (0..<total).map { v2Request(id: "\($0)", rows: [[Double($0)]]) }
        nonisolated(unsafe) var results: [CurlResult] = []
        nonisolated(unsafe) var clientError: Error?
        let done = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            do {
                results = try curlParallel(url: "\(url)/v2/models/a/infer", bodies: bodies, concurrency: 8)
            } catch { clientError = error }
            done.signal()
        }
        func answered() throws -> Int {
            let metrics = try run("/usr/bin/curl", ["-s", "\(url)/metrics"])
            let line = metrics.split(separator: "\n").first {
                $0.hasPrefix("mlproxy_responses_total{model=\"a\",code=\"200\"}")
            }
            return line.flatMap { Int($0.split(separator: " ").last ?? "") } ?? 0
        }
        try waitUntil("100 requests answered") { try answered() >= 100 }
        try """
        listen: "127.0.0.1:0"
        models:
          - \(model), slo_ms: 800}
          - {name: b, upstream: "\(upstream)", policy: none}
        """.write(to: file, atomically: true, encoding: .utf8)
        kill(proxy.processIdentifier, SIGHUP)
        try waitUntil("model b answers") {
            let r = try? run(
                "/usr/bin/curl",
                ["-s", "-w", " %{http_code}", "-d", v2Request(id: "b", rows: [[2]]), "\(url)/v2/models/b/infer"])
            return r?.hasSuffix(" 200") == true
        }
        let atReload = try answered()
        #expect(atReload < total, "the reload happened while the clients were sending")
        #expect(try run("/usr/bin/curl", ["-s", "\(url)/v2/models/a"]).contains("\"slo_ms\":800"))
        done.wait()
        #expect(clientError == nil, "\(String(describing: clientError))")
        #expect(results.count == total)
        let failed = results.enumerated().filter {
            $0.element.status != 200 || $0.element.output("sum") != [Double($0.offset)]
        }
        #expect(
            failed.isEmpty,
            "\(failed.count) lost or wrong, first: \(failed.first.map { "\($0.offset): \($0.element.status) \($0.element.body)" } ?? "")"
        )
        #expect(try answered() == total + 0, "every request counted once under model a")
    }

    @Test func aConfigErrorStopsStartupWithFileKeyAndReason() throws {
        let dir = try scratchDir("badconfig")
        let file = dir.appendingPathComponent("bad.yaml")
        try "models:\n  - {name: m, upstream: \"http://127.0.0.1:1\", max_batch_item: 4}\n".write(
            to: file, atomically: true, encoding: .utf8)
        let (status, text) = try runFailing(["serve", "--config", file.path])
        #expect(status == 2)
        #expect(text.contains("bad.yaml"))
        #expect(text.contains("models[0].max_batch_item"))
        #expect(text.contains("unknown key"))
    }

    /// `mlproxy check` validates like start-up without serving; relative plugin paths are relative
    /// to the config file's folder, wherever the command runs from.
    @Test func checkValidatesWithoutServingAndResolvesRelativePaths() throws {
        let dir = try scratchDir("check")
        defer { try? FileManager.default.removeItem(at: dir) }
        let plugins = dir.appendingPathComponent("plugins")
        try FileManager.default.createDirectory(at: plugins, withIntermediateDirectories: true)
        _ = try compilePlugin(
            source: repoRoot.appendingPathComponent("samples/c-policy/pairs_policy.c"), into: plugins,
            name: "pairs_policy", libs: ["-ljansson"])
        let good = dir.appendingPathComponent("good.yaml")
        try """
        plugins: [./plugins/libpairs_policy.so]
        models: [{name: m, upstream: "http://127.0.0.1:1", policy: pairs, policy_params: {group: 2}}]
        """.write(to: good, atomically: true, encoding: .utf8)
        let out = try run(binary, ["check", "--config", good.path])
        #expect(out.contains("ok, 1 model(s): m"), "\(out)")

        let bad = dir.appendingPathComponent("bad.yaml")
        try """
        plugins: [./plugins/libmissing.so]
        models: [{name: m, upstream: "http://127.0.0.1:1"}]
        """.write(to: bad, atomically: true, encoding: .utf8)
        let (status, text) = try runFailing(["check", "--config", bad.path])
        #expect(status == 2)
        #expect(text.contains(bad.path), "names the config file: \(text)")
        #expect(text.contains(dir.path + "/./plugins/libmissing.so: not found: no such file"), "\(text)")
    }

    /// `mlproxy plugins` says what each plugin file is (ABI 1.2: its version, license and description)
    /// and lists its components; a plugin built against the frozen 1.1 header cannot say, and shows "-".
    @Test func pluginsListsEachPluginsVersionLicenseAndDescription() throws {
        let dir = try scratchDir("plugins-list")
        defer { try? FileManager.default.removeItem(at: dir) }
        let current = try compilePlugin(
            source: repoRoot.appendingPathComponent("samples/c-policy/pairs_policy.c"), into: dir,
            name: "pairs_policy", libs: ["-ljansson"])
        let oldSO = try compilePlugin(
            source: repoRoot.appendingPathComponent("Tests/Fixtures/plugins/failing_policy.c"), into: dir,
            name: "old_failing", headers: "Tests/Fixtures/abi-1.1")
        let config = dir.appendingPathComponent("c.yaml")
        try """
        plugins: ["\(current)", "\(oldSO)"]
        models: [{name: m, upstream: "http://127.0.0.1:1"}]
        """.write(to: config, atomically: true, encoding: .utf8)
        let out = try run(binary, ["plugins", "--config", config.path])
        let lines = out.split(separator: "\n").map { $0.split(separator: "\t", omittingEmptySubsequences: false) }
        func plugin(_ name: String) -> [Substring]? {
            lines.first { $0.count == 7 && $0[0] == "plugin" && $0[1] == name }
        }
        let pairs = try #require(plugin("pairs-sample"), "\(out)")
        #expect(pairs[2] == "1.0.0" && pairs[4] == "ABI 1.\(ABIVersion.minor)" && pairs[5] == current)
        #expect(pairs[6].contains("sends requests in pairs"))
        let policies = try #require(plugin("policies"), "\(out)")
        #expect(policies[2] != "-" && policies[6].contains("adaptive-sla"), "\(policies)")
        #expect(plugin("v2")?[6].contains("Open Inference Protocol") == true, "\(out)")
        let failing = try #require(plugin("failing-policy"), "\(out)")
        #expect(failing[2] == "-" && failing[3] == "-" && failing[4] == "ABI 1.1" && failing[6] == "-", "\(failing)")
        #expect(out.contains("policy\tpairs\t"), "components are listed too: \(out)")
    }

    /// The policy docs/plugin-abi.md builds (its excerpts are checked by `PluginTutorialTests`), built
    /// as the page says and run with a manual clock: the highest priority first, then the earliest
    /// deadline; a full batch leaves at once with the reason "full", a lone request at its deadline
    /// less the margin.
    @Test func theTutorialPolicyBuildsLoadsAndPicksByPriorityThenDeadline() throws {
        let dir = try scratchDir("doc")
        defer { try? FileManager.default.removeItem(at: dir) }
        let so = try compilePlugin(
            source: repoRoot.appendingPathComponent("samples/c-policy/edf_priority.c"), into: dir,
            name: "edf_priority", libs: ["-ljansson"])
        let registry = PluginRegistry(configPaths: [])
        try registry.load(path: so)
        func queue() throws -> ModelQueue<Int> {
            ModelQueue<Int>(
                limits: QueueLimits(
                    maxBatchItems: 8, maxQueuedItems: 100, maxInflightBatches: 1, sloNanos: 1_000_000_000,
                    rejectLate: false),
                policy: try PluginPolicy(
                    try registry.component(.policy, "edf-priority"), configJSON: #"{"max_items":2,"margin_ms":5}"#))
        }
        let q = try queue()
        _ = q.admit(items: 1, arrival: 0, timeoutMicros: nil, priority: 0, batchKey: "k", payload: 0)
        _ = q.admit(items: 1, arrival: 1, timeoutMicros: 500_000, priority: 0, batchKey: "k", payload: 1)
        _ = q.admit(items: 1, arrival: 2, timeoutMicros: nil, priority: 9, batchKey: "k", payload: 2)
        let effects = q.pump(now: 3)
        #expect(summarize(effects).batches == [[2, 1]])
        #expect(effects.contains { if case .dispatch(_, .policy(.full)) = $0 { true } else { false } })
        let lone = try queue()
        _ = lone.admit(items: 1, arrival: 0, timeoutMicros: nil, priority: 0, batchKey: "k", payload: 0)
        #expect(summarize(lone.pump(now: 0)).wake == 995_000_000)
    }

    @Test func simulateExplainsItsOptionsAndWritesItsTables() throws {
        let help = try run(binary, ["simulate", "--help"])
        for option in [
            "--policy", "--foreign-policy", "--trace", "--profile", "--slo-ms", "--rate", "--minutes", "--platform",
            "--replicas", "--cold-start-ms", "--max-batch-items", "--max-inflight-batches", "--seed", "--csv",
            "--timeline-dir", "--proxies",
        ] {
            #expect(help.contains(option), "simulate --help does not mention \(option)")
        }
        let dir = try scratchDir("simulate")
        defer { try? FileManager.default.removeItem(at: dir) }
        let csv = dir.appendingPathComponent("r.csv").path
        let table = try run(
            binary,
            [
                "simulate", "--policy", "none", "--policy", "static:max_delay_ms=20", "--trace", "spike",
                "--minutes", "2", "--rate", "50", "--csv", csv, "--timeline-dir", dir.path,
            ])
        #expect(table.contains("| spike | none |"))
        #expect(table.contains("| spike | static:max_delay_ms=20 |"))
        let rows = try String(contentsOfFile: csv, encoding: .utf8).split(separator: "\n")
        #expect(rows.count == 3)
        #expect(rows[0].hasPrefix("trace,profile,policy"))
        let timeline = try String(contentsOfFile: dir.appendingPathComponent("spike__none.csv").path, encoding: .utf8)
        #expect(timeline.hasPrefix("second,finished,mean_latency_ms,replicas,concurrency\n"))
        #expect(timeline.split(separator: "\n").count > 100)
    }
}
