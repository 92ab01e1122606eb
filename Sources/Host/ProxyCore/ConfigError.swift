/// A configuration the proxy cannot run with: the message names the file or component, the key
/// and the reason. Thrown at start-up (and by plugins' `create` hooks, through the host).
public struct ConfigError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public init(message: String) { self.message = message }
    public var description: String { message }
}
