import Foundation
import MLProxyHost
import PluginAPI
import Testing

@Suite("Simulator")
struct SimulatorTests {
    func policy(_ name: String, _ params: String = "", slo: Int = 200, maxItems: Int = 64, inflight: Int = 1000) throws
        -> PluginPolicy
    {
        try PluginPolicy(
            try bundledPlugins.component(.policy, name),
            configJSON:
                "{\"slo_ms\":\(slo),\"max_batch_items\":\(maxItems),\"max_inflight_batches\":\(inflight)\(params.isEmpty ? "" : "," + params)}"
        )
    }

    func setup(
        _ trace: ArrivalTrace, profile: LatencyProfile = .iris, platform: PlatformConfig = PlatformConfig(),
        slo: Int64 = 200, inflight: Int = 1000, seed: UInt64 = 7
    ) -> SimulationSetup {
        SimulationSetup(
            trace: trace, profile: profile, platform: platform,
            limits: QueueLimits(
                maxBatchItems: 64, maxQueuedItems: 1_000_000, maxInflightBatches: inflight,
                sloNanos: slo * 1_000_000, rejectLate: false),
            seed: seed)
    }

    @Test func sameSeedSameResultOtherSeedOtherResult() throws {
        let trace = ArrivalTrace.make(.largeVariations, baseRate: 200, minutes: 3, seed: 3)
        let a = Simulator.run(policyName: "adaptive-sla", policy: try policy("adaptive-sla"), setup: setup(trace))
        let b = Simulator.run(policyName: "adaptive-sla", policy: try policy("adaptive-sla"), setup: setup(trace))
        #expect(a.requests == b.requests)
        #expect(a.p99Millis == b.p99Millis)
        #expect(a.replicaSeconds == b.replicaSeconds)
        #expect(a.batches == b.batches)
        let c = Simulator.run(
            policyName: "adaptive-sla", policy: try policy("adaptive-sla"), setup: setup(trace, seed: 8))
        #expect(c.requests != a.requests || c.p99Millis != a.p99Millis)
        // The generated trace itself is a function of its seed.
        #expect(ArrivalTrace.make(.largeVariations, baseRate: 200, minutes: 3, seed: 3).rates == trace.rates)
        #expect(ArrivalTrace.make(.largeVariations, baseRate: 200, minutes: 3, seed: 4).rates != trace.rates)
    }

    /// A priority mix draws each request's priority from its own stream: the run reports every
    /// request under one priority, in the shares asked, and a mix of one priority changes nothing else.
    @Test func aPriorityMixIsReportedPerPriority() throws {
        let trace = ArrivalTrace.make(.constant, baseRate: 300, minutes: 1, seed: 3)
        let plain = Simulator.run(policyName: "a", policy: try policy("adaptive-sla"), setup: setup(trace))
        #expect(plain.byPriority.isEmpty)
        var single = setup(trace)
        single.priorityMix = [(0, 1)]
        let same = Simulator.run(policyName: "a", policy: try policy("adaptive-sla"), setup: single)
        #expect(same.batches == plain.batches && same.p99Millis == plain.p99Millis && same.misses == plain.misses)
        #expect(same.byPriority == [PriorityOutcome(priority: 0, requests: plain.requests, misses: plain.misses)])
        var mixed = setup(trace)
        mixed.priorityMix = try SimulationSetup.parsePriorityMix("9:1, 0:3")
        let r = Simulator.run(policyName: "a", policy: try policy("adaptive-sla"), setup: mixed)
        #expect(r.byPriority.map(\.priority) == [9, 0])
        #expect(r.byPriority.reduce(0) { $0 + $1.requests } == r.requests)
        #expect(r.byPriority.reduce(0) { $0 + $1.misses } == r.misses)
        let share = Double(r.byPriority[0].requests) / Double(r.requests)
        #expect(abs(share - 0.25) < 0.03, "\(share)")
        for bad in ["", "9", "a:1", "9:-1", "9:0"] {
            #expect(throws: ConfigError.self) { _ = try SimulationSetup.parsePriorityMix(bad) }
        }
    }

