import MLProxyPlugin

/// A chain stage: clamps every FP32 input to [lo, hi] ("clip(0,1)" in a model's codec chain) and
/// hands other tensors on unchanged.
struct ClipStage: ChainStage {
    let low: Float
    let high: Float

    init(config: PluginConfig, host: HostCall) throws {
        guard case .array(let args)? = config.values["args"], args.count == 2,
            case .number(let lo) = args[0], case .number(let hi) = args[1], lo <= hi
        else { throw PluginError.config("clip takes two numbers, low <= high: clip(0,1)") }
        low = Float(lo)
        high = Float(hi)
    }

    func apply(_ input: StageInput, host: HostCall) throws {
        for (index, tensor) in input.tensors.enumerated() {
            guard tensor.datatype == MLP_DT_FP32 else {
                try host.passTensor(index)
                continue
            }
            let out = try host.addTensor(
                name: tensor.name, datatype: MLP_DT_FP32, shape: Array(tensor.shape), byteCount: tensor.data.count)
            let count = tensor.data.count / 4
            for k in 0..<count {
                let v = tensor.data.loadUnaligned(fromByteOffset: 4 * k, as: Float.self)
                out.storeBytes(of: min(max(v, low), high), toByteOffset: 4 * k, as: Float.self)
            }
        }
    }
}
