import Foundation
import NIOCore
import PluginHost
import ProxyCore
import ProxyHTTP

/// A model server that speaks v2 JSON (and TorchServe's POST /predictions/{m}) and behaves like one
/// Knative replica per `replicas`: each serves one request at a time, taking latency(batch items)
/// from a profile (with optional noise), and extra requests wait in FIFO order. Its answer is a
/// deterministic function of each row, output "sum" (FP64, [items, 1]) = the sum of that row's
/// elements over all inputs (a BYTES element counts as its length), so a test can prove each client
/// got its own row back. With `echo`, each input also comes back as output "<name>_echo". On
/// /predictions it reads a JSON list with one row per item (numbers, nested lists, or an object of
/// named values) and answers a list of [sum] per row, as a TorchServe handler that takes the proxy's
/// whole batch in one request does. Not to be confused with `Simulator`, which runs in virtual time:
/// this one answers real HTTP (the quick start's upstream, `mlproxy simserver`).
public final class BuiltInModelServer: @unchecked Sendable {
    public let config: BuiltInModelServerConfig
    private let codec: CodecInstance
    private let loop: EventLoop
    private let profile: LatencyProfile
    // Confined to `loop`.
    private var busy = 0
    private var waiting = CircularBuffer<Job>()
    private var rng: SplitMix64
    private var requests = 0
    private var items = 0
    private var sizes = BatchSizeHistogram()
    private var channel: Channel?

    private struct Job {
        let items: Int
        let response: OutgoingResponse
        let promise: EventLoopPromise<OutgoingResponse>
    }

    public init(config: BuiltInModelServerConfig, codec: CodecInstance, loop: EventLoop) {
        self.config = config
        self.codec = codec
        self.loop = loop
        self.rng = SplitMix64(seed: config.seed)
        self.profile = LatencyProfile(name: "configured", points: config.latencyMillis, noise: config.noise)
    }

    /// A model server's own limits: generous, it stands behind the proxy.
    static let limits: ServerLimits = {
        var l = ServerLimits()
        l.maxBodyBytes = 256 << 20
        return l
    }()

    public func start(group: EventLoopGroup) throws {
        channel = try HTTPServer.bind(
            group: group, address: config.listen, limits: Self.limits,
            dropAfterRequests: config.dropAfterRequests
        ) { [self] in respond(to: $0) }
    }

    public var port: Int { channel?.localAddress?.port ?? 0 }

    public func stop() { channel?.close(promise: nil) }

    /// Answers one request, as the listener does; tests may call it in memory.
    public func respond(to req: IncomingRequest) -> EventLoopFuture<OutgoingResponse> {
        let parts = req.path.split(separator: "/")
        // v2 model metadata, with the declared signature when the config gives one.
        if req.method == .GET, parts.count == 3 || (parts.count == 5 && parts[3] == "versions"), parts[0] == "v2",
            parts[1] == "models"
        {
            return req.eventLoop.makeSucceededFuture(metadata(model: String(parts[2])))
        }
        return route(parts, req).map { [config] r in
            var r = r
            if config.closeAfterError && r.status >= 400 { r.closeSilently = true }
            return r
        }
    }

    private func metadata(model: String) -> OutgoingResponse {
        func list(_ specs: [TensorSpec]) -> String {
            "["
                + specs.map { t in
                    "{\"name\":\(JSONText.string(t.name)),\"datatype\":\"\(t.datatype.name)\",\"shape\":[\(t.shape.map(String.init).joined(separator: ","))]"
                        + (t.optional ? ",\"optional\":true}" : "}")
                }.joined(separator: ",") + "]"
        }
        let sig = config.signatures[model]
        return .json(
            200,
            "{\"name\":\(JSONText.string(model)),\"versions\":[],\"platform\":\"mlproxy-simulated\",\"inputs\":\(list(sig?.inputs ?? [])),\"outputs\":\(list(sig?.outputs ?? []))}"
        )
    }

