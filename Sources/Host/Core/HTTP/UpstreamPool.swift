import Logging
import NIOCore
import NIOHTTP1
import NIOPosix

public struct UpstreamResponse: Sendable {
    public let status: Int
    public let headers: HTTPHeaders
    public let body: ByteBuffer
}

/// Keep-alive HTTP/1.1 connections to one model server, one request per connection at a time.
/// Confined to one event loop (the model's): every method must be called on `loop`, and the
/// connections live on it too, so nothing here needs a lock.
public final class UpstreamPool: @unchecked Sendable {
    public let loop: EventLoop
    public let address: ListenAddress
    private let timeout: TimeAmount
    private var idle: [UpstreamConnection] = []
    /// Connections with a request outstanding; a sweeper fails those past their deadline. One
    /// repeating timer per pool costs less than a timer per request on the hot path.
    private var busy: [UpstreamConnection] = []
    private var sweeper: RepeatedTask?

    public init(loop: EventLoop, address: ListenAddress, timeoutMillis: Int64) {
        self.loop = loop
        self.address = address
        self.timeout = .milliseconds(timeoutMillis)
    }

    /// Sends one request and completes with the whole response, or fails on connect errors, a
    /// closed connection or the timeout.
    public func send(path: String, headers: [(String, String)], body: ByteBuffer,
                     method: HTTPMethod = .POST) -> EventLoopFuture<UpstreamResponse> {
        loop.preconditionInEventLoop()
        var head = HTTPRequestHead(version: .http1_1, method: method, uri: path)
        head.headers.add(name: "host", value: address.description)
        for (k, v) in headers { head.headers.add(name: k, value: v) }
        head.headers.replaceOrAdd(name: "content-length", value: String(body.readableBytes))
        let requestHead = head
        return checkout().flatMap { conn in
            let promise = self.loop.makePromise(of: UpstreamResponse.self)
            conn.start(promise, deadline: .now() + self.timeout)
            self.busy.append(conn)
            self.startSweeper()
            conn.channel.write(HTTPClientRequestPart.head(requestHead), promise: nil)
            conn.channel.write(HTTPClientRequestPart.body(.byteBuffer(body)), promise: nil)
            conn.channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
            return promise.futureResult.always { result in
                if let i = self.busy.firstIndex(where: { $0.channel === conn.channel }) { self.busy.remove(at: i) }
                if case .success(let r) = result, conn.channel.isActive,
                   r.headers.first(name: "connection")?.lowercased() != "close" {
                    self.idle.append(conn)
                } else {
                    conn.channel.close(promise: nil)
                }
            }
        }
    }

    private func checkout() -> EventLoopFuture<UpstreamConnection> {
        while let conn = idle.popLast() {
            if conn.channel.isActive { return loop.makeSucceededFuture(conn) }
        }
        let address = self.address
        return ClientBootstrap(group: loop)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connectTimeout(.seconds(5))
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

    /// The status a client sees for this failure.
    public var httpStatus: Int {
        if case .timeout = self { return 504 }
        return 502
    }
}

/// A connection and its handler. Only touched on the pool's event loop, where both live.
struct UpstreamConnection: @unchecked Sendable {
    let channel: Channel
    let handler: UpstreamConnectionHandler

    func start(_ promise: EventLoopPromise<UpstreamResponse>, deadline: NIODeadline) { handler.start(promise, deadline: deadline) }
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

    func start(_ promise: EventLoopPromise<UpstreamResponse>, deadline: NIODeadline) {
        self.deadline = deadline
        pending = promise
        head = nil
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
        case .body(var chunk):
            body.writeBuffer(&chunk)
        case .end:
            guard let head, let p = pending else { return }
            pending = nil
            deadline = nil
            p.succeed(UpstreamResponse(status: Int(head.status.code), headers: head.headers, body: body))
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
