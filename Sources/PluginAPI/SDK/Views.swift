/// A tensor the host lends a hook (request inputs, batch inputs, a reply's outputs). Every field is
/// borrowed: valid while the hook runs. The host checked it before the hook (data length = shape x
/// element size, BYTES framing), so the hook may index by shape.
public struct Tensor {
    let raw: UnsafePointer<mlp_tensor>

    public var name: String { raw.pointee.name.string }
    public var datatype: mlp_datatype { mlp_datatype(rawValue: raw.pointee.datatype) }
    /// The dims; shape[0] is the item (batch) dimension.
    public var shape: UnsafeBufferPointer<Int64> {
        UnsafeBufferPointer(start: raw.pointee.shape, count: Int(raw.pointee.rank))
    }
    /// Row-major little-endian data (BYTES: a 4-byte length before each element).
    public var data: UnsafeRawBufferPointer { raw.pointee.data.buffer }
    /// The tensor's parameters as JSON object text, empty when there are none.
    public var parametersJSON: String { raw.pointee.parameters_json.string }
}

/// Tensors laid out by the host `stride` bytes apart (a newer host's tensors may be larger).
public struct TensorList: RandomAccessCollection {
    let base: UnsafePointer<mlp_tensor>?
    let stride: Int
    public let count: Int

    init(_ base: UnsafePointer<mlp_tensor>?, stride: UInt32, count: UInt32) {
        self.base = base
        self.stride = Int(stride)
        self.count = base == nil ? 0 : Int(count)
    }

    public var startIndex: Int { 0 }
    public var endIndex: Int { count }
    public subscript(i: Int) -> Tensor {
        precondition(i >= 0 && i < count, "tensor index out of range")
        return Tensor(raw: UnsafeRawPointer(base!).advanced(by: i * stride).assumingMemoryBound(to: mlp_tensor.self))
    }
}

/// One HTTP header (the name in lower case).
public struct Header {
    public let name: String
    public let value: String
}

func headers(_ base: UnsafePointer<mlp_header>?, _ count: UInt32) -> [Header] {
    guard let base else { return [] }
    return (0..<Int(count)).map { Header(name: base[$0].name.string, value: base[$0].value.string) }
}

/// A client's request, for a codec's decodeRequest.
public struct RequestMessage {
    let raw: UnsafePointer<mlp_request_message>
    public var body: UnsafeRawBufferPointer { raw.pointee.body.buffer }
    public var contentType: String { raw.pointee.content_type.string }
    public var modelName: String { raw.pointee.model_name.string }
    public var headers: [Header] { MLProxyPlugin.headers(raw.pointee.headers, raw.pointee.header_count) }
}

/// One client's share of a finished batch, for a codec's encodeResponse.
public struct ResponseView {
    let raw: UnsafePointer<mlp_response_view>
    public var modelName: String { raw.pointee.model_name.string }
    public var modelVersion: String { raw.pointee.model_version.string }
    /// The client's request id, empty when it sent none.
    public var id: String { raw.pointee.id.string }
    public var outputs: TensorList {
        TensorList(raw.pointee.outputs, stride: raw.pointee.tensor_stride, count: raw.pointee.output_count)
    }
    public var parametersJSON: String { raw.pointee.parameters_json.string }
    /// What this codec's decodeRequest kept with `HostCall.setCodecState`.
    public var codecState: UnsafeRawBufferPointer { raw.pointee.codec_state.buffer }
}

/// One request's tensors, for a stage's apply.
public struct StageInput {
    let raw: UnsafePointer<mlp_stage_input>
    public var tensors: TensorList {
        TensorList(raw.pointee.tensors, stride: raw.pointee.tensor_stride, count: raw.pointee.tensor_count)
    }
    public var modelName: String { raw.pointee.model_name.string }
}

/// A batch, for a backend's encodeRequest: the inputs merged along dim 0.
public struct BatchView {
    let raw: UnsafePointer<mlp_batch_view>
    public var modelName: String { raw.pointee.model_name.string }
    public var modelVersion: String { raw.pointee.model_version.string }
    public var inputs: TensorList {
        TensorList(raw.pointee.inputs, stride: raw.pointee.tensor_stride, count: raw.pointee.input_count)
    }
    public var items: Int { Int(raw.pointee.batch_items) }
    /// Outputs to ask for (the union of what the batch's clients asked for); empty for all.
    public var requestedOutputs: [String] {
        guard let names = raw.pointee.requested_outputs else { return [] }
        return (0..<Int(raw.pointee.requested_output_count)).map { names[$0].string }
    }
}

/// The model server's reply, for a backend's decodeResponse.
public struct UpstreamReply {
    let raw: UnsafePointer<mlp_upstream_reply>
    public var httpStatus: Int { Int(raw.pointee.http_status) }
    public var body: UnsafeRawBufferPointer { raw.pointee.body.buffer }
    public var contentType: String { raw.pointee.content_type.string }
    public var modelName: String { raw.pointee.model_name.string }
    /// Items that were sent: the outputs' dim 0.
    public var items: Int { Int(raw.pointee.batch_items) }
    public var headers: [Header] { MLProxyPlugin.headers(raw.pointee.headers, raw.pointee.header_count) }
}
