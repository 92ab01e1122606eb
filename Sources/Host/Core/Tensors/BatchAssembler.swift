import PluginAPI

/// Merges requests' inputs along dim 0 into one batch, and splits the batch's outputs back by each
/// request's item count. Requests are only merged when their batch keys match (same input names,
/// datatypes and trailing dims), which the queue guarantees.
public enum BatchAssembler {
    /// What makes requests batchable together: input names, datatypes and trailing dims.
    public static func batchKey(of inputs: [Tensor]) -> String {
        inputs.sorted { $0.name < $1.name }
            .map { "\($0.name):\($0.datatype.rawValue):\($0.shape.dropFirst().map(String.init).joined(separator: "x"))" }
            .joined(separator: "|")
    }

    /// Checks one request's decoded inputs: data agrees with shapes, one shared dim 0 of at least 1.
    /// Returns the item count or a message saying what is wrong.
    public static func validate(inputs: [Tensor]) -> Result<Int, RequestError> {
        guard let first = inputs.first else { return .failure(.badRequest("the request has no inputs")) }
        var names = Set<String>()
        for t in inputs {
            if let problem = t.validate() { return .failure(.badRequest(problem)) }
            if !names.insert(t.name).inserted { return .failure(.badRequest("input '\(t.name)' appears twice")) }
            if t.shape[0] != first.shape[0] {
                return .failure(.badRequest("inputs disagree on dim 0 (items): '\(first.name)' has \(first.shape[0]), '\(t.name)' has \(t.shape[0])"))
            }
        }
        if first.shape[0] < 1 { return .failure(.badRequest("input '\(first.name)' has 0 items in dim 0")) }
        return .success(Int(first.shape[0]))
    }

    /// Concatenates along dim 0. A batch of one request is passed through without copying.
    public static func merge(_ requests: [[Tensor]]) -> [Tensor] {
        guard requests.count > 1, let first = requests.first else { return requests.first ?? [] }
        return first.map { proto in
            let parts = requests.map { inputs in inputs.first { $0.name == proto.name }! }
            let total = parts.reduce(0) { $0 + $1.byteCount }
            let storage = TensorStorage(count: total)
            var at = 0
            for p in parts {
                if p.byteCount > 0 { (storage.base + at).copyMemory(from: p.bytes.baseAddress!, byteCount: p.byteCount) }
                at += p.byteCount
            }
            var shape = proto.shape
            shape[0] = parts.reduce(0) { $0 + $1.shape[0] }
            return Tensor(name: proto.name, datatype: proto.datatype, shape: shape, storage: storage)
        }
    }

    /// Splits outputs by item counts. Fails (for the whole batch: the reply cannot be attributed)
    /// when an output's dim 0 is not the batch's item count.
    public static func split(_ outputs: [Tensor], itemCounts: [Int]) -> Result<[[Tensor]], RequestError> {
        let total = itemCounts.reduce(0, +)
        var perRequest = Array(repeating: [Tensor](), count: itemCounts.count)
        for out in outputs {
            guard out.shape.first == Int64(total) else {
                return .failure(.upstream("the model server's output '\(out.name)' has dim 0 = \(out.shape.first.map(String.init) ?? "none") for a batch of \(total) items"))
            }
            guard let offsets = out.itemOffsets(), offsets.last == out.byteCount else {
                return .failure(.upstream("the model server's output '\(out.name)' has data that does not match its shape \(out.shape)"))
            }
            var at = 0
            for (i, n) in itemCounts.enumerated() {
                perRequest[i].append(out.slice(items: at, count: n, offsets: offsets))
                at += n
            }
        }
        return .success(perRequest)
    }
}

/// An error answered to one client, with its HTTP status.
public struct RequestError: Error, Sendable, Equatable {
    public let status: Int
    public let message: String

    public init(status: Int, message: String) {
        self.status = status
        self.message = message
    }

    public static func badRequest(_ m: String) -> RequestError { .init(status: 400, message: m) }
    public static func upstream(_ m: String) -> RequestError { .init(status: 502, message: m) }
}
