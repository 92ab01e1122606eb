import Logging
import NIOCore
import NIOHTTP1
import NIOPosix

public struct UpstreamResponse: Sendable {
    public let status: Int
    public let headers: HTTPHeaders
    public let body: ByteBuffer
    /// Whether the server lets the connection be reused after this reply.
    public var keepAlive: Bool = true

    /// The status as NIO names it, for comparisons (`.ok`, `.serviceUnavailable`).
    public var httpStatus: HTTPResponseStatus { HTTPResponseStatus(statusCode: status) }

    public init(status: Int, headers: HTTPHeaders, body: ByteBuffer, keepAlive: Bool = true) {
        self.status = status
        self.headers = headers
        self.body = body
        self.keepAlive = keepAlive
    }
}

/// How a model reaches its model server: one per event loop, used only on that loop. `UpstreamPool`
/// speaks HTTP over TCP; tests may stand in a transport that hands each request to a route in memory.
public protocol UpstreamTransport: AnyObject, Sendable {
    var loop: EventLoop { get }
    /// Called on `loop` each time a request is sent again under the retry budget.
    var onRetry: (() -> Void)? { get set }
    /// Sends one request; the future holds the whole response or an `UpstreamError`.
    func send(
        path: String, headers: [(String, String)], body: ByteBuffer, method: HTTPMethod, retry: RetryBudget?
    ) -> EventLoopFuture<UpstreamResponse>
    /// Succeeds once the model server can be reached.
    func probe() -> EventLoopFuture<Void>
    /// Drops every connection (at shutdown).
    func close()
}

/// Keep-alive HTTP/1.1 connections to one model server, one request per connection at a time. A
/// model has one pool per event loop; each is confined to its `loop`: every method must be called
/// on it, and its connections live on it too, so nothing here needs a lock.
public final class UpstreamPool: UpstreamTransport, @unchecked Sendable {
    public let loop: EventLoop
    public let address: ListenAddress
    /// HTTP leaves the default port out of Host; ingresses that route by Host (Knative's) expect that.
    private let hostHeader: String
    private let timeout: TimeAmount
    private let connectTimeout: TimeAmount
    private var idle: [UpstreamConnection] = []
    /// Connections with a request outstanding; a sweeper fails those past their deadline. One
    /// repeating timer per pool costs less than a timer per request on the hot path.
    private var busy: [UpstreamConnection] = []
    private var sweeper: RepeatedTask?

    public init(loop: EventLoop, address: ListenAddress, timeoutMillis: Int64, connectTimeoutMillis: Int64 = 5_000) {
        self.loop = loop
        self.address = address
        self.hostHeader = address.port == 80 ? address.host : address.description
        self.timeout = .milliseconds(timeoutMillis)
        self.connectTimeout = .milliseconds(connectTimeoutMillis)
    }

    /// Sends one request and completes with the whole response, or fails on connect errors, a
    /// closed connection or the timeout. With `retry`, a request that fails on a reused keep-alive
    /// connection before any byte of the reply arrived (the server closed it while it was idle, or
    /// reset it) is sent once more on a new connection, if the budget has a retry to spare: model
    /// inference is treated as idempotent.
    public func send(
        path: String, headers: [(String, String)], body: ByteBuffer,
        method: HTTPMethod = .POST, retry: RetryBudget? = nil
    ) -> EventLoopFuture<UpstreamResponse> {
        loop.preconditionInEventLoop()
        var head = HTTPRequestHead(version: .http1_1, method: method, uri: path)
        head.headers.add(name: "host", value: hostHeader)
        for (k, v) in headers { head.headers.add(name: k, value: v) }
        head.headers.replaceOrAdd(name: "content-length", value: String(body.readableBytes))
        let requestHead = head
        // The usual case, an idle connection, goes straight to the exchange (no future in between).
        var sent: EventLoopFuture<UpstreamResponse>
        var reused: UpstreamConnection?
        while reused == nil, let conn = idle.popLast() {
            if conn.channel.isActive { reused = conn }
        }
        if let conn = reused {
            sent = exchange(conn, requestHead, body)
        } else {
            sent = connect().flatMap { self.exchange($0, requestHead, body) }
        }
        guard let retry else { return sent }
        retry.requestStarted()
        if let conn = reused {
            sent = sent.flatMapError { error in
                guard !conn.handler.replyStarted, Self.isLostBeforeReply(error), retry.tryRetry() else {
                    return self.loop.makeFailedFuture(error)
                }
                self.onRetry?()
                retry.requestStarted()
                let again = self.connect().flatMap { self.exchange($0, requestHead, body) }
                again.whenComplete { _ in
                    retry.requestFinished()
                    retry.retryFinished()
                }
                return again
            }
        }
        sent.whenComplete { _ in retry.requestFinished() }
        return sent
    }

    /// Called on the pool's loop each time a request is sent again after a reset (for metrics).
    public var onRetry: (() -> Void)?

    /// A connection lost before the reply began: the request may not have reached the model at all.
    static func isLostBeforeReply(_ error: Error) -> Bool {
        switch error as? UpstreamError {
        case .closed?, .io?: return true
        default: return false
        }
    }

