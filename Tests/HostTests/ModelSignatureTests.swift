import Foundation
import MLProxyHost
import PluginAPI
import Testing

/// Signatures from both metadata formats, and the check a request must pass before it is queued.
@Suite("Model signatures")
struct ModelSignatureTests {
    @Test func v2MetadataWithOptionalInputs() throws {
        let body = Array(
            """
            {"name":"m","versions":["1"],"platform":"onnx","inputs":[
              {"name":"ids","datatype":"INT64","shape":[-1,-1]},
              {"name":"mask","datatype":"INT64","shape":[-1,-1],"optional":true},
              {"name":"types","datatype":"INT64","shape":[-1,-1],"parameters":{"optional":true}}],
             "outputs":[{"name":"logits","datatype":"FP32","shape":[-1,2]}]}
            """.utf8)
        let sig = try #require(ModelSignature.fromV2Metadata(body))
        #expect(sig.inputs.map(\.name) == ["ids", "mask", "types"])
        #expect(sig.inputs.map(\.optional) == [false, true, true])
        #expect(sig.outputs == [TensorSpec(name: "logits", datatype: .fp32, shape: [-1, 2])])
        // No inputs declared means the server does not know them: nothing to check against.
        #expect(ModelSignature.fromV2Metadata(Array("{\"name\":\"m\",\"inputs\":[],\"outputs\":[]}".utf8)) == nil)
        #expect(ModelSignature.fromV2Metadata(Array("not json".utf8)) == nil)
    }

    @Test func tfServingSignatureDef() throws {
        // The shape of TF Serving's GET /v1/models/{m}/metadata.
        let body = Array(
            """
            {"model_spec":{"name":"half_plus_two","signature_name":"","version":"123"},
             "metadata":{"signature_def":{"signature_def":{
               "classify_x_to_y":{"inputs":{"inputs":{"dtype":"DT_STRING","tensor_shape":{"dim":[],"unknown_rank":true},"name":"tf_example:0"}},
                                  "outputs":{},"method_name":"tensorflow/serving/classify"},
               "serving_default":{"inputs":{"x":{"dtype":"DT_FLOAT","tensor_shape":{"dim":[{"size":"-1","name":""},{"size":"3","name":""}],"unknown_rank":false},"name":"x:0"}},
                                  "outputs":{"y":{"dtype":"DT_DOUBLE","tensor_shape":{"dim":[{"size":"-1","name":""},{"size":"1","name":""}],"unknown_rank":false},"name":"y:0"}},
                                  "method_name":"tensorflow/serving/predict"}}}}}
            """.utf8)
        let sig = try #require(ModelSignature.fromTFServingMetadata(body))
        #expect(sig.inputs == [TensorSpec(name: "x", datatype: .fp32, shape: [-1, 3])])
        #expect(sig.outputs == [TensorSpec(name: "y", datatype: .fp64, shape: [-1, 1])])
    }

    static let sig = ModelSignature(
        inputs: [
            TensorSpec(name: "x", datatype: .fp64, shape: [-1, 4]),
            TensorSpec(name: "w", datatype: .fp64, shape: [-1, 1], optional: true),
        ],
        outputs: [TensorSpec(name: "y", datatype: .fp64, shape: [-1, 1])], source: "the config")

    func check(_ inputs: [Tensor], outputs: [String] = [], guessed: Bool = false) -> Result<[Tensor], RequestError> {
        outcome { () throws(RequestError) in
            try Self.sig.check(model: "m", inputs: inputs, requestedOutputs: outputs, guessedTypes: guessed)
        }
    }

    @Test func whatFitsAndWhatIsRefused() throws {
        let row = Tensor.fp64(name: "x", shape: [2, 4], values: Array(repeating: 1, count: 8))
        #expect(try check([row]).get().count == 1)
        #expect(try check([row, .fp64(name: "w", shape: [2, 1], values: [1, 2])], outputs: ["y"]).get().count == 2)
        func refusal(_ r: Result<[Tensor], RequestError>) -> String {
            if case .failure(let e) = r {
                #expect(e.status == 400)
                return e.message
            }
            Issue.record("accepted")
            return ""
        }
        #expect(
            refusal(check([.fp64(name: "z", shape: [1, 4], values: [1, 2, 3, 4])])).contains(
                "model 'm' has no input 'z'"))
        #expect(
            refusal(check([.fp64(name: "x", shape: [1, 3], values: [1, 2, 3])])).contains(
                "has shape [1, 3] but model 'm' expects x (FP64 [-1, 4])"))
        #expect(
            refusal(check([.fp64(name: "w", shape: [1, 1], values: [1])])).contains("lacks input x (FP64 [-1, 4])"))
        #expect(refusal(check([row], outputs: ["z"])).contains("no output 'z'; its outputs are y"))
        var fp32 = row
        fp32.datatype = .fp32
        #expect(refusal(check([fp32])).contains("input 'x' is FP32 but model 'm' expects x (FP64 [-1, 4])"))
    }

    @Test func specsWithoutTheBatchDimensionCompareTrailingDims() {
        let spec = TensorSpec(name: "x", datatype: .fp32, shape: [4])
        let sig = ModelSignature(inputs: [spec], outputs: [], source: "the config")
        let storage = TensorStorage(count: 32)
        let ok = Tensor(name: "x", datatype: .fp32, shape: [2, 4], storage: storage)
        let bad = Tensor(name: "x", datatype: .fp32, shape: [4, 2], storage: storage)
        #expect((try? sig.check(model: "m", inputs: [ok], requestedOutputs: [], guessedTypes: false)) != nil)
        #expect((try? sig.check(model: "m", inputs: [bad], requestedOutputs: [], guessedTypes: false)) == nil)
    }

    /// TF Serving clients send JSON numbers without a datatype and may leave a single input unnamed:
    /// the proxy converts and names it, as TF Serving does.
    @Test func guessedTypesAreConvertedAndTheUnnamedInputNamed() throws {
        let storage = TensorStorage(count: 16)
        let values: [Float] = [1.5, -2, 3.25, 4]
        values.withUnsafeBytes { storage.base.copyMemory(from: $0.baseAddress!, byteCount: 16) }
        let unnamed = Tensor(name: "input", datatype: .fp32, shape: [1, 4], storage: storage)
        let out = try check([unnamed], guessed: true).get()
        #expect(out[0].name == "x")
        #expect(out[0].datatype == .fp64)
        #expect(out[0].doubles() == [1.5, -2, 3.25, 4])
        // A v2 client said FP32 itself: that is refused, not converted.
        #expect((try? check([unnamed]).get()) == nil)
    }
}
