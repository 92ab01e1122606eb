import Foundation
import MLProxyHost
import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded
import NIOHTTP1
import NIOPosix
import Testing

/// The listener's timeouts and limits on an `EmbeddedChannel`, with the event loop's clock moved by
/// hand: nothing sleeps.
@Suite("Server limits, in memory")
struct ServerLimitsTests {
    static func limits() -> ServerLimits {
        var l = ServerLimits()
        l.headerTimeout = .seconds(10)
        l.bodyTimeout = .seconds(30)
        l.idleTimeout = .seconds(75)
        l.maxHeaderBytes = 1024
        return l
    }

    final class Connection {
        let channel = EmbeddedChannel()
        let stats = ServerStats()
        var loop: EmbeddedEventLoop { channel.embeddedEventLoop }

        init(route: @escaping HTTPRoute = { $0.eventLoop.makeSucceededFuture(.json(200, "{}")) }) throws {
            try HTTPServer.configure(channel, limits: ServerLimitsTests.limits(), stats: stats, route: route)
            try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        }

        func send(_ text: String) throws { try channel.writeInbound(ByteBuffer(string: text)) }

        func received() throws -> String {
            var out = ""
            while let b = try channel.readOutbound(as: ByteBuffer.self) { out += String(buffer: b) }
            return out
        }

        func wait(_ t: TimeAmount) { loop.advanceTime(by: t) }
        var closed: [String: Int] { stats.snapshot.closed }
    }

    @Test func aConnectionThatSendsNothingIsClosedAtTheHeaderTimeout() throws {
        let c = try Connection()
        c.wait(.seconds(9))
        #expect(c.channel.isActive)
        c.wait(.seconds(2))
        #expect(!c.channel.isActive)
        #expect(c.closed["header_timeout"] == 1)
        #expect(try c.received().isEmpty, "nothing was asked, nothing is answered")
    }

    @Test func halfAHeadGets408AtTheHeaderTimeout() throws {
        let c = try Connection()
        c.wait(.seconds(5))
        try c.send("POST /v2/models/m/infer HTTP/1.1\r\nhost: x\r\n")
        // The clock runs from the first byte of the request.
        c.wait(.seconds(9))
        #expect(c.channel.isActive)
        c.wait(.seconds(2))
        let r = try c.received()
        #expect(r.hasPrefix("HTTP/1.1 408 Request Timeout"), "\(r)")
        #expect(r.contains("did not arrive within 10000 ms"))
        #expect(!c.channel.isActive)
        #expect(c.closed["header_timeout"] == 1)
    }

    @Test func aBodyThatStopsGets408AtTheBodyTimeout() throws {
        let c = try Connection()
        try c.send("POST /a HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nabc")
        c.wait(.seconds(29))
        #expect(c.channel.isActive)
        c.wait(.seconds(2))
        #expect(try c.received().hasPrefix("HTTP/1.1 408"))
        #expect(c.closed["body_timeout"] == 1)
    }

    @Test func anIdleKeepAliveConnectionIsClosedQuietlyAtTheIdleTimeout() throws {
        let c = try Connection()
        try c.send("GET /a HTTP/1.1\r\nhost: x\r\n\r\n")
        #expect(try c.received().hasPrefix("HTTP/1.1 200"))
        c.wait(.seconds(74))
        #expect(c.channel.isActive, "idle, not a slow head: the idle timeout applies")
        try c.send("GET /b HTTP/1.1\r\nhost: x\r\n\r\n")
        #expect(try c.received().hasPrefix("HTTP/1.1 200"))
        c.wait(.seconds(76))
        #expect(!c.channel.isActive)
        #expect(try c.received().isEmpty)
        #expect(c.closed["idle_timeout"] == 1)
    }

    /// The guard keeps one wake-up per connection and moves deadlines under it: each limit still holds
    /// from its own start, however the deadlines before it were set.
    @Test func eachDeadlineHoldsFromItsOwnStartAsRequestsComeAndGo() throws {
        let c = try Connection()
        for _ in 0..<5 {
            c.wait(.seconds(7))
            try c.send("GET /a HTTP/1.1\r\nhost: x\r\n\r\n")
            #expect(try c.received().hasPrefix("HTTP/1.1 200"))
        }
        // Idle 70 s (inside the idle timeout), then half a head: the header timeout runs from its first
        // byte, not from the idle deadline set before it.
        c.wait(.seconds(70))
        try c.send("GET /b HTTP/1.1\r\n")
        c.wait(.milliseconds(9_900))
        #expect(c.channel.isActive)
        c.wait(.milliseconds(200))
        #expect(try c.received().hasPrefix("HTTP/1.1 408"))
        #expect(!c.channel.isActive)
        #expect(c.closed["header_timeout"] == 1)
        #expect(c.closed["idle_timeout"] == nil)
    }

