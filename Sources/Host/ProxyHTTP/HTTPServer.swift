import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import ProxyCore

/// One HTTP request with its whole body, handed to a route on the connection's event loop.
public struct IncomingRequest: Sendable {
    public let method: HTTPMethod
    public let uri: String
    public let headers: HTTPHeaders
    public let body: ByteBuffer
    public let eventLoop: any EventLoop
    public let allocator: ByteBufferAllocator

    public init(
        method: HTTPMethod, uri: String, headers: HTTPHeaders = [:], body: ByteBuffer = ByteBuffer(),
        eventLoop: any EventLoop, allocator: ByteBufferAllocator = ByteBufferAllocator()
    ) {
        self.method = method
        self.uri = uri
        self.headers = headers
        self.body = body
        self.eventLoop = eventLoop
        self.allocator = allocator
    }

    /// The path without the query string.
    public var path: Substring { uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first ?? "" }
}

public struct OutgoingResponse: Sendable {
    public var status: Int
    public var headers: [(String, String)]
    public var body: ByteBuffer
    /// Close the connection after this response without saying so (no `connection: close`), as some
    /// model servers do after an error; the simulated server's `close_after_error` uses it.
    public var closeSilently = false

    public init(status: Int, headers: [(String, String)] = [], body: ByteBuffer) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    /// `{"error": message}` with the given status, the form v2 servers use for errors.
    public static func error(_ status: Int, _ message: String) -> OutgoingResponse {
        json(status, "{\"error\":\(JSONText.string(message))}")
    }

    public init(_ status: HTTPResponseStatus, headers: [(String, String)] = [], body: ByteBuffer) {
        self.init(status: Int(status.code), headers: headers, body: body)
    }

    public static func error(_ status: HTTPResponseStatus, _ message: String) -> OutgoingResponse {
        error(Int(status.code), message)
    }

    public static func json(_ status: HTTPResponseStatus, _ text: String) -> OutgoingResponse {
        json(Int(status.code), text)
    }

    public static func json(_ status: Int, _ text: String) -> OutgoingResponse {
        OutgoingResponse(
            status: status, headers: [("content-type", "application/json")], body: ByteBuffer(string: text))
    }
}

public typealias HTTPRoute = @Sendable (IncomingRequest) -> EventLoopFuture<OutgoingResponse>

/// The HTTP/1.1 server the proxy and the built-in model server share: keep-alive, pipelining (one
/// request at a time per connection, in order), a body size limit, and a route that answers with a
/// future.
public enum HTTPServer {
    /// `dropAfterRequests`: a connection that has answered that many requests closes, unannounced,
    /// when the next one arrives, as a keep-alive connection does when the server's idle timeout or
    /// request limit strikes as the client reuses it. Only the simulated server sets it.
    public static func bind(
        group: EventLoopGroup, address: ListenAddress, limits: ServerLimits, stats: ServerStats? = nil,
        dropAfterRequests: Int? = nil, route: @escaping HTTPRoute
    ) throws -> Channel {
        let counts = stats ?? ServerStats()
        return try ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.maxMessagesPerRead, value: 16)
            .childChannelInitializer { channel in
                // Over the limit: closed at once (the client sees a reset or EOF, and may retry).
                guard counts.open(limit: limits.maxConnections) else {
                    let refused = counts.snapshot.refused
                    // The 1st, 10th, 100th... refusal: a line per order of magnitude, not per connection.
                    if refused == Int(pow(10, Double(Int(log10(Double(refused)))))) {
                        Logger(label: "mlproxy.http").warning(
                            "refused a connection: max_connections (\(limits.maxConnections)) are open; \(refused) refused so far"
                        )
                    }
                    return channel.close()
                }
                channel.closeFuture.whenComplete { _ in counts.closed() }
                return channel.eventLoop.makeCompletedFuture {
                    try configure(
                        channel, limits: limits, stats: counts, dropAfterRequests: dropAfterRequests, route: route)
                }
            }
            .bind(host: address.host, port: address.port).wait()
    }

    /// Sets up one connection's pipeline: the `ConnectionGuard` (timeouts, head size), NIO's HTTP/1.1
    /// codec and our request handler. `bind` calls it for every accepted connection; tests call it on
    /// an `EmbeddedChannel` and write bytes to it.
    public static func configure(
        _ channel: Channel, limits: ServerLimits, stats: ServerStats? = nil, dropAfterRequests: Int? = nil,
        route: @escaping HTTPRoute
    ) throws {
        try channel.pipeline.syncOperations.addHandler(ConnectionGuard(limits: limits, stats: stats))
        try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
        try channel.pipeline.syncOperations.addHandler(
            RequestHandler(maxBodyBytes: limits.maxBodyBytes, dropAfter: dropAfterRequests, route: route))
    }
}

