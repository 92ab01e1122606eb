import Foundation
import MLProxyHost
import PluginAPI
import Testing

/// The baseline policies' decisions against cases computed by hand from their published algorithms.
@Suite("Baseline policies, hand-computed cases")
struct BaselinePolicyTests {
    static let ms: Int64 = 1_000_000

    func queue(_ policy: String, params: String = "", maxItems: Int = 64, slo: Int64 = 1000, inflight: Int = 8) throws
        -> ModelQueue<Int>
    {
        try policyQueue(policy, params: params, maxItems: maxItems, sloMillis: slo, inflight: inflight)
    }

    func admit(_ q: ModelQueue<Int>, _ id: Int, at: Int64, items: Int = 1) {
        #expect(q.admit(items: items, arrival: at, timeoutMicros: nil, priority: 0, batchKey: "k", payload: id) == nil)
    }

    // MARK: mlproxy-aimd

    @Test func mlproxyAimdTimerWithoutDataIsTMinus100ms() throws {
        // SLO 1000 ms: T = 800 ms; no latency data: 100 ms; timer = max(800 - max(100, 50), 50) = 700 ms.
        let q = try queue("mlproxy-aimd", params: "\"initial_batch\":10")
        admit(q, 0, at: 0)
        #expect(summarize(q.pump(now: 0)).wake == 700 * Self.ms)
        #expect(summarize(q.pump(now: 700 * Self.ms)).batches == [[0]])
    }

    @Test func mlproxyAimdTimerUsesP95OfTheNextSizeAndItsFloor() throws {
        let q = try queue("mlproxy-aimd", params: "\"initial_batch\":10")
        // Two items queued next: p95 of size 2 = 300 ms -> timer = 800 - 300 = 500 ms.
        for _ in 0..<5 {
            try q.policy.observe(items: 2, arrivals: [0, 0], ok: true, dispatched: 0, finished: 300 * Self.ms)
        }
        admit(q, 0, at: 1000 * Self.ms)
        admit(q, 1, at: 1000 * Self.ms)
        #expect(summarize(q.pump(now: 1000 * Self.ms)).wake == 1500 * Self.ms)
        // Size 3 unseen: p95 of the largest seen (2) = 300 ms still.
        admit(q, 2, at: 1001 * Self.ms)
        #expect(summarize(q.pump(now: 1001 * Self.ms)).wake == 1500 * Self.ms)
    }

    @Test func mlproxyAimdDispatchesAtBItems() throws {
        let q = try queue("mlproxy-aimd", params: "\"initial_batch\":3")
        for i in 0..<4 { admit(q, i, at: 0) }
        #expect(summarize(q.pump(now: 0)).batches == [[0, 1, 2]])
    }

    @Test func mlproxyAimdShrinksBWhenTheTimerDrivesDispatches() throws {
        let q = try queue("mlproxy-aimd", params: "\"initial_batch\":10")
        // Window 1 (0-30 s): only timer-triggered dispatches -> share 1.0 >= 0.7 -> B = min(floor(7), 9) = 7.
        admit(q, 0, at: 0)
        _ = q.pump(now: 0)
        #expect(summarize(q.pump(now: 700 * Self.ms)).batches == [[0]])
        q.batchFinished(items: 1, arrivals: [0], ok: true, dispatched: 700 * Self.ms, finished: 710 * Self.ms)
        // At 30 s the window closes; 7 items now fill a batch, 6 do not.
        for i in 1...6 { admit(q, i, at: 30_000 * Self.ms) }
        #expect(summarize(q.pump(now: 30_000 * Self.ms)).batches.isEmpty)
        admit(q, 7, at: 30_000 * Self.ms)
        #expect(summarize(q.pump(now: 30_000 * Self.ms)).batches == [[1, 2, 3, 4, 5, 6, 7]])
    }

