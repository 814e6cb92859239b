"""Gossip key rotation on a 5-agent loopback cluster (local() preset): install, use, remove through
`murmur keyring` and /v1/operator/keyring, with every agent watched all along for a member it
lists as anything but alive. Keys go to the CLI on stdin and never appear in output or logs."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
from murmur.gossip import keyring as kr
from support.procs import MURMUR, ROOT, AgentProc, wait_for
from test_gossip_encryption import (
    CONVERGE,
    all_see,
    counter,
    join,
    new_key,
    no_key_in_logs,
    statuses,
    write_conf,
)

pytestmark = pytest.mark.e2e


class Watcher(threading.Thread):
    """Polls every agent's /v1/agent/members and records any member shown not alive (bounded)."""

    def __init__(self, agents: list[AgentProc], limit: float = 300.0) -> None:
        super().__init__(daemon=True)
        self.agents = agents
        self.stop_at = time.monotonic() + limit
        self.done = threading.Event()
        self.bad: list[tuple[str, str, int]] = []
        self.polls = 0

    def run(self) -> None:
        while not self.done.is_set() and time.monotonic() < self.stop_at:
            for a in self.agents:
                try:
                    st = statuses(a)
                except httpx.HTTPError:
                    continue
                self.polls += 1
                self.bad += [(a.node, n, s) for n, s in st.items() if s != 1]
            time.sleep(0.05)


def cli(agent: AgentProc, *args: str, key: bytes | None = None) -> subprocess.CompletedProcess[str]:
    stdin = kr.encode_key(key) + "\n" if key is not None else None
    return subprocess.run([*MURMUR, "keyring", *args, "-http-addr", agent.url], input=stdin, capture_output=True,
                          text=True, timeout=60, cwd=ROOT)


def listing(agent: AgentProc) -> dict:  # type: ignore[type-arg]
    r = httpx.get(agent.url + "/v1/operator/keyring", timeout=30)
    assert r.status_code == 200, r.text
    (pool,) = r.json()
    return pool  # type: ignore[no-any-return]


def test_rotation_install_use_remove_without_downtime(tmp_path: Path, start_agent) -> None:  # type: ignore[no-untyped-def]
    a_key, b_key = new_key(), new_key()
    conf = write_conf(tmp_path / "conf", a_key)
    agents = [start_agent(conf, node="n0", dev=False)]
    for i in range(1, 5):
        agents.append(start_agent(conf, node=f"n{i}", dev=False, extra=["--join", f"127.0.0.1:{agents[0].serf_port}"]))
    names = {a.node for a in agents}
    wait_for(lambda: all_see(agents, names), CONVERGE, what="5 encrypted agents list each other alive")
    A, B = kr.encode_key(a_key), kr.encode_key(b_key)
    pool = listing(agents[3])
    assert pool["NumNodes"] == 5 and pool["Keys"] == {A: 5} and pool["PrimaryKeys"] == {A: 5}

    # Undecryptable packets are how a rotation would hurt: a member that cannot open a probe or
    # its ack suspects the sender. None may be dropped, and nobody may be suspected.
    metrics = ("encrypt_forged", "suspects_started")
    before = {(a.node, k): counter(a, k) for a in agents for k in metrics}
    watcher = Watcher(agents)
    watcher.start()
    try:
        r = cli(agents[1], "-install", "-", key=b_key)
        assert r.returncode == 0, r.stderr
        pool = listing(agents[4])
        assert pool["Keys"] == {A: 5, B: 5} and pool["PrimaryKeys"] == {A: 5}

        r = cli(agents[2], "-use", "-", key=b_key)
        assert r.returncode == 0, r.stderr
        pool = listing(agents[0])
        assert pool["Keys"] == {A: 5, B: 5} and pool["PrimaryKeys"] == {B: 5}

        # Removing the primary key is refused, cluster-wide and at the origin: nothing changes.
        r = httpx.request("DELETE", agents[0].url + "/v1/operator/keyring", json={"Key": B}, timeout=30)
        assert r.status_code == 500 and "primary" in r.text
        assert listing(agents[1])["Keys"] == {A: 5, B: 5}
        # A bad body is a 400.
        r = httpx.request("DELETE", agents[0].url + "/v1/operator/keyring", json={"Key": "abc"}, timeout=30)
        assert r.status_code == 400

        r = cli(agents[3], "-remove", "-", key=a_key)
        assert r.returncode == 0, r.stderr
        pool = listing(agents[2])
        assert pool["Keys"] == {B: 5} and pool["PrimaryKeys"] == {B: 5} and not pool["Messages"]
        local = httpx.get(agents[4].url + "/v1/operator/keyring?local-only", timeout=30).json()[0]
        assert local["Keys"] == {B: 1} and local["NumNodes"] == 1
        assert httpx.get(agents[4].url + "/v1/operator/keyring?relay-factor=9", timeout=30).status_code == 400
        r = cli(agents[0], "-list")
        assert r.returncode == 0 and f"{B} [5/5]" in r.stdout and A not in r.stdout
        time.sleep(2.0)  # a few more probe rounds in which a victim of the rotation would show
    finally:
        watcher.done.set()
        watcher.join(timeout=10)
    assert watcher.polls > 20
    assert watcher.bad == [], f"members shown not alive during the rotation: {watcher.bad[:5]}"
    after = {(a.node, k): counter(a, k) for a in agents for k in metrics}
    grown = {k: after[k] - v for k, v in before.items() if after[k] != v}
    assert grown == {}, f"dropped packets or suspicions during the rotation: {grown}"
    for a in agents:  # every keyring file now holds the new key only (persisted after each change)
        ring_file = tmp_path / f"data-{a.node}" / "serf" / "keyring"
        if json.loads(ring_file.read_text()) != [B]:
            pytest.fail(f"{ring_file} does not hold exactly the new key")
        assert ring_file.stat().st_mode & 0o777 == 0o600
        assert "gossip keyring: remove done" in a.logs()

    # An agent holding only the removed key can no longer join ...
    old = write_conf(tmp_path / "old", a_key)
    n5 = start_agent(old, node="n5", dev=False)
    assert join(n5, agents[0]).status_code == 500
    assert all("n5" not in statuses(a) for a in agents)
    # ... and, positive control, the same agent with the new key does.
    n5.stop()
    (tmp_path / "data-n5" / "serf" / "keyring").unlink()
    write_conf(old, b_key)
    n5.restart()
    assert join(n5, agents[0]).status_code == 200
    wait_for(lambda: all_see([*agents, n5], names | {"n5"}), CONVERGE, what="n5 joined with the new key")
    no_key_in_logs([*agents, n5], a_key, b_key)


def test_keyring_routes_answer_500_without_encryption(start_agent) -> None:  # type: ignore[no-untyped-def]
    agent = start_agent()
    key = kr.encode_key(new_key())
    for method in ("GET", "POST", "PUT", "DELETE"):
        r = httpx.request(method, agent.url + "/v1/operator/keyring",
                          json=None if method == "GET" else {"Key": key}, timeout=10)
        assert r.status_code == 500 and "encryption is not enabled" in r.text, (method, r.status_code)
    r = cli(agent, "-list")
    assert r.returncode == 1 and "encryption is not enabled" in r.stderr