    /// Proxy replicas that split one model's traffic round-robin each batch only their share: every
    /// request is still answered, in smaller batches, at a higher cost than one proxy.
    @Test func proxiesSplittingAModelsTrafficFormSmallerBatches() throws {
        let trace = ArrivalTrace.make(.constant, baseRate: 300, minutes: 1, seed: 3)
        let one = Simulator.run(policyName: "a", policy: try policy("adaptive-sla"), setup: setup(trace))
        let viaList = Simulator.run(policyName: "a", proxies: [try policy("adaptive-sla")], setup: setup(trace))
        #expect(one.batches == viaList.batches && one.p99Millis == viaList.p99Millis, "one proxy is the plain run")
        let four = Simulator.run(
            policyName: "a", proxies: try (0..<4).map { _ in try policy("adaptive-sla") }, setup: setup(trace))
        #expect(four.requests == one.requests && four.served == one.served, "every request answered")
        #expect(four.meanBatch < one.meanBatch * 0.75, "\(four.meanBatch) vs \(one.meanBatch)")
        #expect(four.batches > one.batches)
        #expect(four.replicaSeconds > one.replicaSeconds)
    }

    @Test func poissonArrivalsFollowTheRates() {
        let trace = ArrivalTrace(name: "two", rates: [100, 400], segmentSeconds: 60)
        let arrivals = trace.arrivals(seed: 1)
        let first = arrivals.filter { $0 < 60_000_000_000 }.count
        let second = arrivals.count - first
        // Poisson counts: 6,000 +- 5 sigma (sigma = 77) and 24,000 +- 5 sigma (155).
        #expect(abs(first - 6000) < 390)
        #expect(abs(second - 24000) < 780)
        #expect(arrivals == arrivals.sorted())
    }

    @Test func everyRequestIsAccountedFor() throws {
        let trace = ArrivalTrace.make(.spike, baseRate: 100, minutes: 3, seed: 1)
        for name in ["none", "static", "adaptive-sla", "mlproxy-aimd", "cork", "aimd"] {
            let r = Simulator.run(
                policyName: name, policy: try policy(name), setup: setup(trace, profile: .toxic, slo: 500))
            #expect(r.served + r.shed == r.requests, "\(name): \(r.served) + \(r.shed) != \(r.requests)")
            #expect(r.misses >= r.shed)
        }
    }

    @Test func batchSizesGoInPowerOfTwoBuckets() {
        var h = BatchSizeHistogram(buckets: 4)
        for n in [1, 2, 3, 4, 7, 8, 100, 0] { h.add(items: n) }
        #expect(h.counts == [1, 2, 2, 2])  // 1 | 2-3 | 4-7 | 8 and up; an empty batch is not counted
        var small = BatchSizeHistogram()
        small.add(items: 5)
        #expect(small.trimmed == [0, 0, 1])
    }

    @Test func sheddingPoliciesAccountForEveryRequestToo() throws {
        // An 8x spike with shedding configured: sheds happen, and each is a miss, never a lost request.
        let trace = ArrivalTrace.make(.spike, baseRate: 400, minutes: 3, seed: 1)
        let r = Simulator.run(
            policyName: "adaptive-sla:shed=1",
            policy: try policy("adaptive-sla", "\"shed\":1", slo: 500, maxItems: 128),
            setup: setup(trace, profile: .toxic, slo: 500))
        #expect(r.shed > 0)
        #expect(r.served + r.shed == r.requests)
        #expect(r.misses >= r.shed)
    }

    @Test func knativeScalesToZeroOverAnIdleStretchAndBackFromIt() throws {
        // Three idle minutes: the autoscaler's windows hold no concurrency at all (this used to trap
        // on an empty range), replicas go to zero, and the traffic after it starts one again.
        let trace = ArrivalTrace(name: "gap", rates: [50, 0, 0, 0, 50], segmentSeconds: 60)
        let r = Simulator.run(policyName: "adaptive-sla", policy: try policy("adaptive-sla"), setup: setup(trace))
        #expect(r.served == r.requests)
        #expect(r.timeline.contains { $0.second > 120 && $0.second < 240 && $0.replicas == 0 })
        #expect(r.timeline.contains { $0.second > 250 && $0.replicas >= 1 })
    }

