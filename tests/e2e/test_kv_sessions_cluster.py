"""KV, sessions and locks under failure: three real servers and one client agent on loopback.

One cluster, in order:
1. a lock is taken through the client agent by a session on the client's node (bound to its
   serfHealth, lock delay 5 s); another session cannot take it (the positive control for 3);
2. a KV workload (PUT, and CAS from a second key space) runs while the Raft leader is killed -9:
   every write answered 200 `true` is there afterwards, read key by key with `?consistent`; the
   lock is still held across the leader change;
3. the client agent is killed -9: once gossip declares it failed, its session is invalidated,
   the lock released, and the other session is refused during the lock delay and then gets it
   (LockIndex 2);
4. (checked last so that its wait overlaps 3) a TTL session renewed by the test survives the
   leader change, one left alone is invalidated by the new leader's timer and its lock released.
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import httpx
import pytest
from support.lostwrites import lost_writes
from support.procs import AgentProc, wait_for
from support.servers import kill_leader, start_servers

pytestmark = pytest.mark.e2e

LOCK_DELAY = 5.0  # seconds


def create_session(a: AgentProc, body: dict) -> str:  # type: ignore[type-arg]
    r = a.put("/v1/session/create", json=body)
    assert r.status_code == 200, r.text
    return str(r.json()["ID"])


def acquire(a: AgentProc, key: str, sid: str, value: bytes = b"held") -> bool:
    r = a.put(f"/v1/kv/{key}?acquire={sid}", content=value)
    assert r.status_code == 200, r.text
    return bool(r.json())


def entry(a: AgentProc, key: str) -> dict | None:  # type: ignore[type-arg]
    r = a.get(f"/v1/kv/{key}?consistent")
    if r.status_code == 404:
        assert "X-Consul-Index" in r.headers
        return None
    r.raise_for_status()
    return r.json()[0]  # type: ignore[no-any-return]


class Workload:
    """PUTs w<i> and CAS-creates c<i> (cas=0) against random live servers; records every write
    answered 200 true. An error or timeout is an unknown outcome and is never counted."""

    def __init__(self, servers: list[AgentProc]) -> None:
        self.servers = servers
        self.acked: dict[str, str] = {}
        self.unknown = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.rng = random.Random(11)

    def run(self) -> None:
        with httpx.Client(timeout=5) as client:
            for i in range(100_000):
                if self.stop.is_set():
                    return
                live = [s for s in self.servers if s.proc is not None and s.proc.poll() is None]
                target = self.rng.choice(live)
                key, value = (f"w/{i}", f"v{i}") if i % 3 else (f"c/{i}", f"cas{i}")
                url = f"{target.url}/v1/kv/{key}" + ("?cas=0" if key.startswith("c/") else "")
                try:
                    r = client.put(url, content=value)
                except httpx.HTTPError:
                    self.unknown += 1
                    continue
                if r.status_code == 200 and r.json() is True:
                    self.acked[key] = value
                else:
                    self.unknown += 1


class Renewer:
    def __init__(self, servers: list[AgentProc], sid: str) -> None:
        self.servers, self.sid = servers, sid
        self.stop = threading.Event()
        self.statuses: list[int] = []
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        for _ in range(1000):
            if self.stop.wait(2.0):
                return
            for s in self.servers:
                if s.proc is None or s.proc.poll() is not None:
                    continue
                try:
                    r = httpx.put(f"{s.url}/v1/session/renew/{self.sid}", timeout=5)
                except httpx.HTTPError:
                    continue
                self.statuses.append(r.status_code)
                if r.status_code == 200:
                    break


def test_acknowledged_kv_writes_survive_a_leader_kill_and_a_dead_nodes_lock_is_released(
        tmp_path: Path, start_agent) -> None:  # type: ignore[no-untyped-def]
    servers = start_servers(tmp_path, start_agent)
    conf = tmp_path / "conf"
    client = AgentProc(tmp_path, [conf], ["--retry-join", f"127.0.0.1:{servers[0].serf_port}"], node="c0", dev=False)
    client.has_servers = True
    try:
        client.start()
        wait_for(lambda: any(n["Node"] == "c0" for n in servers[0].get("/v1/catalog/nodes").json()), 60,
                 what="the client's node in the catalog")
        wait_for(lambda: any(c["CheckID"] == "serfHealth" and c["Status"] == "passing"
                             for c in servers[0].get("/v1/health/node/c0").json()), 60,
                 what="the client's serfHealth passing")

        # 1. The client's session takes the lock; nobody else can.
        holder = create_session(client, {"Name": "holder", "LockDelay": f"{int(LOCK_DELAY)}s"})
        info = client.get(f"/v1/session/info/{holder}").json()
        assert info[0]["Node"] == "c0" and info[0]["NodeChecks"] == ["serfHealth"]
        assert info[0]["LockDelay"] == int(LOCK_DELAY * 1e9)
        assert acquire(client, "locks/x", holder) is True
        # TTL sessions on the client's node, bound to no check: one renewed, one left to expire.
        renewed = create_session(client, {"Name": "renewed", "TTL": "10s", "NodeChecks": [], "LockDelay": 0})
        expiring = create_session(client, {"Name": "expiring", "TTL": "10s", "NodeChecks": [], "LockDelay": 0})
        assert acquire(client, "locks/ttl", expiring) is True
        ttl_started = time.monotonic()
        renewer = Renewer(servers, renewed)
        renewer.thread.start()

        # 2. Acknowledged writes survive a kill -9 of the leader.
        workload = Workload(servers)
        workload.thread.start()
        wait_for(lambda: len(workload.acked) >= 60, 60, what="60 acknowledged writes")
        leader, survivors = kill_leader(servers)
        acked_before = len(workload.acked)
        wait_for(lambda: len(workload.acked) >= acked_before + 60, 60, what="writes acknowledged by the new leader")
        workload.stop.set()
        workload.thread.join(timeout=30)
        acked = dict(workload.acked)
        print(f"{len(acked)} writes acknowledged, {workload.unknown} unknown or refused")
        reader = survivors[0]
        with httpx.Client(timeout=10) as http:
            def read(key: str) -> tuple[int, bytes]:
                r = http.get(f"{reader.url}/v1/kv/{key}?consistent&raw")
                return r.status_code, r.content

            lost = lost_writes(acked, read)
        assert lost == [], f"acknowledged writes not readable with ?consistent: {lost[:10]}"
        assert entry(reader, "locks/x")["Session"] == holder  # type: ignore[index]

        # 3. The holder's node dies: the lock is released after failure detection + lock delay.
        other = create_session(reader, {"Name": "other", "LockDelay": "0s"})
        assert acquire(reader, "locks/x", other) is False  # positive control: held while c0 lives
        client.kill9()
        wait_for(lambda: "Session" not in (entry(reader, "locks/x") or {"Session": 1}), 60 * 2,
                 what="the dead node's session invalidated and its lock released")
        released = time.monotonic()
        assert reader.get(f"/v1/session/info/{holder}").json() == []
        assert acquire(reader, "locks/x", other) is False  # inside the lock delay
        wait_for(lambda: acquire(reader, "locks/x", other), LOCK_DELAY * 10, interval=0.2,
                 what="the other session takes the lock after the lock delay")
        waited = time.monotonic() - released
        assert waited >= LOCK_DELAY * 0.75, f"lock taken {waited:.1f} s after release, delay {LOCK_DELAY} s"
        got = entry(reader, "locks/x")
        assert got is not None and got["Session"] == other and got["LockIndex"] == 2

        # TTL (checked last, its wait overlaps the above): the unrenewed session goes within
        # 2 x TTL of the leader change (a new leader restarts the timers with the full TTL), the
        # renewed one stays; neither is bound to a check, so the dead node did not take them.
        wait_for(lambda: reader.get(f"/v1/session/info/{expiring}").json() == [], 60 * 2,
                 what="the unrenewed TTL session invalidated")
        assert time.monotonic() - ttl_started >= 10.0  # never before its TTL
        assert "Session" not in entry(reader, "locks/ttl")  # type: ignore[operator]
        assert reader.get(f"/v1/session/info/{renewed}").json()[0]["ID"] == renewed
        renewer.stop.set()
        renewer.thread.join(timeout=10)
        assert 200 in renewer.statuses
    finally:
        client.stop()
