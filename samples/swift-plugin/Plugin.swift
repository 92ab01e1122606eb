import MLProxyPlugin

/// The plugin's one C symbol. Everything else is Swift: the SDK builds the descriptors and vtables.
@c(mlp_plugin_init)
public func pluginInit(host: UnsafePointer<mlp_host_api>?, info: UnsafeMutablePointer<mlp_plugin_info>?)
    -> mlp_status
{
    Plugin(
        name: "swift-sample", version: "1.0.0", license: nil,
        description: "the Swift plugin sample: an edf + priority policy and a clip stage",
        components: [
            .policy(
                "edf-priority", EDFPriorityPolicy.self,
                description: "higher priority first, earliest deadline first within; at max_items or deadline - margin"),
            .stage("clip", ClipStage.self, description: "clamps FP32 inputs to [low, high]: clip(0,1)"),
        ]
    ).export(host: host, into: info)
}
