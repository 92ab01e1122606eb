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
    /// The proxy refused the request to protect its latency objectives (queue full, shed, deadline).
    case proxy
}

/// An error answered to one client, with its HTTP status.
public struct RequestError: Error, Sendable, Equatable {
    public let status: Int
    public let message: String
    public var cause: FailureCause
    /// Seconds for a `retry-after` header, when the client should come back later.
    public var retryAfterSeconds: Int?

    public init(status: Int, message: String, cause: FailureCause = .own, retryAfterSeconds: Int? = nil) {
        self.status = status
        self.message = message
        self.cause = cause
        self.retryAfterSeconds = retryAfterSeconds
    }

    public static func badRequest(_ m: String) -> RequestError { .init(status: 400, message: m) }
    public static func upstream(_ m: String) -> RequestError { .init(status: 502, message: m, cause: .upstream) }
}
