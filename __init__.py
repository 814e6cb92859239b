"""murmur: a gossip-based agent cluster for VM fleets (a Consul work-alike in Python)."""

__version__ = "0.1.0"
# The Consul version we present to clients: py-consul parses Config.Version to choose code paths.
CONSUL_COMPAT_VERSION = "1.22.0"
