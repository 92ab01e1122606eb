import PluginAPI
import ProxyCore

/// What the four component kinds share: the component, its typed vtable and the instance its
/// `create` hook made, destroyed with this object. Each kind's wrapper (`PluginPolicy`,
/// `CodecInstance`, `BackendInstance`, `StageInstance`) holds one and adds its hooks.
final class PluginInstance<VTable>: @unchecked Sendable {
    typealias Create =
        @convention(c) (OpaquePointer?, mlp_bytes, UnsafeMutablePointer<UnsafeMutableRawPointer?>?) -> mlp_status
    typealias Destroy = @convention(c) (UnsafeMutableRawPointer?) -> Void

    let component: LoadedComponent
    let vtable: UnsafePointer<VTable>
    let instance: UnsafeMutableRawPointer?
    private let destroy: Destroy?

    /// Checks the component's kind and that `create` and the kind's `required` hooks are set, then
    /// calls `create` with the JSON configuration. A refusal is a `ConfigError` naming the component.
    init(
        _ component: LoadedComponent, kind: ComponentKind, configJSON: String,
        create: (VTable) -> Create?, destroy: (VTable) -> Destroy?, required: (VTable) -> Bool
    ) throws {
        precondition(component.kind == kind)
        self.component = component
        let vtable = component.vtable.assumingMemoryBound(to: VTable.self)
        self.vtable = vtable
        self.destroy = destroy(vtable.pointee)
        guard let create = create(vtable.pointee), required(vtable.pointee) else {
            throw ConfigError(message: "\(kind) '\(component.name)' (\(component.file)) lacks a hook")
        }
        let call = HostCall(mode: .create)
        let arena = Arena()
        var instance: UnsafeMutableRawPointer?
        let status = call.withPointer { create($0, arena.bytes(configJSON), &instance) }
        guard status == MLP_OK else {
            let why = call.error ?? "status \(status.rawValue)"
            throw ConfigError(
                message: "\(kind) '\(component.name)' (\(component.file)) refused its configuration: \(why)")
        }
        self.instance = instance
    }

    deinit { destroy?(instance) }
}
