import NIOCore
import PluginAPI

/// Calls a component's `create` hook with JSON configuration and returns the instance pointer.
private func createInstance(
    _ component: LoadedComponent, configJSON: String,
    _ create: (OpaquePointer?, mlp_bytes, UnsafeMutablePointer<UnsafeMutableRawPointer?>?) -> mlp_status
) throws -> UnsafeMutableRawPointer? {
    let call = HostCall(mode: .create)
    let arena = Arena()
    var instance: UnsafeMutableRawPointer?
    let status = call.withPointer { create($0, arena.bytes(configJSON), &instance) }
    guard status == MLP_OK else {
        throw ConfigError(
            message:
                "\(component.kind) '\(component.name)' (\(component.file)) refused its configuration: \(call.error ?? "status \(status.rawValue)")"
        )
    }
    return instance
}

// MARK: - Policies

/// What a policy decided.
public enum PolicyDecision: Equatable, Sendable {
    case wait(until: Int64)
    case dispatch(items: Int)
    case shed(indices: [Int], reason: String)
}

/// A batching policy as the scheduler sees it. Implemented by plugin policies; called under the
/// model's lock from any event loop, so calls are serialized, as the ABI promises plugins.
public protocol BatchingPolicy: AnyObject {
    func decide(
        now: Int64, queue: UnsafeBufferPointer<mlp_queued_request>, queuedItems: Int,
        inflight: Int, limits: QueueLimits
    ) -> Result<PolicyDecision, RequestError>
    /// `arrivals` holds each request's arrival time, in queue order.
    func observe(items: Int, arrivals: [Int64], ok: Bool, dispatched: Int64, finished: Int64)
}

public final class PluginPolicy: BatchingPolicy {
    public let component: LoadedComponent
    private let vtable: UnsafePointer<mlp_policy_vtable>
    private let instance: UnsafeMutableRawPointer?
    private var shedBuffer: [UInt32] = []

    public init(_ component: LoadedComponent, configJSON: String) throws {
        precondition(component.kind == .policy)
        self.component = component
        vtable = component.vtable.assumingMemoryBound(to: mlp_policy_vtable.self)
        guard let create = vtable.pointee.create, vtable.pointee.decide != nil else {
            throw ConfigError(message: "policy '\(component.name)' (\(component.file)) has no create or decide hook")
        }
        instance = try createInstance(component, configJSON: configJSON, create)
    }

    deinit { vtable.pointee.destroy?(instance) }

    public func decide(
        now: Int64, queue: UnsafeBufferPointer<mlp_queued_request>, queuedItems: Int,
        inflight: Int, limits: QueueLimits
    ) -> Result<PolicyDecision, RequestError> {
        var input = mlp_policy_input()
        input.struct_size = UInt32(MemoryLayout<mlp_policy_input>.size)
        input.queue_len = UInt32(queue.count)
        input.now_ns = now
        input.queue = queue.baseAddress
        input.request_stride = UInt32(MemoryLayout<mlp_queued_request>.stride)
        input.queued_items = UInt32(clamping: queuedItems)
        input.inflight_batches = UInt32(inflight)
        input.max_inflight_batches = UInt32(limits.maxInflightBatches)
        input.max_batch_items = UInt32(limits.maxBatchItems)
        input.slo_ns = limits.sloNanos
        if shedBuffer.count < queue.count {
            shedBuffer = Array(repeating: 0, count: max(queue.count, 2 * shedBuffer.count))
        }
        let call = HostCall(mode: .policy)
        return shedBuffer.withUnsafeMutableBufferPointer { shed in
            var out = mlp_policy_decision()
            out.struct_size = UInt32(MemoryLayout<mlp_policy_decision>.size)
            out.shed_indices = shed.baseAddress
            let status = call.withPointer { vtable.pointee.decide!(instance, $0, &input, &out) }
            guard status == MLP_OK else {
                return .failure(call.failure(PluginStatus(raw: status), what: "policy '\(component.name)' decide"))
            }
            switch out.action {
            case UInt32(MLP_ACTION_WAIT.rawValue):
                return .success(.wait(until: out.wake_at_ns))
            case UInt32(MLP_ACTION_DISPATCH.rawValue):
                return .success(.dispatch(items: Int(out.dispatch_items)))
            case UInt32(MLP_ACTION_SHED.rawValue):
                let n = min(Int(out.shed_count), queue.count)
                let indices = (0..<n).map { Int(shed[$0]) }.filter { $0 < queue.count }
                let reason =
                    out.reason.ptr.map {
                        String(decoding: UnsafeBufferPointer(start: $0, count: out.reason.len), as: UTF8.self)
                    } ?? "shed by policy '\(component.name)'"
                return .success(.shed(indices: indices, reason: reason))
            default:
                return .failure(
                    .init(status: 500, message: "policy '\(component.name)' returned unknown action \(out.action)"))
            }
        }
    }

