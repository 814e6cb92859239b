"""A new server joins a running cluster as a non-voter, catches up, and autopilot promotes it once
it has been healthy for ServerStabilizationTime (Consul's behaviour); list-peers shows it with
Voter false until then."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

import httpx
import pytest
from e2e.test_raft_cluster import Writer, holds_all, leader_proc, start_servers
from support.procs import wait_for
from support.servers import kill_leader

pytestmark = pytest.mark.e2e


def peers(s) -> dict[str, bool]:  # type: ignore[no-untyped-def]
    """Node name -> Voter, from the configuration route (empty if it does not answer)."""
    try:
        r = httpx.get(s.url + "/v1/operator/raft/configuration", timeout=5)
        return {x["Node"]: x["Voter"] for x in r.json()["Servers"]} if r.status_code == 200 else {}
    except httpx.HTTPError:
        return {}


def autopilot(s) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    try:
        r = httpx.get(s.url + "/v1/operator/autopilot/configuration", timeout=5)
        return r.json() if r.status_code == 200 else {}
    except httpx.HTTPError:
        return {}


def test_autopilot_configuration_is_seeded_from_the_config_replicated_and_outlives_the_leader(  # type: ignore[no-untyped-def]
        tmp_path, start_agent) -> None:
    """As Consul's: the first leader writes the `autopilot` config block to the Raft log; a PUT on
    any server goes through the leader (CAS on ModifyIndex); every server, and the next leader,
    reads the same configuration, and a new leader does not seed over it."""
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "autopilot.toml").write_text('[autopilot]\nserver_stabilization_time = "7s"\nmin_quorum = 2\n')
    servers = start_servers(tmp_path, start_agent)
    wait_for(lambda: all(autopilot(s).get("CreateIndex", 0) > 0 for s in servers), 60,
             what="the leader's seed on every server")
    assert all(autopilot(s)["ServerStabilizationTime"] == "7s" and autopilot(s)["MinQuorum"] == 2 for s in servers)
    follower = next(s for s in servers if s is not leader_proc(servers))
    cur = autopilot(follower)
    url = follower.url + "/v1/operator/autopilot/configuration"
    assert httpx.put(url, params={"cas": cur["ModifyIndex"]}, json={"MinQuorum": 3}, timeout=30).json() is True
    assert httpx.put(url, params={"cas": cur["ModifyIndex"]}, json={"MinQuorum": 4}, timeout=30).json() is False
    wait_for(lambda: {(autopilot(s).get("MinQuorum"), autopilot(s).get("ModifyIndex")) for s in servers}
             == {(3, autopilot(servers[0]).get("ModifyIndex"))}, 30, what="MinQuorum 3 on every server")
    index = autopilot(servers[0])["ModifyIndex"]
    _, rest = kill_leader(servers)
    time.sleep(3)  # a few of the new leader's reconcile rounds, which must not seed again
    for s in rest:
        got = autopilot(s)
        assert (got["MinQuorum"], got["ServerStabilizationTime"], got["ModifyIndex"]) == (3, "7s", index), got


def test_a_new_server_joins_as_a_non_voter_and_is_promoted(tmp_path, start_agent) -> None:  # type: ignore[no-untyped-def]
    servers = start_servers(tmp_path, start_agent)
    stabilization = 8.0  # long enough for the checks below to see the non-voter on a loaded box
    # Autopilot's configuration is replicated: set once, it holds on every server.
    r = httpx.put(servers[1].url + "/v1/operator/autopilot/configuration",
                  json={"ServerStabilizationTime": f"{stabilization:g}s"}, timeout=10)
    assert r.status_code == 200 and r.json() is True, r.text
    wait_for(lambda: all(autopilot(s).get("ServerStabilizationTime") == f"{stabilization:g}s" for s in servers), 30,
             what="the configuration on every server")
    writer = Writer(servers)
    writer.thread.start()
    wait_for(lambda: len(writer.acked) >= 30, 60, what="30 acknowledged writes")
    extra = ["--server", "--bootstrap-expect", "3", "--join", f"127.0.0.1:{servers[0].serf_port}"]
    fresh = start_agent(tmp_path / "conf", node="s3", dev=False, wait_leader=False, extra=extra)
    wait_for(lambda: peers(servers[0]).get("s3") is False, 60, what="s3 listed as a non-voter")
    seen_learner = time.monotonic()
    # While it is a non-voter the quorum is still 2 of 3, and autopilot's health says so. (Asked
    # first: the CLI below starts a Python process, seconds at load, and the stabilization clock runs.)
    health = httpx.get(servers[0].url + "/v1/operator/autopilot/health", timeout=10).json()
    assert {x["Name"]: x["Voter"] for x in health["Servers"]}.get("s3") is False, health
    out = subprocess.run([sys.executable, "-m", "murmur.cli.main", "operator", "raft", "list-peers",
                          "-http-addr", servers[0].url], capture_output=True, text=True, timeout=60)
    row = next((line for line in out.stdout.splitlines() if line.startswith("s3 ")), "")
    assert out.returncode == 0 and row.split()[4] == "false", out.stdout + out.stderr
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