    private func route(_ parts: [Substring], _ req: IncomingRequest) -> EventLoopFuture<OutgoingResponse> {
        switch (req.method, parts.count) {
        case (.GET, 3) where parts[0] == "v2" && parts[1] == "health":
            return req.eventLoop.makeSucceededFuture(.json(200, "{\"\(parts[2])\":true}"))
        case (.GET, 2) where parts[0] == "sim" && parts[1] == "stats":
            return loop.submit {
                let sizes = self.sizes.trimmed.map(String.init).joined(separator: ",")
                return .json(200, "{\"requests\":\(self.requests),\"items\":\(self.items),\"sizes_pow2\":[\(sizes)]}")
            }
        case (.GET, 4) where parts[0] == "v2" && parts[1] == "models" && parts[3] == "ready":
            return req.eventLoop.makeSucceededFuture(
                .json(200, "{\"name\":\(JSONText.string(String(parts[2]))),\"ready\":true}"))
        case (.POST, 4) where parts[0] == "v2" && parts[1] == "models" && parts[3] == "infer",
            (.POST, 6) where parts[0] == "v2" && parts[1] == "models" && parts[3] == "versions" && parts[5] == "infer":
            return infer(model: String(parts[2]), req)
        case (.POST, 2) where parts[0] == "predictions", (.POST, 3) where parts[0] == "predictions":
            return predictions(req)
        default:
            return req.eventLoop.makeSucceededFuture(.error(404, "no route for \(req.method) \(req.path)"))
        }
    }

    private func infer(model: String, _ req: IncomingRequest) -> EventLoopFuture<OutgoingResponse> {
        let decoded: DecodedRequest
        let n: Int
        do {
            decoded = try codec.decode(
                body: req.body, contentType: req.headers.first(name: "content-type"), model: model,
                headers: req.headers.map { ($0.name, $0.value) })
            n = try BatchAssembler.validate(inputs: decoded.inputs)
        } catch {
            return req.eventLoop.makeSucceededFuture(.error(error.status, error.message))
        }
        // A declared signature is enforced for the whole request, as a real server does.
        do {
            _ = try config.signatures[model]?.check(
                model: model, inputs: decoded.inputs, requestedOutputs: [], guessedTypes: false)
        } catch {
            return req.eventLoop.makeSucceededFuture(.error(400, error.message))
        }
        if config.rejectNegative {
            for t in decoded.inputs where t.datatype != .bytes {
                let values = t.doubles()
                let per = max(t.elementsPerItem, 1)
                if let i = values.firstIndex(where: { $0 < 0 }) {
                    let row = values[(i / per * per)..<min(values.count, i / per * per + per)]
                    return req.eventLoop.makeSucceededFuture(
                        .error(
                            400,
                            "row \(i / per) contains a negative value: "
                                + "[\(row.map { String($0) }.joined(separator: ", "))]"
                        ))
                }
            }
        }
        var sums = [Double](repeating: 0, count: n)
        for t in decoded.inputs {
            let values = t.doubles()
            let per = t.elementsPerItem
            for (i, v) in values.enumerated() where per > 0 { sums[i / per] += v }
        }
        var outputs = [Tensor.fp64(name: "sum", shape: [Int64(n), 1], values: sums)]
        if config.echo {
            for t in decoded.inputs {
                var e = t
                e.name += "_echo"
                outputs.append(e)
            }
        }
        if !decoded.requestedOutputs.isEmpty { outputs = outputs.filter { decoded.requestedOutputs.contains($0.name) } }
        let response: OutgoingResponse
        do {
            let m = try codec.encode(
                model: model, version: "", id: decoded.id, outputs: outputs, parametersJSON: nil,
                codecState: decoded.codecState, allocator: req.allocator)
            response = OutgoingResponse(status: 200, headers: m.headers, body: m.body)
        } catch {
            response = .error(500, error.message)
        }
        return enqueue(items: n, response: response)
    }

