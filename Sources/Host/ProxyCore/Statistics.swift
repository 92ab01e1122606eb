/// The nearest-rank percentile of `sorted` (ascending): the value at rank ceil(q n), so at least a
/// fraction `q` of the values are at or below it; nil when there are none. The one rule the host,
/// the simulator, the load generator and (as `quantile_of` in C) the bundled policies use.
@inlinable public func nearestRank<T>(_ sorted: [T], _ q: Double) -> T? {
    guard !sorted.isEmpty else { return nil }
    return sorted[min(sorted.count - 1, max(0, Int((q * Double(sorted.count)).rounded(.up)) - 1))]
}
