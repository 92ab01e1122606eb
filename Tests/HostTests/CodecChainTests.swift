import Foundation
import MLProxyHost
import NIOPosix
import PluginAPI
import Testing

private let images = repoRoot.appendingPathComponent("Tests/Fixtures/images")

private func image(_ file: String) throws -> Data { try Data(contentsOf: images.appendingPathComponent(file)) }

/// A BYTES tensor of shape [n] holding `elements`.
private func bytesTensor(_ name: String, _ elements: [Data]) -> Tensor {
    var raw = Data()
    for e in elements {
        withUnsafeBytes(of: UInt32(e.count).littleEndian) { raw.append(contentsOf: $0) }
        raw.append(e)
    }
    let storage = raw.withUnsafeBytes { TensorStorage(bytes: $0) }
    return Tensor(name: name, datatype: .bytes, shape: [Int64(elements.count)], storage: storage)
}

private func uint8Tensor(_ name: String, shape: [Int64], _ values: [UInt8]) -> Tensor {
    Tensor(name: name, datatype: .uint8, shape: shape, storage: values.withUnsafeBytes { TensorStorage(bytes: $0) })
}

private func stage(_ name: String, _ params: String = "{}") throws -> StageInstance {
    try StageInstance(try bundledPlugins.component(.stage, name), configJSON: params)
}

private func applied(_ stageName: String, _ params: String = "{}", _ inputs: [Tensor]) throws -> [Tensor] {
    try stage(stageName, params).apply(inputs, model: "m")
}

private func failure(_ stageName: String, _ params: String = "{}", _ inputs: [Tensor]) throws -> RequestError {
    let s = try stage(stageName, params)
    guard case .failure(let e) = outcome({ () throws(RequestError) in try s.apply(inputs, model: "m") }) else {
        throw TestFailure.command(stageName, 0, "succeeded but must fail")
    }
    return e
}

/// Pixel (x, y) of rgb_4x3.png, as make_images.py wrote it.
private func rgbPixel(_ x: Int, _ y: Int) -> [Double] { [Double(10 * x), Double(20 * y), Double(5 * (x + y))] }

@Suite("Codec chains and image stages")
struct CodecChainTests {
    @Test func chainsParseInEveryForm() throws {
        let c = try ProxyConfig.parse(
            yaml: """
                models:
                  - name: m
                    upstream: "http://127.0.0.1:9"
                    codecs:
                      - json
                      - "b64 -> image -> resize(224, 224) -> normalise(imagenet)"
                      - chain: [raw, {name: image, params: {channels: bgr}}]
                        stages: ["resize(2,3)"]
                        content_types: [Image/PNG]
                        rank: 3
                """)
        let chains = c.models[0].codecs
        #expect(
            chains.map { $0.elements.map(\.name) } == [
                ["json"], ["b64", "image", "resize", "normalise"], ["raw", "image", "resize"],
            ])
        #expect(chains[1].elements[2].paramsJSON == "{\"args\":[224,224]}")
        #expect(chains[1].elements[3].paramsJSON == "{\"args\":[\"imagenet\"]}")
        #expect(chains[2].elements[1].paramsJSON == "{\"channels\":\"bgr\"}")
        #expect(chains[2].contentTypes == ["image/png"])
        #expect(chains[2].rank == 3 && chains[0].rank == 0)

