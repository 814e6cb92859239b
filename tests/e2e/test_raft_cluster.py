"""Three real servers on loopback: Raft over the server port, KV writes, kill -9 of the leader."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import httpx
import pytest
from support.procs import AgentProc, wait_for
from support.servers import kill_leader, leader_of, start_servers  # noqa: F401 - re-exported to the other raft tests

pytestmark = pytest.mark.e2e


class Writer:
    """Writes k<i>=v<i> round-robin to the live servers; records which writes were acknowledged."""

    def __init__(self, servers: list[AgentProc]) -> None:
        self.servers = servers
        self.acked: dict[str, str] = {}
        self.failed = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.rng = random.Random(7)

    def run(self) -> None:
        client = httpx.Client(timeout=5)
        for i in range(100_000):
            if self.stop.is_set():
                break
            live = [s for s in self.servers if s.proc is not None and s.proc.poll() is None]
            if not live:  # every server is between a kill and its restart
                time.sleep(0.05)
                continue
            target = self.rng.choice(live)
            key, value = f"k{i}", f"v{i}"
            try:
                r = client.put(f"{target.url}/v1/kv/{key}", content=value)
                if r.status_code == 200 and r.json() is True:
                    self.acked[key] = value
                else:
                    self.failed += 1
            except httpx.HTTPError:
                self.failed += 1  # outcome unknown: may or may not be applied, never counted as acked
        client.close()


def read_all(server: AgentProc, stale: bool = False) -> dict[str, str]:
    import base64

    r = httpx.get(server.url + "/v1/kv/k?recurse" + ("&stale" if stale else ""), timeout=10)
    if r.status_code == 404:
        return {}
    r.raise_for_status()
    return {e["Key"]: base64.b64decode(e["Value"]).decode() for e in r.json()}


def holds_all(server: AgentProc, acked: dict[str, str]) -> bool:
    """Every acknowledged write is in this server's store (one read, compared key by key)."""
    got = read_all(server, stale=True)
    return all(got.get(k) == v for k, v in acked.items())


def test_kill9_of_the_leader_under_writes_loses_no_acknowledged_write(tmp_path, start_agent) -> None:  # type: ignore[no-untyped-def]
    servers = start_servers(tmp_path, start_agent)
    writer = Writer(servers)
    writer.thread.start()
    wait_for(lambda: len(writer.acked) >= 50, 60, what="50 acknowledged writes")
    leader, survivors = kill_leader(servers)
    acked_before = len(writer.acked)
    wait_for(lambda: len(writer.acked) >= acked_before + 50, 60, what="writes acknowledged by the new leader")
    writer.stop.set()
    writer.thread.join(timeout=30)
    acked = dict(writer.acked)
    for s in survivors:
        got = read_all(s)
        missing = [k for k, v in acked.items() if got.get(k) != v]
        assert missing == [], f"{s.node} lost acknowledged writes: {missing[:10]}"
    # The old leader comes back from its data dir and catches up.
    leader.restart()
    wait_for(lambda: holds_all(leader, acked), 60, what="restarted old leader caught up")
    # Restarting all three leaves the state intact.
    for s in servers:
        s.stop()
    for s in servers:
        s.wait_leader = False
        s.restart()
    wait_for(lambda: len({leader_of(s) for s in servers}) == 1 and leader_of(servers[0]), 60,
             what="leader after a full restart")
    got = read_all(servers[1])
    assert all(got.get(k) == v for k, v in acked.items())
    print(f"acked {len(acked)} writes, {writer.failed} failed or unknown")


def leader_proc(servers: list[AgentProc]) -> AgentProc:
    lead_addr = leader_of(servers[0])
    return next(s for s in servers if lead_addr.endswith(f":{s.args[s.args.index('--server-port') + 1]}"))


def data_dir(s: AgentProc) -> Path:
    return Path(s.args[s.args.index("--data-dir") + 1])


def snapshot_files(s: AgentProc) -> list[Path]:
    return sorted((data_dir(s) / "raft" / "snapshots").glob("snap-*.snap"))


def check_data_dir(s: AgentProc) -> None:
    """A stopped server's data dir reads back: snapshots whole, none set aside as corrupt, and the
    log consistent with the newest snapshot."""
    from murmur.agent.storage.raft_log import RaftStorage
    from murmur.agent.storage.snapshots import SnapshotStore

    snaps = data_dir(s) / "raft" / "snapshots"
    assert not list(snaps.glob("*.corrupt")), f"{s.node}: a snapshot was set aside as corrupt"
    snap = SnapshotStore(snaps).load() if snaps.exists() else None
    storage = RaftStorage(data_dir(s) / "raft" / "raft.db")
    try:
        storage.load(snap.meta if snap else None)
    finally:
        storage.close()


