import Foundation
import MLProxyHost
import NIOCore
import SimdjsonBaseline

/// Codec throughput per core: v2 JSON decode (next to simdjson's bare parse of the same text) and
/// encode (next to std::to_chars writing the same floats), the v2 binary extension's decode, and a
/// memcpy of the same bytes for scale. Prints MB/s of JSON text and of tensor data.
@main
struct CodecBench {
    /// Runs `body` for `seconds`; prints and returns MB/s of `bytes` (tensor data), and of `text`
    /// bytes of JSON text when there is one.
    @discardableResult
    static func measure(_ label: String, bytes: Int, text: Int?, seconds: Double = 1.5, _ body: () -> Void)
        -> Double
    {
        body()  // warm up
        var n = 0
        let start = Date()
        while Date().timeIntervalSince(start) < seconds {
            body()
            n += 1
        }
        let elapsed = Date().timeIntervalSince(start)
        let mbps = Double(bytes * n) / elapsed / 1e6
        switch text {
        case .some(let text) where text > 0:
            let textMBps = Double(text * n) / elapsed / 1e6
            print(String(format: "| %@ | %d | %.0f | %.0f |", label, text / 1024, textMBps, mbps))
        case .some: print(String(format: "| %@ | | | %.0f |", label, mbps))
        case .none: print(String(format: "| %@ | %.0f |", label, mbps))
        }
        return mbps
    }

