import NIOConcurrencyHelpers

/// Envoy's retry budget: retries in progress may be at most `percent` of the upstream requests in
/// progress (and always at least `minConcurrency`), so a wave of resets cannot double the load on a
/// model server that is already struggling. Shared by one model's pools on every event loop.
public final class RetryBudget: Sendable {
    public struct Settings: Sendable, Equatable {
        public var percent: Double
        public var minConcurrency: Int

        public init(percent: Double = 20, minConcurrency: Int = 3) {
            self.percent = percent
            self.minConcurrency = minConcurrency
        }
    }

    public let settings: Settings
    private let state = NIOLockedValueBox((active: 0, retrying: 0))

    public init(_ settings: Settings = Settings()) { self.settings = settings }

    /// An upstream request started (a retry counts too, as in Envoy).
    public func requestStarted() { state.withLockedValue { $0.active += 1 } }
    public func requestFinished() { state.withLockedValue { $0.active -= 1 } }

    /// Takes a retry from the budget if it has one; call `retryFinished` when that retry ends.
    public func tryRetry() -> Bool {
        state.withLockedValue { s in
            let allowed = max(settings.minConcurrency, Int(Double(s.active) * settings.percent / 100))
            guard s.retrying < allowed else { return false }
            s.retrying += 1
            return true
        }
    }

    public func retryFinished() { state.withLockedValue { $0.retrying -= 1 } }

    /// Requests and retries in progress.
    public var load: (active: Int, retrying: Int) { state.withLockedValue { ($0.active, $0.retrying) } }
}

/// Capped exponential backoff with jitter, for reconnecting to a model server that is down: attempt
/// k waits a random time in [d/2, d] with d = min(cap, base x 2^k), so proxies that lost the same
/// server do not come back in step.
public struct Backoff: Sendable, Equatable {
    public var baseNanos: Int64
    public var capNanos: Int64

    public init(baseNanos: Int64 = 50_000_000, capNanos: Int64 = 2_000_000_000) {
        self.baseNanos = baseNanos
        self.capNanos = capNanos
    }

    /// The wait before attempt `attempt` (0-based); `unit` is a random number in [0, 1).
    public func delay(attempt: Int, unit: Double) -> Int64 {
        var d = baseNanos
        for _ in 0..<max(attempt, 0) where d < capNanos { d *= 2 }
        d = min(d, capNanos)
        return d / 2 + Int64(Double(d / 2) * min(max(unit, 0), 1))
    }
}
