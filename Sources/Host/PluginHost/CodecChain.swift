import NIOCore

/// How one kind of client body becomes a request's tensors: a codec, then zero or more stages
/// (`raw -> b64 -> image -> resize(224,224) -> normalise`). The codec also encodes the response.
/// Immutable after start-up; used from every event loop at once.
public final class CodecChain: @unchecked Sendable {
    public let codec: CodecInstance
    public let stages: [StageInstance]
    /// The content types this chain takes: the config's, or the codec's own.
    public let contentTypes: [String]
    public let rank: Int
    /// Whether the config listed the content types (then the chain wins ties over a codec's defaults).
    public let explicitContentTypes: Bool
    /// The chain as written, for messages and metadata.
    public let summary: String

    public var protocolName: String { codec.protocolName }

    public init(codec: CodecInstance, stages: [StageInstance] = [], contentTypes: [String]? = nil, rank: Int = 0) {
        self.codec = codec
        self.stages = stages
        self.contentTypes = contentTypes ?? codec.contentTypes
        explicitContentTypes = contentTypes != nil
        self.rank = rank
        summary = ([codec.component.name] + stages.map(\.component.name)).joined(separator: " -> ")
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
    public func decode(
        body: ByteBuffer, contentType: String?, model: String,
        headers: [(String, String)] = []
    ) -> Result<DecodedRequest, RequestError> {
        var decoded: DecodedRequest
        switch codec.decode(body: body, contentType: contentType, model: model, headers: headers) {
        case .failure(let e): return .failure(e)
        case .success(let d): decoded = d
        }
        for stage in stages {
            switch stage.apply(decoded.inputs, model: model) {
            case .failure(let e): return .failure(e)
            case .success(let t): decoded.inputs = t
            }
        }
        return .success(decoded)
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
