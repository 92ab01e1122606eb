import ProxyCore
import Scheduling

/// One simulated run: a policy (the very plugin the proxy loads, through the same ABI and the same
/// ModelQueue) in front of a platform of replicas, fed by a trace, in virtual time.
public struct SimulationSetup: Sendable {
    public var trace: ArrivalTrace
    public var profile: LatencyProfile
    public var platform: PlatformConfig
    public var limits: QueueLimits
    public var seed: UInt64
    /// The share of requests at each priority (as policies see it: higher first); empty: all 0. Each
    /// request's priority is drawn from its own random stream, so a mix moves no other draw.
    public var priorityMix: [(priority: Int32, share: Double)]

    public init(
        trace: ArrivalTrace, profile: LatencyProfile, platform: PlatformConfig, limits: QueueLimits, seed: UInt64,
        priorityMix: [(priority: Int32, share: Double)] = []
    ) {
        self.trace = trace
        self.profile = profile
        self.platform = platform
        self.limits = limits
        self.seed = seed
        self.priorityMix = priorityMix
    }

    /// Parses a mix written as `priority:share` pairs, e.g. "9:0.2,0:0.8" (shares are normalised).
    public static func parsePriorityMix(_ text: String) throws(ConfigError) -> [(priority: Int32, share: Double)] {
        var mix: [(priority: Int32, share: Double)] = []
        for part in text.split(separator: ",") {
            let pair = part.split(separator: ":")
            guard pair.count == 2, let p = Int32(pair[0].trimmingCharacters(in: .whitespaces)),
                let share = Double(pair[1].trimmingCharacters(in: .whitespaces)), share > 0, share.isFinite
            else {
                throw ConfigError(
                    message: "'\(part)' is not priority:share (an integer and a positive number), e.g. 9:0.2")
            }
            mix.append((p, share))
        }
        if mix.isEmpty { throw ConfigError(message: "a priority mix needs at least one priority:share pair") }
        return mix
    }
}

/// Requests and SLA misses of one priority in a run.
public struct PriorityOutcome: Sendable, Equatable {
    public var priority: Int32
    public var requests: Int
    public var misses: Int
    public var missPercent: Double { requests == 0 ? 0 : 100 * Double(misses) / Double(requests) }

    public init(priority: Int32, requests: Int, misses: Int) {
        self.priority = priority
        self.requests = requests
        self.misses = misses
    }
}

public struct SimulationResult: Sendable {
    public var policy: String
    public var trace: String
    public var profile: String
    public var sloMillis: Double
    public var requests: Int
    public var served: Int
    public var shed: Int
    public var misses: Int
    public var p50Millis: Double
    public var p99Millis: Double
    public var maxMillis: Double
    public var replicaSeconds: Double
    public var averageReplicas: Double
    public var batches: Int
    public var meanBatch: Double
    /// Batches by size: 1, 2-3, 4-7, 8-15, ... (powers of two).
    public var histogram: [Int]
    /// Per second: requests finished, mean latency (ms), replicas, and the mean number of batches in
    /// flight (the concurrency the autoscaler counts), for plots.
    public var timeline:
        [(second: Int, finished: Int, meanLatencyMillis: Double, replicas: Double, concurrency: Double)]
    /// Per priority, highest first, when the setup had a priority mix (else empty).
    public var byPriority: [PriorityOutcome] = []

    public var missPercent: Double { requests == 0 ? 0 : 100 * Double(misses) / Double(requests) }
}

/// A binary min-heap of events by (time, sequence), so equal times keep their order.
struct EventHeap<E> {
    private var items: [(time: Int64, seq: Int, event: E)] = []
    private var seq = 0

    var isEmpty: Bool { items.isEmpty }

    mutating func push(_ time: Int64, _ event: E) {
        seq += 1
        items.append((time, seq, event))
        var i = items.count - 1
        while i > 0 {
            let p = (i - 1) / 2
            if less(i, p) {
                items.swapAt(i, p)
                i = p
            } else {
                break
            }
        }
    }

    mutating func pop() -> (time: Int64, event: E)? {
        guard !items.isEmpty else { return nil }
        items.swapAt(0, items.count - 1)
        let top = items.removeLast()
        var i = 0
        while true {
            let l = 2 * i + 1
            let r = l + 1
            var m = i
            if l < items.count && less(l, m) { m = l }
            if r < items.count && less(r, m) { m = r }
            if m == i { break }
            items.swapAt(i, m)
            i = m
        }
        return (top.time, top.event)
    }

