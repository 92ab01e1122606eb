import Foundation
import MLProxyHost
import NIOPosix
import Testing

/// Every `sh` and `python` example in docs/protocols/ runs against the quick-start configuration
/// (what `make run` serves), so the pages cannot drift from what the proxy does.
@Suite("Protocol page examples", .serialized)
struct DocsExampleTests {
    /// The fenced code blocks of `language` in a Markdown text.
    static func blocks(_ markdown: String, language: String) -> [String] {
        var out: [String] = []
        var current: [Substring]?
        for line in markdown.split(separator: "\n", omittingEmptySubsequences: false) {
            if current == nil, line == "```\(language)" {
                current = []
            } else if current != nil, line == "```" {
                out.append(current!.joined(separator: "\n"))
                current = nil
            } else {
                current?.append(line)
            }
        }
        return out
    }

    @Test func everyExampleRunsAgainstTheQuickstart() throws {
        let python = try interopPython()
        // The quick start's model server first, on a port the kernel picks; then the proxy, on another,
        // pointed at it. The pages' 127.0.0.1:8080 becomes the proxy's port.
        let quickstart = try String(
            contentsOf: repoRoot.appendingPathComponent("samples/quickstart.yaml"), encoding: .utf8)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        var simConfig = try #require(try ProxyConfig.parse(yaml: quickstart).simulatedServers.first)
        simConfig.listen.port = 0
        let sim = BuiltInModelServer(
            config: simConfig, codec: try CodecInstance(try bundledPlugins.component(.codec, "json")),
            loop: group.next())
        try sim.start(group: group)
        var config = try ProxyConfig.parse(
            yaml: quickstart.replacingOccurrences(of: "127.0.0.1:9000", with: "127.0.0.1:\(sim.port)"))
        config.simulatedServers = []
        config.listen.port = 0
        let rt = try ProxyRuntime.start(config: config, group: group)
        let proxyPort = rt.port
        defer {
            rt.drainAndStop()
            sim.stop()
            try? group.syncShutdownGracefully()
        }
        let dir = repoRoot.appendingPathComponent("docs/protocols")
        var ran = 0
        var fences = 0
        for page in try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted() where page.hasSuffix(".md") {
            let text = try String(contentsOf: dir.appendingPathComponent(page), encoding: .utf8)
                .replacingOccurrences(of: "127.0.0.1:8080", with: "127.0.0.1:\(proxyPort)")
            fences +=
                text.components(separatedBy: "\n```sh\n").count - 1
                + text.components(separatedBy: "\n```python\n").count - 1
            for code in Self.blocks(text, language: "sh") {
                // curl fails on an HTTP error status, and so does the example.
                let script =
                    "set -eo pipefail; cd '\(repoRoot.path)'; curl() { command curl --fail-with-body \"$@\"; }\n" + code
                let out = try run("/bin/bash", ["-c", script])
                #expect(!out.isEmpty && !out.contains("\"error\""), "\(page): \(code)\n-> \(out)")
                ran += 1
            }
            for code in Self.blocks(text, language: "python") {
                let out = try run(python, ["-c", code])
                #expect(!out.isEmpty, "\(page): \(code)")
                ran += 1
            }
        }
        #expect(ran == fences && ran >= 9, "ran \(ran) of \(fences) examples")
    }
}

/// docs/ARCHITECTURE.md's module table says what Package.swift says.
@Suite("Architecture map")
struct ArchitectureMapTests {
    /// Each target of ours in Package.swift with the targets of ours it depends on (products of other
    /// packages left out).
    static func packageGraph() throws -> [String: Set<String>] {
        let text = try String(contentsOf: repoRoot.appendingPathComponent("Package.swift"), encoding: .utf8)
        var graph: [String: Set<String>] = [:]
        for block in text.components(separatedBy: "Target(").dropFirst()
            + text.components(separatedBy: ".target(")
            .dropFirst()
        {
            guard let name = block.firstMatch(of: /name: "([^"]+)"/)?.1 else { continue }
            var deps: Set<String> = []
            if let list = block.firstMatch(of: /dependencies: \[([^\]]*)\]/)?.1 {
                let ours = list.replacing(/\.product\([^)]*\)/, with: "")
                for m in ours.matches(of: /"([^"]+)"/) { deps.insert(String(m.1)) }
            }
            graph[String(name)] = deps
        }
        return graph
    }

    @Test func theModuleTableMatchesPackageSwift() throws {
        let whole = try String(contentsOf: repoRoot.appendingPathComponent("docs/ARCHITECTURE.md"), encoding: .utf8)
        let start = try #require(whole.range(of: "## Modules"))
        let end = try #require(whole.range(of: "## Code map"))
        let doc = whole[start.upperBound..<end.lowerBound]
        let graph = try Self.packageGraph()
        var documented: [String: Set<String>] = [:]
        for line in doc.split(separator: "\n") where line.hasPrefix("| `") {
            let cells = line.split(separator: "|", omittingEmptySubsequences: false).map {
                $0.trimmingCharacters(in: .whitespaces)
            }
            guard cells.count >= 4, let module = cells[1].firstMatch(of: /^`(\w+)`$/)?.1,
                cells[2].isEmpty || cells[2].hasPrefix("`") || cells[2].hasPrefix("(")
            else { continue }
            documented[String(module)] = Set(cells[2].matches(of: /`(\w+)`/).map { String($0.1) })
        }
        for module in ["ProxyCore", "Scheduling", "PluginHost", "ProxyHTTP", "Simulation", "MLProxyHost"] {
            #expect(documented[module] != nil, "docs/ARCHITECTURE.md has no row for \(module)")
        }
        for (module, deps) in documented {
            #expect(
                graph[module] == deps,
                "\(module): the doc says \(deps.sorted()), Package.swift \(graph[module]?.sorted() ?? [])")
        }
    }
}

/// docs/plugin-abi.md builds its plugins from excerpts of the samples; the excerpts must be the
/// samples' own text, so the tutorial cannot drift from code that is built and tested.
@Suite("Plugin tutorial excerpts")
struct PluginTutorialTests {
    @Test func everyCodeBlockOfThePluginTutorialIsInASample() throws {
        let doc = try String(contentsOf: repoRoot.appendingPathComponent("docs/plugin-abi.md"), encoding: .utf8)
        let sources: [String: [String]] = [
            "c": ["samples/c-policy/edf_priority.c", "samples/c-backend/seldon_v1.c"],
            "swift": ["samples/swift-plugin/EDFPriorityPolicy.swift", "samples/swift-plugin/Plugin.swift"],
        ]
        var checked = 0
        for (language, files) in sources {
            let texts = try files.map {
                try String(contentsOf: repoRoot.appendingPathComponent($0), encoding: .utf8)
            }
            // A user's Package.swift is an illustration, not a sample of ours.
            for block in DocsExampleTests.blocks(doc, language: language) where !block.hasPrefix("// Package.swift") {
                #expect(texts.contains { $0.contains(block) }, "not in \(files): \(block.prefix(200))")
                checked += 1
            }
        }
        #expect(checked >= 8, "the tutorial lost its excerpts")
    }
}
