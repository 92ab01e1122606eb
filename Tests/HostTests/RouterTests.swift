import Foundation
import MLProxyHost
import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded
import NIOHTTP1
import NIOPosix
import Testing

/// The router on its own: patterns, captures, and why a request has no handler.
@Suite("Router")
struct RouterTests {
    let loop = EmbeddedEventLoop()

    func router() -> Router {
        var r = Router()
        for (method, pattern) in [
            (HTTPMethod.GET, "/v2"), (.GET, "/v2/models/{model}"), (.POST, "/v2/models/{model}/infer"),
            (.POST, "/v2/models/{model}/versions/{version}/infer"), (.POST, "/v1/models/{model}:predict"),
        ] {
            r.add(method, pattern) { req, p in
                let captured = p.values.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
                return req.eventLoop.makeSucceededFuture(.json(200, "\(pattern) \(captured.joined(separator: " "))"))
            }
        }
        return r
    }

    func answer(_ method: HTTPMethod, _ path: String) -> String? {
        guard case .success(let (handler, params)) = router().match(method, path: Substring(path)) else { return nil }
        let response = try? handler(IncomingRequest(method: method, uri: path, eventLoop: loop), params).wait()
        return response.map { String(buffer: $0.body) }
    }

    @Test func capturesSegmentsAndSuffixes() {
        #expect(answer(.GET, "/v2") == "/v2 ")
        #expect(answer(.GET, "/v2/") == "/v2 ")
        #expect(answer(.GET, "/v2/models/iris") == "/v2/models/{model} model=iris")
        #expect(answer(.POST, "/v2/models/iris/infer") == "/v2/models/{model}/infer model=iris")
        #expect(
            answer(.POST, "/v2/models/iris/versions/3/infer")
                == "/v2/models/{model}/versions/{version}/infer model=iris version=3")
        #expect(answer(.POST, "/v1/models/half_plus_two:predict") == "/v1/models/{model}:predict model=half_plus_two")
    }

    @Test func tellsAMissingRouteFromAWrongMethod() {
        let r = router()
        #expect(r.match(.GET, path: "/v3").failure == .notFound)
        #expect(r.match(.POST, path: "/v1/models/m").failure == .notFound)
        #expect(r.match(.POST, path: "/v1/models/:predict").failure == .notFound)
        #expect(r.match(.GET, path: "/v2/models/m/infer").failure == .methodNotAllowed(allowed: [.POST]))
        #expect(r.match(.DELETE, path: "/v2").failure == .methodNotAllowed(allowed: [.GET]))
    }

    @Test func theQueryStringIsNotPartOfThePath() {
        #expect(
            IncomingRequest(method: .GET, uri: "/v2/models/iris?verbose=1", eventLoop: loop).path == "/v2/models/iris")
    }
}

extension Result {
    fileprivate var failure: Failure? {
        if case .failure(let e) = self { return e }
        return nil
    }
}

/// A model's upstream that hands each request to a route in memory, as a Router test would: no
/// socket between the proxy and the model server.
final class InMemoryUpstream: UpstreamTransport, @unchecked Sendable {
    let loop: EventLoop
    var onRetry: (() -> Void)?
    private let route: HTTPRoute
    /// POSTs sent (batches); GETs (the model's metadata) are not counted.
    let sent = NIOLockedValueBox(0)

    init(loop: EventLoop, route: @escaping HTTPRoute) {
        self.loop = loop
        self.route = route
    }

    func send(
        path: String, headers: [(String, String)], body: ByteBuffer, method: HTTPMethod, retry: RetryBudget?
    ) -> EventLoopFuture<UpstreamResponse> {
        if method == .POST { sent.withLockedValue { $0 += 1 } }
        var h = HTTPHeaders()
        for (k, v) in headers { h.add(name: k, value: v) }
        return route(IncomingRequest(method: method, uri: path, headers: h, body: body, eventLoop: loop))
            .hop(to: loop)
            .map { r in
                var rh = HTTPHeaders()
                for (k, v) in r.headers { rh.add(name: k, value: v) }
                return UpstreamResponse(status: r.status, headers: rh, body: r.body)
            }
    }