    public func observe(items: Int, arrivals: [Int64], ok: Bool, dispatched: Int64, finished: Int64) {
        guard let observe = vtable.pointee.observe else { return }
        arrivals.withUnsafeBufferPointer { arrivalTimes in
            var r = mlp_batch_report()
            r.struct_size = UInt32(MemoryLayout<mlp_batch_report>.size)
            r.items = UInt32(items)
            r.requests = UInt32(arrivalTimes.count)
            r.ok = ok ? 1 : 0
            r.dispatched_ns = dispatched
            r.finished_ns = finished
            r.arrival_ns = arrivalTimes.baseAddress
            observe(instance, &r)
        }
    }
}

// MARK: - Codecs

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
    public let component: LoadedComponent
    public let contentTypes: [String]
    /// The client endpoints it serves: "v2" or "tfserving".
    public let protocolName: String
    private let vtable: UnsafePointer<mlp_codec_vtable>
    private let instance: UnsafeMutableRawPointer?

    public init(_ component: LoadedComponent, configJSON: String = "{}") throws {
        precondition(component.kind == .codec)
        self.component = component
        vtable = component.vtable.assumingMemoryBound(to: mlp_codec_vtable.self)
        guard let create = vtable.pointee.create, vtable.pointee.decode_request != nil,
            vtable.pointee.encode_response != nil
        else {
            throw ConfigError(message: "codec '\(component.name)' (\(component.file)) lacks a hook")
        }
        var types: [String] = []
        if var p = vtable.pointee.content_types {
            while let s = p.pointee {
                types.append(String(cString: s))
                p += 1
            }
        }
        contentTypes = types
        let size = Int(vtable.pointee.struct_size)
        let protocolEnd =
            MemoryLayout<mlp_codec_vtable>.offset(of: \.protocol)! + MemoryLayout<UnsafePointer<CChar>?>.size
        protocolName = size >= protocolEnd ? vtable.pointee.protocol.map { String(cString: $0) } ?? "v2" : "v2"
        instance = try createInstance(component, configJSON: configJSON, create)
    }

    deinit { vtable.pointee.destroy?(instance) }

    public func decode(
        body: ByteBuffer, contentType: String?, model: String,
        headers: [(String, String)] = []
    ) -> Result<DecodedRequest, RequestError> {
        let call = HostCall(mode: .decodeRequest)
        let arena = Arena()
        let status: mlp_status = body.withUnsafeReadableBytes { raw in
            var msg = mlp_request_message()
            msg.struct_size = UInt32(MemoryLayout<mlp_request_message>.size)
            msg.body = mlp_bytes(ptr: raw.baseAddress?.assumingMemoryBound(to: UInt8.self), len: raw.count)
            msg.content_type = arena.bytes(contentType ?? "")
            msg.model_name = arena.bytes(model)
            msg.headers = UnsafePointer(
                arena.array(headers.map { mlp_header(name: arena.bytes($0.0.lowercased()), value: arena.bytes($0.1)) }))
            msg.header_count = UInt32(headers.count)
            return call.withPointer { vtable.pointee.decode_request!(instance, $0, &msg) }
        }
        guard status == MLP_OK else {
            let s = PluginStatus(raw: status)
            return .failure(call.failure(s == .upstream ? .invalidInput : s, what: "decoding the request"))
        }
        return .success(
            DecodedRequest(
                inputs: call.tensors, id: call.id, priority: call.priority,
                timeoutMicros: call.timeoutMicros,
                requestedOutputs: call.requestedOutputs,
                parametersJSON: call.parametersJSON, codecState: call.codecState))
    }

    public func encode(
        model: String, version: String, id: [UInt8]?, outputs: [Tensor],
        parametersJSON: [UInt8]?, codecState: [UInt8]? = nil,
        allocator: ByteBufferAllocator
    ) -> Result<EncodedMessage, RequestError> {
        let call = HostCall(
            mode: .encodeResponse, allocator: allocator,
            bodyCapacity: 128 + outputs.reduce(0) { $0 + $1.byteCount * 3 })
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
            return .failure(call.failure(PluginStatus(raw: status), what: "encoding the response"))
        }
        return .success(EncodedMessage(body: call.body, headers: call.headers, path: nil))
    }
}

