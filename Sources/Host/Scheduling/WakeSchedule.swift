/// The bookkeeping of a queue's one timer, shared by the live proxy (a NIO scheduled task) and the
/// simulator (an event in its heap), so both follow the same rule: after every pump the timer is
/// armed at the time the queue last asked for, re-armed only when that time changes, and dropped
/// when the queue asked for none. Each arming gets a new generation, so a timer that fires after it
/// was replaced is recognised as stale.
public struct WakeSchedule: Sendable, Equatable {
    /// What the owner of the timer should do after a pump.
    public enum Change: Sendable, Equatable {
        /// Cancel any armed timer and arm one for `at`, remembering `generation`.
        case arm(at: Int64, generation: Int)
        /// Cancel the armed timer: the queue needs none.
        case cancel
        /// Leave the timer as it is.
        case keep
    }

    /// When the armed timer fires; `.max` when none is armed.
    public private(set) var at: Int64 = .max
    public private(set) var generation = 0

    public init() {}

    /// The change the effects of one pump call for.
    public mutating func update<Payload>(after effects: [QueueEffect<Payload>]) -> Change {
        var wanted: Int64?
        for case .wake(let t) in effects { wanted = t }
        guard let t = wanted else {
            if at == .max { return .keep }
            at = .max
            generation += 1
            return .cancel
        }
        if t == at { return .keep }
        at = t
        generation += 1
        return .arm(at: t, generation: generation)
    }

    /// A timer armed as `generation` fired: true when it is the current one (which is now spent),
    /// false when it was replaced or cancelled since.
    public mutating func fired(generation g: Int) -> Bool {
        guard g == generation, at != .max else { return false }
        at = .max
        return true
    }
}
