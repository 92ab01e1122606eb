import Foundation
import Logging
import PluginAPI
import ProxyCore

#if canImport(Glibc)
    import Glibc
#endif

public enum ComponentKind: UInt32, Sendable, CustomStringConvertible {
    case policy = 1
    case codec = 2
    case backend = 3
    case stage = 4

    public var description: String {
        switch self {
        case .policy: return "policy"
        case .codec: return "codec"
        case .backend: return "backend"
        case .stage: return "stage"
        }
    }
}

/// One component a plugin file registered. The vtable is static data in a library that is never
/// unloaded, so the pointer stays valid for the life of the process.
/// What a plugin file says about itself (`mlp_plugin_info`): its name and ABI version, and since ABI
/// 1.2 its own version, license and description (nil when it does not say).
public struct PluginAbout: Sendable, Equatable {
    public let name: String
    public let abi: String
    public let version: String?
    public let license: String?
    public let description: String?
}

public struct LoadedComponent: @unchecked Sendable {
    public let kind: ComponentKind
    public let name: String
    public let summary: String
    public let file: String
    /// The plugin file it came from.
    public let plugin: PluginAbout
    let vtable: UnsafeRawPointer

    /// Whether both come from the same load of the same plugin (a changed file loads anew).
    public func isSameLoad(as other: LoadedComponent?) -> Bool { vtable == other?.vtable }
}

/// Why a plugin file was refused. The message names the file and, for versions, both versions.
public struct PluginLoadError: Error, CustomStringConvertible, Sendable {
    public let file: String
    public let reason: String
    public var description: String { "plugin \(file): \(reason)" }
}

/// Whether this process runs on the shared Swift runtime (libswiftCore.so, as `swift build` links
/// the host by default) rather than a copy linked into the executable. Read before any plugin loads:
/// a Swift plugin brings the shared one with it.
public let hostUsesSharedSwiftRuntime: Bool = dlopen("libswiftCore.so", RTLD_NOLOAD | RTLD_LAZY) != nil

/// Whether a loaded plugin (or a library it needs) is built on the Swift runtime: a plugin written
/// with the Swift SDK. dlsym on a handle searches that library and its dependencies only.
public func linksSwiftRuntime(_ handle: UnsafeMutableRawPointer) -> Bool { dlsym(handle, "swift_retain") != nil }

/// Loads plugin files (dlopen RTLD_NOW|RTLD_LOCAL, never dlclose) and indexes their components.
/// Filled at start-up on one thread; read-only afterwards.
public final class PluginRegistry: @unchecked Sendable {
    public private(set) var components: [String: LoadedComponent] = [:]
    public private(set) var loadedFiles: [String] = []
    private let logger = Logger(label: "mlproxy.plugins")
    public let searchPaths: [String]

    /// The files of the bundled plugins, loaded when they are found on the search path.
    public static let bundledFiles = ["libmlp_json.so", "libmlp_tensor.so", "libmlp_image.so", "libmlp_policies.so"]

