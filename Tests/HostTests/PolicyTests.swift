import Foundation
import MLProxyHost
import PluginAPI
import Testing

/// The bundled policy plugins, driven through the real ABI with a manual clock.
@Suite("Batching policies with a manual clock")
struct PolicyTests {
    static let ms: Int64 = 1_000_000

    func queue(
        policy: String, params: String = "", maxItems: Int = 4, slo: Int64 = 1000, inflight: Int = 1,
        rejectLate: Bool = false
    ) throws -> ModelQueue<Int> {
        try policyQueue(
            policy, params: params, maxItems: maxItems, sloMillis: slo, inflight: inflight, maxQueued: 1000,
            rejectLate: rejectLate)
    }

    func admit(_ q: ModelQueue<Int>, id: Int, items: Int = 1, at: Int64, timeoutMicros: Int64? = nil) {
        #expect(
            q.admit(items: items, arrival: at, timeoutMicros: timeoutMicros, priority: 0, batchKey: "k", payload: id)
                == nil)
    }

    @Test func noneSendsEveryRequestAlone() throws {
        let q = try queue(policy: "none", inflight: 8)
        for i in 0..<3 { admit(q, id: i, at: 0) }
        #expect(summarize(q.pump(now: 0)).batches == [[0], [1], [2]])
    }

    @Test func staticDispatchesAtMaxItems() throws {
        let q = try queue(policy: "static", params: "\"max_delay_ms\":10")
        admit(q, id: 0, at: 0)
        var s = summarize(q.pump(now: 0))
        #expect(s.batches.isEmpty)
        #expect(s.wake == 10 * Self.ms)
        admit(q, id: 1, items: 2, at: 1 * Self.ms)
        s = summarize(q.pump(now: 1 * Self.ms))
        #expect(s.batches.isEmpty)
        #expect(s.wake == 10 * Self.ms)
        admit(q, id: 2, at: 2 * Self.ms)
        admit(q, id: 3, at: 2 * Self.ms)
        s = summarize(q.pump(now: 2 * Self.ms))
        #expect(s.batches == [[0, 1, 2]])  // 4 items: the 4th request waits for the next batch
        #expect(q.count == 1)
    }

    @Test func staticDispatchesAtMaxDelay() throws {
        let q = try queue(policy: "static", params: "\"max_delay_ms\":10")
        admit(q, id: 0, at: 0)
        admit(q, id: 1, at: 3 * Self.ms)
        #expect(summarize(q.pump(now: 3 * Self.ms)).wake == 10 * Self.ms)
        #expect(summarize(q.pump(now: 9 * Self.ms)).batches.isEmpty)
        #expect(summarize(q.pump(now: 10 * Self.ms)).batches == [[0, 1]])
    }

    @Test func staticRejectsUnknownParameters() {
        #expect(throws: ConfigError.self) { try queue(policy: "static", params: "\"max_dealy_ms\":10") }
        do {
            _ = try queue(policy: "static", params: "\"max_dealy_ms\":10")
        } catch let e as ConfigError {
            #expect(e.message.contains("max_dealy_ms"))
        } catch {}
    }

    /// Teaches the adaptive policy latency = 10 ms + 0.5 ms per item at every size.
    /// `static` with `by_priority`: a full batch takes the priority-5 requests first, then the oldest;
    /// without it, the oldest four.
    @Test func staticByPriorityTakesTheHighestPriorityFirst() throws {
        for byPriority in [true, false] {
            let q = try queue(
                policy: "static", params: "\"batch_items\":4,\"by_priority\":\(byPriority ? 1 : 0)", maxItems: 4)
            for i in 0..<6 {
                _ = q.admit(
                    items: 1, arrival: Int64(i), timeoutMicros: nil, priority: i >= 4 ? 5 : 0, batchKey: "k",
                    payload: i)
            }
            #expect(summarize(q.pump(now: 10)).batches == [byPriority ? [4, 5, 0, 1] : [0, 1, 2, 3]])
        }
    }

    func taught(_ q: ModelQueue<Int>, maxItems: Int) throws {
        for n in 1...maxItems {
            try q.policy.observe(
                items: n, arrivals: Array(repeating: 0, count: n), ok: true, dispatched: 0,
                finished: (10 * Self.ms) + Int64(n) * Self.ms / 2)
        }
    }

    @Test func adaptiveSendsAtOnceBeforeItHasLearnt() throws {
        let q = try queue(policy: "adaptive-sla", maxItems: 32, slo: 100)
        admit(q, id: 0, at: 0)
        #expect(summarize(q.pump(now: 0)).batches == [[0]])
    }

    @Test func adaptiveWaitsWhenThereIsSlackAndDispatchesBeforeTheDeadline() throws {
        let q = try queue(policy: "adaptive-sla", params: "\"safety_ms\":5", maxItems: 32, slo: 100)
        try taught(q, maxItems: 32)
        // One item per millisecond (two arrivals are the least that show a rate): worth waiting for more.
        admit(q, id: 0, at: 0)
        var s = summarize([])
        for i in 1...5 {
            admit(q, id: i, at: Int64(i) * Self.ms)
            s = summarize(q.pump(now: Int64(i) * Self.ms))
            #expect(s.batches.isEmpty, "dispatched early at \(i) ms")
        }
        let wake = try #require(s.wake)
        // It must wake in time: deadline 100 ms - L(at most 32 items) = 26 ms - safety 5 ms.
        #expect(wake > 5 * Self.ms)
        #expect(wake <= (100 - 10 - 5) * Self.ms - 32 * Self.ms / 2 + Self.ms)
        // Asked again at that moment, it sends what is queued, with time to spare.
        s = summarize(q.pump(now: wake))
        #expect(s.batches == [[0, 1, 2, 3, 4, 5]])
        #expect(wake + (10 * Self.ms + 6 * Self.ms / 2) < 100 * Self.ms)
    }

    @Test func adaptiveSendsALoneRequestWithoutWaiting() throws {
        let q = try queue(policy: "adaptive-sla", maxItems: 32, slo: 100)
        try taught(q, maxItems: 32)
        admit(q, id: 0, at: 0)
        #expect(summarize(q.pump(now: 0)).batches == [[0]])
    }

    @Test func adaptiveDispatchesAFullBatchAtOnce() throws {
        let q = try queue(policy: "adaptive-sla", maxItems: 8, slo: 1000)
        try taught(q, maxItems: 8)
        for i in 0..<8 { admit(q, id: i, at: 0) }
        #expect(summarize(q.pump(now: 0)).batches == [[0, 1, 2, 3, 4, 5, 6, 7]])
    }

    @Test func adaptiveHonoursATighterClientDeadline() throws {
        let q = try queue(policy: "adaptive-sla", params: "\"safety_ms\":1", maxItems: 32, slo: 1000)
        try taught(q, maxItems: 32)
        for i in 0..<4 { admit(q, id: i, at: Int64(i) * Self.ms) }
        let loose = try #require(summarize(q.pump(now: 3 * Self.ms)).wake)
        // A client asking for 40 ms pulls the wake-up before its own deadline.
        admit(q, id: 4, at: 4 * Self.ms, timeoutMicros: 40_000)
        let tight = try #require(summarize(q.pump(now: 4 * Self.ms)).wake)
        #expect(tight < loose)
        #expect(tight <= 44 * Self.ms - 10 * Self.ms)
    }

    /// The latency knee, from its definition with L(m) = 10 ms + 0.5 ms x m (what `taught` shows it):
    /// target = the largest batch that can be gathered and sent in time; c = rate x L(target) / target;
    /// knee = the smallest m with rate x L(m) / m <= 0.7; the batch slides from the knee (c <= 0.175)
    /// to the target (c >= 0.35). The policy waits until deadline - L(batch), so the wake-up tells
    /// the batch it chose.
    @Test func adaptiveKneeSlidesBetweenTheKneeAndTheLargestBatch() throws {
        for (gapMs, expected) in [(1.5, 64), (2.2, 48), (5.0, 4)] {
            let q = try queue(policy: "adaptive-sla", params: "\"safety_ms\":0", maxItems: 64, slo: 1000)
            try taught(q, maxItems: 64)
            let gap = Int64(gapMs * Double(Self.ms))
            for i in 0..<3 { admit(q, id: i, at: Int64(i) * gap) }
            let s = summarize(q.pump(now: 2 * gap))
            #expect(s.batches.isEmpty)
            let wake = try #require(s.wake)
            // deadline 1000 ms - L(batch) = 990 ms - 0.5 ms x batch.
            let chosen = Double(990 * Self.ms - wake) / (0.5 * Double(Self.ms))
            #expect(abs(chosen - Double(expected)) < 0.01, "gap \(gapMs) ms: batch \(chosen), expected \(expected)")
            // The same from the formula, so the expected values above are not magic.
            let rate: Double = 1 / gapMs
            let slack: Double = 1000 - 2 * gapMs - 10
            let best: Double = (slack + 3 * gapMs) / (gapMs + 0.5)
            let target: Double = min(64, best).rounded(.down)
            let c: Double = rate * (10 + 0.5 * target) / target
            let w: Double = max(0, min(1, (0.35 - c) / 0.175))
            var knee: Double = target
            for m in 3..<Int(target) where rate * (10 + 0.5 * Double(m)) / Double(m) <= 0.7 {
                knee = Double(m)
                break
            }
            let slid: Double = target - w * (target - knee)
            #expect(slid.rounded() == Double(expected), "gap \(gapMs) ms: formula gives \(slid)")
        }
    }

    /// The in-flight cap: at one item per 0.1 ms with L(64) = 42 ms, full batches need
    /// c_full = 10 x 42 / 64 = 6.6 in flight; with headroom 1 the policy keeps ceil(6.6) + 1 = 8 out and
    /// holds even a full batch while 8 are. A backlog of slow replies does not raise the cap.
    @Test func adaptiveCapsBatchesInFlightAtWhatTheRateNeeds() throws {
        // Packing off: with a 1 s SLO it would keep one batch out and the rest waiting (tested below).
        let q = try queue(
            policy: "adaptive-sla", params: "\"headroom\":1,\"pack\":0", maxItems: 64, slo: 1000, inflight: 100)
        try taught(q, maxItems: 64)
        var id = 0
        var sent = 0
        let gap = Self.ms / 10
        for step in 0..<(64 * 12) {
            admit(q, id: id, at: Int64(step) * gap)
            id += 1
            sent += summarize(q.pump(now: Int64(step) * gap)).batches.count
        }
        #expect(sent == 8 && q.inflight == 8, "sent \(sent)")
        #expect(q.count >= 4 * 64, "the rest waits in the proxy")
        // Replies queued behind a backlog (10x the model's latency) are outliers: the cap stays.
        for _ in 0..<4 {
            q.batchFinished(
                items: 64, arrivals: Array(repeating: 0, count: 64), ok: true, dispatched: 0, finished: 420 * Self.ms)
        }
        let now = Int64(64 * 12) * gap
        for k in 0..<(64 * 8) { admit(q, id: id + k, at: now + Int64(k) * gap) }
        let after = summarize(q.pump(now: now + Int64(64 * 8) * gap)).batches
        #expect(
            after.count == 4 && q.inflight == 8,
            "four slots freed: four full batches of the 12 queued, \(after.map(\.count))")
    }

    /// The same cap under Poisson arrivals (mean gap 0.1 ms): the cap follows a steady rate, so the
    /// batches out stay at ceil(6.6 +- noise) + 1. Taken from the per-request rate (+-40% on Poisson
    /// gaps), the cap let batches out at its peaks, and those stay out until they finish.
    @Test func adaptiveCapHoldsUnderPoissonArrivals() throws {
        let q = try queue(
            policy: "adaptive-sla", params: "\"headroom\":1,\"pack\":0", maxItems: 64, slo: 1000, inflight: 100)
        try taught(q, maxItems: 64)
        var rng = SplitMix64(seed: 5)
        var t: Int64 = 0
        for id in 0..<(64 * 15) {
            t += Int64(rng.nextExponential(mean: Double(Self.ms / 10)))
            admit(q, id: id, at: t)
            _ = q.pump(now: t)
        }
        #expect(q.inflight >= 7 && q.inflight <= 9, "\(q.inflight) batches out where the rate needs ceil(6.6) + 1 = 8")
    }

    /// Packing, with L(n) = 10 ms + 0.5 ms x n: a second full batch waits for the first (which frees its
    /// slot at 14 ms) while every queued deadline still holds after it; a request whose deadline would
    /// not (22 ms, while waiting gives 14 + 14 + 10.5 ms) makes the policy send a batch at once, and
    /// that request is in it.
    @Test func adaptivePacksBatchesOntoTheOnesInFlightUntilADeadlineNeedsMore() throws {
        for pack in [true, false] {
            let q = try queue(
                policy: "adaptive-sla", params: "\"pack\":\(pack ? 1 : 0),\"safety_ms\":0", maxItems: 8, slo: 1000,
                inflight: 100)
            try taught(q, maxItems: 8)
            for i in 0..<8 { admit(q, id: i, at: 0) }
            #expect(summarize(q.pump(now: 0)).batches == [Array(0..<8)])
            for i in 8..<16 { admit(q, id: i, at: Self.ms) }
            let second = summarize(q.pump(now: Self.ms))
            if !pack {
                #expect(second.batches == [Array(8..<16)], "without packing a full batch goes at once")
                continue
            }
            #expect(second.batches.isEmpty, "the second full batch waits for the first: \(second.batches)")
            let recheck = try #require(second.wake)
            #expect(recheck > Self.ms && recheck <= 1000 * Self.ms)
            admit(q, id: 16, at: 2 * Self.ms, timeoutMicros: 20_000)
            let s = summarize(q.pump(now: 2 * Self.ms))
            // Earliest deadline first: request 16 (due at 22 ms) leads the batch that goes on a second
            // slot at once, and the youngest of the rest (15, due at 1001 ms) waits for the next one.
            #expect(s.batches == [[16] + Array(8..<15)], "the queue goes on a second slot at once")
            #expect(q.inflight == 2 && q.count == 1)
        }
    }

    /// Shedding, only when configured: a request whose deadline (5 ms) comes before even a batch sent
    /// now could answer (10.5 ms) is answered 503 with the reason; the one behind it is served.
    @Test func adaptiveShedsOnlyRequestsThatCannotMeetTheirDeadlineAndOnlyWhenConfigured() throws {
        for shed in [true, false] {
            let q = try queue(
                policy: "adaptive-sla", params: "\"shed\":\(shed ? 1 : 0)", maxItems: 8, slo: 100, inflight: 4)
            try taught(q, maxItems: 8)
            admit(q, id: 0, at: 0, timeoutMicros: 5_000)
            admit(q, id: 1, at: 0)
            var rejected: [Int] = []
            var sent: [[Int]] = []
            var now: Int64 = 0
            for _ in 0..<10 where q.count > 0 {
                let effects = q.pump(now: now)
                for case .reject(_, let err) in effects {
                    #expect(
                        err.status == 503 && err.message.contains("can no longer meet its deadline"), "\(err.message)")
                }
                let s = summarize(effects)
                rejected += s.rejected
                sent += s.batches
                now = max(now + 1, s.wake ?? now + Self.ms)
            }
            #expect(rejected == (shed ? [0] : []), "shed \(shed): rejected \(rejected)")
            #expect(sent.flatMap { $0 } == (shed ? [1] : [0, 1]), "shed \(shed): sent \(sent)")
        }
    }

    /// After a backlog has drained (its replies 0.2-2 s, queued behind each other at the upstream),
    /// nothing is in flight: the policy plans from the service time, not from the backlog's replies,
    /// so it still sends before the deadline instead of believing the upstream overloaded and holding
    /// the queue until the deadline (which made every request after an overload late in the simulator).
    @Test func adaptivePlansFromTheServiceTimeOnceABacklogHasDrained() throws {
        let q = try queue(policy: "adaptive-sla", params: "\"safety_ms\":5", maxItems: 32, slo: 100, inflight: 8)
        try taught(q, maxItems: 32)
        for k in 0..<100 {
            try q.policy.observe(
                items: 32, arrivals: Array(repeating: 0, count: 32), ok: true, dispatched: 0,
                finished: Int64(200 + 20 * k) * Self.ms)
        }
        let t0 = 1_000 * Self.ms
        admit(q, id: 0, at: t0)
        admit(q, id: 1, at: t0 + 5 * Self.ms)
        let s = summarize(q.pump(now: t0 + 5 * Self.ms))
        let wake = try #require(s.batches.isEmpty ? s.wake : t0 + 5 * Self.ms)
        // L(2) = 11 ms by the service time: sent by 100 - 11 - 5 ms after the first arrival.
        #expect(wake <= t0 + (100 - 11 - 5) * Self.ms, "planned at \(Double(wake - t0) / 1e6) ms, batches \(s.batches)")
    }

    @Test func adaptiveStopsWaitingWhenTrafficStops() throws {
        let q = try queue(policy: "adaptive-sla", maxItems: 32, slo: 100)
        try taught(q, maxItems: 32)
        for i in 0...5 { admit(q, id: i, at: Int64(i) * Self.ms) }
        let wake = try #require(summarize(q.pump(now: 5 * Self.ms)).wake)
        #expect(summarize(q.pump(now: wake)).batches == [[0, 1, 2, 3, 4, 5]])
        q.batchFinished(
            items: 6, arrivals: (0...5).map { Int64($0) * Self.ms }, ok: true, dispatched: wake,
            finished: wake + 13 * Self.ms)
        // Ten quiet seconds later a lone request: waiting would only add latency.
        admit(q, id: 6, at: 10_000 * Self.ms)
        #expect(summarize(q.pump(now: 10_000 * Self.ms)).batches == [[6]])
    }
}

