import CFFI
import ProxyCore
import Scheduling

#if canImport(Glibc)
    import Glibc
#endif

/// A policy that is a plain exported C function of numbers, written in any language and built
/// without our header, e.g. `int pick(double queued_items, double oldest_wait_ms, double slo_ms,
/// double p95_ms)`. The config names the library and the signature; the host checks the signature,
/// binds it once with `ffi_prep_cif` and calls it with `ffi_call`. The function returns the items to
/// dispatch now, or 0 (or less) to wait; the host asks again on the next arrival or completion, or
/// after `poll_ms`.
public final class ForeignPolicy: BatchingPolicy {
    /// Numbers the host can pass, by the names a signature uses.
    public enum Input: String, CaseIterable, Sendable {
        case queuedItems = "queued_items"
        case queuedRequests = "queued_requests"
        case oldestWaitMs = "oldest_wait_ms"
        case newestWaitMs = "newest_wait_ms"
        case timeToDeadlineMs = "time_to_deadline_ms"
        case sloMs = "slo_ms"
        case p50Ms = "p50_ms"
        case p95Ms = "p95_ms"
        case arrivalRate = "arrival_rate"
        case inflightBatches = "inflight_batches"
        case maxBatchItems = "max_batch_items"
        case maxInflightBatches = "max_inflight_batches"
    }

    public enum NumberType: String, Sendable {
        case double, float, int32, int64

        init?(c: String) {
            switch c {
            case "double": self = .double
            case "float": self = .float
            case "int", "int32", "int32_t": self = .int32
            case "long", "int64", "int64_t", "long long": self = .int64
            default: return nil
            }
        }

        var ffiType: UnsafeMutablePointer<ffi_type> {
            switch self {
            case .double: return mlp_ffi_type_double()
            case .float: return mlp_ffi_type_float()
            case .int32: return mlp_ffi_type_sint32()
            case .int64: return mlp_ffi_type_sint64()
            }
        }
    }

    /// A parsed signature: `rettype name(type arg, ...)`.
    public struct Signature: Sendable, Equatable {
        public let returns: NumberType
        public let symbol: String
        public let args: [(type: NumberType, input: Input)]

        public static func == (a: Signature, b: Signature) -> Bool {
            a.returns == b.returns && a.symbol == b.symbol && a.args.map(\.type) == b.args.map(\.type)
                && a.args.map(\.input) == b.args.map(\.input)
        }

        public static func parse(_ text: String) throws -> Signature {
            func bad(_ why: String) -> ConfigError {
                ConfigError(message: "foreign policy signature '\(text)': \(why)")
            }
            guard let open = text.firstIndex(of: "("), text.hasSuffix(")") else {
                throw bad("expected 'type name(type arg, ...)'")
            }
            let head = text[..<open].split(whereSeparator: \.isWhitespace).map(String.init)
            guard head.count >= 2, let symbol = head.last,
                symbol.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" })
            else {
                throw bad("expected a return type and a function name before '('")
            }
            guard let returns = NumberType(c: head.dropLast().joined(separator: " ")),
                returns == .int32 || returns == .int64 || returns == .double
            else {
                throw bad("the return type must be int, int64 or double (the items to dispatch now, 0 to wait)")
            }
            let inner = text[text.index(after: open)..<text.index(before: text.endIndex)].trimmingCharacters(
                in: .whitespaces)
            var args: [(NumberType, Input)] = []
            if !inner.isEmpty && inner != "void" {
                for part in inner.split(separator: ",") {
                    let words = part.split(whereSeparator: \.isWhitespace).map(String.init)
                    guard words.count >= 2, let type = NumberType(c: words.dropLast().joined(separator: " ")) else {
                        throw bad("'\(part.trimmingCharacters(in: .whitespaces))': types are double, float, int, int64")
                    }
                    guard let input = Input(rawValue: words.last!) else {
                        throw bad(
                            "unknown argument '\(words.last!)' (known: "
                                + "\(Input.allCases.map(\.rawValue).joined(separator: ", ")))"
                        )
                    }
                    args.append((type, input))
                }
            }
            return Signature(returns: returns, symbol: symbol, args: args)
        }
    }

    public let signature: Signature
    public let library: String
    private let function: @convention(c) () -> Void
    private let cif: UnsafeMutablePointer<ffi_cif>
    private let argTypes: UnsafeMutablePointer<UnsafeMutablePointer<ffi_type>?>
    private let argStorage: UnsafeMutableRawPointer
    private let argPointers: UnsafeMutablePointer<UnsafeMutableRawPointer?>
    private let pollNanos: Int64
    // What the function may ask about: recent upstream latencies and the arrival rate.
    private var latencies: [Double] = []
    private var latencyNext = 0
    private var lastArrival: Int64 = .min
    private var gapNanos: Double = 0

