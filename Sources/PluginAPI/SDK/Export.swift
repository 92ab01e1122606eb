import Synchronization

/// One component a Swift plugin registers: its kind, name, one-line description and the type that
/// implements it.
public struct Component: Sendable {
    enum Made {
        case policy(any BatchingPolicy.Type)
        case codec(any RequestCodec.Type, contentTypes: [StaticString], protocolName: StaticString)
        case stage(any ChainStage.Type)
        case backend(any BackendAdapter.Type)
    }

    let name: StaticString
    let summary: StaticString
    let made: Made

    public static func policy(_ name: StaticString, _ type: any BatchingPolicy.Type, description: StaticString)
        -> Component
    {
        Component(name: name, summary: description, made: .policy(type))
    }

    /// `protocol`: the client endpoints the codec serves, "v2" or "tfserving" (mlp_codec_vtable).
    public static func codec(
        _ name: StaticString, _ type: any RequestCodec.Type, contentTypes: [StaticString],
        protocol protocolName: StaticString = "v2", description: StaticString
    ) -> Component {
        Component(
            name: name, summary: description, made: .codec(type, contentTypes: contentTypes, protocolName: protocolName)
        )
    }

    public static func stage(_ name: StaticString, _ type: any ChainStage.Type, description: StaticString) -> Component
    {
        Component(name: name, summary: description, made: .stage(type))
    }

    public static func backend(_ name: StaticString, _ type: any BackendAdapter.Type, description: StaticString)
        -> Component
    {
        Component(name: name, summary: description, made: .backend(type))
    }
}

extension Component.Made: @unchecked Sendable {}

/// A Swift plugin's description and components: what `mlp_plugin_init` exports. The whole of a
/// plugin's C entry point is one line:
///
///     @c(mlp_plugin_init)
///     public func pluginInit(host: UnsafePointer<mlp_host_api>?, info: UnsafeMutablePointer<mlp_plugin_info>?)
///         -> mlp_status
///     {
///         Plugin(name: "my-plugin", version: "1.0.0", license: "Apache-2.0", description: "...",
///                components: [.policy("my-policy", MyPolicy.self, description: "...")])
///             .export(host: host, into: info)
///     }
public struct Plugin: Sendable {
    /// At most this many components per plugin (each needs its own C `create` function).
    public static let maxComponents = createSlots.count

    let name: StaticString
    let version: StaticString?
    let license: StaticString?
    let summary: StaticString?
    let components: [Component]

    public init(
        name: StaticString, version: StaticString? = nil, license: StaticString? = nil,
        description: StaticString? = nil, components: [Component]
    ) {
        self.name = name
        self.version = version
        self.license = license
        self.summary = description
        self.components = components
    }

    /// Checks the host's ABI version, registers the components and fills `info`. The descriptors and
    /// vtables are allocated once and never freed: the host keeps them until the process exits.
    public func export(host: UnsafePointer<mlp_host_api>?, into info: UnsafeMutablePointer<mlp_plugin_info>?)
        -> mlp_status
    {
        guard let host, let info else { return MLP_ERR_INTERNAL }
        let begun = mlp_plugin_begin(host, info, cString(name))
        guard begun == MLP_OK else { return begun }
        guard components.count <= Plugin.maxComponents else {
            let call = HostCall(host, nil)
            call.log(
                MLP_LOG_ERROR,
                "\(name): \(components.count) components; a Swift plugin has at most \(Plugin.maxComponents)")
            return MLP_ERR_INTERNAL
        }
        let first = registry.withLock { slots in
            let first = slots.count
            slots.append(contentsOf: components.map { Slot(made: $0.made, host: host) })
            return first
        }
        guard first + components.count <= Plugin.maxComponents else { return MLP_ERR_INTERNAL }
        let list = UnsafeMutablePointer<UnsafePointer<mlp_component>?>.allocate(capacity: max(components.count, 1))
        for (k, c) in components.enumerated() {
            let d = UnsafeMutablePointer<mlp_component>.allocate(capacity: 1)
            d.initialize(to: mlp_component())
            d.pointee.struct_size = UInt32(MemoryLayout<mlp_component>.size)
            d.pointee.name = cString(c.name)
            d.pointee.description = cString(c.summary)
            let create = createSlots[first + k]
            switch c.made {
            case .policy:
                d.pointee.kind = MLP_KIND_POLICY.rawValue
                var v = mlp_policy_vtable()
                v.struct_size = UInt32(MemoryLayout<mlp_policy_vtable>.size)
                v.create = create
                v.destroy = destroyInstance
                v.decide = policyDecide
                v.observe_call = policyObserve
                d.pointee.vtable = UnsafeRawPointer(leak(v))
            case .codec(_, let types, let protocolName):
                d.pointee.kind = MLP_KIND_CODEC.rawValue
                let names = UnsafeMutablePointer<UnsafePointer<CChar>?>.allocate(capacity: types.count + 1)
                for (i, t) in types.enumerated() { names[i] = cString(t) }
                names[types.count] = nil
                var v = mlp_codec_vtable()
                v.struct_size = UInt32(MemoryLayout<mlp_codec_vtable>.size)
                v.content_types = UnsafePointer(names)
                v.create = create
                v.destroy = destroyInstance
                v.decode_request = codecDecode
                v.encode_response = codecEncode
                v.protocol = cString(protocolName)
                d.pointee.vtable = UnsafeRawPointer(leak(v))
            case .stage:
                d.pointee.kind = MLP_KIND_STAGE.rawValue
                var v = mlp_stage_vtable()
                v.struct_size = UInt32(MemoryLayout<mlp_stage_vtable>.size)
                v.create = create
                v.destroy = destroyInstance
                v.apply = stageApply
                d.pointee.vtable = UnsafeRawPointer(leak(v))
            case .backend:
                d.pointee.kind = MLP_KIND_BACKEND.rawValue
                var v = mlp_backend_vtable()
                v.struct_size = UInt32(MemoryLayout<mlp_backend_vtable>.size)
                v.create = create
                v.destroy = destroyInstance
                v.encode_request = backendEncode
                v.decode_response = backendDecode
                d.pointee.vtable = UnsafeRawPointer(leak(v))
            }
            list[k] = UnsafePointer(d)
        }
        info.pointee.components = UnsafePointer(list)
        info.pointee.component_count = UInt32(components.count)
        info.pointee.version = version.map(cString)
        info.pointee.license = license.map(cString)
        info.pointee.description = summary.map(cString)
        return MLP_OK
    }
}

