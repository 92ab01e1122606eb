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
        let proxyPort = try freePort()
        let simPort = try freePort()
        let yaml = try String(contentsOf: repoRoot.appendingPathComponent("samples/quickstart.yaml"), encoding: .utf8)
            .replacingOccurrences(of: "127.0.0.1:8080", with: "127.0.0.1:\(proxyPort)")
            .replacingOccurrences(of: "127.0.0.1:9000", with: "127.0.0.1:\(simPort)")
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let rt = try ProxyRuntime.start(config: try ProxyConfig.parse(yaml: yaml), group: group)
        defer {
            rt.drainAndStop()
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