/// Limits the host enforces whatever a policy says.
@Suite("Host-enforced limits")
struct QueueLimitTests {
    final class ScriptedPolicy: BatchingPolicy {
        var answer: PolicyDecision
        var asked = 0
        init(_ answer: PolicyDecision) { self.answer = answer }
        func decide(_ input: PolicyInput) -> PolicyDecision {
            asked += 1
            return answer
        }
        func observe(items: Int, arrivals: [Int64], ok: Bool, dispatched: Int64, finished: Int64) {}
    }

    final class FailingPolicy: BatchingPolicy {
        func decide(_ input: PolicyInput) throws(PolicyFailure) -> PolicyDecision { throw PolicyFailure("broken") }
        func observe(items: Int, arrivals: [Int64], ok: Bool, dispatched: Int64, finished: Int64) {}
    }

    /// When requests are past their deadline with nothing in flight the host sends a batch itself,
    /// whatever the policy says: the highest priority first (not everyone can be served in time, so
    /// the higher priorities are), queue order within it; with one priority, the head.
    @Test func theHostsOwnBatchForLateRequestsTakesTheHighestPriorityFirst() {
        let q = ModelQueue<Int>(
            limits: QueueLimits(
                maxBatchItems: 3, maxQueuedItems: 100, maxInflightBatches: 1, sloNanos: 10, rejectLate: false),
            policy: ScriptedPolicy(.wait(until: .max)))
        for i in 0..<8 {
            _ = q.admit(
                items: 1, arrival: Int64(i), timeoutMicros: nil, priority: i % 4 == 3 ? 9 : 0, batchKey: "k", payload: i
            )
        }
        var effects = q.pump(now: 1000)
        #expect(summarize(effects).batches == [[3, 7]], "the priority-9 requests, alone")
        for case .dispatch(_, let reason) in effects { #expect(reason == .lateRequest) }
        q.batchFinished(items: 2, arrivals: [], ok: true, dispatched: 1000, finished: 1001)
        effects = q.pump(now: 1001)
        #expect(summarize(effects).batches == [[0, 1, 2]], "then the head")
    }

    /// Every failed decide is reported (not just the first), right before the dispatch made without it.
    @Test func aFailingPolicyIsReportedBeforeEachDispatchItCausesNotOnce() {
        let q = ModelQueue<Int>(limits: limits(), policy: FailingPolicy())
        var reports = 0
        for i in 0..<3 {
            _ = q.admit(items: 1, arrival: Int64(i), timeoutMicros: nil, priority: 0, batchKey: "k", payload: i)
            let effects = q.pump(now: Int64(i))
            guard case .dispatch(let e, .policyFailed(let f))? = effects.first else {
                Issue.record("round \(i): \(effects), expected a dispatch that says the policy failed")
                continue
            }
            #expect(f.message == "broken" && e.map(\.payload) == [i])
            reports += 1
            q.batchFinished(items: 1, arrivals: [Int64(i)], ok: true, dispatched: Int64(i), finished: Int64(i))
        }
        #expect(reports == 3)
    }

    func limits(rejectLate: Bool = false) -> QueueLimits {
        QueueLimits(maxBatchItems: 4, maxQueuedItems: 10, maxInflightBatches: 1, sloNanos: 100, rejectLate: rejectLate)
    }

    @Test func neverMoreThanMaxItemsOrInflight() {
        let policy = ScriptedPolicy(.dispatch(items: 1000))
        let q = ModelQueue<Int>(limits: limits(), policy: policy)
        for i in 0..<6 { _ = q.admit(items: 1, arrival: 0, timeoutMicros: nil, priority: 0, batchKey: "k", payload: i) }
        let effects = q.pump(now: 0)
        let batches = effects.compactMap {
            if case .dispatch(let e, _) = $0 { return e.map(\.payload) } else { return nil }
        }
        #expect(batches == [[0, 1, 2, 3]])
        #expect(q.inflight == 1)
        #expect(q.count == 2)
    }

    @Test func queueFullIsA429WithAReason() {
        let q = ModelQueue<Int>(limits: limits(), policy: ScriptedPolicy(.wait(until: .max)))
        #expect(q.admit(items: 4, arrival: 0, timeoutMicros: nil, priority: 0, batchKey: "k", payload: 0) == nil)
        #expect(q.admit(items: 4, arrival: 0, timeoutMicros: nil, priority: 0, batchKey: "k", payload: 1) == nil)
        let e = q.admit(items: 4, arrival: 0, timeoutMicros: nil, priority: 0, batchKey: "k", payload: 2)
        #expect(e?.status == 429)
        #expect(e?.message.contains("max_queued_items") == true)
        #expect(
            q.admit(items: 5, arrival: 0, timeoutMicros: nil, priority: 0, batchKey: "k", payload: 3)?.status == 400)
    }

