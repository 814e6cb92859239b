"""Benchmarks: murmur against a peer system, same workload, same run, alternating A/B.

Run from the repo root: `python -m bench list`, `python -m bench NAME [--quick]`, `python -m bench all`.
Each benchmark is one module in this package exposing NAME, DESCRIPTION, add_arguments(parser)
and run(args) -> int (the process exit status).
"""

# name -> module (imported lazily so `list` and `--help` stay cheap)
BENCHMARKS: dict[str, str] = {
    "dns": "bench.dns",  # DNS answers vs dnsmasq
    "gossip": "bench.gossip",  # membership vs serf
    "raft": "bench.raft",  # durable commits vs pysyncobj + fsync floor, failover
    "cluster": "bench.cluster",  # KV over HTTP on 3 servers vs etcd
    "imports": "bench.imports",
    "checks": "bench.checks",  # 1,000 HTTP + 1,000 TCP checks in one agent: CPU, RSS (no peer)  # what an agent's imports cost in memory (no peer)
}