    func probe() -> EventLoopFuture<Void> { loop.makeSucceededVoidFuture() }
    func close() {}
}

/// The proxy's request handling without a socket anywhere: `ProxyRuntime.respond(to:)` with the
/// built-in model server answering in memory. Routing, decoding, batching, splitting and the
/// failure headers are all exercised; the loopback suites keep the wire honest.
@Suite("Proxy in memory", .serialized)
struct InMemoryProxyTests {
    final class Harness: @unchecked Sendable {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let server: BuiltInModelServer
        let proxy: ProxyRuntime
        let upstreams = NIOLockedValueBox<[InMemoryUpstream]>([])

        init(
            models: String =
                "  - {name: m, upstream: \"http://in-memory:1\", policy: static, policy_params: {max_delay_ms: 20}}",
            top: String = ""
        ) throws {
            let plugins = bundledPlugins
            server = BuiltInModelServer(
                config: BuiltInModelServerConfig(
                    listen: ListenAddress(host: "127.0.0.1", port: 0), replicas: 1,
                    latencyMillis: [(1, 1), (100, 2)], noise: 0, seed: 1, rejectNegative: true),
                codec: try CodecInstance(try plugins.component(.codec, "json")), loop: group.next())
            let server = self.server
            let upstreams = self.upstreams
            proxy = try ProxyRuntime.start(
                config: try ProxyConfig.parse(yaml: "\(top)\nmodels:\n\(models)\n"), group: group, listen: false,
                upstream: { _, loop in
                    let u = InMemoryUpstream(loop: loop) { server.respond(to: $0) }
                    upstreams.withLockedValue { $0.append(u) }
                    return u
                })
        }

        func send(_ method: HTTPMethod, _ uri: String, body: String = "", contentType: String = "application/json")
            throws -> (status: Int, headers: [String: String], body: String)
        {
            var headers = HTTPHeaders()
            if !body.isEmpty { headers.add(name: "content-type", value: contentType) }
            let req = IncomingRequest(
                method: method, uri: uri, headers: headers, body: ByteBuffer(string: body), eventLoop: group.next())
            let r = try proxy.respond(to: req).wait()
            return (r.status, Dictionary(r.headers, uniquingKeysWith: { a, _ in a }), String(buffer: r.body))
        }

        var upstreamRequests: Int { upstreams.withLockedValue { $0.reduce(0) { $0 + $1.sent.withLockedValue { $0 } } } }

        deinit {
            proxy.drainAndStop()
            try? group.syncShutdownGracefully()
        }
    }

    @Test func routesAnswerWithTheRightStatusAndWords() throws {
        let h = try Harness()
        #expect(try h.send(.GET, "/v2/health/live").status == 200)
        #expect(try h.send(.GET, "/v2/health/ready").status == 200)
        #expect(try h.send(.GET, "/v2/models/m/ready").status == 200)
        #expect(try h.send(.GET, "/v2/models/m/versions/7/ready").status == 200)
        let unknown = try h.send(.GET, "/v2/models/nope/ready")
        #expect(unknown.status == 404 && unknown.body.contains("unknown model 'nope'") && unknown.body.contains("m"))
        #expect(unknown.headers["mlproxy-failure"] == "own")
        let wrongMethod = try h.send(.GET, "/v2/models/m/infer")
        #expect(wrongMethod.status == 405 && wrongMethod.body.contains("use POST"))
        let noRoute = try h.send(.GET, "/v3/anything")
        #expect(noRoute.status == 404 && noRoute.body.contains("no route for GET /v3/anything"))
        let wrongType = try h.send(.POST, "/v2/models/m/infer", body: "x", contentType: "image/gif")
        #expect(wrongType.status == 415 && wrongType.body.contains("application/json"), "\(wrongType.body)")
        // The model's metadata shows the settings in force, defaults included.
        let meta = try h.send(.GET, "/v2/models/m")
        let doc = try JSONSerialization.jsonObject(with: Data(meta.body.utf8)) as? [String: Any]
        let mine = try #require((doc?["parameters"] as? [String: Any])?["mlproxy"] as? [String: Any])
        #expect(mine["max_batch_items"] as? Int == 32 && mine["slo_ms"] as? Double == 1000, "\(mine)")
        #expect(mine["late_requests"] as? String == "dispatch" && mine["codecs"] as? [String] == ["json"])
        #expect(mine["policy"] as? String == "static" && mine["connect_timeout_ms"] as? Int == 5000)
        let metrics = try h.send(.GET, "/metrics")
        #expect(metrics.status == 200 && metrics.body.contains("# TYPE mlproxy_batch_items histogram"))
        #expect(h.upstreamRequests == 0)
    }