    @Test func lateRequestsAreDispatchedWithoutAskingThePolicy() {
        let policy = ScriptedPolicy(.wait(until: .max))
        let q = ModelQueue<Int>(limits: limits(), policy: policy)
        _ = q.admit(items: 1, arrival: 0, timeoutMicros: nil, priority: 0, batchKey: "k", payload: 0)
        let first = q.pump(now: 0)
        // The wake-up is capped at the deadline even though the policy asked to wait forever.
        #expect(first.contains { if case .wake(let at) = $0 { return at == 100 } else { return false } })
        let asked = policy.asked
        let late = q.pump(now: 100)
        #expect(
            late.contains { if case .dispatch(let e, _) = $0 { return e.map(\.payload) == [0] } else { return false } })
        #expect(policy.asked == asked)
    }

    /// With batches in flight the policy may pace late requests (their completions ask again); with
    /// none in flight they go at once whatever it says, so nothing is stranded.
    @Test func lateRequestsArePacedOnlyWhileBatchesAreInFlight() {
        let policy = ScriptedPolicy(.dispatch(items: 1))
        let q = ModelQueue<Int>(
            limits: QueueLimits(
                maxBatchItems: 4, maxQueuedItems: 10, maxInflightBatches: 4, sloNanos: 100,
                rejectLate: false), policy: policy)
        for i in 0..<3 { _ = q.admit(items: 1, arrival: 0, timeoutMicros: nil, priority: 0, batchKey: "k", payload: i) }
        #expect(summarize(q.pump(now: 0)).batches == [[0], [1], [2]])
        policy.answer = .wait(until: .max)
        _ = q.admit(items: 1, arrival: 0, timeoutMicros: nil, priority: 0, batchKey: "k", payload: 3)
        let asked = policy.asked
        let paced = summarize(q.pump(now: 150))
        #expect(paced.batches.isEmpty && paced.wake == nil, "late, but three batches are out and the policy waits")
        #expect(policy.asked == asked + 1)
        for _ in 0..<3 { q.batchFinished(items: 1, arrivals: [0], ok: true, dispatched: 0, finished: 150) }
        #expect(summarize(q.pump(now: 160)).batches == [[3]], "nothing in flight: it goes whatever the policy says")
    }

    @Test func lateRequestsAreRejectedWhenConfigured() {
        let q = ModelQueue<Int>(limits: limits(rejectLate: true), policy: ScriptedPolicy(.wait(until: .max)))
        _ = q.admit(items: 1, arrival: 0, timeoutMicros: nil, priority: 0, batchKey: "k", payload: 0)
        let effects = q.pump(now: 150)
        #expect(
            effects.contains {
                if case .reject(let e, let err) = $0 {
                    return e.map(\.payload) == [0] && err.status == 504
                } else {
                    return false
                }
            })
        #expect(q.count == 0)
    }

    @Test func incompatibleRequestsWaitForTheirOwnBatch() {
        let q = ModelQueue<Int>(
            limits: QueueLimits(
                maxBatchItems: 4, maxQueuedItems: 10, maxInflightBatches: 2, sloNanos: 100, rejectLate: false),
            policy: ScriptedPolicy(.dispatch(items: 4)))
        _ = q.admit(items: 1, arrival: 0, timeoutMicros: nil, priority: 0, batchKey: "a", payload: 0)
        _ = q.admit(items: 1, arrival: 0, timeoutMicros: nil, priority: 0, batchKey: "b", payload: 1)
        _ = q.admit(items: 1, arrival: 0, timeoutMicros: nil, priority: 0, batchKey: "a", payload: 2)
        let batches = q.pump(now: 0).compactMap {
            if case .dispatch(let e, _) = $0 { return e.map(\.payload) } else { return nil }
        }
        #expect(batches == [[0, 2], [1]])
    }

    @Test func shedAnswersTheNamedRequests() {
        let policy = ScriptedPolicy(.shed(indices: [1], reason: "cannot meet its deadline"))
        let q = ModelQueue<Int>(limits: limits(), policy: policy)
        for i in 0..<3 { _ = q.admit(items: 1, arrival: 0, timeoutMicros: nil, priority: 0, batchKey: "k", payload: i) }
        let effects = q.pump(now: 0)
        guard case .reject(let e, let err) = effects.first else {
            Issue.record("no reject")
            return
        }
        #expect(e.map(\.payload) == [1])
        #expect(err.status == 503)
        #expect(err.message.contains("cannot meet its deadline"))
    }
}
