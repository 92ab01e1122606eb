import Foundation
import NIOCore

/// What a reload did, model by model: one log line each, and the admin listener's answer.
public struct ReloadSummary: Sendable, Equatable {
    public var added: [String] = []
    public var removed: [String] = []
    /// Rebuilt models and what changed in each (config keys, or a plugin file that changed on disk).
    public var changed: [String: [String]] = [:]
    public var unchanged: [String] = []

    var json: String {
        JSONText.write([
            "added": added, "removed": removed, "changed": changed, "unchanged": unchanged,
        ]) ?? "{}"
    }
}

/// Hot reload: SIGHUP and `POST /admin/reload` re-read the config file and its plugins.
extension ProxyRuntime {
    /// Re-reads the file the config came from and applies it (see `reload(to:)`).
    public func reload() throws -> ReloadSummary {
        guard let file = config.file else {
            throw ConfigError(message: "this proxy was not started from a config file, so there is nothing to re-read")
        }
        return try reload(to: ProxyConfig.load(file: file))
    }

    /// Applies a new config while serving. Everything is built before anything changes: a config that
    /// fails to parse, names a plugin that cannot be loaded, or gives a model settings its plugins
    /// refuse is refused whole, with the messages start-up gives, and the running config stays.
    /// Then, in one swap: added models start; a model whose config and plugins are as before keeps
    /// running untouched (its queue, its policy's state); a changed or removed model stops taking
    /// requests, answers those it holds under its old settings, then stops. Listener settings and
    /// built-in model servers need a restart: changing them refuses the reload.
    public func reload(to new: ProxyConfig) throws -> ReloadSummary {
        try reloadLock.withLock {
            guard !shuttingDown.withLockedValue({ $0 }) else {
                throw ConfigError(message: "the proxy is shutting down; reload refused")
            }
            let current = state.withLockedValue { $0 }
            let fixed = zip(startConfig.restartOnlySettings, new.restartOnlySettings).filter {
                $0.0.value != $0.1.value
            }
            guard fixed.isEmpty else {
                let keys = fixed.map(\.0.key).joined(separator: ", ")
                throw ConfigError(
                    message:
                        "\(new.file ?? "<config>"): \(keys) cannot change while the proxy runs (restart it for that); "
                        + "nothing was changed")
            }
            let registry = PluginRegistry(configPaths: new.pluginPaths)
            try Self.loadPlugins(new, into: registry)

            var summary = ReloadSummary()
            var models: [String: ModelService] = [:]
            var replaced: [ModelService] = []
            var started: [ModelService] = []
            do {
                for m in new.models {
                    guard let old = current.models[m.name] else {
                        models[m.name] = try makeModel(m, config: new, registry: registry)
                        started.append(models[m.name]!)
                        summary.added.append(m.name)
                        continue
                    }
                    let changes = Self.changes(from: old.config, to: m, current.registry, registry)
                    if changes.isEmpty {
                        models[m.name] = old
                        summary.unchanged.append(m.name)
                    } else {
                        models[m.name] = try makeModel(m, config: new, registry: registry, succeeding: old)
                        started.append(models[m.name]!)
                        replaced.append(old)
                        summary.changed[m.name] = changes
                    }
                }
            } catch {
                // Nothing was started; close what was built.
                for m in started { m.shutdown() }
                throw error
            }
            for (name, old) in current.models where models[name] == nil {
                replaced.append(old)
                summary.removed.append(name)
            }
            summary.removed.sort()
            state.withLockedValue { s in
                s.config = new
                s.registry = registry
                s.models = models
                for old in replaced { s.retiring[ObjectIdentifier(old)] = old }
            }
            for m in started { m.start() }
            for old in replaced {
                old.retire(on: old.loop).whenComplete { [self] _ in
                    _ = state.withLockedValue { $0.retiring.removeValue(forKey: ObjectIdentifier(old)) }
                }
            }
            log(summary, removedLoads: replaced.filter { models[$0.config.name] == nil })
            return summary
        }
    }

