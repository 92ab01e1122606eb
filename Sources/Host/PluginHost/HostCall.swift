import Logging
import NIOCore
import PluginAPI
import ProxyCore

/// Host state for one hook invocation: what the plugin may hand to the host during that call.
/// Plugins see it as an opaque `mlp_call *`; it lives on the calling thread's stack frame's watch
/// (created before the hook, read after it returns) and is never shared between threads.
final class HostCall {
    enum Mode { case decodeRequest, encodeResponse, encodeUpstream, decodeUpstream, stage, policy, create }

    let mode: Mode
    /// What the hook works for, prefixed to the plugin's log lines (e.g. "policy 'x'").
    var context: String?
    var error: String?
    // Tensors from decode_request / decode_response / stage apply.
    var tensors: [Tensor] = []
    // A stage's inputs, which pass_tensor hands on.
    var stageInputs: [Tensor] = []
    // Request metadata from decode_request.
    var id: [UInt8]?
    var priority: Int32 = 0
    var timeoutMicros: Int64?
    var requestedOutputs: [String] = []
    var parametersJSON: [UInt8]?
    var codecState: [UInt8]?
    // Message produced by encode_response / encode_request.
    var body: ByteBuffer
    var headers: [(String, String)] = []
    var path: String?

    init(mode: Mode, allocator: ByteBufferAllocator = ByteBufferAllocator(), bodyCapacity: Int = 0) {
        self.mode = mode
        self.body = allocator.buffer(capacity: bodyCapacity)
    }

    /// A call that writes a message from `tensors` (encode_response, encode_request), its body buffer
    /// sized for them up front: about three bytes of text per byte of tensor data covers JSON numbers,
    /// and binary bodies fit well inside it, so the plugin rarely makes the buffer grow.
    convenience init(encoding mode: Mode, tensors: [Tensor], allocator: ByteBufferAllocator) {
        self.init(mode: mode, allocator: allocator, bodyCapacity: 128 + tensors.reduce(0) { $0 + $1.byteCount * 3 })
    }

    var acceptsTensors: Bool { mode == .decodeRequest || mode == .decodeUpstream || mode == .stage }
    var producesMessage: Bool { mode == .encodeResponse || mode == .encodeUpstream }

    /// Runs `body` with this call as an `mlp_call *`.
    func withPointer<R>(_ body: (OpaquePointer) throws -> R) rethrows -> R {
        try withExtendedLifetime(self) { try body(OpaquePointer(Unmanaged.passUnretained(self).toOpaque())) }
    }

    static func from(_ p: OpaquePointer?) -> HostCall? {
        guard let p else { return nil }
        return Unmanaged<HostCall>.fromOpaque(UnsafeRawPointer(p)).takeUnretainedValue()
    }

    /// What the plugin said about its failure, or a generic line naming the status.
    func failureMessage(_ status: PluginStatus, what: String) -> String {
        error ?? "\(what) failed with status \(status)"
    }

    /// A failed hook as the client's error.
    func failure(_ status: PluginStatus, what: String) -> RequestError {
        RequestError(RequestError.Kind(status), failureMessage(status, what: what))
    }
}

extension RequestError.Kind {
    /// The outcome a plugin's status code stands for (the table in include/mlproxy/mlproxy.h).
    init(_ status: PluginStatus) {
        switch status {
        case .invalidInput: self = .invalid
        case .unsupported: self = .unsupported
        case .upstream: self = .upstreamError
        case .ok, .config, .noMemory, .internal: self = .internal
        }
    }
}

private func string(_ b: mlp_bytes) -> String {
    guard let p = b.ptr, b.len > 0 else { return "" }
    return String(decoding: UnsafeBufferPointer(start: p, count: b.len), as: UTF8.self)
}

private func bytes(_ b: mlp_bytes) -> [UInt8] {
    guard let p = b.ptr, b.len > 0 else { return [] }
    return Array(UnsafeBufferPointer(start: p, count: b.len))
}

let pluginLogger = Logger(label: "mlproxy.plugin")