// MARK: - Backends

public struct UpstreamOutputs: Sendable {
    public var outputs: [Tensor]
    public var parametersJSON: [UInt8]?
}

/// A backend adapter instance. Immutable after create; calls may come from any event loop.
public final class BackendInstance: @unchecked Sendable {
    public let component: LoadedComponent
    private let vtable: UnsafePointer<mlp_backend_vtable>
    private let instance: UnsafeMutableRawPointer?

    public init(_ component: LoadedComponent, configJSON: String = "{}") throws {
        precondition(component.kind == .backend)
        self.component = component
        vtable = component.vtable.assumingMemoryBound(to: mlp_backend_vtable.self)
        guard let create = vtable.pointee.create, vtable.pointee.encode_request != nil,
            vtable.pointee.decode_response != nil
        else {
            throw ConfigError(message: "backend '\(component.name)' (\(component.file)) lacks a hook")
        }
        instance = try createInstance(component, configJSON: configJSON, create)
    }

    deinit { vtable.pointee.destroy?(instance) }

    public func encode(
        inputs: [Tensor], items: Int, model: String, version: String,
        requestedOutputs: [String], allocator: ByteBufferAllocator
    ) -> Result<EncodedMessage, RequestError> {
        let call = HostCall(
            mode: .encodeUpstream, allocator: allocator,
            bodyCapacity: 128 + inputs.reduce(0) { $0 + $1.byteCount * 3 })
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
            return .failure(call.failure(PluginStatus(raw: status), what: "encoding the upstream request"))
        }
        guard let path = call.path else {
            return .failure(.init(status: 500, message: "backend '\(component.name)' set no upstream path"))
        }
        return .success(EncodedMessage(body: call.body, headers: call.headers, path: path))
    }

    public func decode(
        status httpStatus: Int, body: ByteBuffer, contentType: String?, model: String,
        items: Int, headers: [(String, String)] = []
    ) -> Result<UpstreamOutputs, RequestError> {
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
            reply.headers = UnsafePointer(
                arena.array(headers.map { mlp_header(name: arena.bytes($0.0.lowercased()), value: arena.bytes($0.1)) }))
            reply.header_count = UInt32(headers.count)
            return call.withPointer { vtable.pointee.decode_response!(instance, $0, &reply) }
        }
        guard status == MLP_OK else {
            return .failure(call.failure(PluginStatus(raw: status), what: "decoding the model server's reply"))
        }
        return .success(UpstreamOutputs(outputs: call.tensors, parametersJSON: call.parametersJSON))
    }
}

// MARK: - Stages

/// A chain stage instance (ABI 1.1): one request's tensors in, new tensors out. Immutable after
/// create; calls may come from any event loop.
public final class StageInstance: @unchecked Sendable {
    public let component: LoadedComponent
    private let vtable: UnsafePointer<mlp_stage_vtable>
    private let instance: UnsafeMutableRawPointer?

    public init(_ component: LoadedComponent, configJSON: String = "{}") throws {
        precondition(component.kind == .stage)
        self.component = component
        vtable = component.vtable.assumingMemoryBound(to: mlp_stage_vtable.self)
        guard let create = vtable.pointee.create, vtable.pointee.apply != nil else {
            throw ConfigError(message: "stage '\(component.name)' (\(component.file)) lacks a hook")
        }
        instance = try createInstance(component, configJSON: configJSON, create)
    }

    deinit { vtable.pointee.destroy?(instance) }

    public func apply(_ inputs: [Tensor], model: String) -> Result<[Tensor], RequestError> {
        let call = HostCall(mode: .stage)
        call.stageInputs = inputs
        let arena = Arena()
        var input = mlp_stage_input()
        input.struct_size = UInt32(MemoryLayout<mlp_stage_input>.size)
        input.tensor_count = UInt32(inputs.count)
        input.tensors = UnsafePointer(arena.tensors(inputs))
        input.tensor_stride = UInt32(MemoryLayout<mlp_tensor>.stride)
        input.model_name = arena.bytes(model)
        let status = withExtendedLifetime(inputs) {
            call.withPointer { vtable.pointee.apply!(instance, $0, &input) }
        }
        guard status == MLP_OK else {
            let s = PluginStatus(raw: status)
            return .failure(call.failure(s == .upstream ? .invalidInput : s, what: "stage '\(component.name)'"))
        }
        return .success(call.tensors)
    }
}