    @Test func concurrentRequestsAreBatchedAndEachGetsItsOwnRow() throws {
        let h = try Harness()
        let loop = h.group.next()
        let futures = (0..<24).map { i in
            h.proxy.respond(
                to: IncomingRequest(
                    method: .POST, uri: "/v2/models/m/infer", headers: ["content-type": "application/json"],
                    body: ByteBuffer(string: v2Request(id: "\(i)", rows: [[Double(i), 1]])), eventLoop: loop))
        }
        var batched = 0
        for (i, f) in futures.enumerated() {
            let r = try f.wait()
            let body = String(buffer: r.body)
            #expect(r.status == 200, "\(i): \(body)")
            let result = CurlResult(status: r.status, headers: [:], body: body)
            #expect(result.output("sum") == [Double(i) + 1], "\(i): \(body)")
            #expect(result.json?["id"] as? String == "\(i)")
            if let n = r.headers.first(where: { $0.0 == "mlproxy-batch-requests" }).flatMap({ Int($0.1) }), n > 1 {
                batched += 1
            }
        }
        #expect(batched > 0, "no request shared a batch")
        #expect(h.upstreamRequests < 24)
    }

    @Test func theAdminRoutesShowConfigAndTheBatchLog() throws {
        let h = try Harness(top: "inference_metrics: false")
        let loop = h.group.next()
        let futures = (0..<12).map { i in
            h.proxy.respond(
                to: IncomingRequest(
                    method: .POST, uri: "/v2/models/m/infer", headers: ["content-type": "application/json"],
                    body: ByteBuffer(string: v2Request(id: "\(i)", rows: [[Double(i)]])), eventLoop: loop))
        }
        for f in futures { #expect(try f.wait().status == 200) }
        func admin(_ uri: String) throws -> (status: Int, body: String) {
            let r = try h.proxy.respondAdmin(to: IncomingRequest(method: .GET, uri: uri, eventLoop: loop)).wait()
            return (r.status, String(buffer: r.body))
        }
        let log = try admin("/admin/models/m/batches?limit=50")
        let doc = try JSONSerialization.jsonObject(with: Data(log.body.utf8)) as? [String: Any]
        let batches = try #require(doc?["batches"] as? [[String: Any]])
        #expect(!batches.isEmpty && batches.count <= 12)
        #expect(batches.reduce(0) { $0 + ($1["requests"] as? Int ?? 0) } == 12, "every request in one logged batch")
        // The default policy says why each batch left (ABI 1.2's dispatch reasons).
        let labels = PolicyReason.allCases.map { "policy: \($0.label)" }
        #expect(
            batches.allSatisfy { labels.contains($0["reason"] as? String ?? "") && $0["outcome"] as? String == "ok" },
            "\(batches.map { $0["reason"] ?? "none" })")
        let q = try #require(batches.first?["queue_ms"] as? [String: Double])
        #expect(q["min"]! <= q["median"]! && q["median"]! <= q["max"]!)
        #expect(try admin("/admin/models/m/batches?limit=1").body.components(separatedBy: "\"sequence\"").count == 2)
        #expect(try admin("/admin/config").body.contains("inference_metrics: false"))
        #expect(try admin("/admin/models/nope/batches").status == 404)
        #expect(try admin("/metrics").body.contains("mlproxy_batches_total{model=\"m\"}"))
        #expect(try h.send(.GET, "/metrics").status == 404, "metrics only on the admin listener when told so")
    }

