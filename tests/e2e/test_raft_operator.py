"""Raft operator actions on real servers: leadership transfer (and membership changes) under
KV write load, with no acknowledged write lost."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest
from e2e.test_raft_cluster import Writer, holds_all, leader_of, leader_proc, read_all, start_servers
from support.procs import wait_for
from support.servers import rejoin_via

pytestmark = pytest.mark.e2e


def node_id(s) -> str:  # type: ignore[no-untyped-def]
    return str(httpx.get(s.url + "/v1/agent/self", timeout=10).json()["Config"]["NodeID"])


def cli(s, *args: str) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    return subprocess.run([sys.executable, "-m", "murmur.cli.main", *args, "-http-addr", s.url],
                          capture_output=True, text=True, timeout=60)


def test_transfer_leader_moves_leadership_and_writes_continue(tmp_path, start_agent) -> None:  # type: ignore[no-untyped-def]
    servers = start_servers(tmp_path, start_agent)
    writer = Writer(servers)
    writer.thread.start()
    wait_for(lambda: len(writer.acked) >= 30, 60, what="30 acknowledged writes")
    old = leader_proc(servers)
    old_addr = leader_of(old)
    target = next(s for s in servers if s is not old)
    # Through a follower's HTTP API (forwarded to the leader), to a chosen server.
    r = httpx.post(target.url + "/v1/operator/raft/transfer-leader", params={"id": node_id(target)}, timeout=30)
    assert r.status_code == 200 and r.json() == {"Success": True}, r.text
    wait_for(lambda: all(leader_of(s) == leader_of(target) != old_addr for s in servers), 30,
             what="every server sees the new leader")
    assert leader_proc(servers) is target
    mark = len(writer.acked)
    wait_for(lambda: len(writer.acked) >= mark + 30, 60, what="writes under the new leader")
    # The CLI, without -id: the most up-to-date other voter takes over.
    out = cli(servers[0], "operator", "raft", "transfer-leader")
    assert out.returncode == 0 and "Success" in out.stdout, out.stderr
    wait_for(lambda: leader_proc(servers) is not target, 30, what="leadership moved again")
    peers = cli(servers[0], "operator", "raft", "list-peers")
    assert peers.returncode == 0 and peers.stdout.count("leader") == 1 and peers.stdout.count("follower") == 2, \
        peers.stdout
    mark = len(writer.acked)
    wait_for(lambda: len(writer.acked) >= mark + 30, 60, what="writes after the second transfer")

    def healthy() -> bool:  # asked of a follower: answered by the leader
        follower = next(s for s in servers if s is not leader_proc(servers))
        r = httpx.get(follower.url + "/v1/operator/autopilot/health", timeout=10)
        h = r.json()
        return (r.status_code == 200 and h["Healthy"] and h["FailureTolerance"] == 1 and len(h["Servers"]) == 3
                and sum(x["Leader"] for x in h["Servers"]) == 1)
    wait_for(healthy, 60, what="autopilot health: 3 healthy servers")
    writer.stop.set()
    writer.thread.join(timeout=30)
    acked = dict(writer.acked)
    for s in servers:
        wait_for(lambda s=s: holds_all(s, acked), 60, what=f"{s.node} holds every acknowledged write")
    got = read_all(servers[2])
    assert all(got.get(k) == v for k, v in acked.items())
    print(f"acked {len(acked)} writes, {writer.failed} failed or unknown")


def test_transfer_leader_without_another_voter_is_a_500(start_agent) -> None:  # type: ignore[no-untyped-def]
    a = start_agent()  # --dev: a single voter
    r = httpx.post(a.url + "/v1/operator/raft/transfer-leader", timeout=30)
    assert r.status_code == 500 and "no other voter" in r.text
    # Positive control: the same agent answers the list route.
    r = httpx.get(a.url + "/v1/operator/raft/configuration", timeout=10)
    assert r.status_code == 200 and len(r.json()["Servers"]) == 1


def voter_count(s) -> int:  # type: ignore[no-untyped-def]
    try:
        r = httpx.get(s.url + "/v1/operator/raft/configuration", timeout=5)
        # (voters only: a new server is a non-voter until autopilot promotes it)
        return sum(1 for x in r.json()["Servers"] if x["Voter"]) if r.status_code == 200 else -1
    except httpx.HTTPError:
        return -1


def test_grow_to_five_and_shrink_to_three_under_writes(tmp_path, start_agent) -> None:  # type: ignore[no-untyped-def]
    """Two new servers join a running cluster (the leader adds them, one at a time), then two leave
    gracefully (each takes itself out); writes flow throughout and none acknowledged is lost. Then
    a server is killed and removed with remove-peer; the remaining two go on."""
    servers = start_servers(tmp_path, start_agent)
    conf = tmp_path / "conf"
    writer = Writer(servers)
    writer.thread.start()
    wait_for(lambda: len(writer.acked) >= 30, 60, what="30 acknowledged writes")
    for i in (3, 4):
        extra = ["--server", "--bootstrap-expect", "3", "--join", f"127.0.0.1:{servers[0].serf_port}"]
        s = start_agent(conf, node=f"s{i}", dev=False, wait_leader=False, extra=extra)
        servers.append(s)
        wait_for(lambda n=i + 1: all(voter_count(x) == n for x in servers), 60, what=f"{i + 1} voters everywhere")
        mark = len(writer.acked)
        wait_for(lambda m=mark: len(writer.acked) >= m + 20, 60, what=f"writes with {i + 1} voters")
    assert "joining it (the leader adds us)" in servers[3].logs()
    wait_for(lambda: holds_all(servers[4], dict(writer.acked)), 60, what="the fifth server caught up")
    # Shrink: the leader and a follower leave gracefully.
    leaving = [leader_proc(servers), servers[1] if leader_proc(servers) is not servers[1] else servers[2]]
    for s in leaving:
        r = httpx.put(s.url + "/v1/agent/leave", timeout=30)
        assert r.status_code == 200, r.text
        assert s.proc is not None
        s.proc.wait(timeout=60)
        rest = [x for x in servers if x.proc is not None and x.proc.poll() is None]
        wait_for(lambda rest=rest: all(voter_count(x) == len(rest) for x in rest), 60,
                 what=f"{len(rest)} voters after {s.node} left")
        wait_for(lambda rest=rest: len({leader_of(x) for x in rest}) == 1 and leader_of(rest[0]), 60,
                 what="one leader after the leave")
        mark = len(writer.acked)
        wait_for(lambda m=mark: len(writer.acked) >= m + 20, 60, what="writes after the leave")
    rest = [x for x in servers if x.proc is not None and x.proc.poll() is None]
    assert len(rest) == 3
    # A dead server is removed by hand (remove-peer through the CLI); removing it again is a 500.
    victim = next(x for x in rest if x is not leader_proc(rest))
    victim_id = node_id(victim)
    victim.kill9()
    rest.remove(victim)
    out = cli(rest[0], "operator", "raft", "remove-peer", "-id", victim_id)
    assert out.returncode == 0, out.stderr
    wait_for(lambda: all(voter_count(x) == 2 for x in rest), 60, what="2 voters after remove-peer")
    r = httpx.delete(rest[0].url + "/v1/operator/raft/peer", params={"id": victim_id}, timeout=30)
    assert r.status_code == 500, r.text
    mark = len(writer.acked)
    wait_for(lambda: len(writer.acked) >= mark + 20, 60, what="writes with 2 voters")
    writer.stop.set()
    writer.thread.join(timeout=30)
    acked = dict(writer.acked)
    for s in rest:
        wait_for(lambda s=s: holds_all(s, acked), 60, what=f"{s.node} holds every acknowledged write")
    got = read_all(rest[0])
    assert all(got.get(k) == v for k, v in acked.items())
    # The survivors restart from their data dirs with the configuration they ended with.
    for s in rest:
        s.stop()
    for s, other in ((rest[0], rest[1]), (rest[1], rest[0])):
        rejoin_via(s, other)  # (the server it first joined through may be gone)
    for s in rest:
        s.wait_leader = False
        s.restart()
    wait_for(lambda: len({leader_of(s) for s in rest}) == 1 and leader_of(rest[0]), 60, what="leader after restart")
    assert all(voter_count(s) == 2 for s in rest)
    print(f"acked {len(acked)} writes, {writer.failed} failed or unknown")


def peer_count(s) -> int:  # type: ignore[no-untyped-def]
    """Voters and non-voters in the configuration `s` reports (-1 if it does not answer)."""
    try:
        r = httpx.get(s.url + "/v1/operator/raft/configuration", timeout=5)
        return len(r.json()["Servers"]) if r.status_code == 200 else -1
    except httpx.HTTPError:
        return -1


def test_a_server_that_left_and_restarts_is_added_back_at_once(tmp_path, start_agent) -> None:  # type: ignore[no-untyped-def]
    """A graceful leave takes the server out of the configuration; when it starts again and
    rejoins, the leader adds it back (as a non-voter, then autopilot promotes it), as Consul's does.
    Found by the fault lab's membership-change fault: the leader held a server that removed itself
    out for REMOVED_HOLD (60 s), the hold meant for operator removals of a still-gossiping server."""
    servers = start_servers(tmp_path, start_agent)
    writer = Writer(servers)
    writer.thread.start()
    wait_for(lambda: len(writer.acked) >= 20, 60, what="20 acknowledged writes")
    leaving = next(s for s in servers if s is not leader_proc(servers))
    rest = [s for s in servers if s is not leaving]
    assert httpx.put(leaving.url + "/v1/agent/leave", timeout=30).status_code == 200
    assert leaving.proc is not None
    leaving.proc.wait(timeout=60)
    wait_for(lambda: all(peer_count(x) == 2 for x in rest), 60, what="2 peers after the leave")
    rejoin_via(leaving, rest[0])
    leaving.wait_leader = False
    leaving.restart()
    # Back in the configuration well inside the 60 s hold (the add itself takes ~1 reconcile round).
    wait_for(lambda: all(peer_count(x) == 3 for x in rest), 30, what="the restarted server added back")
    wait_for(lambda: all(voter_count(x) == 3 for x in servers), 60, what="3 voters after promotion")
    mark = len(writer.acked)
    wait_for(lambda: len(writer.acked) >= mark + 20, 60, what="writes after the rejoin")
    writer.stop.set()
    writer.thread.join(timeout=30)
    acked = dict(writer.acked)
    wait_for(lambda: holds_all(leaving, acked), 60, what="the rejoined server holds every acknowledged write")


def test_autopilot_usage_and_coordinate_shapes_on_a_dev_agent(start_agent) -> None:  # type: ignore[no-untyped-def]
    a = start_agent()
    cfg = httpx.get(a.url + "/v1/operator/autopilot/configuration", timeout=10).json()
    assert cfg["CleanupDeadServers"] is True and {"LastContactThreshold", "MaxTrailingLogs", "MinQuorum",
                                                  "ServerStabilizationTime", "CreateIndex", "ModifyIndex"} <= set(cfg)
    # CAS: a stale index is refused (false, nothing changes); the current one wins.
    r = httpx.put(a.url + "/v1/operator/autopilot/configuration", params={"cas": cfg["ModifyIndex"] + 5},
                  json={"CleanupDeadServers": False}, timeout=10)
    assert r.json() is False
    assert httpx.get(a.url + "/v1/operator/autopilot/configuration", timeout=10).json()["CleanupDeadServers"] is True
    r = httpx.put(a.url + "/v1/operator/autopilot/configuration", params={"cas": cfg["ModifyIndex"]},
                  json={"CleanupDeadServers": False}, timeout=10)
    assert r.json() is True
    new = httpx.get(a.url + "/v1/operator/autopilot/configuration", timeout=10).json()
    assert new["CleanupDeadServers"] is False and new["ModifyIndex"] > cfg["ModifyIndex"]
    health = httpx.get(a.url + "/v1/operator/autopilot/health", timeout=10)
    assert health.status_code == 200, health.text
    h = health.json()
    assert h["Healthy"] is True and h["FailureTolerance"] == 0 and len(h["Servers"]) == 1
    assert {"ID", "Name", "Address", "SerfStatus", "Version", "Leader", "LastContact", "LastTerm", "LastIndex",
            "Healthy", "Voter", "StableSince"} <= set(h["Servers"][0])
    httpx.put(a.url + "/v1/agent/service/register", json={"Name": "web", "ID": "web1"}, timeout=10)
    httpx.put(a.url + "/v1/agent/service/register", json={"Name": "web", "ID": "web2"}, timeout=10)
    wait_for(lambda: httpx.get(a.url + "/v1/operator/usage", timeout=10).json()["Usage"]["dc1"]["ServiceInstances"]
             >= 3, 30, what="usage counts the services")
    u = httpx.get(a.url + "/v1/operator/usage", timeout=10).json()["Usage"]["dc1"]
    assert u["Nodes"] == 1 and u["Services"] == 2 and u["ServiceInstances"] == 3  # consul + web x2
    dcs = httpx.get(a.url + "/v1/coordinate/datacenters", timeout=10).json()
    assert dcs[0]["Datacenter"] == "dc1" and "AreaID" in dcs[0]
    assert all(len(c["Coord"]["Vec"]) == 8 for c in dcs[0]["Coordinates"])
    nodes = httpx.get(a.url + "/v1/coordinate/nodes", timeout=10).json()
    assert nodes and set(nodes[0]) == {"Node", "Segment", "Coord"}
    assert httpx.get(a.url + f"/v1/coordinate/node/{nodes[0]['Node']}", timeout=10).json()[0]["Node"] == nodes[0]["Node"]
    assert httpx.get(a.url + "/v1/coordinate/node/nope", timeout=10).status_code == 404
    r = httpx.put(a.url + "/v1/coordinate/update", json={"Node": nodes[0]["Node"], "Coord": nodes[0]["Coord"]},
                  timeout=10)
    assert r.json() is True
    out = cli(a, "info")  # `murmur info`: the agent's Stats by section
    assert out.returncode == 0 and "agent:\n" in out.stdout and "\tservices = " in out.stdout, out.stdout + out.stderr
