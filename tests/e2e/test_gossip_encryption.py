"""Gossip encryption with real agents on loopback (local() preset): the keyring file, joining with
the wrong and the right key, forged and replayed packets, and the rollout switches.

Keys live only in 0600 config files and in this process: never on a command line, never printed
(assertion messages below avoid them as well)."""

from __future__ import annotations

import json
import os
import random
import socket
import time
from pathlib import Path

import httpx
import pytest
from murmur.gossip import keyring as kr
from murmur.gossip import wire
from murmur.gossip.config import GossipConfig
from murmur.gossip.keyring import Keyring
from support.procs import AgentProc, wait_for

pytestmark = pytest.mark.e2e

LOCAL = GossipConfig.local()
ALIVE, FAILED = 1, 4
SLACK = 10  # wall-clock bounds on real processes carry 10x slack (conventions)
CONVERGE = 30  # seconds for a handful of agents to all list each other (expected: ~1 s)


def new_key() -> bytes:
    return os.urandom(32)


def write_conf(d: Path, key: bytes | None, verify_incoming: bool = True, verify_outgoing: bool = True) -> Path:
    d.mkdir(exist_ok=True)
    text = '[gossip_lan]\npreset = "local"\n'
    if key is not None:
        text = (f'encrypt = "{kr.encode_key(key)}"\nencrypt_verify_incoming = {str(verify_incoming).lower()}\n'
                f'encrypt_verify_outgoing = {str(verify_outgoing).lower()}\n' + text)
    f = d / "gossip.toml"
    f.touch(mode=0o600)
    f.chmod(0o600)
    f.write_text(text)
    return d


def members(agent: AgentProc) -> dict[str, dict]:  # type: ignore[type-arg]
    r = httpx.get(agent.url + "/v1/agent/members", timeout=5)
    r.raise_for_status()
    return {m["Name"]: m for m in r.json()}


def statuses(agent: AgentProc) -> dict[str, int]:
    return {n: m["Status"] for n, m in members(agent).items()}


def serf(agent: AgentProc) -> dict[str, str]:
    r = httpx.get(agent.url + "/v1/agent/self", timeout=5)
    r.raise_for_status()
    return dict(r.json()["Stats"]["serf_lan"])


def counter(agent: AgentProc, name: str) -> int:
    return int(serf(agent).get(name, "0"))


def join(agent: AgentProc, target: AgentProc) -> httpx.Response:
    return httpx.put(f"{agent.url}/v1/agent/join/127.0.0.1:{target.serf_port}", timeout=30)


def all_see(agents: list[AgentProc], names: set[str]) -> bool:
    return all(statuses(a) == dict.fromkeys(names, ALIVE) for a in agents)


def no_key_in_logs(agents: list[AgentProc], *keys: bytes) -> None:
    for a in agents:
        text = a.logs()
        for k in keys:
            if kr.encode_key(k) in text:  # not an assert: its failure would print the key
                pytest.fail(f"a gossip key appears in {a.log_path}")


class Spoofer:
    """A UDP socket that plays an attacker (or a replaying eavesdropper) on loopback, with a
    barrier: a sealed ping whose ack proves that everything sent before it was handled (loopback
    keeps order and each agent handles datagrams in arrival order)."""

    def __init__(self, ring: Keyring) -> None:
        self.ring = ring
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(1.0)
        self.seq = 1000

    def close(self) -> None:
        self.sock.close()

    def send(self, agent: AgentProc, data: bytes) -> None:
        self.sock.sendto(data, ("127.0.0.1", agent.serf_port))

    def seal(self, *msgs: wire.Message, ring: Keyring | None = None) -> bytes:
        return (ring or self.ring).seal(wire.packet(*msgs), os.urandom(kr.NONCE_SIZE))

    def barrier(self, agent: AgentProc) -> None:
        self.seq += 1
        seq = self.seq
        for _ in range(5):  # UDP: retry a lost ping a few times
            self.send(agent, self.seal(wire.Ping(seq, agent.node, "spoofer", "127.0.0.1", 1)))
            end = time.monotonic() + 2.0
            while time.monotonic() < end:
                try:
                    data, _ = self.sock.recvfrom(65536)
                except TimeoutError:
                    break
                plain = self.ring.open(data) if kr.is_sealed(data) else data
                msgs, _ = wire.decode_packet(plain)
                if wire.Ack(seq) in msgs:
                    return
        raise AssertionError(f"{agent.node} never acked the barrier ping")


def alive_of(agent: AgentProc, name: str, incarnation: int) -> wire.Alive:
    """An Alive for member `name` as `agent` lists it (address, tags, protocol versions)."""
    m = members(agent)[name]
    vsn = (m["ProtocolMin"], m["ProtocolMax"], m["ProtocolCur"], m["DelegateMin"], m["DelegateMax"], m["DelegateCur"])
    return wire.Alive(incarnation, name, m["Addr"], m["Port"], dict(m["Tags"]), vsn)


