import PluginAPI
import ProxyCore

/// What the four component kinds share: the component, its typed vtable and the instance its
/// `create` hook made, destroyed with this object. Each kind's wrapper (`PluginPolicy`,
/// `CodecInstance`, `BackendInstance`, `StageInstance`) holds one and adds its hooks.
final class PluginInstance<VTable>: @unchecked Sendable {
    typealias Create =
        @convention(c) (OpaquePointer?, mlp_bytes, UnsafeMutablePointer<UnsafeMutableRawPointer?>?) -> mlp_status
    typealias Destroy = @convention(c) (UnsafeMutableRawPointer?) -> Void
    typealias DestroyCall = @convention(c) (UnsafeMutableRawPointer?, OpaquePointer?) -> Void

    let component: LoadedComponent
    let vtable: UnsafePointer<VTable>
    let instance: UnsafeMutableRawPointer?
    private let destroy: Destroy?
    private let destroyCall: DestroyCall?

    /// Checks the component's kind and that `create` and the kind's `required` hooks are set, then
    /// calls `create` with the JSON configuration. A refusal is a `ConfigError` naming the component.
    /// Hooks are named by key path and read one field at a time (`hook`), never by copying the whole
    /// vtable: an older plugin's vtable is shorter than this host's.
    init(
        _ component: LoadedComponent, kind: ComponentKind, configJSON: String,
        create: KeyPath<VTable, Create?>, destroy: KeyPath<VTable, Destroy?>,
        destroyCall: KeyPath<VTable, DestroyCall?>, required: (UnsafePointer<VTable>) -> Bool
    ) throws {
        precondition(component.kind == kind)
        self.component = component
        let vtable = component.vtable.assumingMemoryBound(to: VTable.self)
        self.vtable = vtable
        self.destroy = Self.hook(destroy, of: vtable)
        self.destroyCall = Self.hook(destroyCall, of: vtable)
        guard let create = Self.hook(create, of: vtable), required(vtable) else {
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

    /// A field of the vtable, or nil when the plugin's struct_size does not cover it (a field
    /// appended after the plugin was built) or it is NULL.
    func hook<T>(_ field: KeyPath<VTable, T?>) -> T? { Self.hook(field, of: vtable) }

    private static func hook<T>(_ field: KeyPath<VTable, T?>, of vtable: UnsafePointer<VTable>) -> T? {
        guard let offset = MemoryLayout<VTable>.offset(of: field) else { return nil }
        let raw = UnsafeRawPointer(vtable)
        guard Int(raw.load(as: UInt32.self)) >= offset + MemoryLayout<T?>.size else { return nil }
        return raw.load(fromByteOffset: offset, as: T?.self)
    }

    deinit {
        if let destroyCall {
            HostCall(mode: .create).withPointer { destroyCall(instance, $0) }
        } else {
            destroy?(instance)
        }
    }
}
