import Foundation
import MLProxyHost
import NIOConcurrencyHelpers
import PluginAPI
import Testing

/// ABI 1.2 selection: a C policy built with plain cc from the header chooses which queued requests
/// form a batch; the host sends exactly those, or refuses a selection it cannot send and falls back
/// to the head of the queue for that decision, counted as a policy failure. On the queue with a
/// manual clock, as the simulator and the live proxy drive it.
@Suite("Policies choose their batches (ABI 1.2)")
struct PolicySelectionTests {
    static let ms: Int64 = 1_000_000

    /// The fixture policy, built once per test into its own folder.
    func priorityPolicy(lie: String = "", maxBatchItems: Int = 8) throws -> (PluginPolicy, URL) {
        let dir = try scratchDir("priority")
        let so = try compilePlugin(
            source: repoRoot.appendingPathComponent("Tests/Fixtures/plugins/priority_policy.c"), into: dir,
            name: "priority_policy", libs: ["-ljansson"])
        let registry = PluginRegistry(configPaths: [])
        try registry.load(path: so)
        let policy = try PluginPolicy(
            try registry.component(.policy, "priority-edf"),
            configJSON: "{\"lie\":\"\(lie)\",\"slo_ms\":100,\"max_batch_items\":\(maxBatchItems),"
                + "\"max_inflight_batches\":1}")
        return (policy, dir)
    }

    func queue(_ policy: BatchingPolicy, maxBatchItems: Int = 8) -> ModelQueue<Int> {
        ModelQueue<Int>(
            limits: QueueLimits(
                maxBatchItems: maxBatchItems, maxQueuedItems: 1000, maxInflightBatches: 1, sloNanos: 100 * Self.ms,
                rejectLate: false), policy: policy)
    }

    /// The scenario of issue 13: 48 priority-0 requests, then 8 priority-9 ones, 8 items a batch, one
    /// batch in flight. Head-of-queue dispatch sent the oldest first; a selection sends the 8
    /// priority-9 requests first, then the rest by deadline.
    @Test func higherPriorityRequestsGoFirstByDeadline() throws {
        let (policy, dir) = try priorityPolicy()
        defer { try? FileManager.default.removeItem(at: dir) }
        let q = queue(policy)
        for i in 0..<56 {
            #expect(
                q.admit(
                    items: 1, arrival: Int64(i) * 10_000, timeoutMicros: nil, priority: i < 48 ? 0 : 9,
                    batchKey: "k", payload: i) == nil)
        }
        var order: [[Int]] = []
        var now: Int64 = Self.ms
        for _ in 0..<7 {
            let effects = q.pump(now: now)
            for case .dispatch(_, let reason) in effects { #expect(reason == .policy(.unspecified)) }
            let batches = summarize(effects).batches
            #expect(batches.count == 1, "\(batches)")
            order += batches
            now += 5 * Self.ms  // every batch back well inside the SLO: no request is ever late
            q.batchFinished(items: 8, arrivals: [], ok: true, dispatched: now - 5 * Self.ms, finished: now)
        }
        #expect(order[0] == Array(48..<56), "the priority-9 requests, earliest deadline first: \(order[0])")
        #expect(Array(order[1...].joined()) == Array(0..<48), "then the rest, by deadline")
    }

    /// A selection holds only requests that may share a batch: the policy sees batch groups and the
    /// host sends what it picked in the order it gave.
    @Test func aSelectionKeepsToOneBatchGroupInTheOrderGiven() throws {
        let (policy, dir) = try priorityPolicy(maxBatchItems: 4)
        defer { try? FileManager.default.removeItem(at: dir) }
        let q = queue(policy, maxBatchItems: 4)
        let keys = ["a", "b", "a", "b", "a", "a"]
        let priorities: [Int32] = [0, 5, 1, 0, 2, 0]
        for (i, key) in keys.enumerated() {
            _ = q.admit(
                items: 1, arrival: Int64(i) * 1000, timeoutMicros: nil, priority: priorities[i], batchKey: key,
                payload: i)
        }
        // The first pick is request 1 (priority 5, group "b"); only request 3 shares its group.
        #expect(summarize(q.pump(now: 95 * Self.ms)).batches == [[1, 3]])
        q.batchFinished(items: 2, arrivals: [], ok: true, dispatched: 95 * Self.ms, finished: 96 * Self.ms)
        // Then group "a" by priority: 4 (2), 2 (1), then 0 and 5 by deadline.
        #expect(summarize(q.pump(now: 96 * Self.ms)).batches == [[4, 2, 0, 5]])
    }