def test_wrong_key_cannot_join_and_the_right_key_does(tmp_path: Path, start_agent) -> None:  # type: ignore[no-untyped-def]
    key, wrong = new_key(), new_key()
    good = write_conf(tmp_path / "good", key)
    agents = [start_agent(good, node="n0", dev=False)]
    for i in range(1, 4):
        agents.append(start_agent(good, node=f"n{i}", dev=False, extra=["--join", f"127.0.0.1:{agents[0].serf_port}"]))
    names = {a.node for a in agents}
    wait_for(lambda: all_see(agents, names), CONVERGE, what="4 encrypted agents list each other alive")
    assert all(serf(a)["encrypted"] == "true" for a in agents)

    # The first start wrote the key to data_dir/serf/keyring: 0600 in a 0700 folder.
    ring_file = tmp_path / "data-n0" / "serf" / "keyring"
    assert ring_file.stat().st_mode & 0o777 == 0o600
    assert ring_file.parent.stat().st_mode & 0o777 == 0o700
    if json.loads(ring_file.read_text()) != [kr.encode_key(key)]:
        pytest.fail("the keyring file does not hold exactly the configured key")

    # An agent with the wrong key: the join is refused, and nobody ever lists it.
    own = write_conf(tmp_path / "n4", wrong)
    n4 = start_agent(own, node="n4", dev=False)
    forged_before = counter(agents[0], "encrypt_forged")
    r = join(n4, agents[0])
    assert r.status_code == 500, r.status_code
    assert counter(agents[0], "encrypt_forged") > forged_before  # its push-pull was dropped, counted
    end = time.monotonic() + 4 * LOCAL.probe_interval  # a few rounds in which a leak would show
    while time.monotonic() < end:
        assert all("n4" not in statuses(a) for a in agents)
        assert set(statuses(n4)) == {"n4"}
        time.sleep(0.1)

    # Fixing `encrypt` is not enough: the keyring file written on its first start wins (as in Consul).
    n4.stop()
    write_conf(own, key)
    n4.restart()
    assert "using it and ignoring the `encrypt` key" in n4.logs()
    assert join(n4, agents[0]).status_code == 500
    assert all("n4" not in statuses(a) for a in agents)

    # Positive control: without the stale keyring file, the right key joins.
    n4.stop()
    (tmp_path / "data-n4" / "serf" / "keyring").unlink()
    n4.restart()
    r = join(n4, agents[0])
    assert r.status_code == 200, r.text
    agents.append(n4)
    wait_for(lambda: all_see(agents, names | {"n4"}), CONVERGE, what="5 encrypted agents list each other alive")
    no_key_in_logs(agents, key, wrong)


@pytest.fixture
def five(tmp_path: Path, start_agent):  # type: ignore[no-untyped-def]
    key = new_key()
    conf = write_conf(tmp_path / "conf", key)
    agents = [start_agent(conf, node="n0", dev=False)]
    for i in range(1, 5):
        agents.append(start_agent(conf, node=f"n{i}", dev=False, extra=["--join", f"127.0.0.1:{agents[0].serf_port}"]))
    names = {a.node for a in agents}
    wait_for(lambda: all_see(agents, names), CONVERGE, what="5 encrypted agents list each other alive")
    spoofer = Spoofer(Keyring([key]))
    yield agents, spoofer, key
    spoofer.close()
    no_key_in_logs(agents, key)


