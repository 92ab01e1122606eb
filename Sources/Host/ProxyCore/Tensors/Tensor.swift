import PluginAPI

/// Host-owned bytes behind one or more tensors. Slices share it; it is freed when the last one goes.
public final class TensorStorage: @unchecked Sendable {
    // Written only while a plugin fills it inside one hook call, read-only afterwards.
    public let base: UnsafeMutableRawPointer
    public let count: Int

    public init(count: Int) {
        self.count = count
        self.base = UnsafeMutableRawPointer.allocate(byteCount: max(count, 1), alignment: 16)
    }

    public convenience init(bytes: UnsafeRawBufferPointer) {
        self.init(count: bytes.count)
        if let src = bytes.baseAddress, bytes.count > 0 { base.copyMemory(from: src, byteCount: bytes.count) }
    }

    deinit { base.deallocate() }
}

/// A named tensor in canonical form: row-major little-endian data, dim 0 is items.
public struct Tensor: Sendable {
    public var name: String
    public var datatype: DataType
    public var shape: [Int64]
    public let storage: TensorStorage
    public let offset: Int
    public let byteCount: Int

    public init(
        name: String, datatype: DataType, shape: [Int64], storage: TensorStorage,
        offset: Int = 0, byteCount: Int? = nil
    ) {
        self.name = name
        self.datatype = datatype
        self.shape = shape
        self.storage = storage
        self.offset = offset
        self.byteCount = byteCount ?? storage.count - offset
    }

    public var bytes: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: storage.base + offset, count: byteCount)
    }

    /// Elements in the tensor (product of the shape).
    public var elementCount: Int { shape.reduce(1) { $0 * Int($1) } }

    /// Elements in one item (product of the trailing dims).
    public var elementsPerItem: Int { shape.dropFirst().reduce(1) { $0 * Int($1) } }

    public var items: Int { shape.first.map(Int.init) ?? 0 }

    /// Checks that the data agrees with the shape; returns what is wrong, or nil.
    public func validate() -> String? {
        if shape.isEmpty { return "input '\(name)' has no dimensions; dim 0 must be the batch (item) dimension" }
        if shape.contains(where: { $0 < 0 }) { return "input '\(name)' has a negative dimension" }
        if let size = datatype.elementSize {
            let want = elementCount * size
            if want != byteCount {
                return "input '\(name)': shape \(shape) of \(datatype.name) needs \(want) bytes but has \(byteCount)"
            }
            return nil
        }
        guard let ends = bytesElementEnds() else {
            return "input '\(name)': BYTES data is truncated or does not hold \(elementCount) elements"
        }
        if ends.count != elementCount || (ends.last ?? 0) != byteCount {
            return
                "input '\(name)': BYTES data holds \(ends.count) elements but the shape \(shape) needs \(elementCount)"
        }
        return nil
    }

    /// End offset of each BYTES element (4-byte length + data), or nil when the data is malformed.
    func bytesElementEnds() -> [Int]? {
        var ends: [Int] = []
        ends.reserveCapacity(elementCount)
        let b = bytes
        var at = 0
        while at < b.count {
            guard b.count - at >= 4 else { return nil }
            let len = Int(b.loadUnaligned(fromByteOffset: at, as: UInt32.self).littleEndian)
            guard b.count - at - 4 >= len else { return nil }
            at += 4 + len
            ends.append(at)
        }
        return ends
    }

    /// Byte offset where each item (row along dim 0) starts, plus the end: items + 1 entries.
    public func itemOffsets() -> [Int]? {
        let n = items
        if let size = datatype.elementSize {
            let row = elementsPerItem * size
            return (0...n).map { $0 * row }
        }
        guard let ends = bytesElementEnds(), ends.count == elementCount else { return nil }
        let per = elementsPerItem
        var offsets = [0]
        offsets.reserveCapacity(n + 1)
        for i in 1...max(n, 1) where i <= n { offsets.append(per == 0 ? 0 : ends[i * per - 1]) }
        return offsets
    }

    /// A view of items [from, from + count) sharing this tensor's storage.
    public func slice(items from: Int, count: Int, offsets: [Int]) -> Tensor {
        var shape = self.shape
        shape[0] = Int64(count)
        let start = offsets[from]
        let end = offsets[from + count]
        return Tensor(
            name: name, datatype: datatype, shape: shape, storage: storage,
            offset: offset + start, byteCount: end - start)
    }

    /// Every element as a Double (BYTES elements count as their length). For tests and the simulator.
    public func doubles() -> [Double] {
        let b = bytes
        switch datatype {
        case .bool, .uint8: return b.map { Double($0) }
        case .int8: return b.map { Double(Int8(bitPattern: $0)) }
        case .uint16: return load(b, UInt16.self).map { Double($0) }
        case .int16: return load(b, Int16.self).map { Double($0) }
        case .uint32: return load(b, UInt32.self).map { Double($0) }
        case .int32: return load(b, Int32.self).map { Double($0) }
        case .uint64: return load(b, UInt64.self).map { Double($0) }
        case .int64: return load(b, Int64.self).map { Double($0) }
        case .fp16: return load(b, UInt16.self).map { Double(Float(Float16(bitPattern: $0))) }
        case .fp32: return load(b, Float.self).map { Double($0) }
        case .fp64: return load(b, Double.self)
        case .bytes:
            var prev = 0
            return (bytesElementEnds() ?? []).map { end in
                defer { prev = end }
                return Double(end - prev - 4)
            }
        }
    }

    private func load<T>(_ b: UnsafeRawBufferPointer, _: T.Type) -> [T] {
        let n = b.count / MemoryLayout<T>.size
        return (0..<n).map { b.loadUnaligned(fromByteOffset: $0 * MemoryLayout<T>.size, as: T.self) }
    }

    /// A tensor built from Doubles, for tests and the simulator.
    public static func fp64(name: String, shape: [Int64], values: [Double]) -> Tensor {
        let storage = TensorStorage(count: values.count * 8)
        values.withUnsafeBytes { storage.base.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        return Tensor(name: name, datatype: .fp64, shape: shape, storage: storage)
    }
}
