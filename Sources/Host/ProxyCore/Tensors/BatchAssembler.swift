import PluginAPI

/// Merges requests' inputs along dim 0 into one batch, and splits the batch's outputs back by each
/// request's item count. Requests are only merged when their batch keys match (same input names,
/// datatypes and trailing dims, or only ranks when the model pads), which the queue guarantees.
public enum BatchAssembler {
    /// What makes requests batchable together: input names, datatypes and trailing dims. With
    /// `padded`, only the rank counts: merge pads smaller trailing dims up to the batch's largest.
    public static func batchKey(of inputs: [Tensor], padded: Bool = false) -> String {
        inputs.sorted { $0.name < $1.name }
            .map { t in
                let dims = padded ? "rank\(t.shape.count)" : t.shape.dropFirst().map(String.init).joined(separator: "x")
                return "\(t.name):\(t.datatype.rawValue):\(dims)"
            }
            .joined(separator: "|")
    }

    /// Checks one request's decoded inputs: data agrees with shapes, one shared dim 0 of at least 1.
    /// Returns the item count or a message saying what is wrong.
    public static func validate(inputs: [Tensor]) throws(RequestError) -> Int {
        guard let first = inputs.first else { throw .invalid("the request has no inputs") }
        var names = Set<String>()
        for t in inputs {
            if let problem = t.validate() { throw .invalid(problem) }
            if !names.insert(t.name).inserted { throw .invalid("input '\(t.name)' appears twice") }
            if t.shape[0] != first.shape[0] {
                throw
                    .invalid(
                        "inputs disagree on dim 0 (items): '\(first.name)' has \(first.shape[0]), '\(t.name)' "
                            + "has \(t.shape[0])"
                    )
            }
        }
        if first.shape[0] < 1 { throw .invalid("input '\(first.name)' has 0 items in dim 0") }
        return Int(first.shape[0])
    }

    /// Concatenates along dim 0. A batch of one request is passed through without copying. With
    /// `padValue`, inputs whose trailing dims differ are first padded at the end of each dim to the
    /// batch's largest (BYTES with empty elements).
    public static func merge(_ requests: [[Tensor]], padValue: Double? = nil) -> [Tensor] {
        guard requests.count > 1, let first = requests.first else { return requests.first ?? [] }
        return first.map { proto in
            var parts = requests.map { inputs in inputs.first { $0.name == proto.name }! }
            if let padValue {
                var target = proto.shape
                for p in parts { for d in 1..<target.count { target[d] = max(target[d], p.shape[d]) } }
                parts = parts.map { pad($0, to: target, value: padValue) }
            }
            let total = parts.reduce(0) { $0 + $1.byteCount }
            let storage = TensorStorage(count: total)
            var at = 0
            for p in parts {
                if p.byteCount > 0 {
                    (storage.base + at).copyMemory(from: p.bytes.baseAddress!, byteCount: p.byteCount)
                }
                at += p.byteCount
            }
            var shape = parts[0].shape  // padded, when padding
            shape[0] = parts.reduce(0) { $0 + $1.shape[0] }
            return Tensor(name: proto.name, datatype: proto.datatype, shape: shape, storage: storage)
        }
    }