    @Test func mlproxyAimdGrowsBByFiveWhenSizeDrivesDispatchesAndLatencyIsLow() throws {
        let q = try queue("mlproxy-aimd", params: "\"initial_batch\":2")
        admit(q, 0, at: 0)
        admit(q, 1, at: 0)
        #expect(summarize(q.pump(now: 0)).batches == [[0, 1]])  // size-triggered
        q.batchFinished(items: 2, arrivals: [0, 0], ok: true, dispatched: 0, finished: 20 * Self.ms)  // 20 ms << T
        // After 30 s: B = 2 + 5 = 7.
        for i in 2..<8 { admit(q, i, at: 30_000 * Self.ms) }
        #expect(summarize(q.pump(now: 30_000 * Self.ms)).batches.isEmpty)
        admit(q, 8, at: 30_000 * Self.ms)
        #expect(summarize(q.pump(now: 30_000 * Self.ms)).batches == [[2, 3, 4, 5, 6, 7, 8]])
    }

    // MARK: cork

    @Test func corkStartsFromBentoMLsInitialFitAndDispatches() throws {
        // SLO 300 ms: a = 300 x 2/30 = 20 ms, b = 10 ms, o_w = 10 ms. One request, wn = 0:
        // 1 x (0 + 1 + 20) = 21 ms > 0.95 x 10 ms -> dispatch.
        let q = try queue("cork", slo: 300)
        admit(q, 0, at: 0)
        #expect(summarize(q.pump(now: 0)).batches == [[0]])
    }

    @Test func corkShedsTheOldestThatCannotMakeMaxLatency() throws {
        // Two queued, oldest 250 ms old: 250 + 2 x 20 + 10 = 300 >= 300 -> shed the oldest (503).
        let q = try queue("cork", slo: 300, inflight: 1)
        admit(q, 0, at: 0)
        admit(q, 1, at: 240 * Self.ms)
        let effects = q.pump(now: 250 * Self.ms)
        #expect(summarize(effects).rejected == [0])
        guard case .reject(_, let error) = effects.first else {
            Issue.record("no shed")
            return
        }
        #expect(error.status == 503)
        #expect(error.message.contains("cork"))
    }

    @Test func corkWaitsWhileWaitingPaysOff() throws {
        let q = try queue("cork", slo: 300)
        // Three batches: the first two are skipped, the third (1 item, 5 ms, waited 100 ms) is fitted:
        // one size only, so a = 1 us, b = 5 ms, o_w = 100 ms.
        for k in 0..<3 {
            let t = Int64(k) * 1000 * Self.ms
            try q.policy.observe(
                items: 1, arrivals: [t], ok: true, dispatched: t + 100 * Self.ms, finished: t + 105 * Self.ms)
        }
        admit(q, 0, at: 10_000 * Self.ms)
        // 1 x (0 + 1 ms + 0.001 ms) <= 95 ms -> wait one tick.
        #expect(summarize(q.pump(now: 10_000 * Self.ms)).wake == 10_001 * Self.ms)
        // 100 items whose newest waited 1 ms: 100 x (1 + 1 + 0.001) ms > 95 ms -> dispatch.
        for i in 1..<100 { admit(q, i, at: 10_000 * Self.ms) }
        #expect(summarize(q.pump(now: 10_001 * Self.ms)).batches.first?.count == 64)  // up to the max
    }

    // MARK: aimd (Clipper)

    @Test func aimdAddsOnTimeAndBacksOffWhenLate() throws {
        let q = try queue("aimd", params: "\"initial_batch\":4,\"step\":2,\"backoff\":0.9", slo: 100, inflight: 1)
        for i in 0..<10 { admit(q, i, at: 0) }
        #expect(summarize(q.pump(now: 0)).batches == [[0, 1, 2, 3]])
        // On time (50 ms <= 100 ms): B = 4 + 2 = 6.
        q.batchFinished(
            items: 4, arrivals: Array(repeating: 0, count: 4), ok: true, dispatched: 0, finished: 50 * Self.ms)
        #expect(summarize(q.pump(now: 50 * Self.ms)).batches == [[4, 5, 6, 7, 8, 9]])
        // Late (150 ms > 100 ms): B = 6 x 0.9 = 5.4, sent as 5.
        q.batchFinished(
            items: 6, arrivals: Array(repeating: 0, count: 6), ok: true, dispatched: 50 * Self.ms,
            finished: 200 * Self.ms)
        for i in 10..<20 { admit(q, i, at: 200 * Self.ms) }
        #expect(summarize(q.pump(now: 200 * Self.ms)).batches == [[10, 11, 12, 13, 14]])
    }
}