    /// TorchServe's inference API, with the handler contract the `torchserve` backend documents.
    private func predictions(_ req: IncomingRequest) -> EventLoopFuture<OutgoingResponse> {
        func fail(_ message: String) -> EventLoopFuture<OutgoingResponse> {
            req.eventLoop.makeSucceededFuture(
                .json(400, "{\"code\":400,\"type\":\"BadRequest\",\"message\":\(JSONText.string(message))}"))
        }
        guard let rows = (try? JSONSerialization.jsonObject(with: Data(req.body.readableBytesView))) as? [Any],
            !rows.isEmpty
        else {
            return fail("the body must be a non-empty JSON list with one element per item")
        }
        func leaves(_ v: Any) -> Double? {
            if let n = v as? NSNumber { return n.doubleValue }
            if let s = v as? String { return Double(s.utf8.count) }
            if let a = v as? [Any] {
                return a.reduce(0.0 as Double?) { acc, x in acc.flatMap { a in leaves(x).map { a + $0 } } }
            }
            if let o = v as? [String: Any] { return leaves(Array(o.values)) }
            return nil
        }
        var out = "["
        for (i, row) in rows.enumerated() {
            guard let sum = leaves(row) else { return fail("row \(i) holds something other than numbers and strings") }
            out += (i == 0 ? "[" : ",[") + "\(sum)]"
        }
        out += "]"
        return enqueue(items: rows.count, response: .json(200, out))
    }

    /// Serves the job when a replica is free, in arrival order otherwise.
    private func enqueue(items n: Int, response: OutgoingResponse) -> EventLoopFuture<OutgoingResponse> {
        let promise = loop.makePromise(of: OutgoingResponse.self)
        loop.execute {
            self.requests += 1
            self.items += n
            self.sizes.add(items: n)
            let job = Job(items: n, response: response, promise: promise)
            if self.busy < self.config.replicas { self.run(job) } else { self.waiting.append(job) }
        }
        return promise.futureResult
    }

    private func run(_ job: Job) {
        busy += 1
        loop.scheduleTask(in: .nanoseconds(profile.sampleNanos(items: job.items, rng: &rng))) {
            job.promise.succeed(job.response)
            self.busy -= 1
            if let next = self.waiting.popFirst() { self.run(next) }
        }
    }
}

/// A small, fast, seedable generator (SplitMix64), so simulated runs repeat exactly.
public struct SplitMix64: Sendable {
    private var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in (0, 1).
    public mutating func nextUnit() -> Double { (Double(next() >> 11) + 0.5) / Double(1 << 53) }

    /// Standard normal (Box-Muller).
    public mutating func nextGaussian() -> Double {
        sqrt(-2 * log(nextUnit())) * cos(2 * .pi * nextUnit())
    }

    /// Exponential with the given mean.
    public mutating func nextExponential(mean: Double) -> Double { -log(nextUnit()) * mean }
}

public struct BuiltInModelServerConfig: Sendable {
    public var listen: ListenAddress
    public var replicas: Int
    /// Upstream latency in milliseconds by batch items; interpolated linearly between points.
    public var latencyMillis: [(items: Int, ms: Double)]
    public var noise: Double
    public var seed: UInt64
    /// Also answer each input back as output "<name>_echo" (for checking datatypes end to end).
    public var echo: Bool = false
    /// Models whose signature the server declares in its v2 metadata (and enforces, as a real
    /// server does), by model name.
    public var signatures: [String: ModelSignature] = [:]
    /// Reject a whole batch with 400 when any value in it is negative, quoting the row, as a model
    /// server that validates rows does (for failure-isolation tests and demos).
    public var rejectNegative: Bool = false
    /// Close the connection, unannounced, after every error answer (as MLServer does after a 500).
    public var closeAfterError: Bool = false
    /// Close a connection that has answered this many requests, unannounced, when the next arrives.
    public var dropAfterRequests: Int?

    public init(
        listen: ListenAddress, replicas: Int, latencyMillis: [(items: Int, ms: Double)], noise: Double, seed: UInt64,
        echo: Bool = false, signatures: [String: ModelSignature] = [:], rejectNegative: Bool = false,
        closeAfterError: Bool = false, dropAfterRequests: Int? = nil
    ) {
        self.listen = listen
        self.replicas = replicas
        self.latencyMillis = latencyMillis
        self.noise = noise
        self.seed = seed
        self.echo = echo
        self.signatures = signatures
        self.rejectNegative = rejectNegative
        self.closeAfterError = closeAfterError
        self.dropAfterRequests = dropAfterRequests
    }
}
