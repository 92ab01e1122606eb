/// Whose doing a failed response was, as the client sees it in the `mlproxy-failure` header.
public enum FailureCause: String, Sendable, Equatable {
    /// This request's own content: refused before it was queued, or it failed when sent alone.
    case own
    /// The batch this request was in was rejected and the cause could not be isolated (isolation off,
    /// or this request's deadline came first). The request may or may not have been the cause.
    case batch
    /// The model server failed (unreachable, timed out, answered 502/503/504, or sent a reply that
    /// cannot be read): nobody's content is to blame.
    case upstream
    /// The proxy refused the request to protect its latency objectives (queue full, shed, deadline),
    /// or failed itself (an internal error in the host or a plugin).
    case proxy
}

/// Every way a request can end without the model's answer, and the one place where each maps to its
/// HTTP status, its metric label and its `mlproxy-failure` cause. Thrown (or carried in a `Result`
/// where the value crosses event loops) from the router down to the plugin wrappers; nothing else in
/// the host writes a status code.
public struct RequestError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable, Hashable {
        /// The request is malformed or does not fit the model (400).
        case invalid
        /// The request's content type or an element of it is not supported here (415).
        case unsupported
        /// The body is larger than `max_body_bytes` (413).
        case tooLarge
        /// No such model or route (404).
        case notFound
        /// The route exists for another method (405).
        case methodNotAllowed
        /// The model's queue is full (429, retry later).
        case queueFull
        /// The policy shed the request to keep the others within their SLO (503, retry later).
        case shed
        /// The request's deadline passed while it waited, with `late_requests: reject` (504).
        case deadline
        /// The model server cannot be reached, or said it is unavailable (503, retry later).
        case unavailable
        /// The model server failed: a broken connection, a 502 or a reply that cannot be read (502).
        case upstreamError
        /// The model server did not answer in time (504).
        case upstreamTimeout
        /// The batch was rejected for its content and the culprit could not be isolated (502).
        case batchRejected
        /// The model server rejected this request on its own, with this status (a 4xx, or a 5xx
        /// other than 502-504); the client gets the server's status and words.
        case modelServer(status: Int)
        /// A bug in the host or a plugin (500).
        case `internal`

        /// The HTTP status the client gets.
        public var httpStatus: Int {
            switch self {
            case .invalid: return 400
            case .unsupported: return 415
            case .tooLarge: return 413
            case .notFound: return 404
            case .methodNotAllowed: return 405
            case .queueFull: return 429
            case .shed, .unavailable: return 503
            case .deadline, .upstreamTimeout: return 504
            case .upstreamError, .batchRejected: return 502
            case .modelServer(let status): return status
            case .internal: return 500
            }
        }

        /// The `reason` label of `mlproxy_rejected_total` for requests refused before dispatch.
        public var metricLabel: String {
            switch self {
            case .invalid: return "invalid"
            case .unsupported: return "unsupported"
            case .tooLarge: return "too_large"
            case .notFound: return "not_found"
            case .methodNotAllowed: return "method_not_allowed"
            case .queueFull: return "queue_full"
            case .shed: return "shed"
            case .deadline: return "deadline"
            case .unavailable: return "unavailable"
            case .upstreamError: return "upstream_error"
            case .upstreamTimeout: return "upstream_timeout"
            case .batchRejected: return "batch_rejected"
            case .modelServer: return "model_server"
            case .internal: return "internal"
            }
        }

        /// Whose doing it was, for the `mlproxy-failure` header.
        public var cause: FailureCause {
            switch self {
            case .invalid, .unsupported, .tooLarge, .notFound, .methodNotAllowed, .modelServer: return .own
            case .queueFull, .shed, .deadline, .internal: return .proxy
            case .unavailable, .upstreamError, .upstreamTimeout: return .upstream
            case .batchRejected: return .batch
            }
        }

        /// The `retry-after` seconds a client gets unless the model server said otherwise.
        public var defaultRetryAfterSeconds: Int? {
            switch self {
            case .queueFull, .shed, .unavailable: return 1
            default: return nil
            }
        }

        /// The kind of a model server's own answer `status`, when the proxy forwards it as the
        /// outcome of one request (502-504 and anything not an error are the server failing).
        public static func fromModelServer(status: Int) -> Kind {
            switch status {
            case 503: return .unavailable
            case 504: return .upstreamTimeout
            case 400..<600 where status != 502: return .modelServer(status: status)
            default: return .upstreamError
            }
        }
    }

    public let kind: Kind
    public let message: String
    /// Seconds for a `retry-after` header, when the client should come back later.
    public let retryAfterSeconds: Int?

    public init(_ kind: Kind, _ message: String, retryAfterSeconds: Int? = nil) {
        self.kind = kind
        self.message = message
        self.retryAfterSeconds = retryAfterSeconds ?? kind.defaultRetryAfterSeconds
    }

    public var status: Int { kind.httpStatus }
    public var cause: FailureCause { kind.cause }
    public var description: String { "\(status) (\(kind.metricLabel)): \(message)" }

    public static func invalid(_ m: String) -> RequestError { .init(.invalid, m) }
    public static func unsupported(_ m: String) -> RequestError { .init(.unsupported, m) }
    public static func upstream(_ m: String) -> RequestError { .init(.upstreamError, m) }
    public static func `internal`(_ m: String) -> RequestError { .init(.internal, m) }
}
