// The proxy's library face: tools and tests import MLProxyHost and see the layers below it.
@_exported import PluginHost
@_exported import ProxyCore
@_exported import ProxyHTTP
@_exported import Scheduling
@_exported import Simulation
