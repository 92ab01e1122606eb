import PluginAPI

/// How a model server describes its models, for reading a model's signature.
public enum MetadataProtocol: String, Sendable, Equatable {
    /// `GET /v2/models/{m}[/versions/{v}]` (KServe v2: Triton, MLServer, KServe).
    case v2
    /// `GET /v1/models/{m}[/versions/{v}]/metadata` (TF Serving's signature_def).
    case tfserving
}

/// What a model gets for the keys it leaves out, and the plugins the host itself needs. The one place
/// plugin names are written: the config's `defaults:` section, whose own defaults are these.
public struct ModelDefaults: Sendable, Equatable {
    public var backend = "kserve-v2"
    public var codecs = [CodecChainSpec([ChainElement(name: "json")])]
    public var policy = "adaptive-sla"
    /// The codec that writes v2 JSON where the host needs one: replies of chains that start with a
    /// stage (the host reads their body itself), and the built-in model server.
    public var v2JSONCodec = "json"
    /// How the model servers behind each backend describe their models; a backend not listed has no
    /// metadata (until backends can say so themselves).
    public var metadata: [String: MetadataProtocol] = ["kserve-v2": .v2, "tfserving": .tfserving]

    public init() {}
}

/// Equatable so that a reload can tell which models changed: a model whose config is equal (and whose
/// plugins did not change) keeps running as it is, with its queue and its policy's state.
public struct ModelConfig: Sendable, Equatable {
    public var name: String
    public var backend: String
    /// Where the model server publishes the model's signature; nil when it does not.
    public var metadata: MetadataProtocol?
    /// The backend adapter's params as JSON text ("{}" when none).
    public var backendParamsJSON: String = "{}"
    public var upstream: ListenAddress
    public var upstreamModel: String
    public var upstreamVersion: String
    public var upstreamTimeoutMillis: Int64
    /// How long a new connection to the model server may take to open (`connect_timeout_ms`).
    public var connectTimeoutMillis: Int64 = 5_000
    /// How request bodies are decoded: codec chains, picked by content type and rank.
    public var codecs: [CodecChainSpec]
    public var policy: String
    /// A foreign policy (a plain C function bound with libffi) instead of a plugin's, when set.
    public var foreignPolicy: ForeignPolicySpec?
    /// Policy parameters as JSON text, with slo_ms, max_batch_items and max_inflight_batches added.
    public var policyParamsJSON: String
    public var limits: QueueLimits
    /// When set (`pad: true`), requests whose inputs differ only in trailing dims are batched
    /// together, padded with this value; otherwise they are batched separately by shape.
    public var padValue: Double?
    /// The model's inputs and outputs from the config (`inputs:`/`outputs:`), for model servers
    /// without metadata; nil to read them from the model server's metadata.
    public var signature: ModelSignature?
    /// Whether requests are checked against the signature before they are queued (`check_signature`).
    public var checkSignature: Bool = true
    /// Whether a batch the model server rejects for its content is split until only the culprits
    /// fail (`isolate_failures: bisect`, the default) or fails whole (`off`).
    public var bisectFailures: Bool = true
    /// Whether a batch lost on a reused connection before any reply byte is sent once more.
    public var retryOnReset: Bool = true
    public var retryBudget = RetryBudget.Settings()
    /// Triton's priority levels (`priority_levels`, `default_priority_level`): nil keeps
    /// `parameters.priority` a plain integer, higher first.
    public var priorityLevels: PriorityLevels?
}

/// Triton's meaning of a request's `parameters.priority`: levels 1 (the highest) to `count`, 0 or
/// none for the model's default level. Policies see `count + 1 - level`, so higher still goes first.
public struct PriorityLevels: Sendable, Equatable {
    public var count: Int
    public var defaultLevel: Int

    public init(count: Int, defaultLevel: Int) {
        self.count = count
        self.defaultLevel = defaultLevel
    }