    /// Search order: the config's paths, then MLPROXY_PLUGIN_PATH (colon-separated), then the folder
    /// of the running executable (the build output, where SwiftPM puts the bundled plugins).
    public init(configPaths: [String] = []) {
        var paths = configPaths
        if let env = ProcessInfo.processInfo.environment["MLPROXY_PLUGIN_PATH"] {
            paths += env.split(separator: ":").map(String.init)
        }
        if let exe = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") {
            paths.append((exe as NSString).deletingLastPathComponent)
        }
        searchPaths = paths
    }

    /// Finds a plugin file by path or by name along the search path.
    public func resolve(_ name: String) -> String? {
        if name.contains("/") { return FileManager.default.fileExists(atPath: name) ? name : nil }
        for dir in searchPaths {
            for candidate in [name, "lib\(name).so", "\(name).so"] {
                let path = (dir as NSString).appendingPathComponent(candidate)
                if FileManager.default.fileExists(atPath: path) { return path }
            }
        }
        return nil
    }

    /// Loads the bundled plugins and then `extra`; returns the errors of files that were refused
    /// (the others still load, so models that do not need a refused file keep serving).
    @discardableResult
    public func loadAll(extra: [String]) -> [PluginLoadError] {
        var errors: [PluginLoadError] = []
        for name in Self.bundledFiles + extra {
            guard let path = resolve(name) else {
                let reason =
                    name.contains("/")
                    ? "not found: no such file" : "not found in \(searchPaths.joined(separator: ", "))"
                errors.append(PluginLoadError(file: name, reason: reason))
                continue
            }
            if loadedFiles.contains(path) { continue }
            do { try load(path: path) } catch let e as PluginLoadError { errors.append(e) } catch {}
        }
        for e in errors { logger.error("\(e.description)") }
        return errors
    }

    /// Loads one plugin file and registers its components. A file this process has loaded before and
    /// that has not changed on disk gives the components it gave then (its init is not run again); a
    /// file that changed since (a new build at the same path) is loaded as a new instance, from a
    /// private copy, because dlopen would hand back the old image for the same path. The old image
    /// stays loaded: plugins are never unloaded, since models still draining may call into it.
    public func load(path: String) throws {
        let identity = LoadedLibraries.identity(of: path)
        let found: [LoadedComponent]
        if let identity, let known = LoadedLibraries.shared.components(path: path, identity: identity) {
            found = known
        } else {
            var openPath = path
            if LoadedLibraries.shared.hasLoaded(path: path) {
                openPath = try LoadedLibraries.privateCopy(of: path)
                let note = "the old one stays loaded: plugins are never unloaded"
                logger.notice("plugin \(path) changed on disk: loading it as a new instance (\(note))")
            }
            found = try Self.open(path: path, openPath: openPath)
            if let identity { LoadedLibraries.shared.record(path: path, identity: identity, components: found) }
        }
        register(found, from: path)
    }

    /// dlopens `openPath` (the file itself, or a private copy of `path`), runs its init and checks
    /// what it reports; errors name `path`, the file the user gave.
    private static func open(path: String, openPath: String) throws -> [LoadedComponent] {
        // Read (once, lazily) before this dlopen can bring the shared runtime in.
        let sharedRuntime = hostUsesSharedSwiftRuntime
        guard let handle = dlopen(openPath, RTLD_NOW | RTLD_LOCAL) else {
            throw PluginLoadError(file: path, reason: "cannot be loaded: \(String(cString: dlerror()))")
        }
        // Never dlclose: components may be referenced until the process exits.
        if linksSwiftRuntime(handle) && !sharedRuntime {
            throw PluginLoadError(
                file: path,
                reason:
                    "is a Swift plugin (it links the shared Swift runtime), but this mlproxy carries its own copy "
                    + "of the runtime (built with --static-swift-stdlib, as the default container image is); two "
                    + "Swift runtimes cannot share a process: run a mlproxy built without --static-swift-stdlib "
                    + "(docs/plugin-abi.md, Plugins in Swift)")
        }
        guard let sym = dlsym(handle, MLP_PLUGIN_INIT_SYMBOL) else {
            throw PluginLoadError(file: path, reason: "does not export the entry symbol \(MLP_PLUGIN_INIT_SYMBOL)")
        }
        typealias InitFn =
            @convention(c) (UnsafePointer<mlp_host_api>?, UnsafeMutablePointer<mlp_plugin_info>?) -> mlp_status
        let entry = unsafeBitCast(sym, to: InitFn.self)
        var info = mlp_plugin_info()
        let status = entry(hostAPITable, &info)

        // Size and version first, before any other field.
        let versionEnd = UInt32(MemoryLayout<mlp_plugin_info>.offset(of: \.plugin_name)!)
        guard info.struct_size >= versionEnd else {
            // An init that failed early may not have filled anything: say it failed, first.
            let why =
                status != MLP_OK
                ? "mlp_plugin_init failed with status \(status.rawValue) before reporting its ABI version"
                : "did not report its ABI version"
            throw PluginLoadError(file: path, reason: "\(why); host ABI is \(ABIVersion.major).\(ABIVersion.minor)")
        }
        if info.abi_major != ABIVersion.major {
            throw PluginLoadError(
                file: path,
                reason:
                    "was built for ABI \(info.abi_major).\(info.abi_minor) but this host speaks ABI "
                    + "\(ABIVersion.major).\(ABIVersion.minor) (a different major version is incompatible)"
            )
        }
        if info.abi_minor > ABIVersion.minor {
            throw PluginLoadError(
                file: path,
                reason:
                    "was built for ABI \(info.abi_major).\(info.abi_minor), newer than this host's ABI "
                    + "\(ABIVersion.major).\(ABIVersion.minor); upgrade the host or rebuild the plugin"
            )
        }
        guard status == MLP_OK else {
            throw PluginLoadError(file: path, reason: "mlp_plugin_init failed with status \(status.rawValue)")
        }
        let infoEnd = UInt32(MemoryLayout<mlp_plugin_info>.offset(of: \.component_count)! + 4)
        guard info.struct_size >= infoEnd else {
            throw PluginLoadError(
                file: path,
                reason: "reported a plugin info of \(info.struct_size) bytes, smaller than ABI 1.0's \(infoEnd)")
        }
        // ABI 1.2's descriptive fields, when the plugin's struct has them.
        func text(_ field: KeyPath<mlp_plugin_info, UnsafePointer<CChar>?>) -> String? {
            let end = MemoryLayout<mlp_plugin_info>.offset(of: field)! + MemoryLayout<UnsafePointer<CChar>?>.size
            guard info.struct_size >= UInt32(end), let p = info[keyPath: field] else { return nil }
            return String(cString: p)
        }
        let about = PluginAbout(
            name: info.plugin_name.map { String(cString: $0) } ?? "",
            abi: "\(info.abi_major).\(info.abi_minor)", version: text(\.version), license: text(\.license),
            description: text(\.description))
        guard info.component_count == 0 || info.components != nil else {
            throw PluginLoadError(file: path, reason: "reported \(info.component_count) components but no array")
        }
        var found: [LoadedComponent] = []
        for i in 0..<Int(info.component_count) {
            guard let c = info.components[i]?.pointee,
                c.struct_size >= UInt32(MemoryLayout<mlp_component>.size),
                let kind = ComponentKind(rawValue: c.kind), let name = c.name, let vtable = c.vtable
            else {
                throw PluginLoadError(file: path, reason: "component \(i) is malformed (size, kind, name or vtable)")
            }
            let vtableSize = vtable.load(as: UInt32.self)
            // The vtable as the kind's first ABI had it; later fields are read only when present.
            let need: Int
            switch kind {
            case .policy: need = MemoryLayout<mlp_policy_vtable>.offset(of: \.observe_call)!
            case .codec: need = MemoryLayout<mlp_codec_vtable>.offset(of: \.destroy_call)!
            case .backend: need = MemoryLayout<mlp_backend_vtable>.offset(of: \.destroy_call)!
            case .stage: need = MemoryLayout<mlp_stage_vtable>.offset(of: \.destroy_call)!
            }
            guard vtableSize >= need else {
                throw PluginLoadError(
                    file: path,
                    reason:
                        "\(kind) '\(String(cString: name))' has a vtable of \(vtableSize) bytes, the ABI needs \(need)")
            }
            found.append(
                LoadedComponent(
                    kind: kind, name: String(cString: name),
                    summary: c.description.map { String(cString: $0) } ?? "",
                    file: path, plugin: about, vtable: vtable))
        }
        return found
    }

    private func register(_ found: [LoadedComponent], from path: String) {
        for c in found {
            let key = "\(c.kind)/\(c.name)"
            if let existing = components[key] {
                logger.warning("\(c.kind) '\(c.name)' from \(path) ignored: already registered by \(existing.file)")
                continue
            }
            components[key] = c
        }
        loadedFiles.append(path)
        logger.debug("loaded \(path): \(found.map { "\($0.kind) \($0.name)" }.joined(separator: ", "))")
    }

    public func component(_ kind: ComponentKind, _ name: String) throws -> LoadedComponent {
        if let c = components["\(kind)/\(name)"] { return c }
        let known = components.values.filter { $0.kind == kind }.map(\.name).sorted()
        throw ConfigError(
            message:
                "no \(kind) named '\(name)' is loaded (loaded: "
                + "\(known.isEmpty ? "none" : known.joined(separator: ", ")))"
        )
    }
}

