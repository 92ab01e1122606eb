import Foundation
import Testing

/// The container recipe and the manifests in deploy/: valid for the platform (kubernetes-validate for
/// core kinds, the Knative Service schema subset in Tests/deploy), a proxy config in every ConfigMap
/// that `mlproxy check` accepts, and a drain that fits the pod's grace period.
@Suite("Deployment files", .serialized)
struct DeployTests {
    let binary = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
        .appendingPathComponent("mlproxy").path

    var manifests: [String] {
        ["deploy/knative/mlserver.yaml", "deploy/knative/mlproxy.yaml", "deploy/kubernetes/mlproxy.yaml"].map {
            repoRoot.appendingPathComponent($0).path
        }
    }

    /// Runs the validator on `files`; its report.
    func validate(_ files: [String], into dir: URL) throws -> [String: Any] {
        let out = try run(
            try interopPython(),
            [repoRoot.appendingPathComponent("Tests/deploy/validate_manifests.py").path, dir.path] + files)
        return try #require(try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: Any], "\(out)")
    }

    @Test func theManifestsValidateAndTheirProxyConfigsPassCheck() throws {
        let dir = try scratchDir("deploy")
        defer { try? FileManager.default.removeItem(at: dir) }
        let report = try validate(manifests, into: dir)
        #expect(report["checked"] as? Int == 6, "ConfigMap, 2 Knative Services, ConfigMap, Deployment, Service")
        #expect((report["problems"] as? [String]) == [], "\(report["problems"] ?? "")")
        let configs = try #require(report["configs"] as? [String])
        #expect(configs.count == 2)
        for config in configs {
            let out = try run(binary, ["check", "--config", config])
            #expect(out.contains("ok, 1 model(s): iris"), "\(config): \(out)")
        }
        let timing = try #require(report["timing"] as? [[String: Any]])
        #expect(timing.count == 2, "both proxies' drains were compared with their grace periods")
    }

    /// The validator is not a rubber stamp: a misspelt field, an annotation Knative does not read and
    /// a drain longer than the grace period are each reported.
    @Test func misspeltFieldsAndADrainPastTheGracePeriodAreCaught() throws {
        let dir = try scratchDir("deploy-bad")
        defer { try? FileManager.default.removeItem(at: dir) }
        let knative = try String(contentsOfFile: manifests[1], encoding: .utf8)
            .replacingOccurrences(of: "containerConcurrency: 0", with: "containerConcurency: 0")
            .replacingOccurrences(of: "autoscaling.knative.dev/min-scale", with: "autoscaling.knative.dev/minscale")
        let kube = try String(contentsOfFile: manifests[2], encoding: .utf8)
            .replacingOccurrences(of: "drain_timeout_ms: 45000", with: "drain_timeout_ms: 58000")
            .replacingOccurrences(of: "readinessProbe:", with: "readynessProbe:")
        try knative.write(to: dir.appendingPathComponent("kn.yaml"), atomically: true, encoding: .utf8)
        try kube.write(to: dir.appendingPathComponent("k8s.yaml"), atomically: true, encoding: .utf8)
        let report = try validate(
            [dir.appendingPathComponent("kn.yaml").path, dir.appendingPathComponent("k8s.yaml").path], into: dir)
        let problems = try #require(report["problems"] as? [String]).joined(separator: "\n")
        #expect(problems.contains("'containerConcurency' was unexpected"), "\(problems)")
        #expect(problems.contains("autoscaling.knative.dev/minscale is not one Knative's autoscaler reads"))
        #expect(problems.contains("'readynessProbe' was unexpected"))
        #expect(problems.contains("63.0 s is not below the grace period of 60 s"))
    }

    /// What the Dockerfile puts where: the image's layout (binary alone, plugins in their folder found
    /// through MLPROXY_PLUGIN_PATH, the default config) checks out, and the runtime stage installs
    /// Debian packages that exist and that the host and plugins need.
    @Test func theImageLayoutWorksAndItsPackagesExist() throws {
        let dockerfile = try String(contentsOf: repoRoot.appendingPathComponent("Dockerfile"), encoding: .utf8)
        let runtime = try #require(dockerfile.components(separatedBy: "FROM ${RUNTIME_IMAGE}").last)
        for package in ["libjansson4", "libsimdjson14", "libffi8", "libjpeg62-turbo", "libpng16-16"] {
            #expect(runtime.contains(package), "the runtime stage installs \(package)")
            let shown = try run("/usr/bin/apt-cache", ["show", "--no-all-versions", package])
            #expect(shown.contains("Package: \(package)"), "\(package) is a Debian package")
        }
        #expect(dockerfile.contains("ENV MLPROXY_PLUGIN_PATH=/usr/lib/mlproxy/plugins"))
        #expect(dockerfile.contains("COPY --from=build /staging/plugins/ /usr/lib/mlproxy/plugins/"))
        #expect(dockerfile.contains("COPY deploy/container.yaml /etc/mlproxy/config.yaml"))
        #expect(dockerfile.contains("USER 10001"))

        // The same layout in a scratch folder: the binary with no plugin beside it, and the plugins
        // `make plugins` builds with plain cc, as the image's build stage does.
        let root = try scratchDir("image")
        defer { try? FileManager.default.removeItem(at: root) }
        let bin = root.appendingPathComponent("usr/bin")
        let plugins = root.appendingPathComponent("usr/lib/mlproxy/plugins")
        try FileManager.default.createDirectory(at: bin, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(at: plugins, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: binary, toPath: bin.appendingPathComponent("mlproxy").path)
        let built = URL(fileURLWithPath: binary).deletingLastPathComponent()
        for lib in ["libmlp_json.so", "libmlp_tensor.so", "libmlp_image.so", "libmlp_policies.so"] {
            try FileManager.default.copyItem(
                at: built.appendingPathComponent(lib), to: plugins.appendingPathComponent(lib))
        }
        let p = Process()
        p.executableURL = bin.appendingPathComponent("mlproxy")
        p.arguments = ["check", "--config", repoRoot.appendingPathComponent("deploy/container.yaml").path]
        p.environment = ["MLPROXY_PLUGIN_PATH": plugins.path]
        let out = Pipe()
        p.standardOutput = out
        p.standardError = out
        try p.run()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        #expect(p.terminationStatus == 0 && text.contains("ok, 1 model(s): iris"), "\(text)")
    }
}
