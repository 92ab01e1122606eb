import Foundation
import MLProxyHost
import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded
import Testing

/// Bisection of rejected batches, with a fake model server (an attempt function) and a manual clock
/// (`EmbeddedEventLoop`): only the culprits fail, nobody else sees the model server's words, rounds
/// are bounded, and a member is not sent again past its deadline.
@Suite("Failure isolation (manual clock)")
struct FailureIsolationTests {
    /// A member: its id, whether the fake server rejects any batch holding it, and its deadline.
    struct Member: Sendable, Equatable {
        let id: Int
        let bad: Bool
        var deadline: Int64 = .max
    }

    final class Run: @unchecked Sendable {
        let loop = EmbeddedEventLoop()
        let outcomes = NIOLockedValueBox<[Int: MemberOutcome<Int>]>([:])
        let sent = NIOLockedValueBox<[[Int]]>([])
        /// Each upstream request takes this long on the manual clock.
        let latency: Int64 = 10_000_000

        /// Runs `members` through an isolator whose fake upstream rejects a batch holding a bad member
        /// with `failure` (its words quote the bad member's id) and otherwise answers each member its id.
        func isolate(
            _ members: [Member], bisect: Bool = true,
            failure: @escaping @Sendable ([Member]) -> BatchFailure? = Run.rejectBad
        ) -> BatchIsolator<Member, Int>.Counters {
            let isolator = BatchIsolator<Member, Int>(
                bisect: bisect, now: { [loop] in Int64(loop.now.uptimeNanoseconds) }, deadline: { $0.deadline },
                items: { _ in 1 },
                attempt: { [self] part in
                    sent.withLockedValue { $0.append(part.map(\.id)) }
                    let p = loop.makePromise(of: Result<[Int], BatchFailure>.self)
                    // The reply comes `latency` later on the manual clock.
                    loop.scheduleTask(in: .nanoseconds(latency)) {
                        if let f = failure(part) { p.succeed(.failure(f)) } else { p.succeed(.success(part.map(\.id))) }
                    }
                    return p.futureResult
                },
                finish: { [outcomes] m, o in
                    outcomes.withLockedValue { all in
                        #expect(all[m.id] == nil, "member \(m.id) finished twice")
                        all[m.id] = o
                    }
                })
            let done = isolator.run(members, on: loop)
            var guardRounds = 0
            while !isDone(done) && guardRounds < 1000 {
                loop.advanceTime(by: .nanoseconds(latency))
                guardRounds += 1
            }
            #expect(isDone(done), "the isolation never finished")
            return isolator.counters
        }

        static let rejectBad: @Sendable ([Member]) -> BatchFailure? = { part in
            guard let bad = part.first(where: \.bad) else { return nil }
            return BatchFailure.modelServer(
                status: 422, words: "model server answered 422: row holds secret-\(bad.id)")
        }

        private func isDone(_ f: EventLoopFuture<Void>) -> Bool {
            let done = NIOLockedValueBox(false)
            f.whenComplete { _ in done.withLockedValue { $0 = true } }
            return done.withLockedValue { $0 }
        }

        func outcome(_ id: Int) -> MemberOutcome<Int>? { outcomes.withLockedValue { $0[id] } }
    }

    @Test func onlyTheCulpritsFailAndNobodyElseSeesTheirData() throws {
        let run = Run()
        let members = (0..<23).map { Member(id: $0, bad: $0 == 16 || $0 == 3) }
        let c = run.isolate(members)
        for m in members {
            switch run.outcome(m.id) {
            case .answered(let v, let shape)?:
                #expect(!m.bad)
                #expect(v == m.id)
                #expect(shape.attempts > 1)
            case .failed(let e, let shape)?:
                #expect(m.bad, "member \(m.id) failed: \(e.message)")
                #expect(e.status == 422)
                #expect(e.cause == .own)
                #expect(e.message == "model server answered 422: row holds secret-\(m.id)")
                #expect(shape.requests == 1)
            case nil:
                Issue.record("member \(m.id) was never answered")
            }
        }
        #expect(c.culprits == 2)
        #expect(c.unisolated == 0)
        // Two culprits among 23: each level splits at most the two failing parts; ceil(log2 23) = 5 levels.
        #expect(c.splits <= 2 * 5)
        let deepest = run.sent.withLockedValue { $0 }.count
        #expect(deepest == c.attempts)
        #expect(c.firstFailure?.alone.status == 422)
    }

    @Test func roundsAreBoundedByLog2OfTheRequests() throws {
        for n in [2, 3, 7, 8, 33, 64] {
            let run = Run()
            _ = run.isolate((0..<n).map { Member(id: $0, bad: $0 == n - 1) })
            let rounds = (0..<n).compactMap { id -> Int? in
                switch run.outcome(id) {
                case .answered(_, let s)?, .failed(_, let s)?: return s.attempts
                case nil: return nil
                }
            }
            #expect(rounds.count == n)
            // The first attempt plus at most ceil(log2 n) rounds of splits.
            #expect((rounds.max() ?? 0) <= 1 + Int(ceil(log2(Double(n)))), "n=\(n): \(rounds)")
        }
    }