        for (codecs, message) in [
            ("[{name: json, chain: raw}]", "not both"), ("[\"b64 -> \"]", "is not a codec or stage name"),
            ("[\"resize(2\"]", "must end with ')'"), ("[{chain: raw, params: {a: 1}}]", "'params' goes with 'name'"),
            ("[{chain: raw, content_types: []}]", "at least one content type"),
        ] {
            #expect {
                try ProxyConfig.parse(yaml: "models: [{name: m, upstream: \"http://127.0.0.1:9\", codecs: \(codecs)}]")
            } throws: { ($0 as? ConfigError)?.message.contains(message) == true }
        }
    }

    @Test func unknownStagesAndBadStageParamsStopTheModelWithTheChainNamed() throws {
        for (chain, message) in [
            ("image -> blur", "no stage named 'blur'"), ("image -> resize(0,5)", "resize needs a height and width"),
            ("image(purple)", "channels must be"), ("raw -> normalise(1,2)", "the only argument is imagenet"),
        ] {
            #expect {
                let rt = try ProxyRuntime.start(
                    config: try ProxyConfig.parse(
                        yaml: """
                            listen: "127.0.0.1:0"
                            models: [{name: m, upstream: "http://127.0.0.1:9", codecs: ["\(chain)"]}]
                            """), group: MultiThreadedEventLoopGroup.singleton)
                rt.drainAndStop()
            } throws: { e in
                let text = "\(e)"
                return text.contains(message) && text.contains("model 'm'")
            }
        }
    }

    @Test func pngDecodesExactlyInEachChannelOrder() throws {
        let png = try image("rgb_4x3.png")
        let rgb = try applied("image", "{}", [bytesTensor("img", [png, png])])
        #expect(rgb.count == 1 && rgb[0].name == "img" && rgb[0].datatype == .uint8)
        #expect(rgb[0].shape == [2, 3, 4, 3])
        let one: [Double] = (0..<3).flatMap { y in (0..<4).flatMap { x in rgbPixel(x, y) } }
        #expect(rgb[0].doubles() == one + one)
        let bgr = try applied("image", "{\"channels\":\"bgr\"}", [bytesTensor("img", [png])])
        let reversed: [Double] = (0..<3).flatMap { y in (0..<4).flatMap { x in Array(rgbPixel(x, y).reversed()) } }
        #expect(bgr[0].doubles() == reversed)
        let gray = try applied("image", "{\"args\":[\"gray\"]}", [bytesTensor("g", [try image("gray_5x5.png")])])
        #expect(gray[0].shape == [1, 5, 5, 1])
        let grayValues: [Double] = (0..<25).map { Double(10 * $0) }
        #expect(gray[0].doubles() == grayValues)
    }

    @Test func jpegDecodesCloseToItsColour() throws {
        let out = try applied("image", "{}", [bytesTensor("img", [try image("red_16x8.jpg")])])
        #expect(out[0].shape == [1, 8, 16, 3])
        let px = out[0].doubles()
        for i in stride(from: 0, to: px.count, by: 3) {
            let (r, g, b) = (px[i], px[i + 1], px[i + 2])
            let close = abs(r - 200) <= 3 && abs(g - 30) <= 3 && abs(b - 60) <= 3
            #expect(close, "pixel \(i / 3): \(r), \(g), \(b)")
        }
    }

    /// at_least: the smallest DCT scale that keeps the size, here 1/2 (1/4 would be 4x2, too small).
    @Test func jpegDecodesAtADCTScaleWhenAsked() throws {
        let out = try applied("image", "{\"at_least\":[4,8]}", [bytesTensor("img", [try image("red_16x8.jpg")])])
        #expect(out[0].shape == [1, 4, 8, 3])
        let px = out[0].doubles()
        #expect(abs(px[0] - 200) <= 3 && abs(px[1] - 30) <= 3 && abs(px[2] - 60) <= 3, "\(px.prefix(3))")
        // PNGs are decoded at full size whatever at_least says.
        let png = try applied("image", "{\"at_least\":[1,1]}", [bytesTensor("img", [try image("rgb_4x3.png")])])
        #expect(png[0].shape == [1, 3, 4, 3])
        #expect(throws: ConfigError.self) { try stage("image", "{\"at_least\":[0,5]}") }
    }

    @Test func corruptForeignAndHugeImagesFailWithReasons() throws {
        let jpeg = try image("red_16x8.jpg")
        let png = try image("rgb_4x3.png")
        let truncated = try failure("image", "{}", [bytesTensor("img", [try image("red_16x8_truncated.jpg")])])
        #expect(truncated.status == 400 && truncated.message.contains("corrupt"), "\(truncated)")
        let cutPNG = try failure("image", "{}", [bytesTensor("img", [png.prefix(50)])])
        #expect(cutPNG.status == 400 && cutPNG.message.contains("corrupt"), "\(cutPNG)")
        let gif = try failure("image", "{}", [bytesTensor("img", [Data("GIF89a....".utf8)])])
        #expect(gif.status == 415 && gif.message.contains("neither JPEG nor PNG"), "\(gif)")
        let huge = try failure("image", "{\"max_pixels\":100}", [bytesTensor("img", [jpeg])])
        #expect(huge.status == 400 && huge.message.contains("16x8") && huge.message.contains("at most 100"), "\(huge)")
        let mixed = try failure("image", "{}", [bytesTensor("img", [jpeg, png])])
        #expect(mixed.status == 400 && mixed.message.contains("one size per request"), "\(mixed)")
        let notBytes = try failure("image", "{}", [uint8Tensor("x", shape: [1, 1], [1])])
        #expect(notBytes.status == 400 && notBytes.message.contains("no BYTES tensor"), "\(notBytes)")
    }

    @Test func resizeNormaliseAndCHWComputeWhatTheyClaim() throws {
        // Down to one pixel: the centre of a 2x2 image is the mean of its four pixels.
        let square = uint8Tensor("x", shape: [1, 2, 2, 1], [0, 100, 200, 255])
        #expect(try applied("resize", "{\"args\":[1,1]}", [square])[0].doubles() == [139])  // 138.75 rounded
        // Up from 2 to 4 pixels wide, half-pixel centres: sources -0.25 (clamped), 0.25, 0.75, 1.25 (clamped).
        let pair = uint8Tensor("x", shape: [1, 1, 2, 1], [0, 255])
        let wide = try applied("resize", "{\"height\":1,\"width\":4}", [pair])[0]
        #expect(wide.shape == [1, 1, 4, 1])
        #expect(wide.doubles() == [0, 64, 191, 255])
        // ImageNet normalisation, per channel, to FP32.
        let pixel = uint8Tensor("x", shape: [1, 1, 1, 3], [255, 0, 128])
        let norm = try applied("normalise", "{\"args\":[\"imagenet\"]}", [pixel])[0]
        #expect(norm.datatype == .fp32)
        let want = [(1 - 0.485) / 0.229, (0 - 0.456) / 0.224, (128.0 / 255 - 0.406) / 0.225]
        for (got, w) in zip(norm.doubles(), want) { #expect(abs(got - w) < 1e-5, "\(got) vs \(w)") }
        let scaled = try applied("normalise", "{\"scale\":1,\"mean\":[1,2,3],\"std\":2}", [pixel])[0]
        #expect(scaled.doubles() == [127, -1, 62.5])
        // HWC -> CHW.
        let hwc = uint8Tensor("x", shape: [1, 2, 2, 3], (0..<12).map(UInt8.init))
        let chw = try applied("chw", "{}", [hwc])[0]
        #expect(chw.shape == [1, 3, 2, 2])
        #expect(chw.doubles() == [0, 3, 6, 9, 1, 4, 7, 10, 2, 5, 8, 11])
    }

    @Test func b64TakesDataURLsAndWhitespaceAndRefusesOtherText() throws {
        let png = try image("rgb_4x3.png")
        let text =
            "data:image/png;base64,"
            + png.base64EncodedString(options: [.lineLength64Characters, .endLineWithLineFeed])
        let out = try applied("b64", "{}", [bytesTensor("img", [Data(text.utf8)])])
        #expect(out[0].datatype == .bytes && out[0].shape == [1])
        #expect(Data(out[0].bytes.dropFirst(4)) == png)
        let bad = try failure("b64", "{}", [bytesTensor("img", [Data("not base64!".utf8)])])
        #expect(bad.status == 400 && bad.message.contains("not base64"))
    }

    @Test func stagesPassOtherTensorsOnUntouched() throws {
        let meta = Tensor.fp64(name: "meta", shape: [1, 2], values: [7, 8])
        let out = try applied(
            "image", "{\"tensor\":\"img\"}",
            [meta, bytesTensor("img", [try image("rgb_4x3.png")]), bytesTensor("other", [Data("x".utf8)])])
        #expect(out.map(\.name) == ["meta", "img", "other"])
        #expect(out[0].storage === meta.storage, "passed on without a copy")
        #expect(out[1].shape == [1, 3, 4, 3] && out[2].datatype == .bytes)
        let missing = try failure("resize", "{\"tensor\":\"nope\",\"args\":[2,2]}", [meta])
        #expect(missing.message.contains("no tensor 'nope'"))
    }

    /// A stage that breaks the tensor rules (shape x datatype over fewer bytes, dim 0 changed, BYTES
    /// framing past the data) fails its own request with a 500 naming it; its batch-mates are answered.
    @Test func aStageThatLiesFailsItsOwnRequestOnly() throws {
        let dir = try scratchDir("liar")
        defer { try? FileManager.default.removeItem(at: dir) }
        let plugin = try compilePlugin(
            source: repoRoot.appendingPathComponent("Tests/Fixtures/plugins/lying_stage.c"), into: dir,
            name: "lying_stage")
        let cluster = try TestCluster(
            extraTop: "plugins: [\"\(plugin)\"]",
            models: """
                  - name: m
                    upstream: "UPSTREAM"
                    policy: static
                    policy_params: {batch_items: 8, max_delay_ms: 30}
                    codecs: [json, {chain: liar, content_types: [text/plain]}]
                """)
        defer { cluster.stop() }
        let lies = [
            "shape": "needs 4000 bytes but has 4", "items": "3 items in dim 0; its input had 1",
            "bytes": "BYTES data is truncated",
        ]
        var bodies: [String] = []
        for i in 0..<24 { bodies.append(i % 4 == 0 ? ["shape", "items", "bytes"][i / 4 % 3] : "good \(i)") }
        let results = try curlParallel(
            url: cluster.url + "/v2/models/m/infer", requests: bodies.map { (Data($0.utf8), "text/plain") })
        var batched = 0
        for (body, r) in zip(bodies, results) {
            if let words = lies[body] {
                #expect(r.status == 500, "\(body): \(r.status) \(r.body)")
                #expect(r.body.contains("stage 'liar' broke the plugin ABI") && r.body.contains(words), "\(r.body)")
                continue
            }
            #expect(r.status == 200, "\(body): \(r.body)")
            #expect(r.output("sum") == [Double(body.utf8.count)], "\(body): \(r.body)")
            if Int(r.headers["mlproxy-batch-requests"] ?? "") ?? 0 > 1 { batched += 1 }
        }
        #expect(batched > 0, "the good requests were batched together")
        let health = try curlParallel(
            url: cluster.url + "/v2/models/m/infer", requests: [(Data("ok".utf8), "text/plain")])
        #expect(health[0].status == 200, "the proxy keeps serving: \(health[0].body)")
    }

    /// Over HTTP with curl: content type and rank pick the chain; bad images get their 4xx while their
    /// batch-mates are answered; 415 lists what the model takes.
    @Test func chainsServeClientsAndBadImagesHurtNobodyElse() throws {
        let cluster = try TestCluster(
            models: """
                  - name: img
                    upstream: "UPSTREAM"
                    policy: static
                    policy_params: {batch_items: 8, max_delay_ms: 30}
                    codecs:
                      - json
                      - "image -> normalise"
                      - {chain: "b64 -> image -> normalise", content_types: [text/plain]}
                  - name: ranked
                    upstream: "UPSTREAM"
                    policy: none
                    codecs:
                      - "image -> normalise"
                      - {chain: "image(gray)", content_types: ["image/*"], rank: 5}
                """)
        defer { cluster.stop() }
        let png = try image("rgb_4x3.png")
        let pixels: [Double] = (0..<3).flatMap { y in (0..<4).flatMap { x in rgbPixel(x, y) } }
        let expected = pixels.reduce(0, +) / 255
        var requests: [(body: Data, contentType: String)] = []
        for i in 0..<24 {
            switch i % 4 {
            case 0: requests.append((try image("red_16x8_truncated.jpg"), "image/jpeg"))
            case 1: requests.append((Data(png.base64EncodedString().utf8), "text/plain"))
            default: requests.append((png, "image/png"))
            }
        }
        let results = try curlParallel(url: cluster.url + "/v2/models/img/infer", requests: requests)
        var batched = 0
        for (i, r) in results.enumerated() {
            if i % 4 == 0 {
                #expect(r.status == 400 && r.body.contains("corrupt"), "\(i): \(r.status) \(r.body)")
                continue
            }
            #expect(r.status == 200, "\(i): \(r.body)")
            let sum = try #require(r.output("sum"))
            #expect(abs(sum[0] - expected) < 1e-3, "\(i): \(sum) vs \(expected)")
            if Int(r.headers["mlproxy-batch-requests"] ?? "") ?? 0 > 1 { batched += 1 }
        }
        #expect(batched > 0, "images of one size were batched together")
        // The rank picks the gray chain for image/png over the first-listed one.
        let ranked = try curlParallel(
            url: cluster.url + "/v2/models/ranked/infer", requests: [(try image("gray_5x5.png"), "image/png")])
        let graySum: Double = (0..<25).map { Double(10 * $0) }.reduce(0, +)
        #expect(ranked[0].output("sum") == [graySum], "\(ranked[0].body)")
        let refused = try curlParallel(url: cluster.url + "/v2/models/img/infer", requests: [(png, "image/gif")])
        #expect(refused[0].status == 415)
        #expect(refused[0].body.contains("image/png") && refused[0].body.contains("text/plain"), "\(refused[0].body)")
    }
}

/// Pillow (PyPI) as the client: what reaches the model equals Pillow's decoding put through the same
/// resize and normalisation in NumPy.
@Suite("Images from Pillow", .serialized)
struct PillowImageTests {
    @Test func pillowImagesArriveAsTheirReferenceTensors() throws {
        let cluster = try TestCluster(
            simEcho: true,
            models: """
                  - name: img
                    upstream: "UPSTREAM"
                    backend_params: {binary: always}
                    policy: static
                    policy_params: {batch_items: 6, max_delay_ms: 40}
                    codecs:
                      - "image -> resize(20,24) -> normalise(imagenet)"
                      - {chain: "b64 -> image -> resize(20,24) -> normalise(imagenet)", content_types: [text/plain]}
                      - "tfserving -> image -> resize(20,24) -> normalise(imagenet)"
                """)
        defer { cluster.stop() }
        let r = try runChecker("image_client.py", [cluster.url, "img", "20", "24"])
        #expect(r.checked == 24, "\(r.output)")
        #expect(r.problems == [], "\(r.output)")
        #expect(try cluster.upstreamRequests() < 24, "images were batched")
    }
}