/// The plugin files this process has loaded, by path and by what the file was when it was loaded
/// (device, inode, size, modification time). dlopen is process-wide, so this is too: every registry
/// (the one at start-up and each reload's) shares it.
final class LoadedLibraries: @unchecked Sendable {
    struct Identity: Equatable {
        let device: UInt64
        let inode: UInt64
        let size: Int64
        let modifiedNanos: Int64
    }

    static let shared = LoadedLibraries()
    private let lock = NSLock()
    private var byPath: [String: (identity: Identity, components: [LoadedComponent])] = [:]
    private var copies = 0

    static func identity(of path: String) -> Identity? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        return Identity(
            device: UInt64(st.st_dev), inode: UInt64(st.st_ino), size: Int64(st.st_size),
            modifiedNanos: Int64(st.st_mtim.tv_sec) * 1_000_000_000 + Int64(st.st_mtim.tv_nsec))
    }

    func components(path: String, identity: Identity) -> [LoadedComponent]? {
        lock.withLock { byPath[path].flatMap { $0.identity == identity ? $0.components : nil } }
    }

    func hasLoaded(path: String) -> Bool { lock.withLock { byPath[path] != nil } }

    func record(path: String, identity: Identity, components: [LoadedComponent]) {
        lock.withLock { byPath[path] = (identity, components) }
    }

    /// Copies a changed plugin file to this process's private folder under a name never used before.
    static func privateCopy(of path: String) throws -> String {
        let n = shared.lock.withLock { () -> Int in
            shared.copies += 1
            return shared.copies
        }
        let dir = (NSTemporaryDirectory() as NSString).appendingPathComponent("mlproxy-plugins-\(getpid())")
        let copy = (dir as NSString).appendingPathComponent("\(n)-\((path as NSString).lastPathComponent)")
        do {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            try FileManager.default.copyItem(atPath: path, toPath: copy)
        } catch {
            throw PluginLoadError(
                file: path, reason: "changed on disk, but copying it to load it anew failed: \(error)")
        }
        return copy
    }
}
