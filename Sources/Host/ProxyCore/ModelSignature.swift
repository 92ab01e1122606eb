import Foundation
import PluginAPI

/// One input or output a model declares: name, datatype and shape, -1 for a dimension of any size.
public struct TensorSpec: Sendable, Equatable, CustomStringConvertible {
    public var name: String
    public var datatype: DataType
    public var shape: [Int64]
    /// May be left out of a request (v2 metadata's `optional: true`).
    public var optional: Bool

    public init(name: String, datatype: DataType, shape: [Int64], optional: Bool = false) {
        self.name = name
        self.datatype = datatype
        self.shape = shape
        self.optional = optional
    }

    public var description: String {
        "\(name) (\(datatype.name) [\(shape.map(String.init).joined(separator: ", "))]\(optional ? ", optional" : ""))"
    }

    /// Whether `shape` fits: same rank with every fixed dim equal, or (for specs written without the
    /// batch dimension) one rank less, compared with the trailing dims.
    func accepts(_ shape: [Int64]) -> Bool {
        let dims: ArraySlice<Int64>
        if self.shape.count == shape.count {
            dims = shape[...]
        } else if self.shape.count + 1 == shape.count {
            dims = shape.dropFirst()
        } else {
            return false
        }
        return zip(self.shape, dims).allSatisfy { $0 < 0 || $0 == $1 }
    }
}

/// What a model takes and gives, from the config (`inputs:`/`outputs:`) or from the model server's
/// metadata. A request that does not fit is refused with a 400 before it joins a queue, so it can
/// never fail a batch it would have shared.
public struct ModelSignature: Sendable, Equatable {
    public var inputs: [TensorSpec]
    public var outputs: [TensorSpec]
    /// Where it came from, for messages: "the config" or "the model server's metadata".
    public var source: String

    public init(inputs: [TensorSpec], outputs: [TensorSpec], source: String) {
        self.inputs = inputs
        self.outputs = outputs
        self.source = source
    }

    /// Checks one decoded request. `guessedTypes`: the client's protocol carries no datatypes (TF
    /// Serving's JSON), so numbers are converted to the declared datatype and a single unnamed input
    /// ("input") stands for a model's single required input, as TF Serving itself does. Returns the inputs to
    /// queue (converted where needed) or a 400 naming the input and what was expected.
    public func check(
        model: String, inputs given: [Tensor], requestedOutputs: [String],
        guessedTypes: Bool
    ) throws(RequestError) -> [Tensor] {
        var out: [Tensor] = []
        var seen = Set<String>()
        let list = inputs.map(\.description).joined(separator: ", ")
        for var t in given {
            var spec = inputs.first { $0.name == t.name }
            if spec == nil, guessedTypes, given.count == 1, t.name == "input",
                let only = inputs.filter({ !$0.optional }).first, inputs.filter({ !$0.optional }).count == 1
            {
                spec = only
                t.name = only.name
            }
            guard let spec else {
                throw
                    .invalid("model '\(model)' has no input '\(t.name)'; its inputs are \(list) (from \(source))")
            }
            seen.insert(spec.name)
            if t.datatype != spec.datatype {
                guard guessedTypes, t.datatype != .bytes, spec.datatype != .bytes else {
                    throw
                        .invalid(
                            "input '\(t.name)' is \(t.datatype.name) but model '\(model)' expects "
                                + "\(spec.description) (from \(source))"
                        )
                }
                t = t.converted(to: spec.datatype)
            }
            guard spec.accepts(t.shape) else {
                throw
                    .invalid(
                        "input '\(t.name)' has shape [\(t.shape.map(String.init).joined(separator: ", "))] but "
                            + "model '\(model)' expects \(spec.description); -1 is any size (from \(source))"
                    )
            }
            out.append(t)
        }
        if let missing = inputs.first(where: { !$0.optional && !seen.contains($0.name) }) {
            throw
                .invalid(
                    "the request lacks input \(missing.description) that model '\(model)' requires; its inputs "
                        + "are \(list) (from \(source))"
                )
        }
        if !outputs.isEmpty, let unknown = requestedOutputs.first(where: { n in !outputs.contains { $0.name == n } }) {
            throw
                .invalid(
                    "model '\(model)' has no output '\(unknown)'; its outputs are "
                        + "\(outputs.map(\.name).joined(separator: ", ")) (from \(source))"
                )
        }
        return out
    }