    /// `t` with trailing dims grown to `target`'s (dim 0 kept), new elements set to `value`.
    static func pad(_ t: Tensor, to target: [Int64], value: Double) -> Tensor {
        var shape = target
        shape[0] = t.shape[0]
        guard shape != t.shape else { return t }
        let srcDims = t.shape.map(Int.init)
        let dstDims = shape.map(Int.init)
        let count = dstDims.reduce(1, *)
        // Row-major strides of the destination, to place each source element.
        var dstStride = Array(repeating: 1, count: dstDims.count)
        for d in stride(from: dstDims.count - 2, through: 0, by: -1) {
            dstStride[d] = dstStride[d + 1] * dstDims[d + 1]
        }
        // For each destination element, the source element it comes from, or -1 for padding.
        var source = Array(repeating: -1, count: count)
        var index = Array(repeating: 0, count: srcDims.count)
        for s in 0..<t.elementCount {
            source[zip(index, dstStride).reduce(0) { $0 + $1.0 * $1.1 }] = s
            var d = srcDims.count - 1
            while d >= 0 {
                index[d] += 1
                if index[d] < srcDims[d] { break }
                index[d] = 0
                d -= 1
            }
        }
        let src = t.bytes
        if let size = t.datatype.elementSize {
            let filler = padElement(t.datatype, value)
            let storage = TensorStorage(count: count * size)
            for (i, s) in source.enumerated() {
                let dst = UnsafeMutableRawBufferPointer(start: storage.base + i * size, count: size)
                if s >= 0 {
                    dst.copyMemory(from: UnsafeRawBufferPointer(rebasing: src[(s * size)..<(s * size + size)]))
                } else {
                    filler.withUnsafeBytes { dst.copyMemory(from: $0) }
                }
            }
            return Tensor(name: t.name, datatype: t.datatype, shape: shape, storage: storage)
        }
        // BYTES: elements are length-prefixed; padding is an empty element (a zero length).
        let ends = t.bytesElementEnds() ?? []
        let total = t.byteCount + source.filter { $0 < 0 }.count * 4
        let storage = TensorStorage(count: total)
        var at = 0
        for s in source {
            if s >= 0 {
                let start = s == 0 ? 0 : ends[s - 1]
                let len = ends[s] - start
                (storage.base + at).copyMemory(from: src.baseAddress! + start, byteCount: len)
                at += len
            } else {
                (storage.base + at).storeBytes(of: UInt32(0), as: UInt32.self)
                at += 4
            }
        }
        return Tensor(name: t.name, datatype: t.datatype, shape: shape, storage: storage)
    }

    /// One element of `value` in `datatype`'s little-endian encoding (not for BYTES).
    static func padElement(_ datatype: DataType, _ value: Double) -> [UInt8] {
        func le<T: FixedWidthInteger>(_ v: T) -> [UInt8] { withUnsafeBytes(of: v.littleEndian) { Array($0) } }
        switch datatype {
        case .bool: return [value != 0 ? 1 : 0]
        case .uint8: return le(UInt8(clamping: Int64(value)))
        case .int8: return le(Int8(clamping: Int64(value)))
        case .uint16: return le(UInt16(clamping: Int64(value)))
        case .int16: return le(Int16(clamping: Int64(value)))
        case .uint32: return le(UInt32(clamping: Int64(value)))
        case .int32: return le(Int32(clamping: Int64(value)))
        case .uint64: return le(UInt64(clamping: Int64(value)))
        case .int64: return le(Int64(value))
        case .fp16: return le(Float16(value).bitPattern)
        case .fp32: return le(Float(value).bitPattern)
        case .fp64: return le(value.bitPattern)
        case .bytes: return [0, 0, 0, 0]
        }
    }

    /// Splits outputs by item counts. Fails (for the whole batch: the reply cannot be attributed)
    /// when an output's dim 0 is not the batch's item count.
    public static func split(_ outputs: [Tensor], itemCounts: [Int]) throws(RequestError) -> [[Tensor]] {
        let total = itemCounts.reduce(0, +)
        var perRequest = Array(repeating: [Tensor](), count: itemCounts.count)
        for out in outputs {
            guard out.shape.first == Int64(total) else {
                throw
                    .upstream(
                        "the model server's output '\(out.name)' has dim 0 = "
                            + "\(out.shape.first.map(String.init) ?? "none") for a batch of \(total) items"
                    )
            }
            guard let offsets = out.itemOffsets(), offsets.last == out.byteCount else {
                throw
                    .upstream(
                        "the model server's output '\(out.name)' has data that does not match its shape \(out.shape)")
            }
            var at = 0
            for (i, n) in itemCounts.enumerated() {
                perRequest[i].append(out.slice(items: at, count: n, offsets: offsets))
                at += n
            }
        }
        return perRequest
    }
}