private func cString(_ s: StaticString) -> UnsafePointer<CChar> {
    // A StaticString literal is NUL-terminated static memory, valid for the life of the image.
    UnsafeRawPointer(s.utf8Start).assumingMemoryBound(to: CChar.self)
}

private func leak<T>(_ value: T) -> UnsafeMutablePointer<T> {
    let p = UnsafeMutablePointer<T>.allocate(capacity: 1)
    p.initialize(to: value)
    return p
}

/// What a `create` slot makes, and the host table it was registered with.
struct Slot: @unchecked Sendable {
    let made: Component.Made
    let host: UnsafePointer<mlp_host_api>
}

/// Written once by `Plugin.export`, read by each `create` (rare: model start and reload).
let registry = Mutex<[Slot]>([])

typealias CreateHook =
    @convention(c) (
        OpaquePointer?, mlp_bytes, UnsafeMutablePointer<UnsafeMutableRawPointer?>?
    ) -> mlp_status

/// Makes the instance of the component in `slot`: parses the config, calls the type's init and
/// hands the host a retained box, which `destroy` releases.
func create(
    slot: Int, _ call: OpaquePointer?, _ config: mlp_bytes, _ out: UnsafeMutablePointer<UnsafeMutableRawPointer?>?
)
    -> mlp_status
{
    guard let out, let s = registry.withLock({ slot < $0.count ? $0[slot] : nil }) else { return MLP_ERR_INTERNAL }
    let host = HostCall(s.host, call)
    return host.run("create") {
        let config = try PluginConfig(config)
        let box: AnyObject
        switch s.made {
        case .policy(let t): box = PolicyBox(try t.init(config: config, host: host), host: s.host)
        case .codec(let t, _, _): box = CodecBox(try t.init(config: config, host: host), host: s.host)
        case .stage(let t): box = StageBox(try t.init(config: config, host: host), host: s.host)
        case .backend(let t): box = BackendBox(try t.init(config: config, host: host), host: s.host)
        }
        out.pointee = Unmanaged.passRetained(box).toOpaque()
    }
}

/// One C `create` per component: a C function pointer carries no context, so each slot is its own
/// function that names its index.
let createSlots: [CreateHook] = [
    { create(slot: 0, $0, $1, $2) }, { create(slot: 1, $0, $1, $2) }, { create(slot: 2, $0, $1, $2) },
    { create(slot: 3, $0, $1, $2) }, { create(slot: 4, $0, $1, $2) }, { create(slot: 5, $0, $1, $2) },
    { create(slot: 6, $0, $1, $2) }, { create(slot: 7, $0, $1, $2) }, { create(slot: 8, $0, $1, $2) },
    { create(slot: 9, $0, $1, $2) }, { create(slot: 10, $0, $1, $2) }, { create(slot: 11, $0, $1, $2) },
    { create(slot: 12, $0, $1, $2) }, { create(slot: 13, $0, $1, $2) }, { create(slot: 14, $0, $1, $2) },
    { create(slot: 15, $0, $1, $2) },
]
