"""A new server joins a running cluster as a non-voter, catches up, and autopilot promotes it once
it has been healthy for ServerStabilizationTime (Consul's behaviour); list-peers shows it with
Voter false until then."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pytest
from e2e.test_raft_cluster import Writer, holds_all, start_servers
from support.procs import wait_for

pytestmark = pytest.mark.e2e


def peers(s) -> dict[str, bool]:  # type: ignore[no-untyped-def]
    """Node name -> Voter, from the configuration route (empty if it does not answer)."""
    try:
        r = httpx.get(s.url + "/v1/operator/raft/configuration", timeout=5)
        return {x["Node"]: x["Voter"] for x in r.json()["Servers"]} if r.status_code == 200 else {}
    except httpx.HTTPError:
        return {}


def test_a_new_server_joins_as_a_non_voter_and_is_promoted(tmp_path, start_agent) -> None:  # type: ignore[no-untyped-def]
    servers = start_servers(tmp_path, start_agent)
    stabilization = 4.0
    for s in servers:  # autopilot's configuration is per server: set it everywhere
        r = httpx.put(s.url + "/v1/operator/autopilot/configuration",
                      json={"ServerStabilizationTime": f"{stabilization:g}s"}, timeout=10)
        assert r.status_code == 200 and r.json() is True, r.text
    writer = Writer(servers)
    writer.thread.start()
    wait_for(lambda: len(writer.acked) >= 30, 60, what="30 acknowledged writes")
    extra = ["--server", "--bootstrap-expect", "3", "--join", f"127.0.0.1:{servers[0].serf_port}"]
    fresh = start_agent(tmp_path / "conf", node="s3", dev=False, wait_leader=False, extra=extra)
    wait_for(lambda: peers(servers[0]).get("s3") is False, 60, what="s3 listed as a non-voter")
    seen_learner = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "murmur.cli.main", "operator", "raft", "list-peers",
                          "-http-addr", servers[0].url], capture_output=True, text=True, timeout=60)
    row = next((line for line in out.stdout.splitlines() if line.startswith("s3 ")), "")
    assert out.returncode == 0 and row.split()[4] == "false", out.stdout + out.stderr
    # While it is a non-voter the quorum is still 2 of 3, and autopilot's health says so.
    health = httpx.get(servers[0].url + "/v1/operator/autopilot/health", timeout=10).json()
    assert {x["Name"]: x["Voter"] for x in health["Servers"]}.get("s3") is False, health
    wait_for(lambda: all(peers(s).get("s3") is True for s in servers), 60, what="s3 promoted to voter")
    promoted_after = time.monotonic() - seen_learner
    assert promoted_after >= stabilization * 0.5, promoted_after  # not before it was stable (less our polling)
    wait_for(lambda: len(peers(fresh)) == 4 and all(peers(fresh).values()), 30, what="s3 sees 4 voters")
    mark = len(writer.acked)
    wait_for(lambda: len(writer.acked) >= mark + 20, 60, what="writes with 4 voters")
    writer.stop.set()
    writer.thread.join(timeout=30)
    wait_for(lambda: holds_all(fresh, dict(writer.acked)), 60, what="the promoted server holds every write")
    leader_logs = "".join(s.logs() for s in servers)
    assert "promoting it to voter" in leader_logs and "adding it as a non-voter" in leader_logs