    /// The policy's priority for a request's raw `parameters.priority`, or why it is refused.
    public func policyPriority(_ raw: Int64) throws(RequestError) -> Int32 {
        let level = raw == 0 ? Int64(defaultLevel) : raw
        guard level >= 1 && level <= Int64(count) else {
            throw .invalid(
                "parameters.priority must be 0 (the model's default level, \(defaultLevel)) or a level from 1 "
                    + "(the highest) to \(count); got \(raw)")
        }
        return Int32(Int64(count) + 1 - level)
    }
}

/// One element of a codec chain: a codec or stage name and its params as JSON text ("{}" when none).
public struct ChainElement: Sendable, Equatable, CustomStringConvertible {
    public var name: String
    public var paramsJSON: String

    public init(name: String, paramsJSON: String = "{}") {
        self.name = name
        self.paramsJSON = paramsJSON
    }

    public var description: String { paramsJSON == "{}" ? name : "\(name)\(paramsJSON)" }
}

/// A codec followed by zero or more stages (`b64 -> image -> resize(224,224) -> normalise`). When the
/// first element names a stage rather than a codec, the host hands it the whole body as one BYTES
/// element and replies with the defaults' v2 JSON codec. Among the chains that take a request's content type, the
/// highest `rank` wins, then the first in the config.
public struct CodecChainSpec: Sendable, Equatable, CustomStringConvertible {
    public var elements: [ChainElement]
    /// Content types this chain takes instead of its codec's own list, when set.
    public var contentTypes: [String]?
    public var rank: Int

    public init(_ elements: [ChainElement], contentTypes: [String]? = nil, rank: Int = 0) {
        self.elements = elements
        self.contentTypes = contentTypes
        self.rank = rank
    }

    public var description: String { elements.map(\.description).joined(separator: " -> ") }
}

public struct ForeignPolicySpec: Sendable, Equatable {
    public var library: String
    public var signature: String
    public var pollMillis: Double

    public init(library: String, signature: String, pollMillis: Double = 5) {
        self.library = library
        self.signature = signature
        self.pollMillis = pollMillis
    }
}

public struct ProxyConfig: Sendable {
    public var listen: ListenAddress
    public var pluginPaths: [String]
    public var plugins: [String]
    public var drainTimeoutMillis: Int64
    /// How long the listener keeps accepting after SIGTERM while readiness already answers 503
    /// (`shutdown_delay_ms`, default 0): the time a platform needs to stop routing to this replica.
    public var shutdownDelayMillis: Int64 = 0
    public var simulatedServers: [BuiltInModelServerConfig]
    public var models: [ModelConfig]
    public var defaults = ModelDefaults()
    /// The listener's timeouts and limits (`server:`; `max_body_bytes` may also stand at the top).
    public var server = ServerLimits()
    /// A second listener for operators (`admin_listen`; off unless set): /metrics, /admin/config and
    /// /admin/models/{m}/batches. Bind it to loopback or a private network.
    public var adminListen: ListenAddress?
    /// Whether the inference listener serves /metrics too (`inference_metrics`, default true).
    public var inferenceMetrics = true
    /// The YAML the config was read from, for /admin/config.
    public var source = ""
    /// The file the config was read from (nil when it was parsed from text): what a reload re-reads.
    public var file: String?

    public var maxBodyBytes: Int { server.maxBodyBytes }
}

extension ProxyConfig {
    /// The settings a reload cannot change, by their config key: the listeners are bound and the
    /// built-in model servers started once. A reload that changes any of them is refused whole.
    var restartOnlySettings: [(key: String, value: String)] {
        [
            ("listen", "\(listen)"), ("admin_listen", adminListen.map { "\($0)" } ?? "off"),
            ("server", "\(server)"), ("inference_metrics", "\(inferenceMetrics)"),
            ("simulated_servers", "\(simulatedServers)"),
        ]
    }
}
