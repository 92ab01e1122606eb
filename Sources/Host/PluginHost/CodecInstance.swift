import NIOCore
import PluginAPI
import ProxyCore

/// A client request after decoding.
public struct DecodedRequest: Sendable {
    public var inputs: [Tensor]
    public var id: [UInt8]?
    public var priority: Int32
    public var timeoutMicros: Int64?
    public var requestedOutputs: [String]
    public var parametersJSON: [UInt8]?
    /// What the codec keeps for encoding this request's response.
    public var codecState: [UInt8]?
}

/// A message a plugin produced: body and headers (and, upstream, a path).
public struct EncodedMessage: Sendable {
    public var body: ByteBuffer
    public var headers: [(String, String)]
    public var path: String?

    public var contentType: String? { headers.first { $0.0.lowercased() == "content-type" }?.1 }
}

/// A codec instance. Immutable after create, so calls may come from any event loop at once.
public final class CodecInstance: @unchecked Sendable {
    public let contentTypes: [String]
    /// The client endpoints it serves: "v2" or "tfserving".
    public let protocolName: String
    private let plugin: PluginInstance<mlp_codec_vtable>
    public var component: LoadedComponent { plugin.component }
    private var vtable: UnsafePointer<mlp_codec_vtable> { plugin.vtable }
    private var instance: UnsafeMutableRawPointer? { plugin.instance }

    public init(_ component: LoadedComponent, configJSON: String = "{}") throws {
        plugin = try PluginInstance(
            component, kind: .codec, configJSON: configJSON, create: \.create, destroy: \.destroy,
            destroyCall: \.destroy_call,
            required: { $0.pointee.decode_request != nil && $0.pointee.encode_response != nil })
        var types: [String] = []
        if var p = plugin.vtable.pointee.content_types {
            while let s = p.pointee {
                types.append(String(cString: s))
                p += 1
            }
        }
        contentTypes = types
        protocolName = plugin.hook(\.protocol).map { String(cString: $0) } ?? "v2"
    }

    public func decode(
        body: ByteBuffer, contentType: String?, model: String,
        headers: [(String, String)] = []
    ) throws(RequestError) -> DecodedRequest {
        let call = HostCall(mode: .decodeRequest)
        let arena = Arena()
        let status: mlp_status = body.withUnsafeReadableBytes { raw in
            var msg = mlp_request_message()
            msg.struct_size = UInt32(MemoryLayout<mlp_request_message>.size)
            msg.body = mlp_bytes(ptr: raw.baseAddress?.assumingMemoryBound(to: UInt8.self), len: raw.count)
            msg.content_type = arena.bytes(contentType ?? "")
            msg.model_name = arena.bytes(model)
            msg.headers = arena.headers(headers)
            msg.header_count = UInt32(headers.count)
            return call.withPointer { vtable.pointee.decode_request!(instance, $0, &msg) }
        }
        guard status == MLP_OK else {
            let s = PluginStatus(raw: status)
            throw call.failure(s == .upstream ? .invalidInput : s, what: "decoding the request")
        }
        return
            DecodedRequest(
                inputs: call.tensors, id: call.id, priority: call.priority,
                timeoutMicros: call.timeoutMicros,
                requestedOutputs: call.requestedOutputs,
                parametersJSON: call.parametersJSON, codecState: call.codecState)
    }

    public func encode(
        model: String, version: String, id: [UInt8]?, outputs: [Tensor],
        parametersJSON: [UInt8]?, codecState: [UInt8]? = nil,
        allocator: ByteBufferAllocator
    ) throws(RequestError) -> EncodedMessage {
        let call = HostCall(encoding: .encodeResponse, tensors: outputs, allocator: allocator)
        let arena = Arena()
        var view = mlp_response_view()
        view.struct_size = UInt32(MemoryLayout<mlp_response_view>.size)
        view.output_count = UInt32(outputs.count)
        view.model_name = arena.bytes(model)
        view.model_version = arena.bytes(version)
        view.id = arena.bytes(id)
        view.outputs = UnsafePointer(arena.tensors(outputs))
        view.tensor_stride = UInt32(MemoryLayout<mlp_tensor>.stride)
        view.parameters_json = arena.bytes(parametersJSON)
        view.codec_state = arena.bytes(codecState)
        let status = withExtendedLifetime(outputs) {
            call.withPointer { vtable.pointee.encode_response!(instance, $0, &view) }
        }
        guard status == MLP_OK else {
            throw call.failure(PluginStatus(raw: status), what: "encoding the response")
        }
        return EncodedMessage(body: call.body, headers: call.headers, path: nil)
    }
}
