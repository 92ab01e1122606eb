import Foundation
import PluginAPI

/// Parsing one model's entry: its codec chains, signature, policy and limits.
extension ProxyConfig {
    static func parseSpecs(_ node: ConfigNode) throws -> [TensorSpec] {
        try node.list().map { n in
            let t = try n.mapping(known: ["name", "datatype", "shape", "optional"])
            guard let name = t["name"], let dt = t["datatype"], let shape = t["shape"] else {
                throw n.fail(
                    "'name', 'datatype' and 'shape' are required, e.g. {name: x, datatype: FP32, shape: [-1, 4]}")
            }
            let dtName = try dt.string()
            guard let datatype = DataType(v2Name: dtName) else {
                throw dt.fail(
                    "'\(dtName)' is not a v2 datatype (\(DataType.allCases.map(\.name).joined(separator: ", ")))")
            }
            return TensorSpec(
                name: try name.string(), datatype: datatype,
                shape: try shape.list().map { Int64(try $0.int(min: -1)) },
                optional: try t["optional"]?.bool() ?? false)
        }
    }

    /// A codec chain: "json", "b64 -> image -> resize(224,224) -> normalise", or a mapping with
    /// name/params (one codec) or chain, plus stages, content_types and rank.
    static func parseChain(_ c: ConfigNode) throws -> CodecChainSpec {
        if let text = c.value as? String { return CodecChainSpec(try parseChainText(text, c)) }
        let cm = try c.mapping(known: ["name", "params", "chain", "stages", "content_types", "rank"])
        var elements: [ChainElement]
        switch (cm["name"], cm["chain"]) {
        case (let name?, nil):
            elements = [ChainElement(name: try name.string(), paramsJSON: try paramsJSON(cm["params"]))]
        case (nil, let chain?):
            if cm["params"] != nil {
                throw c.fail("'params' goes with 'name'; in a 'chain' write params as name(args) or use 'stages'")
            }
            if let text = chain.value as? String {
                elements = try parseChainText(text, chain)
            } else {
                elements = try chain.list().map { try parseChainElement($0) }
            }
        case (nil, nil):
            throw c.fail("'name' (a codec) or 'chain' (e.g. \"b64 -> image -> resize(224,224)\") is required")
        case (_?, _?): throw c.fail("give 'name' or 'chain', not both")
        }
        for s in try cm["stages"]?.list() ?? [] { elements.append(try parseChainElement(s)) }
        if elements.isEmpty { throw c.fail("a chain needs at least one element") }
        let types = try cm["content_types"].map { n -> [String] in
            let list = try n.list().map { try $0.string().lowercased() }
            if list.isEmpty { throw n.fail("list at least one content type") }
            return list
        }
        return CodecChainSpec(
            elements, contentTypes: types, rank: try cm["rank"]?.int(min: -1_000_000, max: 1_000_000) ?? 0)
    }

    /// A stage or codec as a string ("resize(224,224)") or {name, params}.
    static func parseChainElement(_ n: ConfigNode) throws -> ChainElement {
        if let text = n.value as? String {
            let parts = try parseChainText(text, n)
            if parts.count != 1 { throw n.fail("one element per list entry; '->' belongs in a 'chain' string") }
            return parts[0]
        }
        let m = try n.mapping(known: ["name", "params"])
        guard let name = m["name"] else { throw n.fail("'name' is required") }
        return ChainElement(name: try name.string(), paramsJSON: try paramsJSON(m["params"]))
    }

