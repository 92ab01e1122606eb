import PluginAPI
import Scheduling

/// A C plugin's policy as the scheduler sees it. Not Sendable: its model's queue owns it and calls
/// it under that queue's lock.
public final class PluginPolicy: BatchingPolicy {
    private let plugin: PluginInstance<mlp_policy_vtable>
    public var component: LoadedComponent { plugin.component }
    // Reused across calls: the queue in the ABI's layout, and room for the indices a policy sheds.
    private var requests: [mlp_queued_request] = []
    private var shedBuffer: [UInt32] = []
    private var selectBuffer: [UInt32] = []

    public init(_ component: LoadedComponent, configJSON: String) throws {
        plugin = try PluginInstance(
            component, kind: .policy, configJSON: configJSON, create: \.create, destroy: \.destroy,
            destroyCall: \.destroy_call, required: { $0.pointee.decide != nil })
    }

    public func decide(_ input: PolicyInput) throws(PolicyFailure) -> PolicyDecision {
        let queue = input.queue
        requests.removeAll(keepingCapacity: true)
        for r in queue {
            var v = mlp_queued_request()
            v.struct_size = UInt32(MemoryLayout<mlp_queued_request>.size)
            v.items = UInt32(clamping: r.items)
            v.arrival_ns = r.arrival
            v.deadline_ns = r.deadline
            v.priority = r.priority
            v.batch_group = r.batchGroup
            requests.append(v)
        }
        if shedBuffer.count < queue.count {
            shedBuffer = Array(repeating: 0, count: max(queue.count, 2 * shedBuffer.count))
            selectBuffer = shedBuffer
        }
        let name = component.name
        let (vtable, instance) = (plugin.vtable, plugin.instance)
        let call = HostCall(mode: .policy)
        call.context = "policy '\(name)'"
        let result: Result<PolicyDecision, PolicyFailure> = requests.withUnsafeBufferPointer { views in
            shedBuffer.withUnsafeMutableBufferPointer { shed in
                selectBuffer.withUnsafeMutableBufferPointer { select in
                    var c = mlp_policy_input()
                    c.struct_size = UInt32(MemoryLayout<mlp_policy_input>.size)
                    c.queue_len = UInt32(views.count)
                    c.now_ns = input.now
                    c.queue = views.baseAddress
                    c.request_stride = UInt32(MemoryLayout<mlp_queued_request>.stride)
                    c.queued_items = UInt32(clamping: input.queuedItems)
                    c.inflight_batches = UInt32(input.inflight)
                    c.max_inflight_batches = UInt32(input.limits.maxInflightBatches)
                    c.max_batch_items = UInt32(input.limits.maxBatchItems)
                    c.slo_ns = input.limits.sloNanos
                    var out = mlp_policy_decision()
                    out.struct_size = UInt32(MemoryLayout<mlp_policy_decision>.size)
                    out.shed_indices = shed.baseAddress
                    out.select_indices = select.baseAddress
                    let status = call.withPointer { vtable.pointee.decide!(instance, $0, &c, &out) }
                    guard status == MLP_OK else {
                        return .failure(
                            PolicyFailure(
                                call.failureMessage(PluginStatus(raw: status), what: "policy '\(name)' decide")))
                    }
                    switch out.action {
                    case UInt32(MLP_ACTION_WAIT.rawValue):
                        return .success(.wait(until: out.wake_at_ns))
                    case UInt32(MLP_ACTION_DISPATCH.rawValue) where out.select_count > 0:
                        guard Int(out.select_count) <= views.count else {
                            return .failure(
                                PolicyFailure(
                                    "policy '\(name)' selected \(out.select_count) requests but \(views.count) are queued"
                                ))
                        }
                        return .success(
                            .select(
                                indices: (0..<Int(out.select_count)).map { Int(select[$0]) },
                                items: Int(out.dispatch_items), reason: PolicyReason(code: out.dispatch_reason)))
                    case UInt32(MLP_ACTION_DISPATCH.rawValue):
                        return .success(
                            .dispatch(
                                items: Int(out.dispatch_items), reason: PolicyReason(code: out.dispatch_reason)))
                    case UInt32(MLP_ACTION_SHED.rawValue):
                        let n = min(Int(out.shed_count), views.count)
                        let indices = (0..<n).map { Int(shed[$0]) }.filter { $0 < views.count }
                        let reason =
                            out.reason.ptr.map {
                                String(decoding: UnsafeBufferPointer(start: $0, count: out.reason.len), as: UTF8.self)
                            } ?? "shed by policy '\(name)'"
                        return .success(.shed(indices: indices, reason: reason))
                    default:
                        return .failure(PolicyFailure("policy '\(name)' returned unknown action \(out.action)"))
                    }
                }
            }
        }
        return try result.get()
    }

    public func observe(items: Int, arrivals: [Int64], ok: Bool, dispatched: Int64, finished: Int64)
        throws(PolicyFailure)
    {
        let observeCall = plugin.hook(\.observe_call)
        let observe = plugin.hook(\.observe)
        guard observeCall != nil || observe != nil else { return }
        let name = component.name
        let failure: PolicyFailure? = arrivals.withUnsafeBufferPointer { arrivalTimes in
            var r = mlp_batch_report()
            r.struct_size = UInt32(MemoryLayout<mlp_batch_report>.size)
            r.items = UInt32(items)
            r.requests = UInt32(arrivalTimes.count)
            r.ok = ok ? 1 : 0
            r.dispatched_ns = dispatched
            r.finished_ns = finished
            r.arrival_ns = arrivalTimes.baseAddress
            guard let observeCall else {
                observe?(plugin.instance, &r)
                return nil
            }
            let call = HostCall(mode: .policy)
            call.context = "policy '\(name)'"
            let status = call.withPointer { observeCall(plugin.instance, $0, &r) }
            guard status == MLP_OK else {
                return PolicyFailure(call.failureMessage(PluginStatus(raw: status), what: "policy '\(name)' observe"))
            }
            return nil
        }
        if let failure { throw failure }
    }
}
