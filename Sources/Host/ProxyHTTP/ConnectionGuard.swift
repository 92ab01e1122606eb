import NIOConcurrencyHelpers
import NIOCore

/// What one listener lets a client do: how long it may take to send a request's head and body, how
/// long a keep-alive connection may sit idle, how large a head and a body may be, and how many
/// connections may be open at once. Without these a handful of clients that send half a request and
/// stop hold connections (and file descriptors) forever.
public struct ServerLimits: Sendable, Equatable {
    /// From a connection's accept, or the first byte of a request, until its head is complete.
    public var headerTimeout: TimeAmount = .seconds(10)
    /// From a request's head until its last body byte.
    public var bodyTimeout: TimeAmount = .seconds(60)
    /// Between a response and the next request's first byte on a keep-alive connection. Above
    /// Knative's activator and queue-proxy and common load balancers' idle timeouts (AWS ALB 60 s,
    /// GCP 600 s for its own backends; a proxy must outlast its client's pool, not the reverse: a
    /// server that closes first makes the client race a reused connection against the close).
    public var idleTimeout: TimeAmount = .seconds(75)
    public var maxHeaderBytes: Int = 64 << 10
    public var maxBodyBytes: Int = 64 << 20
    /// Connections open at once; one over it is closed as soon as it is accepted.
    public var maxConnections: Int = 10_000

    public init() {}
}

/// Connection counters of one listener, for /metrics. Safe from any event loop.
public final class ServerStats: Sendable {
    public struct Counts: Sendable, Equatable {
        public var open = 0
        /// Closed at accept: `maxConnections` were open.
        public var refused = 0
        /// Closed by a limit, by reason: header_timeout, body_timeout, idle_timeout, header_too_large.
        public var closed: [String: Int] = [:]
    }

    private let counts = NIOLockedValueBox(Counts())

    public init() {}

    public var snapshot: Counts { counts.withLockedValue { $0 } }

    /// Counts an accepted connection unless `limit` are open; false when it must be refused.
    func open(limit: Int) -> Bool {
        counts.withLockedValue { c in
            guard c.open < limit else {
                c.refused += 1
                return false
            }
            c.open += 1
            return true
        }
    }

    func closed() { counts.withLockedValue { $0.open -= 1 } }
    func closed(by reason: String) { counts.withLockedValue { $0.closed[reason, default: 0] += 1 } }
}

/// Where a connection's request is, as `RequestHandler` tells the `ConnectionGuard` (an outbound
/// user event, so it reaches the guard at the head of the pipeline).
enum RequestPhase {
    case headReceived
    case requestComplete
    case responseSent
}