    private func less(_ a: Int, _ b: Int) -> Bool {
        items[a].time < items[b].time || (items[a].time == items[b].time && items[a].seq < items[b].seq)
    }
}

public enum Simulator {
    private enum Event {
        case arrival(Int)
        case wake(proxy: Int, generation: Int)
        case done(batch: Int, replica: Int)
        case tick
        case ready
    }

    private struct Batch {
        let proxy: Int
        let entries: [QueueEntry<Int>]
        let items: Int
        let dispatched: Int64
    }

    /// Runs one policy through one setup. Deterministic for the setup's seed.
    public static func run(policyName: String, policy: BatchingPolicy, setup: SimulationSetup) -> SimulationResult {
        run(policyName: policyName, proxies: [policy], setup: setup)
    }

    /// Runs several proxies in front of one platform, each with its own queue and its own instance
    /// of the policy (one per entry of `proxies`): the trace's requests go to them round-robin, as a
    /// load balancer without model affinity spreads one model's traffic over proxy replicas. Each
    /// proxy batches only what it receives. With one proxy this is `run(policyName:policy:setup:)`.
    public static func run(policyName: String, proxies: [BatchingPolicy], setup: SimulationSetup) -> SimulationResult {
        let arrivals = setup.trace.arrivals(seed: setup.seed)
        var rng = SplitMix64(seed: setup.seed &+ 0x5EED)
        // Each request's priority, from its own stream (so a mix leaves every other draw as it was).
        var priorities: [Int32] = []
        if !setup.priorityMix.isEmpty {
            var draw = SplitMix64(seed: setup.seed &+ 0x9B1_0B17)
            let total = setup.priorityMix.reduce(0) { $0 + $1.share }
            priorities = arrivals.indices.map { _ in
                var u = draw.nextUnit() * total
                for (p, share) in setup.priorityMix {
                    if u < share { return p }
                    u -= share
                }
                return setup.priorityMix.last!.priority
            }
        }
        var outcomes: [Int32: (requests: Int, misses: Int)] = [:]
        func outcome(_ i: Int, missed: Bool) {
            guard !priorities.isEmpty else { return }
            outcomes[priorities[i], default: (0, 0)].requests += 1
            if missed { outcomes[priorities[i], default: (0, 0)].misses += 1 }
        }
        let queues = proxies.map { ModelQueue<Int>(limits: setup.limits, policy: $0) }
        let platform = KnativePlatform(config: setup.platform)
        var events = EventHeap<Event>()
        var batches: [Int: Batch] = [:]
        var nextBatch = 0
        var wakes = Array(repeating: WakeSchedule(), count: queues.count)
        var latencies: [Int64] = []
        latencies.reserveCapacity(arrivals.count)
        var shed = 0
        var misses = 0
        var histogram = BatchSizeHistogram()
        var batchCount = 0
        var batchItems = 0
        var perSecond: [Int: (n: Int, latency: Double)] = [:]
        var replicasBySecond: [Int: Double] = [:]
        let slo = setup.limits.sloNanos
        var lastTime: Int64 = 0
        let end = Int64(setup.trace.durationSeconds * 1e9)

        if let first = arrivals.first { events.push(first, .arrival(0)) }
        if case .knative = setup.platform.mode { events.push(setup.platform.tickNanos, .tick) }

        func start(_ id: Int, on replica: Int, at t: Int64) {
            let b = batches[id]!
            events.push(t + setup.profile.sampleNanos(items: b.items, rng: &rng), .done(batch: id, replica: replica))
        }

        func apply(_ effects: [QueueEffect<Int>], proxy: Int, at t: Int64) {
            for effect in effects {
                switch effect {
                case .dispatch(let entries, _):
                    let items = entries.reduce(0) { $0 + $1.items }
                    let id = nextBatch
                    nextBatch += 1
                    batches[id] = Batch(proxy: proxy, entries: entries, items: items, dispatched: t)
                    batchCount += 1
                    batchItems += items
                    histogram.add(items: items)
                    switch platform.submit(id, at: t) {
                    case .started(let replica): start(id, on: replica, at: t)
                    case .queued(let readyAt): if let r = readyAt { events.push(r, .ready) }
                    }
                case .reject(let entries, _):
                    shed += entries.count
                    misses += entries.count
                    for e in entries { outcome(e.payload, missed: true) }
                case .wake: break
                }
            }
            // A cancelled timer stays in the heap; `fired` tells it is stale when it comes up.
            if case .arm(let at, let generation) = wakes[proxy].update(after: effects) {
                events.push(at, .wake(proxy: proxy, generation: generation))
            }
        }
        var queued: Int { queues.reduce(0) { $0 + $1.count } }

        while let (t, event) = events.pop() {
            // A timer left over once everything is answered ends nothing: it must not stretch the run.
            if case .wake = event, queued == 0, batches.isEmpty { continue }
            lastTime = t
            switch event {
            case .arrival(let i):
                if i + 1 < arrivals.count { events.push(arrivals[i + 1], .arrival(i + 1)) }
                let proxy = i % queues.count
                let queue = queues[proxy]
                if let refused = queue.admit(
                    items: 1, arrival: t, timeoutMicros: nil, priority: priorities.isEmpty ? 0 : priorities[i],
                    batchKey: "", payload: i)
                {
                    _ = refused
                    shed += 1
                    misses += 1
                    outcome(i, missed: true)
                } else {
                    apply(queue.pump(now: t), proxy: proxy, at: t)
                }
            case .wake(let proxy, let generation):
                guard wakes[proxy].fired(generation: generation) else { continue }
                apply(queues[proxy].pump(now: t), proxy: proxy, at: t)
            case .done(let id, let replica):
                let b = batches.removeValue(forKey: id)!
                for e in b.entries {
                    let latency = t - e.arrival
                    latencies.append(latency)
                    if latency > slo { misses += 1 }
                    outcome(e.payload, missed: latency > slo)
                    let sec = Int(t / 1_000_000_000)
                    let cur = perSecond[sec] ?? (0, 0)
                    perSecond[sec] = (cur.n + 1, cur.latency + Double(latency) / 1e6)
                }
                queues[b.proxy].batchFinished(
                    items: b.items, arrivals: b.entries.map(\.arrival), ok: true, dispatched: b.dispatched, finished: t)
                if let next = platform.finish(replica: replica, at: t) { start(next, on: replica, at: t) }
                apply(queues[b.proxy].pump(now: t), proxy: b.proxy, at: t)
            case .tick:
                for readyAt in platform.tick(at: t) { events.push(readyAt, .ready) }
                replicasBySecond[Int(t / 1_000_000_000)] = Double(platform.replicaCount)
                let busy = queued > 0 || !batches.isEmpty
                if t < end || busy { events.push(t + setup.platform.tickNanos, .tick) }
            case .ready:
                for (id, replica) in platform.readyReplicas(at: t) { start(id, on: replica, at: t) }
            }
        }
        platform.advance(to: max(lastTime, end))
        let duration = Double(max(lastTime, end)) / 1e9
        latencies.sort()
        func pct(_ p: Double) -> Double { nearestRank(latencies, p).map { Double($0) / 1e6 } ?? 0 }
        let seconds = perSecond.keys.sorted()
        var timeline: [(Int, Int, Double, Double, Double)] = []
        var replicas = 1.0
        for s in 0...(seconds.last ?? 0) {
            if let r = replicasBySecond[s] { replicas = r }
            if case .fixed(let n) = setup.platform.mode { replicas = Double(n) }
            let p = perSecond[s] ?? (0, 0)
            timeline.append(
                (s, p.n, p.n > 0 ? p.latency / Double(p.n) : 0, replicas, platform.concurrencySeconds(inSecond: s)))
        }
        var result = SimulationResult(
            policy: policyName, trace: setup.trace.name, profile: setup.profile.name,
            sloMillis: Double(slo) / 1e6, requests: arrivals.count, served: latencies.count, shed: shed, misses: misses,
            p50Millis: pct(0.5), p99Millis: pct(0.99), maxMillis: latencies.last.map { Double($0) / 1e6 } ?? 0,
            replicaSeconds: platform.replicaSeconds, averageReplicas: platform.replicaSeconds / max(duration, 1e-9),
            batches: batchCount, meanBatch: batchCount == 0 ? 0 : Double(batchItems) / Double(batchCount),
            histogram: histogram.trimmed, timeline: timeline)
        result.byPriority = outcomes.map {
            PriorityOutcome(priority: $0.key, requests: $0.value.requests, misses: $0.value.misses)
        }
        .sorted { $0.priority > $1.priority }
        return result
    }
}
