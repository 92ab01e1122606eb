/// Batch sizes in power-of-two buckets: bucket k counts batches of 2^k ..< 2^(k+1) items, the last
/// bucket everything larger. The simulator reports it per policy and the built-in model server per
/// run, in the same shape, so a live run and its simulation can be compared bucket by bucket.
public struct BatchSizeHistogram: Sendable, Equatable {
    public private(set) var counts: [Int]

    public init(buckets: Int = 18) { counts = Array(repeating: 0, count: max(buckets, 1)) }

    public mutating func add(items: Int) {
        guard items > 0 else { return }
        counts[min(counts.count - 1, Int.bitWidth - 1 - items.leadingZeroBitCount)] += 1
    }

    /// The counts without the empty buckets at the large end.
    public var trimmed: [Int] {
        var c = counts
        while c.count > 1 && c.last == 0 { c.removeLast() }
        return c
    }
}
