"""Lease reads (`raft_lease_reads = true`) on three real servers.

`default` reads on the leader come from its lease (no heartbeat round: the `lease` count moves,
`read_index` does not); `consistent` reads always confirm with a quorum. A leader stopped with
SIGSTOP for longer than the election timeout, while the others elect a new leader and accept a
write, does not answer a `default` read from its old lease when it resumes: its driver counts the
ticks the pause cost before it looks at the lease.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.procs import AgentProc, wait_for
from support.servers import leader_of, start_servers

pytestmark = pytest.mark.e2e


def reads(a: AgentProc) -> dict[str, float]:
    r = a.get("/v1/agent/metrics?format=prometheus")
    assert r.status_code == 200, r.text
    out = {}
    for fam in text_string_to_metric_families(r.text):
        for s in fam.samples:
            if s.name.startswith("murmur_raft_reads"):
                out[s.labels["kind"]] = s.value
    return out


def test_lease_reads_skip_the_heartbeat_round_and_never_outlive_a_pause(tmp_path: Path, start_agent) -> None:  # type: ignore[no-untyped-def]
    lease = tmp_path / "lease"
    lease.mkdir()
    (lease / "raft.toml").write_text("raft_lease_reads = true\n")
    servers = start_servers(tmp_path, start_agent, extra_for=lambda i: ["--config-dir", str(lease)])
    lead_addr = leader_of(servers[0])
    leader = next(s for s in servers if lead_addr.endswith(f":{s.server_port}"))
    others = [s for s in servers if s is not leader]
    assert leader.put("/v1/kv/k", content=b"v1").json() is True

    before = reads(leader)
    for _ in range(20):
        r = leader.get("/v1/kv/k?raw")
        assert r.status_code == 200 and r.content == b"v1"
    mid = reads(leader)
    assert mid["lease"] - before.get("lease", 0) >= 19, (before, mid)  # one may fall between heartbeats
    assert mid["read_index"] - before.get("read_index", 0) <= 1, (before, mid)
    for _ in range(5):
        assert leader.get("/v1/kv/k?consistent&raw").content == b"v1"
    after = reads(leader)
    assert after["read_index"] - mid["read_index"] == 5 and after["lease"] == mid["lease"], (mid, after)

    # The leader freezes; the others elect a new one and take a write it never saw.
    leader.signal(signal.SIGSTOP)
    try:
        wait_for(lambda: (lambda ls: ls[0] and ls[0] == ls[1] and ls[0] != lead_addr)(
            [leader_of(s) for s in others]), 60, what="a new leader while the old one is stopped")
        wait_for(lambda: others[0].put("/v1/kv/k", content=b"v2").json() is True, 30, what="write v2")
    finally:
        leader.signal(signal.SIGCONT)
    t0 = time.monotonic()
    with httpx.Client(timeout=30) as http:
        r = http.get(f"{leader.url}/v1/kv/k?raw")
    # Either it learned of the new leader and answered through it, or it has none yet: never v1.
    assert (r.status_code == 200 and r.content == b"v2") or r.status_code >= 500, (r.status_code, r.content)
    assert time.monotonic() - t0 < 30
    wait_for(lambda: leader.get("/v1/kv/k?stale&raw").content == b"v2", 60, what="the old leader catches up")
