import Foundation
import MLProxyHost
import Testing

@Suite("Core helpers")
struct CoreTests {
    @Test func jsonTextWritesSortedCompactJSON() throws {
        #expect(
            JSONText.write(["b": 1, "a": [true, "x\"\n"], "c": 0.25, "d": 200.0])
                == #"{"a":[true,"x\"\n"],"b":1,"c":0.25,"d":200}"#)
        #expect(JSONText.write([Double.nan]) == nil)
        #expect(JSONText.write([Date()]) == nil)
        #expect(JSONText.string("tab\tand \u{1}") == #""tab\tand \u0001""#)
        // Foundation's parsed numbers: 1 stays 1 and true stays true, although `1 as? Bool` holds on Linux.
        let parsed = try JSONSerialization.jsonObject(
            with: Data(#"{"one":1,"yes":true,"no":false,"half":0.5,"none":null,"shape":[-1,4]}"#.utf8))
        #expect(
            JSONText.write(parsed) == #"{"half":0.5,"no":false,"none":null,"one":1,"shape":[-1,4],"yes":true}"#)
    }

    @Test func nearestRankIsTheSmallestValueWithQAtOrBelowIt() {
        let v = (1...100).map(Double.init)
        #expect(nearestRank(v, 0.5) == 50)
        #expect(nearestRank(v, 0.99) == 99)
        #expect(nearestRank(v, 1) == 100)
        #expect(nearestRank(v, 0) == 1)
        #expect(nearestRank([Int64](), 0.5) == nil)
        #expect(nearestRank([7], 0.95) == 7)
    }

    @Test func wakeScheduleArmsOnChangeCancelsWhenNotAskedAndSpotsStaleTimers() {
        var w = WakeSchedule()
        let wake: (Int64) -> [QueueEffect<Int>] = { [.wake(at: $0)] }
        let r1 = w.update(after: wake(10))
        #expect(r1 == .arm(at: 10, generation: 1))
        let r2 = w.update(after: wake(10))
        #expect(r2 == .keep)
        let r3 = w.update(after: wake(5))
        #expect(r3 == .arm(at: 5, generation: 2))
        let r4 = w.fired(generation: 1)
        #expect(!r4, "a replaced timer is stale")
        let r5 = w.fired(generation: 2)
        #expect(r5)
        let r6 = w.fired(generation: 2)
        #expect(!r6, "a timer fires once")
        let r7 = w.update(after: wake(8))
        #expect(r7 == .arm(at: 8, generation: 3))
        let r8 = w.update(after: [QueueEffect<Int>]())
        #expect(r8 == .cancel)
        let r9 = w.fired(generation: 3)
        #expect(!r9, "a cancelled timer is stale")
        let r10 = w.update(after: [QueueEffect<Int>]())
        #expect(r10 == .keep)
    }

    @Test func everyOutcomeHasOneStatusLabelAndCause() {
        let kinds: [RequestError.Kind] = [
            .invalid, .unsupported, .tooLarge, .notFound, .methodNotAllowed, .queueFull, .shed, .deadline,
            .unavailable, .upstreamError, .upstreamTimeout, .batchRejected, .modelServer(status: 422), .internal,
        ]
        #expect(Set(kinds.map(\.metricLabel)).count == kinds.count)
        #expect(kinds.map(\.httpStatus) == [400, 415, 413, 404, 405, 429, 503, 504, 503, 502, 504, 502, 422, 500])
        #expect(RequestError(.queueFull, "m").retryAfterSeconds == 1)
        #expect(RequestError(.unavailable, "m", retryAfterSeconds: 7).retryAfterSeconds == 7)
        #expect(RequestError(.invalid, "m").retryAfterSeconds == nil)
        #expect(RequestError.Kind.fromModelServer(status: 500) == .modelServer(status: 500))
        #expect(RequestError.Kind.fromModelServer(status: 502) == .upstreamError)
        #expect(RequestError.Kind.fromModelServer(status: 504) == .upstreamTimeout)
    }
}
