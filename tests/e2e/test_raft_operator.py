"""Raft operator actions on real servers: leadership transfer (and membership changes) under
KV write load, with no acknowledged write lost."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest
from e2e.test_raft_cluster import Writer, holds_all, leader_of, leader_proc, read_all, start_servers
from support.procs import wait_for

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
