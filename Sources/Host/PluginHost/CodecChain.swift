import NIOCore
import ProxyCore

/// How one kind of client body becomes a request's tensors: a codec, then zero or more stages
/// (`json`, `tfserving -> image -> resize(224,224)`), or, for a chain that starts with a stage
/// (`b64 -> image -> normalise`), the host's own first step: the whole body as one BYTES element
/// named `input`, shape [1]. The codec (or, for those, the reply codec) encodes the response.
/// Immutable after start-up; used from every event loop at once.
public final class CodecChain: @unchecked Sendable {
    /// The codec that reads the body; nil when the host hands the body to the stages itself.
    public let decoder: CodecInstance?
    /// The codec that writes the response.
    public let encoder: CodecInstance
    public let stages: [StageInstance]
    /// The content types this chain takes: the config's, or the codec's own.
    public let contentTypes: [String]
    public let rank: Int
    /// Whether the config listed the content types (then the chain wins ties over a codec's defaults).
    public let explicitContentTypes: Bool
    /// The chain as written, for messages and metadata.
    public let summary: String

    /// The client protocol it serves: its codec's, or v2 for chains that start with a stage.
    public var protocolName: String { decoder?.protocolName ?? "v2" }

    /// What the host's own first step takes when a chain starts with a stage (a config's
    /// `content_types` narrows or widens it).
    public static let bodyContentTypes = ["image/jpeg", "image/png", "application/octet-stream", "text/plain"]
    /// The name of the BYTES tensor the host's first step makes.
    public static let bodyTensorName = "input"

    public convenience init(
        codec: CodecInstance, stages: [StageInstance] = [], contentTypes: [String]? = nil, rank: Int = 0
    ) {
        self.init(
            decoder: codec, encoder: codec, stages: stages, contentTypes: contentTypes,
            defaultTypes: codec.contentTypes, rank: rank)
    }

    /// A chain that starts with a stage: the host reads the body, `replyCodec` writes the response.
    public convenience init(
        bodyStages stages: [StageInstance], replyCodec: CodecInstance, contentTypes: [String]? = nil, rank: Int = 0
    ) {
        self.init(
            decoder: nil, encoder: replyCodec, stages: stages, contentTypes: contentTypes,
            defaultTypes: Self.bodyContentTypes, rank: rank)
    }

    private init(
        decoder: CodecInstance?, encoder: CodecInstance, stages: [StageInstance], contentTypes: [String]?,
        defaultTypes: [String], rank: Int
    ) {
        self.decoder = decoder
        self.encoder = encoder
        self.stages = stages
        self.contentTypes = contentTypes ?? defaultTypes
        explicitContentTypes = contentTypes != nil
        self.rank = rank
        summary = ((decoder.map { [$0.component.name] } ?? []) + stages.map(\.component.name)).joined(separator: " -> ")
    }

    /// Whether this chain takes a body of `contentType`. Parameters such as charset are ignored;
    /// "image/*" and "*/*" in the chain's list match any subtype or type.
    public func accepts(contentType: String?) -> Bool {
        let raw = contentType ?? ""
        // The common case, an exact match, without allocating.
        if contentTypes.contains(raw) { return true }
        let base = raw.split(separator: ";").first.map { $0.trimmingCharacters(in: .whitespaces).lowercased() } ?? ""
        if contentTypes.contains(base) { return true }
        guard !base.isEmpty, let slash = base.firstIndex(of: "/") else { return false }
        return contentTypes.contains(base[..<slash] + "/*") || contentTypes.contains("*/*")
    }

    /// Decodes with the codec, then runs each stage on the result. A failure answers this request only.
    ///
    /// No stage reads a tensor the host has not checked: the codec's output is validated before the
    /// first stage (400, as when there are no stages), and each stage's output before the next hook
    /// (shape x datatype = byte length, BYTES framing, dim 0 kept): image stages index pixels by
    /// shape, so a stage that lies would have the next one read past its data. A stage that breaks
    /// the rules fails its own request with a 500 that names it.
    public func decode(
        body: ByteBuffer, contentType: String?, model: String,
        headers: [(String, String)] = []
    ) throws(RequestError) -> DecodedRequest {
        var decoded: DecodedRequest
        if let decoder {
            decoded = try decoder.decode(body: body, contentType: contentType, model: model, headers: headers)
        } else {
            decoded = DecodedRequest(
                inputs: [try Self.bodyAsBytes(body)], id: nil, priority: 0, timeoutMicros: nil, requestedOutputs: [],
                parametersJSON: nil, codecState: nil)
        }
        guard !stages.isEmpty else { return decoded }
        var items = try BatchAssembler.validate(inputs: decoded.inputs)
        for stage in stages {
            decoded.inputs = try stage.apply(decoded.inputs, model: model)
            items = try Self.check(decoded.inputs, from: stage, items: items)
        }
        return decoded
    }

    /// A stage's output against the ABI's rules; its item count (dim 0, the same as its input's).
    static func check(_ outputs: [Tensor], from stage: StageInstance, items: Int) throws(RequestError) -> Int {
        func broken(_ what: String) -> RequestError {
            .internal("stage '\(stage.component.name)' broke the plugin ABI: \(what)")
        }
        if outputs.isEmpty { throw broken("it produced no tensors") }
        for t in outputs {
            if let problem = t.validate() { throw broken(problem) }
            if t.shape[0] != Int64(items) {
                throw broken("output '\(t.name)' has \(t.shape[0]) items in dim 0; its input had \(items)")
            }
        }
        return items
    }

    /// The host's first step for chains that start with a stage: the body as one BYTES element (a
    /// 4-byte little-endian length, then the bytes), shape [1].
    static func bodyAsBytes(_ body: ByteBuffer) throws(RequestError) -> Tensor {
        let n = body.readableBytes
        if n == 0 { throw .invalid("the request body is empty") }
        if n > Int(UInt32.max) { throw .invalid("the body is larger than a BYTES element (4 GiB)") }
        let storage = TensorStorage(count: 4 + n)
        storage.base.storeBytes(of: UInt32(n).littleEndian, as: UInt32.self)
        body.withUnsafeReadableBytes { (storage.base + 4).copyMemory(from: $0.baseAddress!, byteCount: n) }
        return Tensor(name: bodyTensorName, datatype: .bytes, shape: [1], storage: storage)
    }

    /// Picks, among `chains` serving `protocolName` that take `contentType`, the highest rank; at equal
    /// rank one whose content types the config lists over one going by its codec's defaults; then the
    /// first listed.
    public static func pick(_ chains: [CodecChain], contentType: String?, protocolName: String) -> CodecChain? {
        var best: CodecChain?
        for c in chains where c.protocolName == protocolName && c.accepts(contentType: contentType) {
            guard let b = best else {
                best = c
                continue
            }
            if c.rank > b.rank || (c.rank == b.rank && c.explicitContentTypes && !b.explicitContentTypes) { best = c }
        }
        return best
    }
}