    /// Loads `library` (a path, or a name the dynamic linker finds), finds the symbol and prepares
    /// the call. Every mistake is a ConfigError naming the library, the symbol or the argument.
    public init(library: String, signature text: String, pollMillis: Double = 5) throws {
        let sig = try Signature.parse(text)
        guard let handle = dlopen(library, RTLD_NOW | RTLD_LOCAL) else {
            throw ConfigError(
                message: "foreign policy library \(library) cannot be loaded: \(String(cString: dlerror()))")
        }
        guard let sym = dlsym(handle, sig.symbol) else {
            throw ConfigError(message: "foreign policy library \(library) does not export '\(sig.symbol)'")
        }
        signature = sig
        self.library = library
        function = unsafeBitCast(sym, to: (@convention(c) () -> Void).self)
        pollNanos = Int64(pollMillis * 1e6)
        let n = sig.args.count
        cif = .allocate(capacity: 1)
        argTypes = .allocate(capacity: max(n, 1))
        argStorage = .allocate(byteCount: max(n, 1) * 8, alignment: 8)
        argPointers = .allocate(capacity: max(n, 1))
        for (i, a) in sig.args.enumerated() {
            argTypes[i] = a.type.ffiType
            argPointers[i] = argStorage + i * 8
        }
        let status = ffi_prep_cif(cif, mlp_ffi_default_abi(), UInt32(n), sig.returns.ffiType, n > 0 ? argTypes : nil)
        guard status == FFI_OK else {
            throw ConfigError(message: "foreign policy '\(text)': ffi_prep_cif failed with status \(status.rawValue)")
        }
    }

    deinit {
        cif.deallocate()
        argTypes.deallocate()
        argStorage.deallocate()
        argPointers.deallocate()
    }

    private func percentile(_ q: Double) -> Double { nearestRank(latencies.sorted(), q).map { $0 / 1e6 } ?? 0 }

    private func value(_ input: Input, _ state: PolicyInput) -> Double {
        let (now, queue, limits) = (state.now, state.queue, state.limits)
        switch input {
        case .queuedItems: return Double(state.queuedItems)
        case .queuedRequests: return Double(queue.count)
        case .oldestWaitMs: return queue.first.map { Double(now - $0.arrival) / 1e6 } ?? 0
        case .newestWaitMs: return queue.last.map { Double(now - $0.arrival) / 1e6 } ?? 0
        case .timeToDeadlineMs: return Double((queue.map(\.deadline).min() ?? now) - now) / 1e6
        case .sloMs: return Double(limits.sloNanos) / 1e6
        case .p50Ms: return percentile(0.5)
        case .p95Ms: return percentile(0.95)
        case .arrivalRate:
            guard gapNanos > 0 else { return 0 }
            return 1e9 / max(gapNanos, Double(now - lastArrival))
        case .inflightBatches: return Double(state.inflight)
        case .maxBatchItems: return Double(limits.maxBatchItems)
        case .maxInflightBatches: return Double(limits.maxInflightBatches)
        }
    }

    public func decide(_ state: PolicyInput) -> PolicyDecision {
        for r in state.queue where r.arrival > lastArrival {
            if lastArrival != .min {
                let gap = Double(r.arrival - lastArrival)
                gapNanos = gapNanos > 0 ? 0.25 * gap + 0.75 * gapNanos : gap
            }
            lastArrival = r.arrival
        }
        guard !state.queue.isEmpty else { return .wait(until: .max) }
        for (i, a) in signature.args.enumerated() {
            let v = value(a.input, state)
            let slot = argStorage + i * 8
            switch a.type {
            case .double: slot.storeBytes(of: v, as: Double.self)
            case .float: slot.storeBytes(of: Float(v), as: Float.self)
            case .int32: slot.storeBytes(of: Int32(clamping: Int64(v.isFinite ? v.rounded(.down) : 0)), as: Int32.self)
            case .int64: slot.storeBytes(of: Int64(v.isFinite ? v.rounded(.down) : 0), as: Int64.self)
            }
        }
        // libffi writes at least a full register for integer returns.
        var result: (Int64, Int64) = (0, 0)
        let items: Double = withUnsafeMutableBytes(of: &result) { raw in
            ffi_call(cif, function, raw.baseAddress, argPointers)
            switch signature.returns {
            case .int32: return Double(raw.load(as: Int32.self))
            case .int64: return Double(raw.load(as: Int64.self))
            case .double: return raw.load(as: Double.self)
            case .float: return Double(raw.load(as: Float.self))
            }
        }
        if items.isFinite, items >= 1 { return .dispatch(items: Int(min(items, Double(Int32.max)))) }
        return .wait(until: state.now + pollNanos)
    }

    public func observe(items: Int, arrivals: [Int64], ok: Bool, dispatched: Int64, finished: Int64) {
        guard ok else { return }
        let latency = Double(finished - dispatched)
        if latencies.count < 128 { latencies.append(latency) } else { latencies[latencyNext] = latency }
        latencyNext = (latencyNext + 1) % 128
    }
}
