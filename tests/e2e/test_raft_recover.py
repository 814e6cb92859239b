"""Quorum-loss recovery on real servers: 3 servers, 2 killed for good, `murmur operator raft recover`
on the survivor's data dir, and it serves alone (then with a new second server) with every
acknowledged write."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pytest
from e2e.test_raft_cluster import (
    Writer,
    check_data_dir,
    data_dir,
    holds_all,
    leader_of,
    leader_proc,
    read_all,
    snapshot_files,
    start_servers,
)
from support.procs import wait_for
from support.servers import rejoin_via

pytestmark = pytest.mark.e2e


def voters(s) -> int:  # type: ignore[no-untyped-def]
    try:
        r = httpx.get(s.url + "/v1/operator/raft/configuration", timeout=5)
        return sum(1 for x in r.json()["Servers"] if x["Voter"]) if r.status_code == 200 else -1
    except httpx.HTTPError:
        return -1


def recover(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "murmur.cli.main", "operator", "raft", "recover", *args],
                          capture_output=True, text=True, timeout=60)


def drop_join(s) -> None:  # type: ignore[no-untyped-def]
    """The servers it joined through are gone: start without joining any."""
    rejoin_via(s)


def test_losing_two_of_three_then_recover_gives_a_working_cluster(tmp_path, start_agent) -> None:  # type: ignore[no-untyped-def]
    servers = start_servers(tmp_path, start_agent, snapshot_threshold=40)  # a snapshot plus a log to replay
    writer = Writer(servers)
    writer.thread.start()
    wait_for(lambda: len(writer.acked) >= 120, 90, what="120 acknowledged writes")
    writer.stop.set()
    writer.thread.join(timeout=30)
    acked = dict(writer.acked)
    survivor = next(s for s in servers if s is not leader_proc(servers))
    # (Recovery keeps what the survivor holds: this one is caught up. The runbook says to pick
    # the survivor with the longest log.)
    wait_for(lambda: holds_all(survivor, acked), 60, what="the survivor holds every acknowledged write")
    for s in servers:
        if s is not survivor:
            s.kill9()  # gone for good
    survivor.kill9()
    drop_join(survivor)
    survivor.wait_leader = False
    # Control: without recovery, the survivor alone cannot elect a leader (1 of 3 voters).
    survivor.restart()
    time.sleep(3)  # 30 ticks: more than an election timeout, several times
    assert leader_of(survivor) == ""
    r = httpx.put(survivor.url + "/v1/kv/after-loss", content="x", timeout=30)
    assert r.status_code >= 500, r.text
    survivor.kill9()
    # Bad input is refused and changes nothing.
    bad = recover("-data-dir", str(data_dir(survivor)), "-peer", "not-a-uuid")
    assert bad.returncode != 0 and "not a node ID" in bad.stderr, bad.stdout + bad.stderr
    bad = recover("-data-dir", str(tmp_path / "nowhere"))
    assert bad.returncode != 0 and "no raft.db" in bad.stderr
    # Recover: the survivor alone (its own node-id by default).
    out = recover("-data-dir", str(data_dir(survivor)))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "3 voters -> 1" in out.stdout and "Snapshot at index" in out.stdout, out.stdout
    check_data_dir(survivor)
    assert snapshot_files(survivor)
    survivor.restart()
    wait_for(lambda: leader_of(survivor) != "", 60, what="the recovered server leads")
    assert voters(survivor) == 1
    got = read_all(survivor)  # a consistent read, through the new leader
    missing = [k for k, v in acked.items() if got.get(k) != v]
    assert missing == [], f"lost acknowledged writes: {missing[:10]} of {len(acked)}"
    for i in range(20):
        r = httpx.put(survivor.url + f"/v1/kv/k-after-{i}", content=f"a{i}", timeout=30)
        assert r.status_code == 200 and r.json() is True, r.text
        acked[f"k-after-{i}"] = f"a{i}"
    # A new server joins the recovered cluster: two voters, both with everything.
    extra = ["--server", "--bootstrap-expect", "3", "--join", f"127.0.0.1:{survivor.serf_port}"]
    fresh = start_agent(tmp_path / "conf", node="s9", dev=False, wait_leader=False, extra=extra)
    wait_for(lambda: voters(survivor) == 2 and voters(fresh) == 2, 90, what="two voters after the join")
    wait_for(lambda: holds_all(fresh, acked), 60, what="the new server holds every write")
    r = httpx.put(fresh.url + "/v1/kv/k-two", content="two", timeout=30)
    assert r.status_code == 200 and r.json() is True, r.text
    # And it survives a restart of both (the recovered configuration is what they start from).
    for s in (survivor, fresh):
        s.stop()
    drop_join(fresh)
    fresh.args += ["--retry-join", f"127.0.0.1:{survivor.serf_port}"]
    for s in (survivor, fresh):
        s.wait_leader = False
        s.restart()
    wait_for(lambda: leader_of(survivor) != "" and leader_of(survivor) == leader_of(fresh), 90,
             what="a leader after restarting both")
    got = read_all(fresh)
    assert all(got.get(k) == v for k, v in acked.items()) and got.get("k-two") == "two"