    // MARK: From the model server

    /// A v2 model metadata document (`GET /v2/models/{m}`); nil when it declares no inputs, which
    /// means the server does not know them (MLServer without `inputs` in model-settings.json).
    public static func fromV2Metadata(_ body: [UInt8]) -> ModelSignature? {
        guard let meta = (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any] else { return nil }
        func specs(_ key: String) -> [TensorSpec]? {
            guard let list = meta[key] as? [[String: Any]] else { return [] }
            var out: [TensorSpec] = []
            for t in list {
                guard let name = t["name"] as? String,
                    let dt = (t["datatype"] as? String).flatMap(DataType.init(v2Name:)),
                    let shape = (t["shape"] as? [Any])?.compactMap({ ($0 as? NSNumber)?.int64Value })
                else { return nil }
                let optional =
                    (t["optional"] as? Bool) ?? ((t["parameters"] as? [String: Any])?["optional"] as? Bool) ?? false
                out.append(TensorSpec(name: name, datatype: dt, shape: shape, optional: optional))
            }
            return out
        }
        guard let inputs = specs("inputs"), !inputs.isEmpty else { return nil }
        return ModelSignature(inputs: inputs, outputs: specs("outputs") ?? [], source: "the model server's metadata")
    }

    /// A TF Serving metadata document (`GET /v1/models/{m}/metadata`): the `serving_default`
    /// signature_def (or the only one).
    public static func fromTFServingMetadata(_ body: [UInt8]) -> ModelSignature? {
        guard let root = (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any],
            let defs = ((root["metadata"] as? [String: Any])?["signature_def"] as? [String: Any])?["signature_def"]
                as? [String: Any],
            let sig = (defs["serving_default"] ?? (defs.count == 1 ? defs.first?.value : nil)) as? [String: Any]
        else { return nil }
        func specs(_ key: String) -> [TensorSpec]? {
            guard let map = sig[key] as? [String: Any] else { return [] }
            var out: [TensorSpec] = []
            for (name, v) in map.sorted(by: { $0.key < $1.key }) {
                guard let t = v as? [String: Any], let dt = (t["dtype"] as? String).flatMap(DataType.init(tfName:))
                else { return nil }
                let dims = ((t["tensor_shape"] as? [String: Any])?["dim"] as? [[String: Any]]) ?? []
                let shape = dims.map { d -> Int64 in
                    if let s = d["size"] as? String { return Int64(s) ?? -1 }
                    return (d["size"] as? NSNumber)?.int64Value ?? -1
                }
                out.append(TensorSpec(name: name, datatype: dt, shape: shape))
            }
            return out
        }
        guard let inputs = specs("inputs"), !inputs.isEmpty else { return nil }
        return ModelSignature(inputs: inputs, outputs: specs("outputs") ?? [], source: "the model server's metadata")
    }
}

extension DataType {
    /// From a TensorFlow dtype ("DT_FLOAT").
    init?(tfName: String) {
        let map: [String: DataType] = [
            "DT_BOOL": .bool, "DT_UINT8": .uint8, "DT_UINT16": .uint16, "DT_UINT32": .uint32, "DT_UINT64": .uint64,
            "DT_INT8": .int8, "DT_INT16": .int16, "DT_INT32": .int32, "DT_INT64": .int64, "DT_HALF": .fp16,
            "DT_FLOAT": .fp32, "DT_DOUBLE": .fp64, "DT_STRING": .bytes,
        ]
        guard let t = map[tfName] else { return nil }
        self = t
    }
}

extension Tensor {
    /// The same values in another numeric datatype (not BYTES), e.g. JSON numbers a TF Serving
    /// client sent, read as FP32 by default, for a model that declares FP64.
    func converted(to datatype: DataType) -> Tensor {
        let values = doubles()
        let size = datatype.elementSize ?? 1
        let storage = TensorStorage(count: values.count * size)
        for (i, v) in values.enumerated() {
            BatchAssembler.padElement(datatype, v).withUnsafeBytes {
                (storage.base + i * size).copyMemory(from: $0.baseAddress!, byteCount: size)
            }
        }
        return Tensor(name: name, datatype: datatype, shape: shape, storage: storage)
    }
}