    @Test func aBadRowFailsAloneAndItsBatchMatesAreAnswered() throws {
        let h = try Harness()
        let loop = h.group.next()
        let values: [Double] = [1, 2, -3, 4, 5, 6]
        let futures = values.enumerated().map { i, v in
            h.proxy.respond(
                to: IncomingRequest(
                    method: .POST, uri: "/v2/models/m/infer", headers: ["content-type": "application/json"],
                    body: ByteBuffer(string: v2Request(id: "\(i)", rows: [[v]])), eventLoop: loop))
        }
        for (i, f) in futures.enumerated() {
            let r = try f.wait()
            let failure = r.headers.first { $0.0 == "mlproxy-failure" }?.1
            if values[i] < 0 {
                #expect(r.status == 400 && failure == "own", "\(String(buffer: r.body))")
                #expect(String(buffer: r.body).contains("negative"))
            } else {
                #expect(r.status == 200 && failure == nil, "\(i): \(String(buffer: r.body))")
            }
        }
        let malformed = try h.send(.POST, "/v2/models/m/infer", body: "{\"inputs\": [")
        #expect(malformed.status == 400 && malformed.headers["mlproxy-failure"] == "own")
    }
}

/// The HTTP request handler on an `EmbeddedChannel`: bytes in, bytes out, no socket.
@Suite("HTTP handler")
struct HTTPHandlerTests {
    func channel(maxBodyBytes: Int = 64, route: @escaping HTTPRoute) throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        var limits = ServerLimits()
        limits.maxBodyBytes = maxBodyBytes
        try HTTPServer.configure(channel, limits: limits, route: route)
        // An embedded channel is active once "connected"; nothing leaves the process.
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        return channel
    }

    func exchange(_ channel: EmbeddedChannel, _ request: String) throws -> String {
        try channel.writeInbound(ByteBuffer(string: request))
        var out = ""
        while let b = try channel.readOutbound(as: ByteBuffer.self) { out += String(buffer: b) }
        return out
    }

    @Test func answersKeepsAliveAndCountsTheBody() throws {
        let ch = try channel { req in
            req.eventLoop.makeSucceededFuture(.json(200, "{\"got\":\(req.body.readableBytes)}"))
        }
        let first = try exchange(ch, "POST /a HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhello")
        #expect(first.hasPrefix("HTTP/1.1 200 OK\r\n") && first.hasSuffix("{\"got\":5}"), "\(first)")
        #expect(!first.lowercased().contains("connection: close"))
        let second = try exchange(ch, "GET /b HTTP/1.1\r\nhost: x\r\n\r\n")
        #expect(second.hasSuffix("{\"got\":0}"), "\(second)")
        #expect(ch.isActive)
        _ = try? ch.finish()
    }

    @Test func aBodyOverTheLimitGets413AndTheConnectionCloses() throws {
        let ch = try channel(maxBodyBytes: 4) { req in req.eventLoop.makeSucceededFuture(.json(200, "{}")) }
        let r = try exchange(ch, "POST /a HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhello")
        #expect(r.hasPrefix("HTTP/1.1 413"), "\(r)")
        #expect(r.contains("max_body_bytes (4 bytes)"))
        #expect(r.lowercased().contains("connection: close"))
        #expect(!ch.isActive)
    }

    @Test func aFailedRouteIsA500NotAHang() throws {
        struct Boom: Error {}
        let ch = try channel { req in req.eventLoop.makeFailedFuture(Boom()) }
        let r = try exchange(ch, "GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        #expect(r.hasPrefix("HTTP/1.1 500"), "\(r)")
        #expect(r.contains("internal error"))
        _ = try? ch.finish()
    }

    @Test func http10WithoutKeepAliveIsClosedAfterTheAnswer() throws {
        let ch = try channel { req in req.eventLoop.makeSucceededFuture(.json(200, "{}")) }
        let r = try exchange(ch, "GET / HTTP/1.0\r\n\r\n")
        #expect(r.hasPrefix("HTTP/1.0 200"), "\(r)")
        #expect(!ch.isActive)
    }
}