private final class RequestHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let maxBodyBytes: Int
    private let dropAfter: Int?
    private let route: HTTPRoute
    private var head: HTTPRequestHead?
    private var body: ByteBuffer?
    private var tooLarge = false
    private var answered = 0

    init(maxBodyBytes: Int, dropAfter: Int?, route: @escaping HTTPRoute) {
        self.maxBodyBytes = maxBodyBytes
        self.dropAfter = dropAfter
        self.route = route
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h):
            if let dropAfter, answered >= dropAfter {
                context.close(promise: nil)
                return
            }
            answered += 1
            head = h
            context.triggerUserOutboundEvent(RequestPhase.headReceived, promise: nil)
            tooLarge = (h.headers.first(name: "content-length").flatMap(Int.init) ?? 0) > maxBodyBytes
            body =
                tooLarge
                ? nil
                : context.channel.allocator.buffer(
                    capacity: h.headers.first(name: "content-length").flatMap(Int.init) ?? 0)
        case .body(var chunk):
            guard !tooLarge else { return }
            if (body?.readableBytes ?? 0) + chunk.readableBytes > maxBodyBytes {
                tooLarge = true
                body = nil
            } else {
                body?.writeBuffer(&chunk)
            }
        case .end:
            guard let head else { return }
            self.head = nil
            context.triggerUserOutboundEvent(RequestPhase.requestComplete, promise: nil)
            if tooLarge {
                write(
                    context: context, head: head,
                    .error(.payloadTooLarge, "the request body is larger than max_body_bytes (\(maxBodyBytes) bytes)"),
                    forceClose: true)
                return
            }
            let request = IncomingRequest(
                method: head.method, uri: head.uri, headers: head.headers,
                body: body ?? ByteBuffer(), eventLoop: context.eventLoop,
                allocator: context.channel.allocator)
            body = nil
            let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            route(request).hop(to: context.eventLoop).whenComplete { result in
                let (handler, context) = bound.value
                switch result {
                case .success(let response): handler.write(context: context, head: head, response, forceClose: false)
                case .failure(let error):
                    handler.write(
                        context: context, head: head, .error(.internalServerError, "internal error: \(error)"),
                        forceClose: false)
                }
            }
        }
    }

    private func write(
        context: ChannelHandlerContext, head: HTTPRequestHead, _ response: OutgoingResponse, forceClose: Bool
    ) {
        let keepAlive = head.isKeepAlive && !forceClose
        var headers = HTTPHeaders()
        for (k, v) in response.headers { headers.add(name: k, value: v) }
        headers.replaceOrAdd(name: "content-length", value: String(response.body.readableBytes))
        if !keepAlive { headers.replaceOrAdd(name: "connection", value: "close") }
        let responseHead = HTTPResponseHead(
            version: head.version, status: HTTPResponseStatus(statusCode: response.status), headers: headers)
        context.write(wrapOutboundOut(.head(responseHead)), promise: nil)
        if response.body.readableBytes > 0 {
            context.write(wrapOutboundOut(.body(.byteBuffer(response.body))), promise: nil)
        }
        if !keepAlive || response.closeSilently {
            let channel = context.channel
            context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
        } else {
            // No promise on the usual path: nothing waits for the write, and one per response shows.
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
            context.triggerUserOutboundEvent(RequestPhase.responseSent, promise: nil)
        }
    }
}