def test_a_follower_restarted_behind_the_snapshot_catches_up(tmp_path, start_agent) -> None:  # type: ignore[no-untyped-def]
    """A follower is killed, the others write far past a low snapshot threshold (their logs no
    longer reach back to where it stopped), it restarts and catches up by installing a snapshot,
    and nothing acknowledged is lost, on it or elsewhere. Restarted again, it comes back from its
    own snapshot plus its log."""
    servers = start_servers(tmp_path, start_agent, snapshot_threshold=20)
    writer = Writer(servers)
    writer.thread.start()
    wait_for(lambda: len(writer.acked) >= 30, 60, what="30 acknowledged writes")
    leader = leader_proc(servers)
    follower = next(s for s in servers if s is not leader)
    follower.kill9()
    mark = len(writer.acked)
    wait_for(lambda: len(writer.acked) >= mark + 150, 120, what="150 writes while the follower is down")
    # The live servers snapshotted and compacted past everything the follower has.
    newest = max(int(p.name.split("-")[1]) for s in servers if s is not follower for p in snapshot_files(s))
    assert newest >= mark + 100
    assert "snapshot at index" in leader.logs()
    assert "installed a snapshot" not in follower.logs()
    follower.wait_leader = False
    follower.restart()
    acked = dict(writer.acked)
    wait_for(lambda: holds_all(follower, acked), 60, what="the restarted follower caught up")
    assert "installed a snapshot from the leader" in follower.logs()
    stats = httpx.get(follower.url + "/v1/agent/self", timeout=10).json()["Stats"]["raft"]
    assert int(stats["snapshots_installed"]) >= 1 and int(stats["last_snapshot_index"]) >= mark + 100
    writer.stop.set()
    writer.thread.join(timeout=30)
    acked = dict(writer.acked)
    for s in servers:
        wait_for(lambda s=s: holds_all(s, acked), 60, what=f"{s.node} holds every acknowledged write")
    # Its own snapshot and log bring it back after a restart.
    follower.stop()
    check_data_dir(follower)
    follower.restart()
    assert "restored the catalog from the snapshot" in follower.logs()
    wait_for(lambda: holds_all(follower, acked), 60, what="the follower after a restart")
    got = read_all(follower)  # a linearizable read agrees too
    assert all(got.get(k) == v for k, v in acked.items())
    print(f"acked {len(acked)} writes, {writer.failed} failed or unknown; newest snapshot {newest}")


FAILPOINTS = ("raft-before-append", "raft-after-fsync", "raft-before-apply", "raft-after-apply")
SNAPSHOT_FAILPOINTS = ("raft-before-snapshot-write", "raft-after-snapshot-write", "raft-after-snapshot-rename",
                       "raft-after-snapshot-dirsync")


@pytest.mark.parametrize("repeats", [3])
def test_failpoints_kill_servers_mid_write_and_nothing_is_lost(tmp_path, start_agent, repeats: int) -> None:  # type: ignore[no-untyped-def]
    """Each failpoint kills a server `repeats` times (20 in make test-full) while writes flow; it
    restarts from its data dir every time. No data dir may be unreadable, no acked write lost."""
    run_failpoints(tmp_path, start_agent, FAILPOINTS, repeats)


@pytest.mark.parametrize("repeats", [3])
def test_snapshot_failpoints_kill_servers_mid_snapshot_and_nothing_is_lost(tmp_path, start_agent,  # type: ignore[no-untyped-def]
                                                                             repeats: int) -> None:
    """The same with a snapshot every 10 entries, killing servers before and after the snapshot
    file is written, renamed and its directory fsynced: every data dir reads back whole."""
    run_failpoints(tmp_path, start_agent, SNAPSHOT_FAILPOINTS, repeats, snapshot_threshold=10,
                   kill_at=(1, 3))


def run_failpoints(tmp_path, start_agent, failpoints: tuple[str, ...], repeats: int,  # type: ignore[no-untyped-def]
                   snapshot_threshold: int = 0, kill_at: tuple[int, int] = (3, 15)) -> None:
    import os

    repeats = int(os.environ.get("MURMUR_FAILPOINT_REPEATS", repeats))
    servers = start_servers(tmp_path, start_agent, snapshot_threshold)
    writer = Writer(servers)
    writer.thread.start()
    rng = random.Random(11)
    kills = 0
    for fp in failpoints:
        for rep in range(repeats):
            victim = servers[(kills + rep) % 3]
            victim.stop()
            hits_before = victim.logs().count(f"failpoint {fp}:")
            victim.env = {"MURMUR_FAILPOINTS": f"{fp}=kill@{rng.randint(*kill_at)}"}
            victim.wait_leader = False
            victim.restart(wait=False)  # the failpoint may fire while it starts (installing a snapshot)
            assert victim.proc is not None
            proc = victim.proc
            wait_for(lambda p=proc: p.poll() is not None, 120, what=f"{fp} to kill {victim.node}")
            assert proc.returncode == -9 and victim.logs().count(f"failpoint {fp}:") == hits_before + 1
            check_data_dir(victim)
            victim.env = None
            victim.restart()  # the data dir it died with must open cleanly
            kills += 1
            wait_for(lambda: len({leader_of(s) for s in servers}) == 1 and leader_of(servers[0]), 60,
                     what="one leader after the restart")
    mark = len(writer.acked)
    wait_for(lambda: len(writer.acked) >= mark + 20, 60, what="writes after the last restart")
    writer.stop.set()
    writer.thread.join(timeout=30)
    acked = dict(writer.acked)
    assert kills == len(failpoints) * repeats
    for s in servers:
        wait_for(lambda s=s: holds_all(s, acked), 60, what=f"{s.node} holds every acknowledged write")
    print(f"{kills} failpoint kills, {len(acked)} acked writes, {writer.failed} failed or unknown")