    /// "a -> b(1, 2) -> c(bgr)": names with optional arguments, which become {"args": [...]}.
    static func parseChainText(_ text: String, _ n: ConfigNode) throws -> [ChainElement] {
        try text.components(separatedBy: "->").map { raw in
            let part = raw.trimmingCharacters(in: .whitespaces)
            var name = part
            var args: [Any]?
            if let open = part.firstIndex(of: "(") {
                guard part.hasSuffix(")") else { throw n.fail("'\(part)': arguments must end with ')'") }
                name = String(part[..<open]).trimmingCharacters(in: .whitespaces)
                let inner = part[part.index(after: open)..<part.index(before: part.endIndex)]
                args = inner.split(separator: ",").map { a -> Any in
                    let t = a.trimmingCharacters(in: .whitespaces)
                    if let i = Int(t) { return i }
                    if let d = Double(t) { return d }
                    return t
                }
            }
            guard !name.isEmpty, name.allSatisfy({ $0.isLetter || $0.isNumber || "-_".contains($0) }) else {
                throw n.fail(
                    "'\(part)' is not a codec or stage name (letters, digits, '-', '_'), e.g. \"b64 -> image "
                        + "-> resize(224,224)\""
                )
            }
            guard let args else { return ChainElement(name: name) }
            guard let text = JSONText.write(["args": args]) else {
                throw n.fail("'\(part)': arguments must be numbers or words")
            }
            return ChainElement(name: name, paramsJSON: text)
        }
    }

    static func paramsJSON(_ p: ConfigNode?) throws -> String {
        guard let p else { return "{}" }
        guard let dict = p.value as? [String: Any] else { throw p.fail("expected a mapping") }
        guard let text = JSONText.write(dict) else {
            throw p.fail("params must be numbers, strings, booleans, lists or mappings")
        }
        return text
    }

