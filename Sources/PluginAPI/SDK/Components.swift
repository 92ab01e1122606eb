/// A request codec in Swift: client bytes <-> tensors. The host may call one instance from several
/// event loops at once, so it is immutable after `init` (Sendable).
public protocol RequestCodec: Sendable {
    init(config: PluginConfig, host: HostCall) throws
    /// Decodes one client request: inputs through `host.addTensor`, metadata through `host.setID`,
    /// `setRequestInt`, `addRequestedOutput`, `setParametersJSON`, `setCodecState`.
    func decodeRequest(_ message: RequestMessage, host: HostCall) throws
    /// Encodes one client's response through `host.write` and `host.setHeader`.
    func encodeResponse(_ response: ResponseView, host: HostCall) throws
}

/// A chain stage in Swift: one request's tensors -> new tensors (new ones through `host.addTensor`,
/// unchanged ones through `host.passTensor`), every one keeping dim 0. Immutable after `init`.
public protocol ChainStage: Sendable {
    init(config: PluginConfig, host: HostCall) throws
    func apply(_ input: StageInput, host: HostCall) throws
}

/// A backend adapter in Swift: a batch <-> one upstream HTTP request. Immutable after `init`.
public protocol BackendAdapter: Sendable {
    init(config: PluginConfig, host: HostCall) throws
    /// `host.setPath`, `host.setHeader`, `host.write`. Throw `.invalidInput` (or `.unsupported`)
    /// for a value the wire format cannot carry: the host then finds the request that holds it.
    func encodeRequest(_ batch: BatchView, host: HostCall) throws
    /// Outputs through `host.addTensor` (dim 0 = `reply.items`); `.upstream` for an error reply.
    func decodeResponse(_ reply: UpstreamReply, host: HostCall) throws
}

/// A codec, stage or backend instance: immutable, so shared by every event loop.
final class SharedBox<Value: Sendable>: Sendable {
    let value: Value
    nonisolated(unsafe) let host: UnsafePointer<mlp_host_api>

    init(_ value: Value, host: UnsafePointer<mlp_host_api>) {
        self.value = value
        self.host = host
    }

    static func from(_ p: UnsafeMutableRawPointer?) -> SharedBox {
        Unmanaged<SharedBox>.fromOpaque(p!).takeUnretainedValue()
    }

    func run(_ call: OpaquePointer?, _ what: String, _ body: (Value, HostCall) throws -> Void) -> mlp_status {
        let host = HostCall(self.host, call)
        return host.run(what) { try body(value, host) }
    }
}

typealias CodecBox = SharedBox<any RequestCodec>
typealias StageBox = SharedBox<any ChainStage>
typealias BackendBox = SharedBox<any BackendAdapter>

// The hooks every instance of a kind shares: they find the Swift value through the instance pointer.
// `create` differs per component (which type to make), so it comes from a slot (Export.swift).

func release(_ instance: UnsafeMutableRawPointer?) {
    if let instance { Unmanaged<AnyObject>.fromOpaque(instance).release() }
}

let policyDecide:
    @convention(c) (
        UnsafeMutableRawPointer?, OpaquePointer?, UnsafePointer<mlp_policy_input>?,
        UnsafeMutablePointer<mlp_policy_decision>?
    ) -> mlp_status = { instance, call, input, out in
        guard let input, let out else { return MLP_ERR_INTERNAL }
        return PolicyBox.from(instance).decide(call, input, out)
    }

let policyObserve:
    @convention(c) (UnsafeMutableRawPointer?, OpaquePointer?, UnsafePointer<mlp_batch_report>?)
        -> mlp_status = { instance, call, report in
            guard let report else { return MLP_ERR_INTERNAL }
            return PolicyBox.from(instance).observe(call, report)
        }

let destroyInstance: @convention(c) (UnsafeMutableRawPointer?) -> Void = { release($0) }

let codecDecode:
    @convention(c) (UnsafeMutableRawPointer?, OpaquePointer?, UnsafePointer<mlp_request_message>?)
        -> mlp_status = { instance, call, msg in
            guard let msg else { return MLP_ERR_INTERNAL }
            return CodecBox.from(instance).run(call, "decode_request") {
                try $0.decodeRequest(RequestMessage(raw: msg), host: $1)
            }
        }

let codecEncode:
    @convention(c) (UnsafeMutableRawPointer?, OpaquePointer?, UnsafePointer<mlp_response_view>?)
        -> mlp_status = { instance, call, view in
            guard let view else { return MLP_ERR_INTERNAL }
            return CodecBox.from(instance).run(call, "encode_response") {
                try $0.encodeResponse(ResponseView(raw: view), host: $1)
            }
        }

let stageApply:
    @convention(c) (UnsafeMutableRawPointer?, OpaquePointer?, UnsafePointer<mlp_stage_input>?)
        -> mlp_status = { instance, call, input in
            guard let input else { return MLP_ERR_INTERNAL }
            return StageBox.from(instance).run(call, "apply") { try $0.apply(StageInput(raw: input), host: $1) }
        }

let backendEncode:
    @convention(c) (UnsafeMutableRawPointer?, OpaquePointer?, UnsafePointer<mlp_batch_view>?)
        -> mlp_status = { instance, call, batch in
            guard let batch else { return MLP_ERR_INTERNAL }
            return BackendBox.from(instance).run(call, "encode_request") {
                try $0.encodeRequest(BatchView(raw: batch), host: $1)
            }
        }

let backendDecode:
    @convention(c) (UnsafeMutableRawPointer?, OpaquePointer?, UnsafePointer<mlp_upstream_reply>?)
        -> mlp_status = { instance, call, reply in
            guard let reply else { return MLP_ERR_INTERNAL }
            return BackendBox.from(instance).run(call, "decode_response") {
                try $0.decodeResponse(UpstreamReply(raw: reply), host: $1)
            }
        }
