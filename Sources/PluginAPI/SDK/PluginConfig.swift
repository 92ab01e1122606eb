import FoundationEssentials

/// A JSON value of a component's configuration.
public enum JSONValue: Sendable, Equatable, Decodable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() {
            self = .null
        } else if let b = try? c.decode(Bool.self) {
            self = .bool(b)
        } else if let d = try? c.decode(Double.self) {
            self = .number(d)
        } else if let s = try? c.decode(String.self) {
            self = .string(s)
        } else if let a = try? c.decode([JSONValue].self) {
            self = .array(a)
        } else {
            self = .object(try c.decode([String: JSONValue].self))
        }
    }
}

/// What `create` receives: the component's parameters from the model's config, as a JSON object.
/// A policy's object also holds the host's keys "slo_ms", "max_batch_items" and
/// "max_inflight_batches" (`ModelLimits`); a stage written as "resize(224,224)" gets {"args":[224,224]}.
public struct PluginConfig: Sendable {
    /// The object's text, as the host sent it.
    public let json: String
    public let values: [String: JSONValue]

    init(_ bytes: mlp_bytes) throws(PluginError) {
        json = bytes.string
        do {
            values = try JSONDecoder().decode([String: JSONValue].self, from: Data(json.utf8))
        } catch {
            throw .config("the configuration is not a JSON object: \(error)")
        }
    }

    /// Refuses keys other than `known` (and the host's own), naming the first unknown one: a typo in
    /// a config should stop the model, not be ignored.
    public func allowOnly(_ known: [String]) throws(PluginError) {
        let host = ["slo_ms", "max_batch_items", "max_inflight_batches"]
        if let key = values.keys.sorted().first(where: { !known.contains($0) && !host.contains($0) }) {
            throw .config("unknown parameter '\(key)'")
        }
    }

    /// A number in `range`, or `default` when the key is absent.
    public func number(_ key: String, default value: Double, in range: ClosedRange<Double>) throws(PluginError)
        -> Double
    {
        guard let v = values[key] else { return value }
        guard case .number(let d) = v else { throw .config("parameter '\(key)' must be a number") }
        guard range.contains(d) else { throw .config("parameter '\(key)' = \(d) is outside \(range)") }
        return d
    }

    /// A whole number in `range`, or `default` when the key is absent.
    public func integer(_ key: String, default value: Int, in range: ClosedRange<Int>) throws(PluginError) -> Int {
        let d = try number(key, default: Double(value), in: Double(range.lowerBound)...Double(range.upperBound))
        guard d == d.rounded() else { throw .config("parameter '\(key)' = \(d) must be a whole number") }
        return Int(d)
    }

    public func bool(_ key: String, default value: Bool) throws(PluginError) -> Bool {
        guard let v = values[key] else { return value }
        guard case .bool(let b) = v else { throw .config("parameter '\(key)' must be true or false") }
        return b
    }

    public func string(_ key: String, default value: String) throws(PluginError) -> String {
        guard let v = values[key] else { return value }
        guard case .string(let s) = v else { throw .config("parameter '\(key)' must be a string") }
        return s
    }

    /// The whole object decoded as `T` (unknown keys are ignored by Decodable: see `allowOnly`).
    public func decode<T: Decodable>(_ type: T.Type) throws(PluginError) -> T {
        do {
            return try JSONDecoder().decode(T.self, from: Data(json.utf8))
        } catch {
            throw .config("the configuration does not fit \(T.self): \(error)")
        }
    }
}
