import PluginAPI
import ProxyCore

/// A chain stage instance (ABI 1.1): one request's tensors in, new tensors out. Immutable after
/// create; calls may come from any event loop.
public final class StageInstance: @unchecked Sendable {
    private let plugin: PluginInstance<mlp_stage_vtable>
    public var component: LoadedComponent { plugin.component }
    private var vtable: UnsafePointer<mlp_stage_vtable> { plugin.vtable }
    private var instance: UnsafeMutableRawPointer? { plugin.instance }

    public init(_ component: LoadedComponent, configJSON: String = "{}") throws {
        plugin = try PluginInstance(
            component, kind: .stage, configJSON: configJSON, create: \.create, destroy: \.destroy,
            destroyCall: \.destroy_call, required: { $0.pointee.apply != nil })
    }

    public func apply(_ inputs: [Tensor], model: String) throws(RequestError) -> [Tensor] {
        let call = HostCall(mode: .stage)
        call.stageInputs = inputs
        let arena = Arena()
        var input = mlp_stage_input()
        input.struct_size = UInt32(MemoryLayout<mlp_stage_input>.size)
        input.tensor_count = UInt32(inputs.count)
        input.tensors = UnsafePointer(arena.tensors(inputs))
        input.tensor_stride = UInt32(MemoryLayout<mlp_tensor>.stride)
        input.model_name = arena.bytes(model)
        let status = withExtendedLifetime(inputs) {
            call.withPointer { vtable.pointee.apply!(instance, $0, &input) }
        }
        guard status == MLP_OK else {
            let s = PluginStatus(raw: status)
            throw call.failure(s == .upstream ? .invalidInput : s, what: "stage '\(component.name)'")
        }
        return call.tensors
    }
}
