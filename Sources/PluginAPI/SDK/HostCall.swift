@_exported import MLProxyABI

/// A hook's failure: the status the host maps to the client's HTTP status (the table in
/// include/mlproxy/mlproxy.h) and the message the client reads. Any other error a hook throws is
/// reported as MLP_ERR_INTERNAL with its description.
public struct PluginError: Error, Sendable, CustomStringConvertible {
    public var status: mlp_status
    public var message: String

    public init(_ status: mlp_status, _ message: String) {
        self.status = status
        self.message = message
    }

    /// The request is malformed: 400.
    public static func invalidInput(_ message: String) -> PluginError { PluginError(MLP_ERR_INVALID_INPUT, message) }
    /// A content type, datatype or feature this plugin does not handle: 415.
    public static func unsupported(_ message: String) -> PluginError { PluginError(MLP_ERR_UNSUPPORTED, message) }
    /// The model server answered with an error or garbage: 502.
    public static func upstream(_ message: String) -> PluginError { PluginError(MLP_ERR_UPSTREAM, message) }
    /// A bad configuration at create time: the model does not start.
    public static func config(_ message: String) -> PluginError { PluginError(MLP_ERR_CONFIG, message) }
    /// A bug in the plugin: 500.
    public static func `internal`(_ message: String) -> PluginError { PluginError(MLP_ERR_INTERNAL, message) }

    public var description: String { message }
}

/// The host's side of one hook invocation (the C `mlp_call *` with the host's function table).
/// Valid only during that hook, on its thread: never keep it.
public struct HostCall {
    let api: UnsafePointer<mlp_host_api>
    let call: OpaquePointer?

    init(_ api: UnsafePointer<mlp_host_api>, _ call: OpaquePointer?) {
        self.api = api
        self.call = call
    }

    /// Writes a line to the proxy's log, prefixed with what the hook works for when the host knows it.
    public func log(_ level: mlp_log_level, _ message: String) {
        var m = message
        m.withUTF8 {
            api.pointee.log(
                call, level.rawValue, UnsafeRawPointer($0.baseAddress)?.assumingMemoryBound(to: CChar.self), $0.count)
        }
    }

    /// Allocates an output tensor in host memory and returns its data area, `byteCount` bytes the
    /// hook must fill before it returns. Valid in a codec's decodeRequest, a backend's
    /// decodeResponse and a stage's apply.
    public func addTensor(
        name: String, datatype: mlp_datatype, shape: [Int64], byteCount: Int
    ) throws(PluginError) -> UnsafeMutableRawBufferPointer {
        var name = name
        let data: UnsafeMutablePointer<UInt8>? = name.withUTF8 { n in
            shape.withUnsafeBufferPointer { dims in
                var desc = mlp_tensor_desc()
                desc.struct_size = UInt32(MemoryLayout<mlp_tensor_desc>.size)
                desc.datatype = datatype.rawValue
                desc.name = mlp_bytes(ptr: n.baseAddress, len: n.count)
                desc.shape = dims.baseAddress
                desc.rank = UInt32(dims.count)
                desc.byte_size = byteCount
                return api.pointee.add_tensor(call, &desc)
            }
        }
        // The host recorded why (as set_error would); this status is what the client sees otherwise.
        guard let data else { throw PluginError(MLP_ERR_NOMEM, "the host refused tensor '\(name)'") }
        return UnsafeMutableRawBufferPointer(start: data, count: byteCount)
    }

    /// Hands a stage's input tensor `index` on unchanged, without a copy. Valid in a stage's apply.
    public func passTensor(_ index: Int) throws(PluginError) {
        try check(api.pointee.pass_tensor(call, UInt32(index)), "pass_tensor(\(index))")
    }

    /// Appends bytes to the body being produced. Valid in encodeResponse and encodeRequest.
    public func write(_ bytes: UnsafeRawBufferPointer) throws(PluginError) {
        try check(api.pointee.write(call, bytes.baseAddress, bytes.count), "write")
    }

    public func write(_ text: String) throws(PluginError) {
        var text = text
        let status = text.withUTF8 { api.pointee.write(call, $0.baseAddress, $0.count) }
        try check(status, "write")
    }

    /// Sets a header on the message being produced (content-type included).
    public func setHeader(_ name: String, _ value: String) throws(PluginError) {
        let status = withBytes(name) { n in withBytes(value) { v in api.pointee.set_header(call, n, v) } }
        try check(status, "set_header")
    }

    /// Sets the upstream request's path. Valid in a backend's encodeRequest.
    public func setPath(_ path: String) throws(PluginError) {
        try check(withBytes(path) { api.pointee.set_path(call, $0) }, "set_path")
    }

    /// The client's request id, echoed in its response. Valid in decodeRequest.
    public func setID(_ id: String) throws(PluginError) {
        try check(withBytes(id) { api.pointee.set_id(call, $0) }, "set_id")
    }

    /// Request metadata (`mlp_request_key`): the client's priority, or its timeout in microseconds.
    public func setRequestInt(_ key: mlp_request_key, _ value: Int64) throws(PluginError) {
        try check(api.pointee.set_request_int(call, key.rawValue, value), "set_request_int")
    }

    /// An output the client wants (none named means all). Valid in decodeRequest.
    public func addRequestedOutput(_ name: String) throws(PluginError) {
        try check(withBytes(name) { api.pointee.add_requested_output(call, $0) }, "add_requested_output")
    }

    /// Request-level (decodeRequest) or response-level (backend decodeResponse) parameters, a JSON
    /// object's text.
    public func setParametersJSON(_ json: String) throws(PluginError) {
        try check(withBytes(json) { api.pointee.set_parameters_json(call, $0) }, "set_parameters_json")
    }

    /// Bytes this codec's encodeResponse gets back for the same request. Valid in decodeRequest.
    public func setCodecState(_ state: [UInt8]) throws(PluginError) {
        let status = state.withUnsafeBufferPointer {
            api.pointee.set_codec_state(call, mlp_bytes(ptr: $0.baseAddress, len: $0.count))
        }
        try check(status, "set_codec_state")
    }

    /// Records the message the client reads for this hook's failure.
    func setError(_ message: String) {
        var m = message
        m.withUTF8 {
            api.pointee.set_error(call, UnsafeRawPointer($0.baseAddress)?.assumingMemoryBound(to: CChar.self), $0.count)
        }
    }

    private func check(_ status: mlp_status, _ what: String) throws(PluginError) {
        guard status == MLP_OK else { throw PluginError(status, "host \(what) failed with status \(status.rawValue)") }
    }

    private func withBytes<R>(_ s: String, _ body: (mlp_bytes) -> R) -> R {
        var s = s
        return s.withUTF8 { body(mlp_bytes(ptr: $0.baseAddress, len: $0.count)) }
    }

    /// Runs a hook's body and turns what it throws into a status, its message handed to the host.
    func run(_ what: String, _ body: () throws -> Void) -> mlp_status {
        do {
            try body()
            return MLP_OK
        } catch let e as PluginError {
            setError(e.message)
            return e.status == MLP_OK ? MLP_ERR_INTERNAL : e.status
        } catch {
            setError("\(what): \(error)")
            return MLP_ERR_INTERNAL
        }
    }
}

/// Bytes the host lends for the duration of a hook.
extension mlp_bytes {
    /// The bytes as a buffer (empty when there are none). Borrowed: valid while the hook runs.
    public var buffer: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: ptr, count: ptr == nil ? 0 : len) }
    /// The bytes as UTF-8 text (a copy).
    public var string: String { String(decoding: buffer, as: UTF8.self) }
}
