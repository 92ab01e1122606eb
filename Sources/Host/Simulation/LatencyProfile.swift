/// Upstream latency as a function of batch items: linear between measured points, extrapolated
/// past the last by the last segment's slope, flat below the first; optional relative noise.
/// The built-in model server and the simulator share it.
public struct LatencyProfile: Sendable {
    public let name: String
    public let points: [(items: Int, ms: Double)]
    /// Standard deviation of the multiplicative noise (0.05 = 5%).
    public let noise: Double

    public init(name: String, points: [(items: Int, ms: Double)], noise: Double = 0) {
        self.name = name
        self.points = points.sorted { $0.items < $1.items }
        self.noise = noise
    }

    /// Profiles measured for the research system this follows, and a fast model.
    public static let toxic = LatencyProfile(
        name: "toxic", points: [(1, 40.4), (10, 46.3), (20, 57.4), (50, 88.8), (100, 139.4)], noise: 0.05)
    public static let iris = LatencyProfile(name: "iris", points: [(1, 8.6), (100, 10.1)], noise: 0.05)
    public static let fast = LatencyProfile(name: "fast", points: [(1, 2.0), (10, 2.5), (100, 6.0)], noise: 0.05)
    public static let builtIn = [toxic, iris, fast]

    public func millis(items n: Int) -> Double {
        guard let first = points.first, let last = points.last else { return 0 }
        if n <= first.items { return first.ms }
        if n >= last.items {
            guard points.count >= 2 else { return last.ms }
            let a = points[points.count - 2]
            return last.ms + (last.ms - a.ms) / Double(last.items - a.items) * Double(n - last.items)
        }
        let hi = points.firstIndex { $0.items >= n }!
        let a = points[hi - 1]
        let b = points[hi]
        return a.ms + (b.ms - a.ms) * Double(n - a.items) / Double(b.items - a.items)
    }

    /// One draw, in nanoseconds.
    public func sampleNanos(items n: Int, rng: inout SplitMix64) -> Int64 {
        var ms = millis(items: n)
        if noise > 0 { ms = max(0, ms * (1 + noise * rng.nextGaussian())) }
        return Int64(ms * 1e6)
    }
}