    /// Each refused selection: a clear reason in the policy-failure path, and a batch of
    /// `dispatch_items` (2) from the head instead, so nothing is stranded.
    @Test(arguments: [
        ("out_of_range", "is out of range (10 queued)"), ("twice", "is selected twice"),
        ("mixed", "cannot share a batch"), ("too_many", "it selected 10 items and max_batch_items is 8"),
        ("overflow", "selected 11 requests but 10 are queued"),
    ])
    func aSelectionTheHostCannotSendFallsBackToTheHead(lie: String, words: String) throws {
        let (policy, dir) = try priorityPolicy(lie: lie)
        defer { try? FileManager.default.removeItem(at: dir) }
        let q = queue(policy)
        for i in 0..<10 {
            _ = q.admit(
                items: 1, arrival: Int64(i), timeoutMicros: nil, priority: 0,
                batchKey: lie == "mixed" && i == 9 ? "other" : "k",
                payload: i)
        }
        let effects = q.pump(now: 1)
        var reasons: [DispatchReason] = []
        for case .dispatch(_, let reason) in effects { reasons.append(reason) }
        guard case .policyFailed(let failure)? = reasons.first else {
            Issue.record("\(lie): expected a refused selection, got \(reasons)")
            return
        }
        #expect(failure.message.contains(words), "\(lie): \(failure.message)")
        let first = summarize(effects).batches.first
        if lie == "overflow" {
            #expect(first == Array(0..<8), "a failed decide sends max_batch_items from the head")
        } else {
            #expect(first == [0, 1], "\(lie): dispatch_items from the head, got \(String(describing: first))")
        }
    }

    /// A policy built against the frozen 1.1 header (Tests/Fixtures/abi-1.1) loads into this host and
    /// dispatches from the head as before: it never writes a selection.
    @Test func pluginsBuiltForABI11StillLoadAndDispatchFromTheHead() throws {
        #expect(ABIVersion.minor >= 2)
        let header = try String(
            contentsOf: repoRoot.appendingPathComponent("Tests/Fixtures/abi-1.1/mlproxy/mlproxy.h"), encoding: .utf8)
        #expect(header.contains("#define MLP_ABI_MINOR 1"))
        #expect(!header.contains("select_indices"))
        let dir = try scratchDir("abi11")
        defer { try? FileManager.default.removeItem(at: dir) }
        let so = try compilePlugin(
            source: repoRoot.appendingPathComponent("samples/c-policy/pairs_policy.c"), into: dir,
            name: "pairs_abi11", libs: ["-ljansson"], headers: "Tests/Fixtures/abi-1.1")
        let registry = PluginRegistry(configPaths: [])
        try registry.load(path: so)
        let policy = try PluginPolicy(
            try registry.component(.policy, "pairs"),
            configJSON: "{\"slo_ms\":100,\"max_batch_items\":8,\"max_inflight_batches\":1}")
        let q = queue(policy)
        _ = q.admit(items: 1, arrival: 0, timeoutMicros: nil, priority: 0, batchKey: "k", payload: 1)
        #expect(summarize(q.pump(now: 1)).batches.isEmpty, "one request waits for its pair")
        _ = q.admit(items: 1, arrival: 2, timeoutMicros: nil, priority: 9, batchKey: "k", payload: 2)
        let effects = q.pump(now: 3)
        #expect(summarize(effects).batches == [[1, 2]])
        for case .dispatch(_, let reason) in effects { #expect(reason == .policy(.unspecified)) }
    }
}

/// Issue 13's scenario through the proxy, with the default policy: one replica at 100 ms a batch, 8
/// items a batch, 48 priority-0 requests and then 8 priority-9 ones. The priority-9 requests are
/// served first once they arrive, so they wait far less than the others.
@Suite("Priorities through the proxy")
struct PriorityThroughTheProxyTests {
    @Test func theDefaultPolicyServesHigherPriorityFirst() throws {
        let cluster = try TestCluster(
            simLatency: "{1: 100, 8: 100}",
            models: """
                  - {name: m, upstream: "UPSTREAM", max_batch_items: 8, slo_ms: 60000}
                """)
        defer { cluster.stop() }
        func body(_ i: Int, priority: Int) -> String {
            "{\"id\":\"\(i)\",\"parameters\":{\"priority\":\(priority)},\"inputs\":[{\"name\":\"x\",\"datatype\":"
                + "\"FP64\",\"shape\":[1,2],\"data\":[\(i),1]}]}"
        }
        let (lows, high) = try sendLowThenHigh(
            url: cluster.url + "/v2/models/m/infer", metrics: cluster.url + "/metrics", model: "m",
            low: (0..<48).map { body($0, priority: 0) }, high: (48..<56).map { body($0, priority: 9) }, batchItems: 8)
        #expect(lows.count == 48)
        for (i, r) in (lows + high).enumerated() { #expect(r.status == 200, "\(i): \(r.body)") }
        let (l, h) = (medianQueueMillis(lows), medianQueueMillis(high))
        #expect(h < l / 2, "priority-9 median wait \(h) ms, priority-0 \(l) ms")
    }
}

/// Triton's priority levels (`priority_levels`, `default_priority_level`): 1 is the highest, 0 or no
/// priority is the model's default level, anything else is refused with the allowed range.
@Suite("Triton priority levels")
struct PriorityLevelTests {
    @Test func levelsMapToPolicyPrioritiesAndRefuseOtherValues() throws {
        let levels = PriorityLevels(count: 3, defaultLevel: 2)
        #expect(try levels.policyPriority(1) == 3)
        #expect(try levels.policyPriority(3) == 1)
        #expect(try levels.policyPriority(0) == 2, "0 is the default level")
        for bad: Int64 in [4, -1, 1 << 40] {
            guard case .failure(let e) = outcome({ () throws(RequestError) in try levels.policyPriority(bad) }) else {
                Issue.record("\(bad) was accepted")
                continue
            }
            #expect(e.status == 400)
            #expect(e.message.contains("a level from 1 (the highest) to 3") && e.message.contains("got \(bad)"))
        }
        let c = try ProxyConfig.parse(
            yaml: """
                models:
                  - {name: a, upstream: "http://127.0.0.1:9", priority_levels: 4}
                  - {name: b, upstream: "http://127.0.0.1:9", priority_levels: 4, default_priority_level: 1}
                  - {name: c, upstream: "http://127.0.0.1:9"}
                """)
        #expect(
            c.models.map(\.priorityLevels) == [
                PriorityLevels(count: 4, defaultLevel: 4), PriorityLevels(count: 4, defaultLevel: 1), nil,
            ])
        for (yaml, words) in [
            ("priority_levels: 2, default_priority_level: 3", "outside [1, 2]"),
            ("default_priority_level: 1", "goes with 'priority_levels'"), ("priority_levels: 0", "outside"),
        ] {
            do {
                _ = try ProxyConfig.parse(yaml: "models: [{name: m, upstream: \"http://127.0.0.1:9\", \(yaml)}]")
                Issue.record("\(yaml) was accepted")
            } catch let e as ConfigError {
                #expect(e.message.contains(words), "\(e.message)")
            }
        }
    }