    @Test func noTimerRunsWhileTheProxyWorksOnARequest() throws {
        let pending = NIOLockedValueBox<EventLoopPromise<OutgoingResponse>?>(nil)
        let c = try Connection { req in
            let p = req.eventLoop.makePromise(of: OutgoingResponse.self)
            pending.withLockedValue { $0 = p }
            return p.futureResult
        }
        try c.send("GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
        c.wait(.seconds(600))
        #expect(c.channel.isActive)
        pending.withLockedValue { $0 }?.succeed(.json(200, "{\"late\":true}"))
        #expect(try c.received().hasSuffix("{\"late\":true}"))
    }

    @Test func aHeadOverMaxHeaderBytesGets431() throws {
        let c = try Connection()
        // The guard closes the connection under the decoder, which then reports the cut-off head as an
        // error; the embedded channel rethrows it, a real one only logs it.
        _ = try? c.send("GET /a HTTP/1.1\r\nhost: x\r\nx-junk: " + String(repeating: "a", count: 2000))
        let r = try c.received()
        #expect(r.hasPrefix("HTTP/1.1 431"), "\(r)")
        #expect(!r.contains("400"), "one answer only: \(r)")
        #expect(r.contains("max_header_bytes (1024 bytes)"))
        #expect(!c.channel.isActive)
        #expect(c.closed["header_too_large"] == 1)
    }
}

/// The same limits on real sockets, as slow clients meet them.
@Suite("Server limits over loopback", .serialized)
struct ServerLimitsLoopbackTests {
    /// Opens `n` connections to `port` and sends each `text`; returns them.
    func connect(_ n: Int, port: Int, sending text: String, group: EventLoopGroup) throws -> [Channel] {
        let bootstrap = ClientBootstrap(group: group)
        return try (0..<n).map { _ in
            let ch = try bootstrap.connect(host: "127.0.0.1", port: port).wait()
            if !text.isEmpty { try ch.writeAndFlush(ByteBuffer(string: text)).wait() }
            return ch
        }
    }

    @Test func aThousandHalfSentRequestsAreClosedWhileOthersAreServed() throws {
        let cluster = try TestCluster(
            extraTop: "server: {header_timeout_ms: 500}",
            models: "  - {name: m, upstream: \"UPSTREAM\", policy: static, policy_params: {max_delay_ms: 2}}")
        defer { cluster.stop() }
        let clients = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { try? clients.syncShutdownGracefully() }
        let slow = try connect(
            1000, port: cluster.proxy.port, sending: "POST /v2/models/m/infer HTTP/1.1\r\nhost: x\r\n", group: clients)
        let served = try curlParallel(
            url: cluster.url + "/v2/models/m/infer",
            bodies: (0..<50).map { v2Request(id: "\($0)", rows: [[Double($0)]]) }, concurrency: 50)
        #expect(served.allSatisfy { $0.status == 200 }, "\(served.filter { $0.status != 200 }.map(\.body).prefix(3))")
        for (i, r) in served.enumerated() { #expect(r.output("sum") == [Double(i)]) }
        // Every half-sent request's connection is closed by the proxy (bounded: 20 s at most).
        try waitUntil("1000 slow connections closed", seconds: 20) { slow.allSatisfy { !$0.isActive } }
        let counts = cluster.proxy.connections.snapshot
        #expect(counts.closed["header_timeout"] == 1000)
        let metrics = try run("/usr/bin/curl", ["-s", cluster.url + "/metrics"])
        #expect(metrics.contains("mlproxy_connections_closed_total{reason=\"header_timeout\"} 1000"))
    }

    @Test func connectionsOverMaxConnectionsAreRefused() throws {
        let cluster = try TestCluster(
            extraTop: "server: {max_connections: 4}", models: "  - {name: m, upstream: \"UPSTREAM\", policy: none}")
        defer { cluster.stop() }
        let clients = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { try? clients.syncShutdownGracefully() }
        let held = try connect(4, port: cluster.proxy.port, sending: "", group: clients)
        try waitUntil("4 connections open") { cluster.proxy.connections.snapshot.open == 4 }
        let extra = try connect(1, port: cluster.proxy.port, sending: "", group: clients)[0]
        try waitUntil("the fifth connection closed") { !extra.isActive }
        #expect(cluster.proxy.connections.snapshot.refused == 1)
        let stillOpen = held.allSatisfy { $0.isActive }
        #expect(stillOpen)
        for ch in held { try ch.close().wait() }
        try waitUntil("the four closed on the proxy's side") { cluster.proxy.connections.snapshot.open == 0 }
        let r = try curlParallel(url: cluster.url + "/v2/models/m/infer", bodies: [v2Request(id: "a", rows: [[1]])])
        #expect(r[0].status == 200, "a connection is accepted again once there is room")
    }
}
