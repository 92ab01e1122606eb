import Foundation

/// The host's one JSON writer: compact, keys sorted, for values built in Swift, read from YAML or
/// parsed by `JSONSerialization`. Responses, metadata, plugin parameters and tables all go through it.
public enum JSONText {
    /// `value` as JSON text, or nil when it holds something JSON cannot carry (a date, NaN).
    public static func write(_ value: Any) -> String? {
        var out = ""
        return append(value, to: &out) ? out : nil
    }

    /// A JSON string literal for `s`.
    public static func string(_ s: String) -> String {
        var out = "\""
        out.reserveCapacity(s.utf8.count + 2)
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where u.value < 0x20:
                let hex = String(u.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(u)
            }
        }
        return out + "\""
    }

    private static func append(_ value: Any, to out: inout String) -> Bool {
        switch value {
        case let s as String:
            out += string(s)
        case let o as [String: Any]:
            out += "{"
            for (i, k) in o.keys.sorted().enumerated() {
                if i > 0 { out += "," }
                out += string(k) + ":"
                guard append(o[k]!, to: &out) else { return false }
            }
            out += "}"
        case let a as [Any]:
            out += "["
            for (i, v) in a.enumerated() {
                if i > 0 { out += "," }
                guard append(v, to: &out) else { return false }
            }
            out += "]"
        case is NSNull:
            out += "null"
        default:
            return appendNumber(value, to: &out)
        }
        return true
    }

    /// Swift's Bool, Int and Double, and Foundation's NSNumber (which `as? Bool` cannot tell from the
    /// integer 1 on Linux: its type code can, "c" being a boolean).
    private static func appendNumber(_ value: Any, to out: inout String) -> Bool {
        let t = type(of: value)
        if t == Bool.self {
            out += (value as! Bool) ? "true" : "false"
            return true
        }
        if t == Int.self {
            out += String(value as! Int)
            return true
        }
        if t == Double.self { return appendDouble(value as! Double, to: &out) }
        guard let n = value as? NSNumber else { return false }
        switch String(cString: n.objCType) {
        case "c", "B": out += n.boolValue ? "true" : "false"
        case "d", "f": return appendDouble(n.doubleValue, to: &out)
        default: out += String(n.int64Value)
        }
        return true
    }

    /// Integral values without a fraction (200, not 200.0), others in Swift's shortest round-trip form.
    private static func appendDouble(_ d: Double, to out: inout String) -> Bool {
        guard d.isFinite else { return false }
        if d == d.rounded() && abs(d) < 1e15 { out += String(Int64(d)) } else { out += "\(d)" }
        return true
    }
}
