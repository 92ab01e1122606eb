import ArgumentParser
import Foundation
import MLProxyHost

struct Simulate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run batching policies in virtual time against traces, a latency profile and Knative's autoscaler.",
        discussion: """
            The policies are the same plugin files the proxy loads, called through the same ABI and the same
            per-model queue, with the time passed in: an hour of traffic takes seconds, and a seed fixes
            every random draw. Each run prints SLA miss % (late or shed), p50/p99/max latency, average
            replicas and replica-seconds (the cost), shed requests and the mean batch size.

            Examples:
              mlproxy simulate --policy none --policy static:max_delay_ms=20 --policy adaptive-sla --trace spike
              mlproxy simulate --profile toxic --trace worldcup --trace my-trace.csv --csv results.csv
            """)

    @Option(
        name: .customLong("policy"),
        help: ArgumentHelp(
            "A policy to run, with parameters as name:key=value,key=value (repeatable).",
            valueName: "name[:k=v,...]"))
    var policies: [String] = ["none", "static", "adaptive-sla"]

    @Option(
        name: .customLong("foreign-policy"),
        help: ArgumentHelp(
            "A foreign policy: a library and a C signature, e.g. 'libpick.so|int pick(double queued_items, "
                + "double oldest_wait_ms, double slo_ms, double p95_ms)' (repeatable).",
            valueName: "library|signature"))
    var foreignPolicies: [String] = []

    @Option(
        name: .customLong("trace"),
        help: ArgumentHelp(
            "A trace: constant, worldcup, spike, dual-phase, large-variations, or a CSV file of rates (one per "
                + "line, held --segment-seconds each) or of arrival times under a 'timestamp' header (repeatable).",
            valueName: "kind|file.csv"))
    var traces: [String] = ["constant"]

    @Option(help: "Latency profile: toxic, iris, fast, or items:ms pairs such as 1:8.6,100:10.1.")
    var profile: String = "iris"

    @Option(help: "Relative noise on upstream latency (standard deviation, e.g. 0.05).")
    var noise: Double?

    @Option(help: "SLO in ms (default: iris 200, toxic 500, fast 1000, custom 200).")
    var sloMs: Double?

    @Option(
        help:
            "Base arrival rate in requests/s for built-in traces (default: iris 300, toxic 50, fast 1000, custom 100).")
    var rate: Double?

    @Option(help: "Length of built-in traces in minutes (each rate is held 60 s).")
    var minutes: Int = 60

    @Option(help: "Seconds each rate of a CSV rate trace is held.")
    var segmentSeconds: Double = 60

    @Option(help: "knative (autoscaler, concurrency target 1 per replica) or fixed.")
    var platform: String = "knative"

    @Option(help: "Replicas for --platform fixed.")
    var replicas: Int = 1

    @Option(help: "Cold start of a new replica in ms (knative).")
    var coldStartMs: Double = 2000

    @Option(help: "Most items in one batch.")
    var maxBatchItems: Int = 128

    @Option(help: "Most batches dispatched and not finished (at a replica or waiting for one).")
    var maxInflightBatches: Int = 1000

    @Option(help: "Most items waiting in the proxy's queue; beyond it requests are shed (429).")
    var maxQueuedItems: Int = 100_000

    @Flag(help: "Answer a request whose deadline passes in the queue at once with a timeout (late_requests: reject).")
    var rejectLate = false

    @Option(
        help: ArgumentHelp(
            "Proxy replicas in front of the model, each with its own queue and policy, the trace's requests "
                + "split among them round-robin (repeatable: one run per value). 1 is one proxy, or any number "
                + "with model-affine routing.",
            valueName: "n"))
    var proxies: [Int] = [1]

    @Option(help: "Seed for arrivals and latency noise.")
    var seed: UInt64 = 1

    @Option(
        help: ArgumentHelp(
            "Priorities of the trace's requests as priority:share pairs, e.g. 9:0.2,0:0.8 (higher first, as "
                + "policies see them); the report then adds SLA misses per priority.",
            valueName: "mix"))
    var priorityMix: String?

    @Option(help: "Extra plugin files to load (repeatable).")
    var plugin: [String] = []

    @Option(help: "Write the results table as CSV to this file.")
    var csv: String?

    @Option(
        help: ArgumentHelp(
            "Write a per-second timeline CSV for each run into this folder (for plots): requests finished, "
                + "mean latency, replicas, and batches in flight (the concurrency the autoscaler averages).")
    )
    var timelineDir: String?

    func run() throws {
        let (prof, defaultSLO, defaultRate) = try latencyProfile()
        let slo = sloMs ?? defaultSLO
        var platformConfig = PlatformConfig()
        switch platform {
        case "knative": platformConfig.mode = .knative
        case "fixed": platformConfig.mode = .fixed(replicas: replicas)
        default: throw ValidationError("--platform must be knative or fixed")
        }
        platformConfig.coldStartNanos = Int64(coldStartMs * 1e6)
        let limits = QueueLimits(
            maxBatchItems: maxBatchItems, maxQueuedItems: maxQueuedItems,
            maxInflightBatches: maxInflightBatches, sloNanos: Int64(slo * 1e6), rejectLate: rejectLate)
        let registry = PluginRegistry()
        let errors = registry.loadAll(extra: plugin)
        if !errors.isEmpty { throw ValidationError(errors.map(\.description).joined(separator: "\n")) }

        let parsedPolicies = try policies.map(parsePolicy)
        var mix: [(priority: Int32, share: Double)] = []
        if let text = priorityMix {
            do { mix = try SimulationSetup.parsePriorityMix(text) } catch {
                throw ValidationError("--priority-mix: \(error.message)")
            }
        }
        let traceList = try traces.map { t -> ArrivalTrace in
            if let kind = ArrivalTrace.Kind(rawValue: t) {
                return ArrivalTrace.make(kind, baseRate: rate ?? defaultRate, minutes: minutes, seed: seed)
            }
            guard t.contains("/") || t.hasSuffix(".csv") else {
                throw ValidationError(
                    "--trace \(t): not a built-in trace "
                        + "(\(ArrivalTrace.Kind.allCases.map(\.rawValue).joined(separator: ", "))) nor a .csv file"
                )
            }
            return try ArrivalTrace.load(csv: t, segmentSeconds: segmentSeconds)
        }
        let foreign = try foreignPolicies.map { spec -> (String, ForeignPolicySpec) in
            let parts = spec.split(separator: "|", maxSplits: 1).map(String.init)
            guard parts.count == 2 else {
                throw ValidationError("--foreign-policy \(spec): expected library|signature")
            }
            let sig = try ForeignPolicy.Signature.parse(parts[1])
            return ("foreign:\(sig.symbol)", ForeignPolicySpec(library: parts[0], signature: parts[1]))
        }
        guard proxies.allSatisfy({ $0 >= 1 && $0 <= 1024 }) else {
            throw ValidationError("--proxies must be between 1 and 1024")
        }
        var results: [SimulationResult] = []
        let total = (parsedPolicies.count + foreign.count) * traceList.count * proxies.count
        var n = 0
        // A label names the proxy count when there is more than one proxy.
        func named(_ label: String, _ count: Int) -> String { count == 1 ? label : "\(label) x\(count) proxies" }
        for trace in traceList {
            for count in proxies {
                for (label, name, params) in parsedPolicies {
                    n += 1
                    let started = Date()
                    FileHandle.standardError.write(
                        Data("[\(n)/\(total)] \(named(label, count)) on \(trace.name) ...".utf8))
                    // A policy may override the queue limits for its own runs (e.g. cork's one batch at a time).
                    var runLimits = limits
                    if let v = params["max_inflight_batches"] as? Double {
                        runLimits.maxInflightBatches = max(1, Int(v))
                    }
                    if let v = params["max_batch_items"] as? Double { runLimits.maxBatchItems = max(1, Int(v)) }
                    var json = params
                    json["slo_ms"] = slo
                    json["max_batch_items"] = runLimits.maxBatchItems
                    json["max_inflight_batches"] = runLimits.maxInflightBatches
                    guard let text = JSONText.write(json) else {
                        throw ValidationError("policy '\(label)': bad parameters")
                    }
                    let component = try registry.component(.policy, name)
                    let instances = try (0..<count).map { _ in try PluginPolicy(component, configJSON: text) }
                    let setup = SimulationSetup(
                        trace: trace, profile: prof, platform: platformConfig, limits: runLimits, seed: seed,
                        priorityMix: mix)
                    let r = Simulator.run(policyName: named(label, count), proxies: instances, setup: setup)
                    FileHandle.standardError.write(
                        Data(String(format: " %.1f s\n", Date().timeIntervalSince(started)).utf8))
                    results.append(r)
                    if let dir = timelineDir { try writeTimeline(r, dir: dir) }
                }
                for (label, spec) in foreign {
                    n += 1
                    FileHandle.standardError.write(
                        Data("[\(n)/\(total)] \(named(label, count)) on \(trace.name)\n".utf8))
                    let instances = try (0..<count).map { _ in
                        try ForeignPolicy(library: spec.library, signature: spec.signature, pollMillis: spec.pollMillis)
                    }
                    let setup = SimulationSetup(
                        trace: trace, profile: prof, platform: platformConfig, limits: limits, seed: seed,
                        priorityMix: mix)
                    let r = Simulator.run(policyName: named(label, count), proxies: instances, setup: setup)
                    results.append(r)
                    if let dir = timelineDir { try writeTimeline(r, dir: dir) }
                }
            }
        }
        print(SimulationReport.table(results))
        if let csv { try SimulationReport.csv(results).write(toFile: csv, atomically: true, encoding: .utf8) }
    }

    private func latencyProfile() throws -> (LatencyProfile, Double, Double) {
        let defaults: [String: (Double, Double)] = ["iris": (200, 300), "toxic": (500, 50), "fast": (1000, 1000)]
        if let p = LatencyProfile.builtIn.first(where: { $0.name == profile }) {
            let d = defaults[p.name]!
            return (LatencyProfile(name: p.name, points: p.points, noise: noise ?? p.noise), d.0, d.1)
        }
        var points: [(items: Int, ms: Double)] = []
        for pair in profile.split(separator: ",") {
            let kv = pair.split(separator: ":")
            guard kv.count == 2, let items = Int(kv[0]), items >= 1, let ms = Double(kv[1]), ms >= 0 else {
                throw ValidationError("--profile: '\(pair)' is not items:ms (or use toxic, iris, fast)")
            }
            points.append((items, ms))
        }
        return (LatencyProfile(name: "custom", points: points, noise: noise ?? 0.05), 200, 100)
    }

    /// "name:k=v,k=v" into a label, the component name and JSON parameters.
    private func parsePolicy(_ spec: String) throws -> (String, String, [String: Any]) {
        let parts = spec.split(separator: ":", maxSplits: 1)
        let name = String(parts[0])
        var params: [String: Any] = [:]
        if parts.count == 2 {
            for kv in parts[1].split(separator: ",") {
                let pair = kv.split(separator: "=", maxSplits: 1)
                guard pair.count == 2 else { throw ValidationError("--policy \(spec): '\(kv)' is not key=value") }
                let value = String(pair[1])
                params[String(pair[0])] = Double(value).map { $0 as Any } ?? value
            }
        }
        return (spec, name, params)
    }

    private func writeTimeline(_ r: SimulationResult, dir: String) throws {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        var text = "second,finished,mean_latency_ms,replicas,concurrency\n"
        for row in r.timeline {
            text += "\(row.second),\(row.finished),\(row.meanLatencyMillis),\(row.replicas),\(row.concurrency)\n"
        }
        let safe = "\(r.trace)__\(r.policy)".map { $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" ? $0 : "_" }
        try text.write(toFile: "\(dir)/\(String(safe)).csv", atomically: true, encoding: .utf8)
    }
}
