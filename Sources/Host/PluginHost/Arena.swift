import PluginAPI
import ProxyCore

/// Scratch memory for marshalling Swift values into the borrowed pointers of one C call. Everything
/// it hands out is freed together when the arena is released, after the call returns.
final class Arena {
    private var blocks: [UnsafeMutableRawPointer] = []

    deinit { for b in blocks { b.deallocate() } }

    func bytes(_ s: String) -> mlp_bytes {
        var s = s
        return s.withUTF8 { bytes(UnsafeRawBufferPointer($0)) }
    }

    func bytes(_ a: [UInt8]?) -> mlp_bytes {
        guard let a, !a.isEmpty else { return mlp_bytes(ptr: nil, len: 0) }
        return a.withUnsafeBytes { bytes($0) }
    }

    func bytes(_ raw: UnsafeRawBufferPointer) -> mlp_bytes {
        guard raw.count > 0, let src = raw.baseAddress else { return mlp_bytes(ptr: nil, len: 0) }
        let p = UnsafeMutableRawPointer.allocate(byteCount: raw.count, alignment: 1)
        p.copyMemory(from: src, byteCount: raw.count)
        blocks.append(p)
        return mlp_bytes(ptr: UnsafePointer(p.assumingMemoryBound(to: UInt8.self)), len: raw.count)
    }

    func array<T>(_ values: [T]) -> UnsafeMutablePointer<T> {
        let p = UnsafeMutablePointer<T>.allocate(capacity: max(values.count, 1))
        p.initialize(from: values, count: values.count)
        blocks.append(UnsafeMutableRawPointer(p))
        return p
    }

    /// HTTP headers as the ABI passes them: names lowercased.
    func headers(_ hs: [(String, String)]) -> UnsafePointer<mlp_header> {
        UnsafePointer(array(hs.map { mlp_header(name: bytes($0.0.lowercased()), value: bytes($0.1)) }))
    }

    /// C views of tensors; their data stays in the tensors' storage, which the caller keeps alive.
    func tensors(_ ts: [Tensor]) -> UnsafeMutablePointer<mlp_tensor> {
        array(
            ts.map { t in
                var c = mlp_tensor()
                c.struct_size = UInt32(MemoryLayout<mlp_tensor>.size)
                c.datatype = t.datatype.rawValue
                c.name = bytes(t.name)
                c.shape = UnsafePointer(array(t.shape))
                c.rank = UInt32(t.shape.count)
                c.data = mlp_bytes(ptr: t.bytes.baseAddress?.assumingMemoryBound(to: UInt8.self), len: t.byteCount)
                return c
            })
    }
}