/// The function table handed to every plugin. Allocated once, never freed (plugins keep it until
/// the process exits).
nonisolated(unsafe) let hostAPITable: UnsafeMutablePointer<mlp_host_api> = {
    let t = UnsafeMutablePointer<mlp_host_api>.allocate(capacity: 1)
    t.initialize(to: mlp_host_api())
    t.pointee.struct_size = UInt32(MemoryLayout<mlp_host_api>.size)
    t.pointee.abi_major = ABIVersion.major
    t.pointee.abi_minor = ABIVersion.minor
    t.pointee.log = { call, level, msg, len in
        guard let msg else { return }
        var text = String(decoding: UnsafeRawBufferPointer(start: msg, count: len), as: UTF8.self)
        if let context = HostCall.from(call)?.context { text = "\(context): \(text)" }
        switch level {
        case MLP_LOG_DEBUG.rawValue: pluginLogger.debug("\(text)")
        case MLP_LOG_INFO.rawValue: pluginLogger.info("\(text)")
        case MLP_LOG_WARNING.rawValue: pluginLogger.warning("\(text)")
        default: pluginLogger.error("\(text)")
        }
    }
    t.pointee.set_error = { call, msg, len in
        guard let c = HostCall.from(call), let msg else { return }
        c.error = String(decoding: UnsafeRawBufferPointer(start: msg, count: len), as: UTF8.self)
    }
    t.pointee.add_tensor = { call, desc in
        guard let c = HostCall.from(call), c.acceptsTensors, let d = desc?.pointee else { return nil }
        guard d.struct_size >= UInt32(MemoryLayout<mlp_tensor_desc>.size),
            let dt = DataType(rawValue: d.datatype), d.rank <= 32,
            d.byte_size <= 1 << 40
        else {
            c.error = c.error ?? "plugin described an invalid tensor"
            return nil
        }
        let shape = (0..<Int(d.rank)).map { d.shape![$0] }
        let storage = TensorStorage(count: Int(d.byte_size))
        c.tensors.append(Tensor(name: string(d.name), datatype: dt, shape: shape, storage: storage))
        return storage.base.assumingMemoryBound(to: UInt8.self)
    }
    t.pointee.write = { call, data, len in
        guard let c = HostCall.from(call), c.producesMessage else { return MLP_ERR_INTERNAL }
        if len > 0, let data { c.body.writeBytes(UnsafeRawBufferPointer(start: data, count: len)) }
        return MLP_OK
    }
    t.pointee.set_header = { call, name, value in
        guard let c = HostCall.from(call), c.producesMessage else { return MLP_ERR_INTERNAL }
        c.headers.append((string(name), string(value)))
        return MLP_OK
    }
    t.pointee.set_path = { call, path in
        guard let c = HostCall.from(call), c.mode == .encodeUpstream else { return MLP_ERR_INTERNAL }
        c.path = string(path)
        return MLP_OK
    }
    t.pointee.set_id = { call, id in
        guard let c = HostCall.from(call), c.mode == .decodeRequest else { return MLP_ERR_INTERNAL }
        c.id = bytes(id)
        return MLP_OK
    }
    t.pointee.set_request_int = { call, key, value in
        guard let c = HostCall.from(call), c.mode == .decodeRequest else { return MLP_ERR_INTERNAL }
        switch key {
        case MLP_REQ_PRIORITY.rawValue: c.priority = Int32(clamping: value)
        case MLP_REQ_TIMEOUT_US.rawValue: c.timeoutMicros = value
        default: return MLP_ERR_UNSUPPORTED
        }
        return MLP_OK
    }
    t.pointee.add_requested_output = { call, name in
        guard let c = HostCall.from(call), c.mode == .decodeRequest else { return MLP_ERR_INTERNAL }
        c.requestedOutputs.append(string(name))
        return MLP_OK
    }
    t.pointee.set_codec_state = { call, state in
        guard let c = HostCall.from(call), c.mode == .decodeRequest else { return MLP_ERR_INTERNAL }
        c.codecState = bytes(state)
        return MLP_OK
    }
    t.pointee.set_parameters_json = { call, json in
        guard let c = HostCall.from(call), c.mode == .decodeRequest || c.mode == .decodeUpstream
        else { return MLP_ERR_INTERNAL }
        c.parametersJSON = bytes(json)
        return MLP_OK
    }
    t.pointee.pass_tensor = { call, index in
        guard let c = HostCall.from(call), c.mode == .stage else { return MLP_ERR_INTERNAL }
        guard Int(index) < c.stageInputs.count else {
            c.error = c.error ?? "stage passed on tensor \(index) of \(c.stageInputs.count)"
            return MLP_ERR_INVALID_INPUT
        }
        c.tensors.append(c.stageInputs[Int(index)])
        return MLP_OK
    }
    return t
}()