    /// Through the proxy with the default policy: level-1 requests sent after level-2 ones (and ones
    /// that name no level: the default, 2) wait much less; a level outside 1-2 gets a 400.
    @Test func levelOneGoesFirstThroughTheProxy() throws {
        let cluster = try TestCluster(
            simLatency: "{1: 100, 8: 100}",
            models: """
                  - {name: m, upstream: "UPSTREAM", max_batch_items: 8, slo_ms: 60000, priority_levels: 2,
                     default_priority_level: 2}
                """)
        defer { cluster.stop() }
        func body(_ i: Int, priority: Int?) -> String {
            let params = priority.map { ",\"parameters\":{\"priority\":\($0)}" } ?? ""
            return "{\"id\":\"\(i)\"\(params),\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP64\",\"shape\":[1,2],"
                + "\"data\":[\(i),1]}]}"
        }
        let url = cluster.url + "/v2/models/m/infer"
        let refused = try curlParallel(url: url, bodies: [body(0, priority: 3)])[0]
        #expect(refused.status == 400 && refused.body.contains("a level from 1 (the highest) to 2"), "\(refused.body)")
        let (lows, high) = try sendLowThenHigh(
            url: url, metrics: cluster.url + "/metrics", model: "m",
            low: (0..<48).map { body($0, priority: $0 % 2 == 0 ? 2 : nil) },
            high: (48..<56).map { body($0, priority: 1) }, batchItems: 8)
        #expect(lows.count == 48 && (lows + high).allSatisfy { $0.status == 200 })
        let (l, h) = (medianQueueMillis(lows), medianQueueMillis(high))
        #expect(h < l / 2, "level 1 median wait \(h) ms, level 2 \(l) ms")
    }
}

/// Sends `low` (all at once, from another thread), waits until the proxy's queue holds all but the
/// batch in flight, then sends `high`; returns both sets of results. The upstream answers a batch in
/// 100 ms, so the high-priority requests always meet a full queue, however slowly curl starts.
func sendLowThenHigh(
    url: String, metrics: String, model: String, low: [String], high: [String], batchItems: Int
) throws -> (low: [CurlResult], high: [CurlResult]) {
    let lows = NIOLockedValueBox<[CurlResult]>([])
    let done = DispatchSemaphore(value: 0)
    Thread.detachNewThread {
        lows.withLockedValue { $0 = (try? curlParallel(url: url, bodies: low)) ?? [] }
        done.signal()
    }
    let wanted = low.count - 2 * batchItems
    var queued = 0
    for _ in 0..<500 where queued < wanted {
        let text = (try? run("/usr/bin/curl", ["-s", metrics])) ?? ""
        let line = text.split(separator: "\n").first { $0.hasPrefix("mlproxy_queued_requests{model=\"\(model)\"}") }
        queued = line.flatMap { Int($0.split(separator: " ").last ?? "") } ?? 0
        if queued < wanted { Thread.sleep(forTimeInterval: 0.01) }
    }
    #expect(queued >= wanted, "the low-priority requests were queued before the others were sent")
    let highs = try curlParallel(url: url, bodies: high)
    done.wait()
    return (lows.withLockedValue { $0 }, highs)
}

/// The median `mlproxy-queue-ms` of `results`.
func medianQueueMillis(_ results: [CurlResult]) -> Double {
    let waits = results.compactMap { Double($0.headers["mlproxy-queue-ms"] ?? "") }.sorted()
    return waits.isEmpty ? .infinity : waits[(waits.count - 1) / 2]
}