    /// A policy's parameters without the limits the host adds to them.
    static func userPolicyParams(_ json: String) -> NSDictionary? {
        guard var d = (try? JSONSerialization.jsonObject(with: Data(json.utf8))) as? [String: Any] else { return nil }
        for k in ["slo_ms", "max_batch_items", "max_inflight_batches"] { d[k] = nil }
        return d as NSDictionary
    }

    private func log(_ summary: ReloadSummary, removedLoads: [ModelService]) {
        for name in summary.added { logger.info("reload: model '\(name)' added") }
        for (name, what) in summary.changed.sorted(by: { $0.key < $1.key }) {
            logger.info(
                "reload: model '\(name)' changed (\(what.joined(separator: ", "))); requests it holds finish under the old settings"
            )
        }
        for old in removedLoads {
            let load = old.load()
            logger.info(
                "reload: model '\(old.config.name)' removed; draining \(load.queued) queued request(s), \(load.inflight) batch(es) in flight"
            )
        }
        if summary.added.isEmpty && summary.changed.isEmpty && summary.removed.isEmpty {
            logger.info("reload: no model changed")
        }
    }

    /// What differs between a model's running config and its new one, named by config key; and any
    /// plugin it uses that is now a different load (a new file at the same path).
    static func changes(
        from old: ModelConfig, to new: ModelConfig, _ oldRegistry: PluginRegistry, _ newRegistry: PluginRegistry
    ) -> [String] {
        var out: [String] = []
        let keys: [String: String] = [
            "backend": "backend", "metadata": "metadata", "backendParamsJSON": "backend_params",
            "upstream": "upstream", "upstreamModel": "upstream_model", "upstreamVersion": "upstream_version",
            "upstreamTimeoutMillis": "upstream_timeout_ms", "connectTimeoutMillis": "connect_timeout_ms",
            "codecs": "codecs", "policy": "policy", "foreignPolicy": "foreign_policy",
            "policyParamsJSON": "policy_params", "padValue": "pad", "signature": "inputs/outputs",
            "checkSignature": "check_signature", "bisectFailures": "isolate_failures",
            "retryOnReset": "retry_on_reset", "retryBudget": "retry_budget", "maxBatchItems": "max_batch_items",
            "maxQueuedItems": "max_queued_items", "maxInflightBatches": "max_inflight_batches", "sloNanos": "slo_ms",
            "rejectLate": "late_requests", "priorityLevels": "priority_levels/default_priority_level",
        ]
        func compare(_ a: Any, _ b: Any) {
            for (x, y) in zip(Mirror(reflecting: a).children, Mirror(reflecting: b).children) {
                guard let label = x.label, "\(x.value)" != "\(y.value)" else { continue }
                // The queue's limits are several config keys: name each.
                if label == "limits" { compare(x.value, y.value) } else { out.append(keys[label] ?? label) }
            }
        }
        compare(old, new)
        // policy_params carries slo_ms and the other limits too: name it only when the user's own
        // parameters differ.
        if let i = out.firstIndex(of: "policy_params"),
            userPolicyParams(old.policyParamsJSON) == userPolicyParams(new.policyParamsJSON)
        {
            out.remove(at: i)
        }
        // Same names, but is each still the same load of the same plugin?
        var uses: [(ComponentKind, String)] = [(.backend, new.backend)]
        if new.foreignPolicy == nil { uses.append((.policy, new.policy)) }
        for chain in new.codecs {
            for e in chain.elements {
                uses.append((.codec, e.name))
                uses.append((.stage, e.name))
            }
        }
        for (kind, name) in uses {
            let a = try? oldRegistry.component(kind, name)
            let b = try? newRegistry.component(kind, name)
            if a.map({ $0.isSameLoad(as: b) }) != true, let file = b?.file ?? a?.file, !out.contains("plugin \(file)") {
                out.append("plugin \(file)")
            }
        }
        return out
    }
}