    @Test func knativeScalesOutForUnbatchedLoadAndBatchingNeedsFewerReplicas() throws {
        // Toxic: 40 ms alone, so 100 req/s of single requests need about 4 busy replicas.
        let trace = ArrivalTrace(name: "steady", rates: [100, 100, 100], segmentSeconds: 60)
        let none = Simulator.run(
            policyName: "none", policy: try policy("none", slo: 500), setup: setup(trace, profile: .toxic, slo: 500))
        let adaptive = Simulator.run(
            policyName: "adaptive-sla", policy: try policy("adaptive-sla", slo: 500),
            setup: setup(trace, profile: .toxic, slo: 500))
        #expect(none.averageReplicas > 3)
        #expect(none.meanBatch == 1)
        #expect(adaptive.meanBatch > 5)
        #expect(adaptive.replicaSeconds < none.replicaSeconds / 2)
    }

    @Test func oneFixedReplicaUnbatchedCannotKeepUp() throws {
        var platform = PlatformConfig()
        platform.mode = .fixed(replicas: 1)
        // Iris alone takes 8.6 ms: at most ~116 req/s; 300 req/s must miss, batching must not.
        let trace = ArrivalTrace(name: "steady", rates: [300], segmentSeconds: 30)
        let none = Simulator.run(
            policyName: "none", policy: try policy("none"), setup: setup(trace, platform: platform))
        let adaptive = Simulator.run(
            policyName: "adaptive-sla", policy: try policy("adaptive-sla"), setup: setup(trace, platform: platform))
        #expect(none.missPercent > 50)
        #expect(adaptive.missPercent < 1)
        #expect(none.averageReplicas == 1)
        // The timeline's concurrency is the batches in flight: unbatched, the backlog piles up at the
        // replica; batched, about one batch is out at a time.
        #expect(none.timeline.last { $0.second < 30 }!.concurrency > 100)
        let busy = adaptive.timeline.filter { $0.second < 30 }
        #expect(busy.reduce(0) { $0 + $1.concurrency } / Double(busy.count) < 2)
        #expect(busy.allSatisfy { $0.concurrency > 0 })
    }

    /// Sends a batch when nothing is in flight and otherwise asks to be woken in a day: completions
    /// pump the queue, so every request is answered long before the timer (a user's policy may do this).
    final class FarTimerPolicy: BatchingPolicy {
        func decide(_ input: PolicyInput) -> PolicyDecision {
            input.inflight == 0 ? .dispatch(items: input.queuedItems) : .wait(until: input.now + 86_400_000_000_000)
        }
        func observe(items: Int, arrivals: [Int64], ok: Bool, dispatched: Int64, finished: Int64) {}
    }

    @Test func aTimerLeftOverAfterTheLastAnswerDoesNotStretchTheRun() {
        var platform = PlatformConfig()
        platform.mode = .fixed(replicas: 1)
        let trace = ArrivalTrace(name: "steady", rates: [100], segmentSeconds: 30)
        // A 1 ms SLO: requests are late while a batch is out, where the host keeps the policy's timer
        // as it is (completions ask again), instead of bringing it forward to a deadline.
        let r = Simulator.run(
            policyName: "far-timer", policy: FarTimerPolicy(), setup: setup(trace, platform: platform, slo: 1))
        #expect(r.served == r.requests)
        // One replica for the 30 s trace (and the last batch's tail), not for the day the timer asked for.
        #expect(r.replicaSeconds < 31)
        #expect(r.averageReplicas == 1)
    }

    @Test func csvTracesLoadRatesOrTimestamps() throws {
        let dir = try scratchDir("trace")
        defer { try? FileManager.default.removeItem(at: dir) }
        let rates = dir.appendingPathComponent("rates.csv")
        try "rate\n10\n20\n".write(to: rates, atomically: true, encoding: .utf8)
        let r = try ArrivalTrace.load(csv: rates.path, segmentSeconds: 30)
        #expect(r.rates == [10, 20])
        #expect(r.durationSeconds == 60)
        let stamps = dir.appendingPathComponent("stamps.csv")
        try "timestamp\n0.5\n0.25\n2\n".write(to: stamps, atomically: true, encoding: .utf8)
        let t = try ArrivalTrace.load(csv: stamps.path)
        #expect(t.arrivals(seed: 1) == [250_000_000, 500_000_000, 2_000_000_000])
        let bad = dir.appendingPathComponent("bad.csv")
        try "10\nlots\n".write(to: bad, atomically: true, encoding: .utf8)
        #expect(throws: ConfigError.self) { try ArrivalTrace.load(csv: bad.path) }
    }
}
