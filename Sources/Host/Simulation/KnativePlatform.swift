/// How the simulated platform runs model server replicas.
public struct PlatformConfig: Sendable {
    public enum Mode: Sendable, Equatable {
        case knative
        case fixed(replicas: Int)
    }

    public var mode: Mode = .knative
    /// Knative's container concurrency target: in-flight upstream requests per replica.
    public var target: Double = 1
    public var stableWindowNanos: Int64 = 60_000_000_000
    public var panicWindowNanos: Int64 = 6_000_000_000
    public var tickNanos: Int64 = 2_000_000_000
    public var scaleToZeroGraceNanos: Int64 = 30_000_000_000
    public var coldStartNanos: Int64 = 2_000_000_000
    /// Panic when the panic window asks for this many times the ready replicas.
    public var panicThreshold: Double = 2
    /// At most this factor fewer replicas per tick.
    public var maxScaleDownRate: Double = 2
    public var maxReplicas: Int = 1000

    public init() {}
}

/// Knative's autoscaler (KPA) and its replicas, in virtual time. Every replica serves one upstream
/// request (a batch) at a time; the others wait at the activator. Concurrency is averaged over the
/// stable and panic windows from per-second buckets of concurrency-seconds.
final class KnativePlatform {
    struct Replica {
        var readyAt: Int64
        var busy = false
    }

    enum Admission {
        case started(replica: Int)
        case queued(newReplicaReadyAt: Int64?)
    }

    let config: PlatformConfig
    /// Replica slots; nil is a free slot. Indices stay stable while a replica lives, so a batch in
    /// service can name its replica.
    private var slots: [Replica?] = []
    private(set) var replicaCount = 0
    /// Batches waiting for a replica, oldest first.
    private var waiting: [Int] = []
    private var waitingHead = 0
    private var inService = 0
    private var toRemove = 0
    private var lastAdvance: Int64 = 0
    private var buckets: [Double] = []
    private var replicaNanos: Double = 0
    private var panicUntil: Int64?
    private var lastBusy: Int64 = 0

    init(config: PlatformConfig) {
        self.config = config
        switch config.mode {
        case .knative: add(readyAt: 0)
        case .fixed(let n): for _ in 0..<max(n, 1) { add(readyAt: 0) }
        }
    }

    var concurrency: Int { inService + waiting.count - waitingHead }

    /// Batches in flight (at a replica or waiting for one) times seconds, within second `s`.
    func concurrencySeconds(inSecond s: Int) -> Double { s >= 0 && s < buckets.count ? buckets[s] : 0 }
    var replicaSeconds: Double { replicaNanos / 1e9 }

    private func add(readyAt: Int64) {
        replicaCount += 1
        if let free = slots.firstIndex(where: { $0 == nil }) {
            slots[free] = Replica(readyAt: readyAt)
        } else {
            slots.append(Replica(readyAt: readyAt))
        }
    }

    private func remove(_ i: Int) {
        slots[i] = nil
        replicaCount -= 1
    }

    /// Accumulates the time-weighted concurrency and replica count up to `t`.
    func advance(to t: Int64) {
        guard t > lastAdvance else { return }
        let c = Double(concurrency)
        if c > 0 { lastBusy = t }
        var from = lastAdvance
        while from < t {
            let sec = Int(from / 1_000_000_000)
            let end = min(t, Int64(sec + 1) * 1_000_000_000)
            if c > 0 {
                if buckets.count <= sec { buckets += Array(repeating: 0, count: sec + 1 - buckets.count) }
                buckets[sec] += c * Double(end - from) / 1e9
            }
            from = end
        }
        replicaNanos += Double(replicaCount) * Double(t - lastAdvance)
        lastAdvance = t
    }

    /// A batch arrives: a free ready replica starts it, or it waits. When no replica exists at all,
    /// the activator asks for one at once (scale from zero).
    func submit(_ batch: Int, at t: Int64) -> Admission {
        advance(to: t)
        if let i = slots.firstIndex(where: { $0.map { !$0.busy && $0.readyAt <= t } ?? false }) {
            slots[i]!.busy = true
            inService += 1
            return .started(replica: i)
        }
        waiting.append(batch)
        if replicaCount == 0, config.mode == .knative {
            add(readyAt: t + config.coldStartNanos)
            return .queued(newReplicaReadyAt: t + config.coldStartNanos)
        }
        return .queued(newReplicaReadyAt: nil)
    }

