/// Tables of simulation results: markdown for people, CSV for tools.
public enum SimulationReport {
    public static func table(_ results: [SimulationResult]) -> String {
        var out =
            "| trace | policy | requests | SLA miss % | p50 ms | p99 ms | max ms | avg replicas | replica-s | "
            + "shed | mean batch |\n"
        out += "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
        for r in results {
            out +=
                "| \(r.trace) | \(r.policy) | \(r.requests) | \(f(r.missPercent, 2)) | \(f(r.p50Millis, 1)) | "
                + "\(f(r.p99Millis, 1)) | "
                + "\(f(r.maxMillis, 0)) | \(f(r.averageReplicas, 2)) | \(f(r.replicaSeconds, 0)) | \(r.shed) | \(f(r.meanBatch, 1)) |\n"
        }
        let mixed = results.filter { !$0.byPriority.isEmpty }
        if !mixed.isEmpty {
            out += "\n| trace | policy | priority | requests | SLA miss % |\n|---|---|---:|---:|---:|\n"
            for r in mixed {
                for o in r.byPriority {
                    out += "| \(r.trace) | \(r.policy) | \(o.priority) | \(o.requests) | \(f(o.missPercent, 2)) |\n"
                }
            }
        }
        return out
    }

    public static func csv(_ results: [SimulationResult]) -> String {
        var out =
            "trace,profile,policy,slo_ms,requests,served,shed,sla_miss_pct,p50_ms,p99_ms,max_ms,avg_replicas,replica_seconds,batches,mean_batch,batch_histogram_pow2\n"
        for r in results {
            out +=
                "\(r.trace),\(r.profile),\"\(r.policy)\",\(r.sloMillis),\(r.requests),\(r.served),\(r.shed),\(f(r.missPercent, 4)),"
                + "\(f(r.p50Millis, 3)),\(f(r.p99Millis, 3)),\(f(r.maxMillis, 3)),\(f(r.averageReplicas, 4)),\(f(r.replicaSeconds, 2)),"
                + "\(r.batches),\(f(r.meanBatch, 3)),\(r.histogram.map(String.init).joined(separator: " "))\n"
        }
        return out
    }

    private static func f(_ x: Double, _ digits: Int) -> String { String(format: "%.\(digits)f", x) }
}