def test_forged_packets_are_dropped_and_replays_cause_no_regression(five) -> None:  # type: ignore[no-untyped-def]
    agents, spoofer, key = five
    n0, n1, n4 = agents[0], agents[1], agents[4]
    others = [a for a in agents if a is not n1]

    # Forgeries of "n1 is dead at incarnation 50": n1 must not hear them (no refutation).
    accuse = wire.Dead(50, "n1", "n0")
    good = spoofer.seal(accuse)
    tampered = bytearray(good)
    tampered[40] ^= 0x10
    before = serf(n1)
    refutes = int(before["refutes"])
    for data in (wire.packet(accuse),  # clear
                 spoofer.seal(accuse, ring=Keyring([new_key()])),  # another key
                 bytes(tampered),  # bad MAC
                 good[:20],  # truncated
                 spoofer.seal(accuse, ring=Keyring([key], label="another-cluster")),  # wrong label
                 bytes([0x85]) + good[1:]):  # unknown format
        spoofer.send(n1, data)
    spoofer.barrier(n1)
    after = serf(n1)
    delta = {k: int(after[k]) - int(before[k]) for k in before if k.startswith("encrypt_")}
    assert delta == {"encrypt_clear_dropped": 1, "encrypt_forged": 3, "encrypt_label_mismatch": 1,
                     "encrypt_unknown_format": 1, "encrypt_clear_accepted": 0}
    assert int(after["refutes"]) == refutes and int(after["bad_packets"]) == int(before["bad_packets"])

    # Positive control: the same packet sealed with the key is heard: n1 refutes (to incarnation
    # 51) and, having been declared dead, sends its alive straight to every member.
    spoofer.send(n1, good)
    spoofer.barrier(n1)
    assert int(serf(n1)["refutes"]) == refutes + 1
    # Replayed, the captured packet is old news: no second refutation; n1 answers it as stale.
    stale = counter(n1, "stale_accusations")
    spoofer.send(n1, good)
    spoofer.barrier(n1)
    assert int(serf(n1)["refutes"]) == refutes + 1
    assert counter(n1, "stale_accusations") == stale + 1

    # The captured packet replayed to everyone else, once n1's direct announcement of incarnation 51
    # has landed (loopback: milliseconds; waited with 10x slack): no agent takes it (no death
    # declared) and n1 stays alive everywhere.
    time.sleep(SLACK * LOCAL.gossip_interval)
    deaths = {a.node: counter(a, "deaths_declared") for a in others}
    for a in others:
        spoofer.send(a, good)
    for a in others:
        spoofer.barrier(a)
        assert statuses(a)["n1"] == ALIVE, a.node
        assert counter(a, "deaths_declared") == deaths[a.node], a.node
    end = time.monotonic() + 2 * LOCAL.probe_interval
    while time.monotonic() < end:
        assert all(statuses(a)["n1"] == ALIVE for a in agents)
        time.sleep(0.05)

    # A captured Alive of n4 (its incarnation at start), replayed after n4 died, does not bring it back.
    old_alive = spoofer.seal(alive_of(n0, "n4", 1))
    assert n4.proc is not None
    n4.kill9()
    watchers = agents[:4]
    bound = SLACK * (LOCAL.suspicion_max(5) + 2 * LOCAL.probe_interval)
    wait_for(lambda: all(statuses(a)["n4"] == FAILED for a in watchers), bound, what="n4 failed everywhere")
    for a in watchers:
        spoofer.send(a, old_alive)
    for a in watchers:
        spoofer.barrier(a)
    end = time.monotonic() + 2 * LOCAL.probe_interval
    while time.monotonic() < end:
        assert all(statuses(a)["n4"] == FAILED for a in watchers)
        time.sleep(0.05)
    # Positive control: a fresh Alive at a higher incarnation, sealed with the key, is believed.
    spoofer.send(n0, spoofer.seal(alive_of(n0, "n4", random.randint(10**6, 10**7))))
    wait_for(lambda: statuses(n0)["n4"] == ALIVE, 5, what="n0 believes the fresh alive of n4")


def test_rollout_verify_incoming_false_accepts_clear_packets(tmp_path: Path, start_agent) -> None:  # type: ignore[no-untyped-def]
    key = new_key()
    # Consul's first rollout step on `a`: the key is installed, clear gossip is still sent and accepted.
    a = start_agent(write_conf(tmp_path / "a", key, verify_incoming=False, verify_outgoing=False), node="a", dev=False)
    b = start_agent(write_conf(tmp_path / "b", None), node="b", dev=False)  # not upgraded yet
    strict = start_agent(write_conf(tmp_path / "s", key), node="s", dev=False)  # encryption required
    spoofer = Spoofer(Keyring([key]))
    try:
        assert join(b, a).status_code == 200
        wait_for(lambda: all_see([a, b], {"a", "b"}), CONVERGE, what="a and b list each other alive")
        assert counter(a, "encrypt_clear_accepted") > 0 and counter(a, "encrypt_clear_dropped") == 0
        assert serf(b)["encrypted"] == "false" and serf(a)["encrypted"] == "true"
        # The strict agent refuses the clear-text agent's join.
        assert join(b, strict).status_code == 500
        assert "b" not in statuses(strict)

        # The same clear accusation: `a` hears it (and refutes), `strict` drops it (and counts it).
        for agent in (a, strict):
            refutes = counter(agent, "refutes")
            dropped = counter(agent, "encrypt_clear_dropped")
            spoofer.send(agent, wire.packet(wire.Suspect(50, agent.node, "x")))
            spoofer.barrier(agent)
            if agent is a:
                assert counter(agent, "refutes") == refutes + 1
            else:
                assert counter(agent, "refutes") == refutes
                assert counter(agent, "encrypt_clear_dropped") == dropped + 1
    finally:
        spoofer.close()
    no_key_in_logs([a, b, strict], key)
