import ArgumentParser
import Foundation
import MLProxyHost
import NIOCore
import NIOPosix

/// An open-loop Poisson load generator for v2 inference endpoints, loopback only, bounded in count
/// and time. Latency is measured from each request's scheduled arrival, so a slow server cannot slow
/// the offered load down (no coordinated omission).
@main
struct LoadGen: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mlproxy-loadgen",
        abstract: "Open-loop Poisson load against a v2 /infer endpoint; prints one result line as JSON.")

    @Option(help: "Target host:port (loopback only).")
    var target: String = "127.0.0.1:8080"

    @Option(help: "Model name.")
    var model: String = "iris"

    @Option(help: "Mean arrival rate, requests per second.")
    var rate: Double = 100

    @Option(
        help: "A trace instead of --rate: comma-separated rates (req/s), each held --segment-seconds, Poisson inside.")
    var rates: String?

    @Option(help: "Seconds each rate of --rates is held.")
    var segmentSeconds: Double = 60

    @Option(help: "Requests to send (upper bound).")
    var count: Int = 1000

    @Option(help: "Stop sending after this many seconds even if count is not reached.")
    var maxSeconds: Double = 30

    @Option(help: "Features per row; each request is one row of distinct values.")
    var features: Int = 4

    @Option(help: "Rows (items) per request.")
    var rows: Int = 1

    @Option(help: "SLO in milliseconds for the miss percentage.")
    var sloMs: Double = 100

    @Option(help: "Most connections open at once; requests beyond wait (and their wait counts).")
    var connections: Int = 256

    @Option(help: "Seed for arrivals.")
    var seed: UInt64 = 42

    @Option(help: "A label printed with the results.")
    var label: String = "run"

    func validate() throws {
        let host = target.split(separator: ":").first.map(String.init) ?? ""
        guard host == "127.0.0.1" || host == "localhost" || host.hasPrefix("127.") else {
            throw ValidationError("--target must be a loopback address")
        }
        guard count > 0, count <= 1_000_000, maxSeconds > 0, maxSeconds <= 600 else {
            throw ValidationError("count must be 1...1000000 and max-seconds 0...600")
        }
    }

    func run() throws {
        let parts = target.split(separator: ":")
        let address = ListenAddress(host: String(parts[0]), port: Int(parts[1]) ?? 8080)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { try? group.syncShutdownGracefully() }
        let loop = group.next()
        let pool = UpstreamPool(loop: loop, address: address, timeoutMillis: 60_000)
        let state = LoadState(count: count)
        let path = "/v2/models/\(model)/infer"
        let done = loop.makePromise(of: Void.self)

        // The simulator's own trace code, so a live run and a simulated one see the same arrivals.
        let traceRates =
            try rates.map { text in
                try text.split(separator: ",").map { part -> Double in
                    guard let r = Double(part), r >= 0 else {
                        throw ValidationError("--rates: '\(part)' is not a rate")
                    }
                    return r
                }
            } ?? [rate]
        let trace = ArrivalTrace(
            name: "live", rates: traceRates, segmentSeconds: rates == nil ? maxSeconds : segmentSeconds)
        let arrivals = trace.arrivals(seed: seed).prefix(count).map { Double($0) / 1e9 }.filter { $0 <= maxSeconds }
        state.expected = arrivals.count
        let features = self.features
        let rows = self.rows
        let connections = self.connections
        let schedule = arrivals
        let start = NIODeadline.now()

        @Sendable func body(_ i: Int) -> ByteBuffer {
            var s =
                "{\"id\":\"\(i)\",\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[\(rows),\(features)],\"data\":["
            for r in 0..<rows {
                for f in 0..<features { s += (r + f > 0 ? "," : "") + String(Double((i * 7 + r * 3 + f) % 1000) / 10) }
            }
            return ByteBuffer(string: s + "]}]}")
        }

        @Sendable func send(_ i: Int, scheduled: NIODeadline) {
            state.inflight += 1
            pool.send(path: path, headers: [("content-type", "application/json")], body: body(i)).whenComplete {
                result in
                let latency = Double((NIODeadline.now() - scheduled).nanoseconds) / 1e6
                state.inflight -= 1
                switch result {
                case .success(let r):
                    state.record(
                        latency: latency, ok: r.status == 200,
                        batch: r.headers.first(name: "mlproxy-batch-size").flatMap(Int.init))
                case .failure:
                    state.record(latency: latency, ok: false, batch: nil)
                }
                if let next = state.waiting.popFirst() { send(next.0, scheduled: next.1) }
                if state.finished == state.expected { done.succeed(()) }
            }
        }

        loop.execute {
            if schedule.isEmpty { done.succeed(()) }
            for (i, at) in schedule.enumerated() {
                let when = start + .nanoseconds(Int64(at * 1e9))
                loop.scheduleTask(deadline: when) {
                    if state.inflight < connections {
                        send(i, scheduled: when)
                    } else {
                        state.waiting.append((i, when))
                    }
                }
            }
        }
        // Bounded in time: whatever has not answered 30 s after the last arrival counts as failed.
        let hardStop = loop.scheduleTask(in: .seconds(Int64(maxSeconds) + 30)) { done.succeed(()) }
        try done.futureResult.wait()
        hardStop.cancel()
        let elapsed = Double((NIODeadline.now() - start).nanoseconds) / 1e9
        let offered = Double(arrivals.count) / max(trace.durationSeconds, 1e-9)
        let summary = try loop.submit {
            state.summary(elapsed: elapsed, slo: sloMs, rate: offered, label: label, rows: rows)
        }.wait()
        print(summary)
    }
}

/// Counters of one run; touched only on the generator's single event loop.
final class LoadState: @unchecked Sendable {
    var inflight = 0
    var waiting = CircularBuffer<(Int, NIODeadline)>()
    var expected = 0
    var finished = 0
    var ok = 0
    var latencies: [Double] = []
    var batchSum = 0
    var batchCount = 0

    init(count: Int) { latencies.reserveCapacity(count) }

    func record(latency: Double, ok: Bool, batch: Int?) {
        finished += 1
        latencies.append(ok ? latency : .infinity)
        if ok { self.ok += 1 }
        if let b = batch {
            batchSum += b
            batchCount += 1
        }
    }

    func summary(elapsed: Double, slo: Double, rate: Double, label: String, rows: Int) -> String {
        let lost = expected - finished
        var sorted = latencies.sorted()
        sorted += Array(repeating: .infinity, count: max(lost, 0))
        func pct(_ p: Double) -> Double { nearestRank(sorted, p) ?? .nan }
        let misses = sorted.filter { $0 > slo }.count
        func f(_ x: Double) -> String { x.isFinite ? String(format: "%.2f", x) : "null" }
        return
            "{\"label\":\"\(label)\",\"rate\":\(rate),\"sent\":\(expected),\"ok\":\(ok),\"throughput\":\(f(Double(ok * rows) / elapsed)),"
            + "\"p50_ms\":\(f(pct(0.5))),\"p99_ms\":\(f(pct(0.99))),\"sla_miss_pct\":\(f(100 * Double(misses) / Double(max(sorted.count, 1)))),"
            + "\"mean_batch_seen\":\(batchCount > 0 ? f(Double(batchSum) / Double(batchCount)) : "null")}"
    }
}
