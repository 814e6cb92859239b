"""Health checks: the pure status machine, definitions, and the async probes."""
