import NIOCore
import PluginAPI
import ProxyCore

public struct UpstreamOutputs: Sendable {
    public var outputs: [Tensor]
    public var parametersJSON: [UInt8]?
}

/// A backend adapter instance. Immutable after create; calls may come from any event loop.
public final class BackendInstance: @unchecked Sendable {
    private let plugin: PluginInstance<mlp_backend_vtable>
    public var component: LoadedComponent { plugin.component }
    private var vtable: UnsafePointer<mlp_backend_vtable> { plugin.vtable }
    private var instance: UnsafeMutableRawPointer? { plugin.instance }

    public init(_ component: LoadedComponent, configJSON: String = "{}") throws {
        plugin = try PluginInstance(
            component, kind: .backend, configJSON: configJSON, create: \.create, destroy: \.destroy,
            destroyCall: \.destroy_call,
            required: { $0.pointee.encode_request != nil && $0.pointee.decode_response != nil })
    }

    public func encode(
        inputs: [Tensor], items: Int, model: String, version: String,
        requestedOutputs: [String], allocator: ByteBufferAllocator
    ) throws(RequestError) -> EncodedMessage {
        let call = HostCall(encoding: .encodeUpstream, tensors: inputs, allocator: allocator)
        let arena = Arena()
        var view = mlp_batch_view()
        view.struct_size = UInt32(MemoryLayout<mlp_batch_view>.size)
        view.input_count = UInt32(inputs.count)
        view.model_name = arena.bytes(model)
        view.model_version = arena.bytes(version)
        view.inputs = UnsafePointer(arena.tensors(inputs))
        view.tensor_stride = UInt32(MemoryLayout<mlp_tensor>.stride)
        view.batch_items = UInt32(items)
        view.requested_outputs = UnsafePointer(arena.array(requestedOutputs.map { arena.bytes($0) }))
        view.requested_output_count = UInt32(requestedOutputs.count)
        let status = withExtendedLifetime(inputs) {
            call.withPointer { vtable.pointee.encode_request!(instance, $0, &view) }
        }
        guard status == MLP_OK else {
            throw call.failure(PluginStatus(raw: status), what: "encoding the upstream request")
        }
        guard let path = call.path else {
            throw .internal("backend '\(component.name)' set no upstream path")
        }
        return EncodedMessage(body: call.body, headers: call.headers, path: path)
    }

    public func decode(
        status httpStatus: Int, body: ByteBuffer, contentType: String?, model: String,
        items: Int, headers: [(String, String)] = []
    ) throws(RequestError) -> UpstreamOutputs {
        let call = HostCall(mode: .decodeUpstream)
        let arena = Arena()
        let status: mlp_status = body.withUnsafeReadableBytes { raw in
            var reply = mlp_upstream_reply()
            reply.struct_size = UInt32(MemoryLayout<mlp_upstream_reply>.size)
            reply.http_status = UInt32(httpStatus)
            reply.body = mlp_bytes(ptr: raw.baseAddress?.assumingMemoryBound(to: UInt8.self), len: raw.count)
            reply.content_type = arena.bytes(contentType ?? "")
            reply.model_name = arena.bytes(model)
            reply.batch_items = UInt32(items)
            reply.headers = arena.headers(headers)
            reply.header_count = UInt32(headers.count)
            return call.withPointer { vtable.pointee.decode_response!(instance, $0, &reply) }
        }
        guard status == MLP_OK else {
            throw call.failure(PluginStatus(raw: status), what: "decoding the model server's reply")
        }
        return UpstreamOutputs(outputs: call.tensors, parametersJSON: call.parametersJSON)
    }
}