    static func main() throws {
        let registry = PluginRegistry()
        let errors = registry.loadAll(extra: [])
        guard errors.isEmpty else { fatalError("\(errors)") }
        let codec = try CodecInstance(try registry.component(.codec, "json"))
        print("JSON plugin: \(try registry.component(.codec, "json").file)\n")
        let rows = 64
        let cols = 1024
        var rng = SplitMix64(seed: 5)
        let values = (0..<(rows * cols)).map { _ in Float(rng.nextUnit() * 100 - 50) }
        let tensorBytes = values.count * 4
        func request(_ numbers: [String]) -> String {
            "{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[\(rows),\(cols)],\"data\":["
                + numbers.joined(separator: ",") + "]}]}"
        }
        // Two texts of the same tensor: each float's shortest form (as this proxy and Swift print
        // FP32), and the double's (as a Python client prints numpy float32 values: 17 digits).
        let texts = [
            ("shortest FP32 text", request(values.map { String($0) })),
            ("Python client's text", request(values.map { String(Double($0)) })),
        ]
        let head =
            "{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[\(rows),\(cols)],\"parameters\":{\"binary_data_size\":\(tensorBytes)}}]}"
        var binaryBody = ByteBuffer(string: head)
        values.withUnsafeBytes { _ = binaryBody.writeBytes($0) }
        let headers = [("inference-header-content-length", String(head.utf8.count))]
        let decoded = try codec.decode(
            body: ByteBuffer(string: texts[0].1), contentType: "application/json", model: "m")
        print("Tensor: FP32 [\(rows), \(cols)] = \(tensorBytes / 1024) KiB\n")
        print("| path | text KiB | MB/s of text | MB/s of tensor data, one core |")
        print("|---|---:|---:|---:|")
        let copy = measure("memcpy of the tensor", bytes: tensorBytes, text: 0) {
            let dst = UnsafeMutableRawPointer.allocate(byteCount: tensorBytes, alignment: 16)
            values.withUnsafeBytes { dst.copyMemory(from: $0.baseAddress!, byteCount: tensorBytes) }
            dst.deallocate()
        }
        var ratios: [String] = []
        for (label, text) in texts {
            let body = ByteBuffer(string: text)
            let textBytes = text.utf8.count
            let bare = measure("simdjson parse, every number converted (\(label))", bytes: tensorBytes, text: textBytes)
            {
                text.utf8.withContiguousStorageIfAvailable { p in
                    _ = p.withMemoryRebound(to: CChar.self) { simdjson_baseline_sum($0.baseAddress, $0.count) }
                }
            }
            let dec = measure("v2 JSON decode (\(label))", bytes: tensorBytes, text: textBytes) {
                _ = try? codec.decode(body: body, contentType: "application/json", model: "m")
            }
            ratios.append(
                String(format: "decode of the %@ at %.0f%% of simdjson's bare parse", label, 100 * dec / bare))
        }
        let formatted = UnsafeMutablePointer<CChar>.allocate(capacity: 16 * values.count)
        defer { formatted.deallocate() }
        let toChars = measure("std::to_chars of every float, shortest form", bytes: tensorBytes, text: 0) {
            values.withUnsafeBufferPointer { _ = to_chars_baseline($0.baseAddress, $0.count, formatted) }
        }
        let enc = measure("v2 JSON encode", bytes: tensorBytes, text: 0) {
            _ = try? codec.encode(
                model: "m", version: "", id: nil, outputs: decoded.inputs, parametersJSON: nil,
                allocator: ByteBufferAllocator())
        }
        let bin = measure("v2 binary extension decode", bytes: tensorBytes, text: 0) {
            _ = try? codec.decode(
                body: binaryBody, contentType: "application/octet-stream", model: "m", headers: headers)
        }
        // TF Serving's row format of the same tensor, as a Python client sends it.
        let tf = try CodecInstance(try registry.component(.codec, "tfserving"))
        let rowsText =
            "{\"instances\":["
            + (0..<rows).map { r in
                "[" + values[(r * cols)..<((r + 1) * cols)].map { String(Double($0)) }.joined(separator: ",") + "]"
            }.joined(separator: ",") + "]}"
        let rowsBody = ByteBuffer(string: rowsText)
        let tfDecoded = try tf.decode(body: rowsBody, contentType: "application/json", model: "m")
        measure("TF Serving rows decode (Python client's text)", bytes: tensorBytes, text: rowsText.utf8.count) {
            _ = try? tf.decode(body: rowsBody, contentType: "application/json", model: "m")
        }
        measure("TF Serving rows encode", bytes: tensorBytes, text: 0) {
            _ = try? tf.encode(
                model: "m", version: "", id: nil, outputs: tfDecoded.inputs, parametersJSON: nil,
                codecState: tfDecoded.codecState, allocator: ByteBufferAllocator())
        }
        ratios.append(String(format: "encode at %.0f%% of std::to_chars alone", 100 * enc / toChars))
        print("\n" + ratios.joined(separator: "; ") + ".")
        print(String(format: "JSON encode is %.0fx slower than memcpy, binary decode %.1fx.", copy / enc, copy / bin))

        // An image chain, as a model's codecs would run it per request.
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let jpeg = try Data(contentsOf: root.appendingPathComponent("samples/images/photo_640x480.jpg"))
        let raw = try CodecInstance(try registry.component(.codec, "raw"))
        let stages = try ["{}", "{\"args\":[224,224]}", "{\"args\":[\"imagenet\"]}", "{}"].enumerated().map {
            i, params in
            try StageInstance(
                try registry.component(.stage, ["image", "resize", "normalise", "chw"][i]), configJSON: params)
        }
        let chain = CodecChain(codec: raw, stages: stages)
        let body = ByteBuffer(bytes: jpeg)
        _ = try chain.decode(body: body, contentType: "image/jpeg", model: "m")
        print(
            "\nImage chain raw -> image -> resize(224,224) -> normalise(imagenet) -> chw, JPEG 640x480 (\(jpeg.count / 1024) KiB):\n"
        )
        print("| path | MB/s of JPEG, one core |")
        print("|---|---:|")
        let mbps = measure("JPEG decode + resize + normalise + CHW", bytes: jpeg.count, text: nil) {
            _ = try? chain.decode(body: body, contentType: "image/jpeg", model: "m")
        }
        let scaledImage = try StageInstance(
            try registry.component(.stage, "image"), configJSON: "{\"at_least\":[224,224]}")
        let scaled = CodecChain(codec: raw, stages: [scaledImage] + stages.dropFirst())
        let fast = measure("the same with image at_least [224,224] (DCT scale 1/2)", bytes: jpeg.count, text: nil) {
            _ = try? scaled.decode(body: body, contentType: "image/jpeg", model: "m")
        }
        print(
            String(
                format: "\n%.0f images per second per core; %.0f decoding at a DCT scale.",
                mbps * 1e6 / Double(jpeg.count), fast * 1e6 / Double(jpeg.count)))
    }
}