/// First in a connection's pipeline, below the HTTP decoder: it sees raw bytes, so it can time a
/// head that never completes and count its bytes. Closes a connection whose head takes longer than
/// `headerTimeout` (408), whose body takes longer than `bodyTimeout` (408), that sits idle between
/// requests longer than `idleTimeout` (closed quietly), or whose head grows past `maxHeaderBytes`
/// (431). No deadline runs while the proxy works on a request: that is the SLO's business.
///
/// Deadlines move with every request (head, body, answered, idle), so the guard does not schedule and
/// cancel a task for each move: that was 3-4% of the proxy's CPU in the passthrough profile, most of it
/// the event loop's cancel, which searches its timer heap. One task per connection wakes at the
/// deadline or after the shortest limit, whichever is first, and either times the connection out or
/// goes back to sleep until the deadline then in force (on the loop's clock, so an embedded loop's
/// manual time drives it in tests). Every limit is at least that shortest one, so a
/// deadline set while the task sleeps is never earlier than its wake.
final class ConnectionGuard: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = NIOAny
    typealias OutboundOut = NIOAny

    private enum State {
        /// Waiting for a request's first byte; `fresh` on a connection that has sent nothing yet.
        case idle(fresh: Bool)
        /// Reading a head; `bytes` so far.
        case head(bytes: Int)
        case body
        /// The request is complete and being answered; `pending` when the next one's bytes came.
        case busy(pending: Bool)
        case closing
    }

    private let limits: ServerLimits
    private let stats: ServerStats?
    private var state = State.idle(fresh: true)
    /// The deadline in force and the limit it enforces; nil while the proxy works on a request.
    private var deadline: (at: NIODeadline, reason: String)?
    /// The one wake-up task, when one is scheduled.
    private var timer: Scheduled<Void>?
    /// The longest a wake-up sleeps: the shortest limit.
    private let tick: TimeAmount

    init(limits: ServerLimits, stats: ServerStats?) {
        self.limits = limits
        self.stats = stats
        self.tick = min(limits.headerTimeout, limits.bodyTimeout, limits.idleTimeout)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { arm(context, after: limits.headerTimeout, reason: "header_timeout") }
    }

    func channelActive(context: ChannelHandlerContext) {
        arm(context, after: limits.headerTimeout, reason: "header_timeout")
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let n = unwrapInboundIn(data).readableBytes
        switch state {
        case .closing: return
        case .idle:
            state = .head(bytes: n)
            arm(context, after: limits.headerTimeout, reason: "header_timeout")
        case .head(let bytes): state = .head(bytes: bytes + n)
        case .busy: state = .busy(pending: true)
        case .body: break
        }
        context.fireChannelRead(data)
        // The decoder parses synchronously: still reading the head after it saw these bytes means
        // every byte so far belongs to the head.
        if case .head(let bytes) = state, bytes > limits.maxHeaderBytes {
            refuse(
                context, status: "431 Request Header Fields Too Large",
                message: "the request head is larger than max_header_bytes (\(limits.maxHeaderBytes) bytes)",
                reason: "header_too_large")
        }
    }

    func triggerUserOutboundEvent(context: ChannelHandlerContext, event: Any, promise: EventLoopPromise<Void>?) {
        guard let phase = event as? RequestPhase else {
            return context.triggerUserOutboundEvent(event, promise: promise)
        }
        promise?.succeed()
        if case .closing = state { return }
        switch phase {
        case .headReceived:
            state = .body
            arm(context, after: limits.bodyTimeout, reason: "body_timeout")
        case .requestComplete:
            state = .busy(pending: false)
            deadline = nil
        case .responseSent:
            if case .busy(pending: true) = state {
                state = .head(bytes: 0)
                arm(context, after: limits.headerTimeout, reason: "header_timeout")
            } else {
                state = .idle(fresh: false)
                arm(context, after: limits.idleTimeout, reason: "idle_timeout")
            }
        }
    }

    /// Once the guard has answered and is closing, nothing from above goes out: the HTTP decoder, cut
    /// off mid-head, reports an error that NIO's protocol error handler would answer with a 400.
    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .closing = state {
            promise?.fail(ChannelError.ioOnClosedChannel)
            return
        }
        context.write(data, promise: promise)
    }

    func flush(context: ChannelHandlerContext) {
        if case .closing = state { return }
        context.flush()
    }

    private func arm(_ context: ChannelHandlerContext, after delay: TimeAmount, reason: String) {
        let now = context.eventLoop.now
        deadline = (now + delay, reason)
        if timer == nil { sleep(context, now: now) }
    }

    /// Schedules the wake-up for the deadline in force, or after `tick`, whichever is first.
    private func sleep(_ context: ChannelHandlerContext, now: NIODeadline) {
        guard let d = deadline else { return }
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleTask(deadline: min(d.at, now + tick)) {
            let (handler, context) = bound.value
            handler.wake(context)
        }
    }

    private func wake(_ context: ChannelHandlerContext) {
        timer = nil
        guard let d = deadline else { return }
        let now = context.eventLoop.now
        if now < d.at {
            sleep(context, now: now)
        } else {
            deadline = nil
            timedOut(context, reason: d.reason)
        }
    }

    private func timedOut(_ context: ChannelHandlerContext, reason: String) {
        switch state {
        case .idle:
            stats?.closed(by: reason)
            state = .closing
            context.close(promise: nil)
        case .head, .body:
            let what = reason == "body_timeout" ? "body" : "head"
            let limit = reason == "body_timeout" ? limits.bodyTimeout : limits.headerTimeout
            refuse(
                context, status: "408 Request Timeout",
                message: "the request \(what) did not arrive within \(limit.nanoseconds / 1_000_000) ms", reason: reason
            )
        case .busy, .closing: break
        }
    }

    /// Answers with `status` below the HTTP encoder (no response is under way in these states) and
    /// closes the connection.
    private func refuse(_ context: ChannelHandlerContext, status: String, message: String, reason: String) {
        stats?.closed(by: reason)
        state = .closing
        deadline = nil
        timer?.cancel()
        timer = nil
        var body = ByteBuffer()
        body.writeString("{\"error\":\"\(message)\"}")
        var out = ByteBuffer()
        out.writeString(
            "HTTP/1.1 \(status)\r\ncontent-type: application/json\r\ncontent-length: \(body.readableBytes)\r\n"
                + "connection: close\r\n\r\n")
        out.writeBuffer(&body)
        let channel = context.channel
        context.writeAndFlush(NIOAny(out)).whenComplete { _ in channel.close(promise: nil) }
    }
}