    static func parseModel(_ node: ConfigNode, defaults: ModelDefaults) throws -> ModelConfig {
        let m = try node.mapping(known: [
            "name", "backend", "backend_params", "upstream", "upstream_model", "upstream_version",
            "upstream_timeout_ms", "connect_timeout_ms", "codecs", "metadata",
            "policy", "policy_params", "foreign_policy", "slo_ms", "max_batch_items", "max_queued_items",
            "max_inflight_batches", "late_requests", "pad", "pad_value", "inputs", "outputs", "check_signature",
            "isolate_failures", "retry_on_reset", "retry_budget", "priority_levels", "default_priority_level",
        ])
        guard let nameNode = m["name"] else { throw node.fail("'name' is required") }
        let name = try nameNode.string()
        guard !name.isEmpty, name.allSatisfy({ $0.isLetter || $0.isNumber || "-_.".contains($0) }) else {
            throw nameNode.fail("'\(name)' must be letters, digits, '-', '_' or '.'")
        }
        guard let upstream = m["upstream"] else {
            throw node.fail("'upstream' (http://host:port of the model server) is required")
        }
        let slo = try m["slo_ms"]?.double(min: 0.001) ?? 1000
        let maxItems = try m["max_batch_items"]?.int(min: 1, max: 65536) ?? 32
        let inflight = try m["max_inflight_batches"]?.int(min: 1, max: 4096) ?? 1
        let maxQueued = try m["max_queued_items"]?.int(min: 1) ?? max(4096, maxItems * 16)
        let late = try m["late_requests"]?.string() ?? "dispatch"
        guard late == "dispatch" || late == "reject" else {
            throw m["late_requests"]!.fail("must be 'dispatch' or 'reject'")
        }
        var params: [String: Any] = [:]
        if let p = m["policy_params"] {
            guard let dict = p.value as? [String: Any] else { throw p.fail("expected a mapping") }
            params = dict
        }
        params["slo_ms"] = slo
        params["max_batch_items"] = maxItems
        params["max_inflight_batches"] = inflight
        guard let json = JSONText.write(params) else {
            throw (m["policy_params"] ?? node).fail("values must be numbers, strings, booleans, lists or mappings")
        }
        var foreign: ForeignPolicySpec?
        if let f = m["foreign_policy"] {
            let fm = try f.mapping(known: ["library", "signature", "poll_ms"])
            guard let lib = fm["library"], let sig = fm["signature"] else {
                throw f.fail(
                    "'library' and 'signature' are required, e.g. signature: \"int pick(double queued_items, "
                        + "double oldest_wait_ms, double slo_ms, double p95_ms)\""
                )
            }
            foreign = ForeignPolicySpec(
                library: try lib.string(), signature: try sig.string(),
                pollMillis: try fm["poll_ms"]?.double(min: 0.01) ?? 5)
            do { _ = try ForeignPolicy.Signature.parse(foreign!.signature) } catch let e as ConfigError {
                throw sig.fail(e.message)
            }
            if m["policy"] != nil || m["policy_params"] != nil {
                throw f.fail("a model has either 'policy' or 'foreign_policy', not both")
            }
        }
        var codecs: [CodecChainSpec] = []
        if let list = m["codecs"] {
            codecs = try list.list().map(parseChain)
            if codecs.isEmpty { throw list.fail("at least one codec is required") }
        } else {
            codecs = defaults.codecs
        }
        let backend = try m["backend"]?.string() ?? defaults.backend
        var metadata = defaults.metadata[backend]
        if let md = m["metadata"] { metadata = try parseMetadata(md) }
        let pad = try m["pad"]?.bool() ?? false
        var signature: ModelSignature?
        if let inputs = m["inputs"] {
            signature = ModelSignature(
                inputs: try parseSpecs(inputs), outputs: try m["outputs"].map(parseSpecs) ?? [], source: "the config")
            if signature!.inputs.isEmpty {
                throw inputs.fail("list at least one input, or leave 'inputs' out to use the model server's metadata")
            }
        } else if let o = m["outputs"] {
            throw o.fail("'outputs' goes with 'inputs'")
        }
        // YAML 1.1 reads an unquoted `off` as false.
        let isolate =
            m["isolate_failures"]?.value as? Bool == false ? "off" : try m["isolate_failures"]?.string() ?? "bisect"
        guard isolate == "bisect" || isolate == "off" else {
            throw m["isolate_failures"]!.fail("must be 'bisect' or 'off'")
        }
        var budget = RetryBudget.Settings()
        if let b = m["retry_budget"] {
            let bm = try b.mapping(known: ["percent", "min_concurrency"])
            budget.percent = try bm["percent"]?.double(min: 0) ?? budget.percent
            budget.minConcurrency = try bm["min_concurrency"]?.int(min: 0) ?? budget.minConcurrency
        }
        var levels: PriorityLevels?
        if let l = m["priority_levels"] {
            let count = try l.int(min: 1, max: 1_000_000)
            // Triton requires the default; here it is the lowest level when left out, so a request that
            // says nothing never goes ahead of one that asked.
            let dflt = try m["default_priority_level"]?.int(min: 1, max: count) ?? count
            levels = PriorityLevels(count: count, defaultLevel: dflt)
        } else if let d = m["default_priority_level"] {
            throw d.fail("'default_priority_level' goes with 'priority_levels'")
        }
        let padValue = try m["pad_value"]?.double(min: -Double.greatestFiniteMagnitude)
        if padValue != nil && !pad { throw m["pad_value"]!.fail("'pad_value' needs 'pad: true'") }
        return ModelConfig(
            name: name,
            backend: backend,
            metadata: metadata,
            backendParamsJSON: try paramsJSON(m["backend_params"]),
            upstream: try upstream.url(),
            upstreamModel: try m["upstream_model"]?.string() ?? name,
            upstreamVersion: try m["upstream_version"]?.string() ?? "",
            upstreamTimeoutMillis: Int64(try m["upstream_timeout_ms"]?.int(min: 1) ?? 30_000),
            connectTimeoutMillis: Int64(try m["connect_timeout_ms"]?.int(min: 1, max: 600_000) ?? 5_000),
            codecs: codecs,
            policy: try foreign.map { "foreign:" + (try ForeignPolicy.Signature.parse($0.signature)).symbol }
                ?? m["policy"]?.string() ?? defaults.policy,
            foreignPolicy: foreign,
            policyParamsJSON: json,
            limits: QueueLimits(
                maxBatchItems: maxItems, maxQueuedItems: maxQueued, maxInflightBatches: inflight,
                sloNanos: Int64(slo * 1e6), rejectLate: late == "reject"),
            padValue: pad ? (padValue ?? 0) : nil,
            signature: signature,
            checkSignature: try m["check_signature"]?.bool() ?? true,
            bisectFailures: isolate == "bisect",
            retryOnReset: try m["retry_on_reset"]?.bool() ?? true,
            retryBudget: budget, priorityLevels: levels)
    }
}
