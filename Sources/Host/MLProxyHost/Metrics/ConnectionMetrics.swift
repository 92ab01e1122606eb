/// The inference listener's connections in the Prometheus text format: open now, refused at the
/// `max_connections` limit, and closed by a limit (header, body or idle timeout, head too large).
enum ConnectionMetrics {
    static func render(_ c: ServerStats.Counts, into out: inout String) {
        out += "# HELP mlproxy_connections Client connections open now.\n# TYPE mlproxy_connections gauge\n"
        out += "mlproxy_connections \(c.open)\n"
        out += "# HELP mlproxy_connections_refused_total Connections closed at accept: max_connections were open.\n"
        out += "# TYPE mlproxy_connections_refused_total counter\nmlproxy_connections_refused_total \(c.refused)\n"
        out += "# HELP mlproxy_connections_closed_total Connections the proxy closed by a limit, by reason.\n"
        out += "# TYPE mlproxy_connections_closed_total counter\n"
        for reason in ["header_timeout", "body_timeout", "idle_timeout", "header_too_large"] {
            out += "mlproxy_connections_closed_total{reason=\"\(reason)\"} \(c.closed[reason, default: 0])\n"
        }
    }
}
