@_exported import MLProxyABI

/// A v2 (Open Inference Protocol) tensor datatype, as the ABI numbers them.
public enum DataType: UInt32, Sendable, CaseIterable {
    case bool = 1
    case uint8, uint16, uint32, uint64, int8, int16, int32, int64, fp16, fp32, fp64, bytes

    /// Bytes per element; nil for BYTES, whose elements are a 4-byte little-endian length and data.
    public var elementSize: Int? {
        switch self {
        case .bool, .uint8, .int8: return 1
        case .uint16, .int16, .fp16: return 2
        case .uint32, .int32, .fp32: return 4
        case .uint64, .int64, .fp64: return 8
        case .bytes: return nil
        }
    }

    /// The v2 protocol's name ("FP32", "BYTES", ...).
    public var name: String {
        switch self {
        case .bool: return "BOOL"
        case .uint8: return "UINT8"
        case .uint16: return "UINT16"
        case .uint32: return "UINT32"
        case .uint64: return "UINT64"
        case .int8: return "INT8"
        case .int16: return "INT16"
        case .int32: return "INT32"
        case .int64: return "INT64"
        case .fp16: return "FP16"
        case .fp32: return "FP32"
        case .fp64: return "FP64"
        case .bytes: return "BYTES"
        }
    }

    /// From a v2 name ("FP32"), nil when it is not one.
    public init?(v2Name: String) {
        guard let t = DataType.allCases.first(where: { $0.name == v2Name.uppercased() }) else { return nil }
        self = t
    }
}

/// A plugin status code. The host maps each to the outcome a client sees (`RequestError.Kind`).
public enum PluginStatus: UInt32, Sendable, Error {
    case ok = 0
    case invalidInput, unsupported, upstream, config, noMemory, `internal`

    public init(raw: mlp_status) { self = PluginStatus(rawValue: raw.rawValue) ?? .internal }
}

/// The ABI version this host was compiled against.
public enum ABIVersion {
    public static let major = UInt16(MLP_ABI_MAJOR)
    public static let minor = UInt16(MLP_ABI_MINOR)
}
