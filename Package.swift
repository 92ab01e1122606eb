// swift-tools-version:6.0
import PackageDescription

// C plugins are built with warnings as errors, as the developers' guide requires.
let strictC: [CSetting] = [
    .headerSearchPath("../../include"),
    .headerSearchPath("../shared"),
    .unsafeFlags(["-Wall", "-Wextra", "-Werror", "-std=c11"]),
]

let package = Package(
    name: "MLProxy",
    products: [
        .executable(name: "mlproxy", targets: ["mlproxy"]),
        .executable(name: "mlproxy-loadgen", targets: ["mlproxy-loadgen"]),
        .executable(name: "mlproxy-codecbench", targets: ["mlproxy-codecbench"]),
        // Each plugin is a dynamic library the host dlopens at run time.
        .library(name: "mlp_json", type: .dynamic, targets: ["MLPJSONPlugin"]),
        .library(name: "mlp_policies", type: .dynamic, targets: ["MLPPolicies"]),
        .library(name: "mlp_tensor", type: .dynamic, targets: ["MLPTensorCodecs"]),
        .library(name: "mlp_image", type: .dynamic, targets: ["MLPImageStages"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/jpsim/Yams", from: "5.0.1"),
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
        // The host as a library, so tests can drive it.
        .target(
            name: "MLProxyHost",
            dependencies: [
                "PluginAPI",
                "CFFI",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Yams", package: "Yams"),
            ],
            path: "Sources/Host/Core",
            linkerSettings: [.linkedLibrary("dl")]
        ),
        .executableTarget(
            name: "mlproxy",
            dependencies: [
                "MLProxyHost",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Sources/Host/Main"
        ),
        .target(
            name: "MLPJSONPlugin",
            path: "Plugins/json",
            cSettings: strictC,
            linkerSettings: [.linkedLibrary("jansson")]
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
        .executableTarget(
            name: "mlproxy-codecbench",
            dependencies: ["MLProxyHost", .product(name: "NIOCore", package: "swift-nio")],
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
    ]
)