    /// The replica finished its batch; returns the next waiting batch it starts, if any.
    func finish(replica i: Int, at t: Int64) -> Int? {
        advance(to: t)
        inService -= 1
        slots[i]!.busy = false
        if toRemove > 0 {
            remove(i)
            toRemove -= 1
            return nil
        }
        return startWaiting(on: i)
    }

    private func startWaiting(on i: Int) -> Int? {
        guard waitingHead < waiting.count else { return nil }
        let next = waiting[waitingHead]
        waitingHead += 1
        if waitingHead > 1024 && waitingHead * 2 > waiting.count {
            waiting.removeFirst(waitingHead)
            waitingHead = 0
        }
        slots[i]!.busy = true
        inService += 1
        return next
    }

    /// Replicas ready by `t` take waiting batches: (batch, replica) pairs.
    func readyReplicas(at t: Int64) -> [(batch: Int, replica: Int)] {
        advance(to: t)
        var started: [(Int, Int)] = []
        for i in slots.indices {
            guard let r = slots[i], !r.busy, r.readyAt <= t else { continue }
            guard let b = startWaiting(on: i) else { break }
            started.append((b, i))
        }
        return started
    }

    /// One autoscaler tick. Returns the times at which new replicas become ready.
    func tick(at t: Int64) -> [Int64] {
        guard config.mode == .knative else { return [] }
        advance(to: t)
        let sec = Int(t / 1_000_000_000)
        func average(_ window: Int64) -> Double {
            let n = Int(window / 1_000_000_000)
            var sum = 0.0
            // Buckets exist up to the last second with any concurrency: an idle stretch longer than
            // the window leaves none in it.
            let from = max(0, sec - n)
            let to = min(sec, buckets.count)
            if from < to { for s in from..<to { sum += buckets[s] } }
            return sum / Double(n)
        }
        let desiredStable = Int((average(config.stableWindowNanos) / config.target).rounded(.up))
        let desiredPanic = Int((average(config.panicWindowNanos) / config.target).rounded(.up))
        let current = replicaCount - toRemove
        let readyCount = slots.filter { $0.map { $0.readyAt <= t } ?? false }.count
        let ready = max(1, readyCount)
        if Double(desiredPanic) >= config.panicThreshold * Double(ready) && current > 0 {
            panicUntil = t + config.stableWindowNanos
        }
        var desired: Int
        if let p = panicUntil, t < p {
            desired = max(current, desiredPanic)
        } else {
            panicUntil = nil
            desired = desiredStable
        }
        // Knative's KPA: at most floor(ready / max-scale-down-rate) may remain wanted, so one ready
        // replica may go to zero (after the grace period below) and three go to one, not two.
        if desired < current {
            desired = max(desired, Int((Double(readyCount) / config.maxScaleDownRate).rounded(.down)))
        }
        if desired == 0 && (t - lastBusy < config.scaleToZeroGraceNanos || concurrency > 0) { desired = 1 }
        desired = min(desired, config.maxReplicas)
        var readyTimes: [Int64] = []
        if desired > current {
            let cancel = min(toRemove, desired - current)
            toRemove -= cancel
            for _ in 0..<(desired - current - cancel) {
                add(readyAt: t + config.coldStartNanos)
                readyTimes.append(t + config.coldStartNanos)
            }
        } else if desired < current {
            var excess = current - desired
            // Idle replicas go first, starting ones before ready ones; busy ones go when they finish.
            for pass in 0..<2 {
                for i in slots.indices where excess > 0 {
                    guard let r = slots[i], !r.busy, pass == 1 || r.readyAt > t else { continue }
                    remove(i)
                    excess -= 1
                }
            }
            toRemove += excess
        }
        return readyTimes
    }
}
