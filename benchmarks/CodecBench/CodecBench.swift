import Foundation
import MLProxyHost
import NIOCore

/// Codec throughput per core: v2 JSON decode and encode, the v2 binary extension's decode, and a
/// memcpy of the same bytes for scale. Prints MB/s of tensor data (not of JSON text).
@main
struct CodecBench {
    static func measure(_ label: String, bytes: Int, seconds: Double = 1.5, _ body: () -> Void) -> Double {
        body()  // warm up
        var n = 0
        let start = Date()
        while Date().timeIntervalSince(start) < seconds {
            body()
            n += 1
        }
        let mbps = Double(bytes * n) / Date().timeIntervalSince(start) / 1e6
        print(String(format: "| %@ | %.0f |", label, mbps))
        return mbps
    }

    static func main() throws {
        let registry = PluginRegistry()
        let errors = registry.loadAll(extra: [])
        guard errors.isEmpty else { fatalError("\(errors)") }
        let codec = try CodecInstance(try registry.component(.codec, "json"))
        let rows = 64
        let cols = 1024
        var rng = SplitMix64(seed: 5)
        let values = (0..<(rows * cols)).map { _ in Float(rng.nextUnit() * 100 - 50) }
        let tensorBytes = values.count * 4
        let json =
            "{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[\(rows),\(cols)],\"data\":["
            + values.map { String($0) }.joined(separator: ",") + "]}]}"
        let jsonBody = ByteBuffer(string: json)
        let head =
            "{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[\(rows),\(cols)],\"parameters\":{\"binary_data_size\":\(tensorBytes)}}]}"
        var binaryBody = ByteBuffer(string: head)
        values.withUnsafeBytes { _ = binaryBody.writeBytes($0) }
        let headers = [("inference-header-content-length", String(head.utf8.count))]
        let decoded = try codec.decode(body: jsonBody, contentType: "application/json", model: "m")
        print("Tensor: FP32 [\(rows), \(cols)] = \(tensorBytes / 1024) KiB; JSON text \(json.utf8.count / 1024) KiB\n")
        print("| path | MB/s of tensor data, one core |")
        print("|---|---:|")
        let copy = measure("memcpy of the tensor", bytes: tensorBytes) {
            let dst = UnsafeMutableRawPointer.allocate(byteCount: tensorBytes, alignment: 16)
            values.withUnsafeBytes { dst.copyMemory(from: $0.baseAddress!, byteCount: tensorBytes) }
            dst.deallocate()
        }
        let dec = measure("v2 JSON decode", bytes: tensorBytes) {
            _ = try? codec.decode(body: jsonBody, contentType: "application/json", model: "m")
        }
        let enc = measure("v2 JSON encode", bytes: tensorBytes) {
            _ = try? codec.encode(
                model: "m", version: "", id: nil, outputs: decoded.inputs, parametersJSON: nil,
                allocator: ByteBufferAllocator())
        }
        let bin = measure("v2 binary extension decode", bytes: tensorBytes) {
            _ = try? codec.decode(
                body: binaryBody, contentType: "application/octet-stream", model: "m", headers: headers)
        }
        print(
            String(
                format: "\nJSON decode is %.0fx slower than memcpy, JSON encode %.0fx, binary decode %.1fx.",
                copy / dec, copy / enc, copy / bin))

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
        let mbps = measure("JPEG decode + resize + normalise + CHW", bytes: jpeg.count) {
            _ = try? chain.decode(body: body, contentType: "image/jpeg", model: "m")
        }
        let scaledImage = try StageInstance(
            try registry.component(.stage, "image"), configJSON: "{\"at_least\":[224,224]}")
        let scaled = CodecChain(codec: raw, stages: [scaledImage] + stages.dropFirst())
        let fast = measure("the same with image at_least [224,224] (DCT scale 1/2)", bytes: jpeg.count) {
            _ = try? scaled.decode(body: body, contentType: "image/jpeg", model: "m")
        }
        print(
            String(
                format: "\n%.0f images per second per core; %.0f decoding at a DCT scale.",
                mbps * 1e6 / Double(jpeg.count), fast * 1e6 / Double(jpeg.count)))
    }
}
