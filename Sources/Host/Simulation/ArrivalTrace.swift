import Foundation
import ProxyCore

/// Request rates over time: each rate (requests per second) is held for `segmentSeconds`, with
/// Poisson arrivals inside. Built-in shapes follow the research system's evaluation; a CSV gives
/// rates (one per line) or, with a `timestamp` header, exact arrival times in seconds.
public struct ArrivalTrace: Sendable {
    public enum Kind: String, CaseIterable, Sendable {
        case constant, worldcup, spike
        case dualPhase = "dual-phase"
        case largeVariations = "large-variations"
    }

    public let name: String
    public let rates: [Double]
    public let segmentSeconds: Double
    /// Exact arrival times (seconds), when the trace was recorded rather than generated.
    public let timestamps: [Double]?

    public var durationSeconds: Double {
        if let t = timestamps { return (t.last ?? 0) + 1 }
        return Double(rates.count) * segmentSeconds
    }

    public init(name: String, rates: [Double], segmentSeconds: Double = 60, timestamps: [Double]? = nil) {
        self.name = name
        self.rates = rates
        self.segmentSeconds = segmentSeconds
        self.timestamps = timestamps
    }

    /// A built-in shape around `baseRate`, `minutes` long, deterministic for `seed`.
    public static func make(_ kind: Kind, baseRate: Double, minutes: Int, seed: UInt64) -> ArrivalTrace {
        var rng = SplitMix64(seed: seed &+ 0x7A3E)
        let n = max(minutes, 1)
        var rates: [Double] = []
        switch kind {
        case .constant:
            rates = Array(repeating: baseRate, count: n)
        case .worldcup:
            // Slowly varying, like a day of the WorldCup98 logs: a slow wave with small wander.
            var wander = 0.0
            for i in 0..<n {
                wander = 0.9 * wander + 0.1 * rng.nextGaussian()
                let wave = 1 + 0.6 * sin(2 * .pi * Double(i) / Double(max(n, 12)) - .pi / 2)
                rates.append(max(0.05 * baseRate, baseRate * (wave + 0.15 * wander)))
            }
        case .spike:
            // Steady, then one minute at 8x around the middle.
            rates = Array(repeating: baseRate, count: n)
            rates[n / 2] = baseRate * 8
        case .dualPhase:
            rates = (0..<n).map { $0 < n / 2 ? baseRate * 0.4 : baseRate * 1.6 }
        case .largeVariations:
            rates = (0..<n).map { _ in baseRate * (0.1 + 1.9 * rng.nextUnit()) }
        }
        return ArrivalTrace(name: kind.rawValue, rates: rates)
    }

    /// Reads a CSV: one rate per line (req/s, held `segmentSeconds` each), or arrival times in
    /// seconds under a `timestamp` header.
    public static func load(csv path: String, segmentSeconds: Double = 60) throws -> ArrivalTrace {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw ConfigError(message: "\(path): cannot read the trace")
        }
        var lines = text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.filter {
            !$0.isEmpty
        }
        let name = ((path as NSString).lastPathComponent as NSString).deletingPathExtension
        let timestamps = lines.first?.lowercased().hasPrefix("timestamp") == true
        if timestamps || lines.first.map({ Double($0.split(separator: ",")[0]) == nil }) == true { lines.removeFirst() }
        var values: [Double] = []
        for (i, line) in lines.enumerated() {
            guard let v = Double(line.split(separator: ",").first.map(String.init) ?? ""), v >= 0, v.isFinite else {
                throw ConfigError(message: "\(path): line \(i + 2): '\(line)' is not a non-negative number")
            }
            values.append(v)
        }
        if timestamps { return ArrivalTrace(name: name, rates: [], timestamps: values.sorted()) }
        return ArrivalTrace(name: name, rates: values, segmentSeconds: segmentSeconds)
    }

    /// Arrival times in nanoseconds, deterministic for `seed`.
    public func arrivals(seed: UInt64) -> [Int64] {
        if let t = timestamps { return t.map { Int64($0 * 1e9) } }
        var rng = SplitMix64(seed: seed)
        var out: [Int64] = []
        out.reserveCapacity(Int(rates.reduce(0, +) * segmentSeconds))
        for (i, rate) in rates.enumerated() where rate > 0 {
            let start = Double(i) * segmentSeconds
            let end = start + segmentSeconds
            var t = start + rng.nextExponential(mean: 1 / rate)
            while t < end {
                out.append(Int64(t * 1e9))
                t += rng.nextExponential(mean: 1 / rate)
            }
        }
        return out
    }
}
