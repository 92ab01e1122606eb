// swift-tools-version:6.0
import PackageDescription

// C plugins are built with warnings as errors, as the developers' guide requires.
let strictC: [CSetting] = [
    .headerSearchPath("../../include"),
    .headerSearchPath("../shared"),
    .unsafeFlags(["-Wall", "-Wextra", "-Werror", "-std=c11"]),
]

let strictCXX: [CXXSetting] = [
    .headerSearchPath("../../include"),
    .headerSearchPath("../shared"),
    .headerSearchPath("include"),
    .unsafeFlags(["-Wall", "-Wextra", "-Werror"]),
]

let package = Package(
    name: "MLProxy",
    products: [
        .executable(name: "mlproxy", targets: ["MLProxyCommand"]),
        .executable(name: "mlproxy-loadgen", targets: ["mlproxy-loadgen"]),
        .executable(name: "mlproxy-codecbench", targets: ["mlproxy-codecbench"]),
        // Each plugin is a dynamic library the host dlopens at run time.
        .library(name: "mlp_json", type: .dynamic, targets: ["MLPJSONPlugin"]),
        .library(name: "mlp_policies", type: .dynamic, targets: ["MLPPolicies"]),
        .library(name: "mlp_tensor", type: .dynamic, targets: ["MLPTensorCodecs"]),
        .library(name: "mlp_image", type: .dynamic, targets: ["MLPImageStages"]),
        // The SDK for plugins written in Swift (docs/plugin-abi.md, "Plugins in Swift").
        .library(name: "MLProxyPlugin", targets: ["MLProxyPlugin"]),
        // The Swift plugin sample: samples/swift-plugin.
        .library(name: "mlp_swift_sample", type: .dynamic, targets: ["SwiftPluginSample"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/jpsim/Yams", from: "5.0.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
    ],
    targets: [
        // The C ABI (include/mlproxy/mlproxy.h) exposed to Swift, with compile-time layout checks.
        .target(name: "MLProxyABI", path: "Sources/PluginAPI/ABI"),
        // libffi, for foreign policies: plain C functions of numbers bound at load time.
        .systemLibrary(
            name: "CFFI", path: "Sources/PluginAPI/CFFI", pkgConfig: "libffi",
            providers: [.apt(["libffi-dev"])]),
        // Swift helpers over the ABI: datatypes, status mapping.
        .target(name: "PluginAPI", dependencies: ["MLProxyABI"], path: "Sources/PluginAPI/Swift"),
        // The plugin SDK: a policy, codec, stage or backend as a Swift type behind the C ABI. Plugins
        // link it statically and the Swift runtime dynamically, sharing the host's. The host does not
        // link it (two copies of one module's symbols in a process would interpose).
        .target(name: "MLProxyPlugin", dependencies: ["MLProxyABI"], path: "Sources/PluginAPI/SDK"),
        .target(name: "SwiftPluginSample", dependencies: ["MLProxyPlugin"], path: "samples/swift-plugin"),
        // The host, one module per concern (docs/ARCHITECTURE.md has the graph). ProxyCore: what every
        // layer shares (tensors, batch assembly, the request error, statistics, JSON text).
        .target(
            name: "ProxyCore",
            dependencies: ["PluginAPI"],
            path: "Sources/Host/ProxyCore"
        ),
        // The pure per-model queue and the policy protocol: time in, effects out; no I/O, no C types.
        .target(
            name: "Scheduling",
            dependencies: ["ProxyCore"],
            path: "Sources/Host/Scheduling"
        ),
        // The C plugin host: loader, host function table, one wrapper per component kind, codec
        // chains, libffi policies.
        .target(
            name: "PluginHost",
            dependencies: [
                "ProxyCore", "Scheduling", "PluginAPI", "CFFI",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Sources/Host/PluginHost",
            linkerSettings: [.linkedLibrary("dl")]
        ),
        // HTTP on SwiftNIO: the server, its router, the upstream connection pool and retry budget.
        .target(
            name: "ProxyHTTP",
            dependencies: [
                "ProxyCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Sources/Host/ProxyHTTP"
        ),
        // Virtual time (simulator, traces, Knative's autoscaler) and the built-in model server.
        .target(
            name: "Simulation",
            dependencies: [
                "ProxyCore", "Scheduling", "PluginHost", "ProxyHTTP",
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            path: "Sources/Host/Simulation"
        ),
        // The proxy on top: configuration, models (queue + upstream + failure isolation), metrics,
        // start-up and routes. Re-exports the modules below, so `import MLProxyHost` is enough.
        .target(
            name: "MLProxyHost",
            dependencies: [
                "ProxyCore", "Scheduling", "PluginHost", "ProxyHTTP", "Simulation", "PluginAPI",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Yams", package: "Yams"),
            ],
            path: "Sources/Host/MLProxyHost"
        ),
        .executableTarget(
            name: "MLProxyCommand",
            dependencies: [
                "MLProxyHost",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ],
            path: "Sources/Host/MLProxyCommand"
        ),
        .target(
            name: "MLPJSONPlugin",
            path: "Plugins/json",
            cSettings: strictC,
            // v2_fast.cpp, rows_fast.cpp: the JSON decoders on simdjson, and std::to_chars for numbers.
            cxxSettings: strictCXX,
            linkerSettings: [.linkedLibrary("jansson"), .linkedLibrary("simdjson"), .linkedLibrary("m")]
        ),
        .target(
            name: "MLPTensorCodecs",
            path: "Plugins/tensor",
            cSettings: strictC
        ),
        .target(
            name: "MLPImageStages",
            path: "Plugins/image",
            cSettings: strictC,
            linkerSettings: [
                .linkedLibrary("jansson"), .linkedLibrary("jpeg"), .linkedLibrary("png16"), .linkedLibrary("m"),
            ]
        ),
        .target(
            name: "MLPPolicies",
            path: "Plugins/policies",
            cSettings: strictC,
            linkerSettings: [.linkedLibrary("jansson"), .linkedLibrary("m")]
        ),
        .executableTarget(
            name: "mlproxy-loadgen",
            dependencies: [
                "MLProxyHost",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "benchmarks/LoadGen"
        ),
        // simdjson's bare parse, the limit the v2 JSON decoder is measured against.
        .target(
            name: "SimdjsonBaseline",
            path: "benchmarks/SimdjsonBaseline",
            cxxSettings: [.unsafeFlags(["-Wall", "-Wextra", "-Werror"])],
            linkerSettings: [.linkedLibrary("simdjson")]
        ),
        .executableTarget(
            name: "mlproxy-codecbench",
            dependencies: ["MLProxyHost", "SimdjsonBaseline", .product(name: "NIOCore", package: "swift-nio")],
            path: "benchmarks/CodecBench"
        ),
        .testTarget(
            name: "HostTests",
            dependencies: [
                "MLProxyHost", "PluginAPI",
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ],
            path: "Tests/HostTests"
        ),
    ],
    cxxLanguageStandard: .cxx17
)
