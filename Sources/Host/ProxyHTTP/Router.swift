import NIOCore
import NIOHTTP1

/// Method-and-path routing, in memory: `respond` needs no socket, so tests call it directly (the way
/// Hummingbird's router test mode does) and `HTTPServer` calls it for every request it reads.
///
/// A pattern is a path of segments: a literal (`v2`), a capture (`{model}`: any one segment), or a
/// capture with a literal suffix (`{model}:predict`: a segment that ends with `:predict`, captured
/// without it). Empty segments are ignored, so `/v2/` is `/v2`; the query string is not part of the
/// path. Routes are tried in the order they were added.
public struct Router: Sendable {
    public typealias Handler = @Sendable (IncomingRequest, RouteParameters) -> EventLoopFuture<OutgoingResponse>

    /// Why a request has no handler.
    public enum Miss: Error, Sendable, Equatable {
        /// No pattern matches the path.
        case notFound
        /// Patterns match the path, for these methods only.
        case methodNotAllowed(allowed: [HTTPMethod])
    }

    private enum Segment: Sendable {
        case literal(Substring)
        case capture(String, suffix: Substring)
    }

    private struct Route: Sendable {
        let method: HTTPMethod
        let segments: [Segment]
        let handler: Handler
    }

    private var routes: [Route] = []

    public init() {}

    public mutating func add(_ method: HTTPMethod, _ pattern: String, _ handler: @escaping Handler) {
        let segments = pattern.split(separator: "/").map { s -> Segment in
            guard s.first == "{", let close = s.firstIndex(of: "}") else { return .literal(s) }
            let name = String(s[s.index(after: s.startIndex)..<close])
            return .capture(name, suffix: s[s.index(after: close)...])
        }
        routes.append(Route(method: method, segments: segments, handler: handler))
    }

    /// The handler for a method and path with its captures, or why there is none.
    public func match(_ method: HTTPMethod, path: Substring) -> Result<(Handler, RouteParameters), Miss> {
        let parts = path.split(separator: "/")
        var allowed: [HTTPMethod] = []
        for route in routes {
            guard let params = Self.captures(route.segments, parts) else { continue }
            if route.method == method { return .success((route.handler, params)) }
            if !allowed.contains(route.method) { allowed.append(route.method) }
        }
        return .failure(allowed.isEmpty ? .notFound : .methodNotAllowed(allowed: allowed))
    }

    private static func captures(_ segments: [Segment], _ parts: [Substring]) -> RouteParameters? {
        guard segments.count == parts.count else { return nil }
        var params = RouteParameters()
        for (segment, part) in zip(segments, parts) {
            switch segment {
            case .literal(let l):
                guard l == part else { return nil }
            case .capture(let name, let suffix):
                guard part.hasSuffix(suffix), part.count > suffix.count else { return nil }
                params.values[name] = String(part.dropLast(suffix.count))
            }
        }
        return params
    }
}

/// The segments a route's pattern captured, by name.
public struct RouteParameters: Sendable, Equatable {
    public var values: [String: String] = [:]
    public init() {}
    public subscript(_ name: String) -> String? { values[name] }
}