    /// One request on `conn`. The connection goes back to the idle list only after a whole reply that
    /// allows keep-alive (HTTP/1.1 without `connection: close`, or HTTP/1.0 with `keep-alive`) and is
    /// not an error: model servers (MLServer after a 500, among others) often close the connection
    /// after an error without saying so, and the next batch written on it would be lost. A new
    /// connection costs tens of microseconds on a path that is already failing.
    private func exchange(_ conn: UpstreamConnection, _ head: HTTPRequestHead, _ body: ByteBuffer) -> EventLoopFuture<
        UpstreamResponse
    > {
        let promise = loop.makePromise(of: UpstreamResponse.self)
        conn.start(promise, deadline: .now() + timeout)
        busy.append(conn)
        startSweeper()
        conn.channel.write(HTTPClientRequestPart.head(head), promise: nil)
        conn.channel.write(HTTPClientRequestPart.body(.byteBuffer(body)), promise: nil)
        // A failed write closes the channel, and the handler fails the request as lost before its reply.
        conn.channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
        let result = promise.futureResult
        result.whenComplete { result in
            if let i = self.busy.firstIndex(where: { $0.channel === conn.channel }) { self.busy.remove(at: i) }
            if case .success(let r) = result, r.keepAlive, r.status < HTTPResponseStatus.badRequest.code,
                conn.channel.isActive
            {
                self.idle.append(conn)
            } else {
                conn.channel.close(promise: nil)
            }
        }
        return result
    }

    /// Opens a connection and leaves it idle for the next request: proves the server is reachable.
    public func probe() -> EventLoopFuture<Void> {
        loop.preconditionInEventLoop()
        return connect().map { conn in self.idle.append(conn) }
    }

    private func connect() -> EventLoopFuture<UpstreamConnection> {
        let address = self.address
        return ClientBootstrap(group: loop)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connectTimeout(connectTimeout)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(UpstreamConnectionHandler())
                }
            }
            .connect(host: address.host, port: address.port)
            .flatMapErrorThrowing { error in throw UpstreamError.connect(address.description, "\(error)") }
            .flatMapThrowing { channel in
                let handler = try channel.pipeline.syncOperations.handler(type: UpstreamConnectionHandler.self)
                return UpstreamConnection(channel: channel, handler: handler)
            }
    }

    private func startSweeper() {
        guard sweeper == nil else { return }
        let every = TimeAmount.nanoseconds(max(1_000_000, min(timeout.nanoseconds / 8, 100_000_000)))
        sweeper = loop.scheduleRepeatedTask(initialDelay: every, delay: every) { [self] _ in
            let now = NIODeadline.now()
            for conn in busy where conn.handler.deadline.map({ $0 <= now }) == true {
                conn.fail(UpstreamError.timeout(timeout.nanoseconds / 1_000_000))
            }
        }
    }

    /// Closes idle connections (at shutdown).
    public func close() {
        sweeper?.cancel()
        sweeper = nil
        for c in idle { c.channel.close(promise: nil) }
        idle.removeAll()
    }
}

public enum UpstreamError: Error, CustomStringConvertible {
    case connect(String, String)
    case timeout(Int64)
    case closed
    case io(String)

    public var description: String {
        switch self {
        case .connect(let a, let e): return "cannot connect to the model server at \(a): \(e)"
        case .timeout(let ms): return "the model server did not answer within \(ms) ms (upstream_timeout_ms)"
        case .closed: return "the model server closed the connection before answering"
        case .io(let e): return "the connection to the model server failed: \(e)"
        }
    }
}

/// A connection and its handler. Only touched on the pool's event loop, where both live.
struct UpstreamConnection: @unchecked Sendable {
    let channel: Channel
    let handler: UpstreamConnectionHandler

    func start(_ promise: EventLoopPromise<UpstreamResponse>, deadline: NIODeadline) {
        handler.start(promise, deadline: deadline)
    }
    func fail(_ error: Error) {
        handler.fail(error)
        channel.close(promise: nil)
    }
}

final class UpstreamConnectionHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPClientResponsePart

    private var pending: EventLoopPromise<UpstreamResponse>?
    private var head: HTTPResponseHead?
    private var body = ByteBuffer()
    private(set) var deadline: NIODeadline?
    /// Whether the current request's reply has begun (its head arrived).
    private(set) var replyStarted = false

    func start(_ promise: EventLoopPromise<UpstreamResponse>, deadline: NIODeadline) {
        self.deadline = deadline
        pending = promise
        head = nil
        replyStarted = false
        body.clear()
    }

    func fail(_ error: Error) {
        let p = pending
        pending = nil
        deadline = nil
        p?.fail(error)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h):
            head = h
            replyStarted = true
        case .body(var chunk):
            body.writeBuffer(&chunk)
        case .end:
            guard let head, let p = pending else { return }
            pending = nil
            deadline = nil
            p.succeed(
                UpstreamResponse(
                    status: Int(head.status.code), headers: head.headers, body: body,
                    keepAlive: head.isKeepAlive))
            body = ByteBuffer()
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        fail(UpstreamError.closed)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        fail(UpstreamError.io("\(error)"))
        context.close(promise: nil)
    }
}