    @Test func aMemberIsNotSentAgainPastItsDeadline() throws {
        let run = Run()
        // Member 1's deadline falls before the first reply comes back (10 ms): it is not resent.
        let members = [
            Member(id: 0, bad: true), Member(id: 1, bad: false, deadline: 5_000_000), Member(id: 2, bad: false),
        ]
        let c = run.isolate(members)
        guard case .failed(let e, _)? = run.outcome(1) else {
            Issue.record("member 1 should fail")
            return
        }
        #expect(e.cause == .batch)
        #expect(e.status == 502)
        #expect(e.message.contains("deadline"))
        #expect(!e.message.contains("secret"))
        guard case .answered(2, _)? = run.outcome(2) else {
            Issue.record("member 2 should be answered")
            return
        }
        guard case .failed(let bad, _)? = run.outcome(0) else {
            Issue.record("member 0 should fail")
            return
        }
        #expect(bad.cause == .own)
        #expect(c.unisolated == 1)
        #expect(!run.sent.withLockedValue { $0 }.dropFirst().contains { $0.contains(1) })
    }

    @Test func withIsolationOffTheBatchFailsWholeWithoutTheServersWords() throws {
        let run = Run()
        let c = run.isolate((0..<4).map { Member(id: $0, bad: $0 == 2) }, bisect: false)
        for id in 0..<4 {
            guard case .failed(let e, _)? = run.outcome(id) else {
                Issue.record("member \(id) should fail")
                continue
            }
            #expect(e.cause == .batch)
            #expect(!e.message.contains("secret"), "\(e.message)")
            #expect(e.message.contains("isolate_failures is off"))
        }
        #expect(c.attempts == 1)
    }

    @Test func aServerFailureIsNotSplitAndSaysSo() throws {
        let run = Run()
        let c = run.isolate(
            (0..<6).map { Member(id: $0, bad: false) },
            failure: { _ in
                BatchFailure.modelServer(
                    status: 503, words: "model server answered 503: overloaded, row secret", retryAfterSeconds: 2)
            })
        #expect(c.attempts == 1)
        for id in 0..<6 {
            guard case .failed(let e, _)? = run.outcome(id) else {
                Issue.record("member \(id) should fail")
                continue
            }
            #expect(e.status == 503)
            #expect(e.cause == .upstream)
            #expect(e.retryAfterSeconds == 2)
            #expect(!e.message.contains("secret"))
        }
    }

    @Test func contentStatusesAreTheOnesWorthSplitting() {
        for s in [400, 404, 413, 415, 422, 500, 501, 507] {
            let f = BatchFailure.modelServer(status: s, words: "w")
            #expect(f.kind == .content && f.alone.status == s && f.alone.cause == .own, "\(s)")
        }
        for s in [302, 502, 503, 504] {
            let f = BatchFailure.modelServer(status: s, words: "w")
            #expect(f.kind == .upstream && f.alone.cause == .upstream, "\(s)")
        }
        #expect(BatchFailure.modelServer(status: 302, words: "w").alone.status == 502)
        #expect(BatchFailure.modelServer(status: 503, words: "w").alone.retryAfterSeconds == 1)
    }
}

@Suite("Retry budget and reconnect backoff")
struct RetryBudgetTests {
    @Test func retriesAreCappedAtAShareOfActiveRequestsWithAFloor() {
        let budget = RetryBudget(.init(percent: 20, minConcurrency: 3))
        // Few requests in flight: the floor of 3 concurrent retries applies.
        for _ in 0..<5 { budget.requestStarted() }
        #expect(budget.tryRetry() && budget.tryRetry() && budget.tryRetry())
        #expect(!budget.tryRetry())
        budget.retryFinished()
        #expect(budget.tryRetry())
        // 50 in flight: 20% is 10 retries at once.
        for _ in 0..<45 { budget.requestStarted() }
        var granted = 3
        while budget.tryRetry() { granted += 1 }
        #expect(granted == 10)
        for _ in 0..<10 { budget.retryFinished() }
        for _ in 0..<50 { budget.requestFinished() }
        #expect(budget.load.active == 0 && budget.load.retrying == 0)
    }

    @Test func aZeroBudgetRefusesEveryRetry() {
        let budget = RetryBudget(.init(percent: 0, minConcurrency: 0))
        budget.requestStarted()
        #expect(!budget.tryRetry())
    }

    @Test func backoffDoublesWithJitterUpToTheCap() {
        let b = Backoff(baseNanos: 50_000_000, capNanos: 2_000_000_000)
        #expect(b.delay(attempt: 0, unit: 0) == 25_000_000)
        #expect(b.delay(attempt: 0, unit: 1) == 50_000_000)
        #expect(b.delay(attempt: 3, unit: 1) == 400_000_000)
        #expect(b.delay(attempt: 3, unit: 0.5) == 300_000_000)
        // Capped: never more than 2 s, never less than half of it, however many attempts.
        for attempt in [6, 10, 63, 1000] {
            #expect(b.delay(attempt: attempt, unit: 1) == 2_000_000_000)
            #expect(b.delay(attempt: attempt, unit: 0) == 1_000_000_000)
        }
    }
}
