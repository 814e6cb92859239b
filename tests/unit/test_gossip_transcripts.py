"""Scripted transcripts of small gossip scenarios: two or three Membership cores wired by hand.

Each test moves datagrams from one core's packets_to_send() into another's receive(), answers
StreamRequests itself, and drives time by calling handle_timer(now) at chosen instants, so every
step of SWIM + Lifeguard is visible and asserted: probe, indirect probe, TCP fallback, nack,
suspicion, refutation, death, leave, tombstones, push-pull, tags.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable

import pytest
from murmur.gossip import wire
from murmur.gossip.config import GossipConfig
from murmur.gossip.membership import EventKind, Membership, State, StreamKind, StreamRequest
from murmur.gossip.wire import Ack, Alive, Dead, IndirectPing, Message, Nack, Ping, Suspect

Sent = tuple[str, str, list[Message]]  # (from, to, messages)


class Wires:
    """A few cores and a hand-operated network between them."""

    def __init__(self, names: list[str], cfg: GossipConfig | None = None) -> None:
        # Transcripts script probe targets through probe_order: the random schedule's state.
        self.cfg = cfg or dataclasses.replace(GossipConfig.lan(), probe_rotation=False)
        self.m: dict[str, Membership] = {}
        self.name_at: dict[tuple[str, int], str] = {}
        for i, name in enumerate(names):
            addr = (f"10.0.0.{i + 1}", 7946)
            self.m[name] = Membership(self.cfg, name, addr[0], addr[1], random.Random(i), 0.0)
            self.name_at[addr] = name
        self.dead: set[str] = set()  # killed: datagrams to them vanish, TCP is refused
        self.log: list[Sent] = []

    def __getitem__(self, name: str) -> Membership:
        return self.m[name]

    def addr(self, name: str) -> tuple[str, int]:
        return self.m[name].me.address

    def take(self, name: str) -> list[Sent]:
        """What `name` has queued to send, decoded (and taken out of its queue)."""
        out = []
        for dst, data in self.m[name].packets_to_send():
            assert len(data) <= self.cfg.udp_buffer_size
            out.append((name, self.name_at[dst], wire.decode_packet(data)[0]))
        return out

    def deliver(self, packets: list[Sent], now: float) -> None:
        for src, dst, msgs in packets:
            self.log.append((src, dst, msgs))
            if dst not in self.dead:
                self.m[dst].receive(wire.packet(*msgs), self.addr(src), now)

    def settle(self, now: float, drop: Callable[[Sent], bool] = lambda p: False, rounds: int = 20) -> list[Sent]:
        """Deliver datagrams (minus dropped ones) and answer streams until nobody has anything to say."""
        seen: list[Sent] = []
        for _ in range(rounds):
            batch = [p for name in self.m if name not in self.dead for p in self.take(name)]
            for name in self.m:
                if name not in self.dead:
                    for req in self.m[name].streams_to_open():
                        self.serve_stream(name, req, now)
            if not batch:
                return seen
            seen += batch
            self.deliver([p for p in batch if not drop(p)], now)
        raise AssertionError("the cores kept talking")

    def serve_stream(self, src: str, req: StreamRequest, now: float) -> bool:
        dst = self.name_at[req.addr]
        reply = None if dst in self.dead else self.m[dst].handle_stream(req.payload[4:], self.addr(src), now)
        return self.m[src].stream_result(req.token, reply[4:] if reply else None, now)

    def join(self, now: float = 0.0) -> None:
        """Everyone joins the first member by push-pull, then gossip spreads the rest."""
        first, *rest = self.m
        for name in rest:
            (token,) = self.m[name].join([self.addr(first)], now)
            (req,) = self.m[name].streams_to_open()
            assert req.token == token and req.kind == StreamKind.JOIN
            assert self.serve_stream(name, req, now)
        t = now
        while not all(set(m.members) == set(self.m) for m in self.m.values()):
            t = min(m.next_gossip for m in self.m.values())
            for m in self.m.values():
                if m.next_gossip <= t:
                    m.handle_timer(t)
            self.settle(t)
            assert t < now + 10, "join did not converge"
        for m in self.m.values():
            m.events()

    def quiet(self, names: list[str], until: float) -> None:
        """Push the probe/gossip/push-pull timers of `names` past `until` (they stay silent)."""
        for n in names:
            m = self.m[n]
            m.next_probe = m.next_gossip = m.next_push_pull = m.next_reconnect = m.next_reap = until


def of(packets: list[Sent], kind: type) -> list[tuple[str, str, Message]]:
    return [(s, d, x) for s, d, msgs in packets for x in msgs if isinstance(x, kind)]


# ---- probing -------------------------------------------------------------------------------------
def test_ping_ack() -> None:
    w = Wires(["a", "b"])
    w.join()
    a = w["a"]
    w.quiet(["a", "b"], 100.0)
    a.next_probe = t = 1.0
    a.handle_timer(t)
    out = w.take("a")
    ((_, dst, ping),) = of(out, Ping)
    assert dst == "b" and isinstance(ping, Ping) and ping.target == "b"
    w.deliver(out, t + 0.01)
    back = w.take("b")
    ((_, dst, ack),) = of(back, Ack)
    assert dst == "a" and isinstance(ack, Ack) and ack.seq == ping.seq
    w.deliver(back, t + 0.02)
    a.handle_timer(t + a.config.probe_timeout)  # the direct deadline: nothing more to do
    assert a.probe is None
    assert not w.take("a") and not a.streams_to_open()
    assert a.members["b"].state == State.ALIVE and a.stats["stale_acks"] == 0


def test_misdirected_ping_is_not_acked() -> None:
    """A ping for the member that used to live at this address must not be answered by us."""
    w = Wires(["a", "b"])
    w["b"].receive(wire.packet(Ping(5, "someone-else", "a", "10.0.0.1", 7946)), w.addr("a"), 1.0)
    assert not of(w.take("b"), Ack) and w["b"].stats["misdirected_pings"] == 1


def three(cfg: GossipConfig | None = None) -> Wires:
    w = Wires(["a", "b", "c"], cfg)
    w.join()
    w.quiet(["a", "b", "c"], 1000.0)
    return w


def start_probe(w: Wires, prober: str, target: str, t: float) -> Ping:
    m = w[prober]
    m.probe_order, m.probe_index = [target], 0
    m.next_probe = t
    m.handle_timer(t)
    out = w.take(prober)
    ((_, _, ping),) = of(out, Ping)
    assert isinstance(ping, Ping) and ping.target == target
    w.deliver(out, t)
    return ping


def test_failed_direct_ping_goes_indirect_with_tcp_fallback_and_helper_nacks() -> None:
    w = three()
    a, b = w["a"], w["b"]
    w.dead.add("c")
    t = 10.0
    ping = start_probe(w, "a", "c", t)
    a.handle_timer(t + 0.5)  # direct deadline passes without an ack
    out = w.take("a")
    ((_, helper, req),) = of(out, IndirectPing)
    assert helper == "b" and isinstance(req, IndirectPing)
    assert (req.target, req.target_port, req.seq, req.nack) == ("c", 7946, ping.seq, True)
    (tcp,) = a.streams_to_open()
    assert tcp.kind == StreamKind.PING and tcp.addr == w.addr("c") and tcp.deadline == t + 1.0
    assert isinstance(wire.decode_frame_payload(tcp.payload[4:]), Ping)
    w.deliver(out, t + 0.5)
    relayed = w.take("b")  # the helper pings c itself, with its own sequence number
    ((_, dst, ping2),) = of(relayed, Ping)
    assert dst == "c" and isinstance(ping2, Ping) and ping2.target == "c"
    w.deliver(relayed, t + 0.5)  # c is dead: lost
    b.handle_timer(t + 1.0)  # the helper's probe timeout: it tells a it tried, in vain
    nack_out = w.take("b")
    ((_, dst, nack),) = of(nack_out, Nack)
    assert dst == "a" and isinstance(nack, Nack) and nack.seq == ping.seq
    assert b.stats["nacks_sent"] == 1
    w.deliver(nack_out, t + 1.0)
    assert a.probe is not None and a.probe.nacks == 1 and a.probe.expected_nacks == 1
    assert not a.stream_result(tcp.token, None, t + 0.6)  # connection refused
    a.handle_timer(t + 1.0)  # the probe ends: c is suspected
    assert a.members["c"].state == State.SUSPECT
    assert a.awareness.score == 0  # every expected nack came: the fault is c's, not ours
    assert a.stats["indirect_probes"] == 1 and a.stats["suspects_started"] == 1
    assert a.broadcasts.has("c")  # the suspicion waits for the next gossip round


def test_missing_nacks_raise_our_awareness_score() -> None:
    w = three()
    a = w["a"]
    w.dead.update({"b", "c"})  # the helper does not answer either
    start_probe(w, "a", "c", 10.0)
    a.handle_timer(10.5)
    w.take("a")
    a.streams_to_open()
    a.handle_timer(11.0)
    assert a.members["c"].state == State.SUSPECT
    assert a.awareness.score == 1  # one expected nack missing


def test_indirect_ack_through_a_helper_saves_the_target() -> None:
    w = three()
    a = w["a"]
    t = 10.0
    start_probe(w, "a", "c", t)
    w.take("c")  # c's ack is lost on the way back
    a.handle_timer(t + 0.5)
    a.streams_to_open()  # (the TCP fallback is never answered here)
    score = a.awareness.score
    w.settle(t + 0.5)  # a -> b ping-req, b -> c ping, c -> b ack, b -> a ack
    assert a.probe is None and a.awareness.score == max(0, score - 1)  # the relayed ack concluded it
    a.handle_timer(t + 1.0)
    assert a.members["c"].state == State.ALIVE
    assert not of(w.log, Nack)


def test_tcp_fallback_saves_the_target_when_udp_is_blocked() -> None:
    w = three()
    a = w["a"]
    t = 10.0
    start_probe(w, "a", "c", t)
    w.take("c")
    a.handle_timer(t + 0.5)
    (tcp,) = a.streams_to_open()
    w.settle(t + 0.5, drop=lambda p: p[1] == "c" or p[0] == "c")  # no UDP to or from c at all
    assert w.serve_stream("a", tcp, t + 0.6)  # c answers the ping over TCP
    a.handle_timer(t + 1.0)
    assert a.members["c"].state == State.ALIVE
    assert a.stats["tcp_fallback_ok"] == 1


# ---- suspicion, refutation, death ----------------------------------------------------------------
def suspect_c(w: Wires, t: float) -> None:
    """a probes c; everything to c is lost; at the end of the probe a suspects c."""
    a = w["a"]
    start_probe(w, "a", "c", t)
    a.handle_timer(t + 0.5)
    for req in a.streams_to_open():
        a.stream_result(req.token, None, t + 0.5)
    w.settle(t + 0.5, drop=lambda p: p[1] == "c")
    w["b"].handle_timer(t + 1.0)
    w.settle(t + 1.0, drop=lambda p: p[1] == "c")
    a.handle_timer(t + 1.0)
    assert a.members["c"].state == State.SUSPECT


def test_suspect_becomes_dead_after_the_suspicion_timeout() -> None:
    w = three()
    a = w["a"]
    w.dead.add("c")
    suspect_c(w, 10.0)
    susp = a.suspicions["c"]
    assert susp.k == 0  # n - 2 < SuspicionMult - 2 in a three-member cluster: no confirmations expected
    deadline = 11.0 + a.config.suspicion_min(3)
    assert susp.deadline == pytest.approx(deadline)
    assert a.next_deadline() <= deadline
    a.handle_timer(deadline - 0.01)
    assert a.members["c"].state == State.SUSPECT
    a.handle_timer(deadline)
    assert a.members["c"].state == State.DEAD
    assert [(e.kind, e.name) for e in a.events()] == [(EventKind.FAILED, "c")]
    assert a.stats["deaths_declared"] == 1
    # The death is gossiped: b hears it and agrees.
    a.next_gossip = deadline
    a.handle_timer(deadline)
    w.settle(deadline)
    assert w["b"].members["c"].state == State.DEAD
    assert [(e.kind, e.name) for e in w["b"].events() if e.name == "c"] == [(EventKind.FAILED, "c")]


def test_suspected_member_refutes_with_a_higher_incarnation() -> None:
    w = three()
    a, c = w["a"], w["c"]
    t = 10.0
    start_probe(w, "a", "c", t)
    w.take("c")  # c's ack is lost
    a.handle_timer(t + 0.5)
    for req in a.streams_to_open():
        a.stream_result(req.token, None, t + 0.5)
    w.settle(t + 0.5, drop=lambda p: p[1] == "c")  # the indirect path fails too
    w["b"].handle_timer(t + 1.0)
    w.settle(t + 1.0, drop=lambda p: p[1] == "c")
    a.handle_timer(t + 1.0)
    assert a.members["c"].state == State.SUSPECT and a.members["c"].incarnation == 1
    # a's next probe of c carries the suspicion along (Lifeguard's buddy system) ...
    w.quiet(["b", "c"], 1000.0)
    a.probe_order, a.probe_index, a.next_probe, a.probe = ["c"], 0, t + 1.0, None  # force a probe of c now
    a.handle_timer(t + 1.0)
    out = w.take("a")
    assert of(out, Ping) and of(out, Suspect)
    w.deliver(out, t + 1.0)
    # ... so c refutes at once: a higher incarnation, and its health score goes up.
    assert c.me.incarnation == 2 and c.stats["refutes"] == 1 and c.awareness.score == 1
    w.settle(t + 1.0)  # the ack carries the refutation back
    assert a.members["c"].state == State.ALIVE and a.members["c"].incarnation == 2
    assert "c" not in a.suspicions
    a.handle_timer(t + 100.0)
    assert a.members["c"].state == State.ALIVE
    assert not [e for e in a.events() if e.kind == EventKind.FAILED]


def test_old_suspicions_and_deaths_do_not_touch_a_newer_incarnation() -> None:
    w = three()
    a = w["a"]
    a.receive(wire.packet(Alive(5, "c", "10.0.0.3", 7946)), w.addr("b"), 1.0)
    a.receive(wire.packet(Suspect(4, "c", "b"), Dead(4, "c", "b")), w.addr("b"), 2.0)
    assert a.members["c"].state == State.ALIVE and a.members["c"].incarnation == 5
    # ... and the stale teller is told the news directly, so it cannot time its suspicion out.
    ((_, dst, alive), *_) = of(w.take("a"), Alive)
    assert dst == "b" and isinstance(alive, Alive) and (alive.node, alive.incarnation) == ("c", 5)
    assert a.stats["stale_accusations"] == 2


def test_member_told_of_an_old_suspicion_of_itself_answers_with_its_current_incarnation() -> None:
    w = three()
    c = w["c"]
    c.receive(wire.packet(Suspect(1, "c", "a")), w.addr("a"), 1.0)
    assert c.me.incarnation == 2
    w.take("c")
    c.receive(wire.packet(Suspect(1, "c", "b")), w.addr("b"), 2.0)  # b missed the refutation
    assert c.me.incarnation == 2  # no new refutation for old news ...
    answers = [(dst, x) for _, dst, x in of(w.take("c"), Alive) if isinstance(x, Alive) and x.node == "c"]
    assert answers and all(dst == "b" and x.incarnation == 2 for dst, x in answers)  # ... but b is told directly


def test_a_suspect_that_talks_to_us_is_told_so_it_can_refute() -> None:
    """Lifeguard's buddy system tells a suspect when we probe it; a suspect that speaks first is
    told too, whatever it sent us."""
    w = three()
    a, c = w["a"], w["c"]
    a.receive(wire.packet(Suspect(1, "c", "b")), w.addr("b"), 1.0)
    w.take("a")
    c.receive(wire.packet(Ping(77, "c", "b", "10.0.0.2", 7946)), w.addr("b"), 1.1)  # c is busy with b ...
    a.receive(wire.packet(Ack(12345)), w.addr("c"), 1.2)  # ... and any datagram from c reaches a
    told = w.take("a")
    assert ("c", Suspect(1, "c", "a")) in [(d, x) for _, d, x in of(told, Suspect)]
    w.deliver(told, 1.2)
    assert c.me.incarnation == 2
    w.settle(1.3)
    c.next_gossip = 1.4
    c.handle_timer(1.4)
    w.settle(1.4)
    assert a.members["c"].state == State.ALIVE and a.members["c"].incarnation == 2


def _isolated_a_suspects_c_then_heals(w: Wires) -> float:
    """a suspected c while c was unreachable; the network heals, the gossip about it is spent.
    Returns a's deadline for the suspicion."""
    w.dead.add("c")
    suspect_c(w, 10.0)
    w.dead.discard("c")
    for n in "abc":
        w.take(n)
        w[n].broadcasts = type(w[n].broadcasts)(w[n].broadcasts.max_size)  # the gossip about it is spent
    return w["a"].suspicions["c"].deadline


def test_chaos_isolated_leader_declared_others_dead_after_the_heal__a_refutation_answers_the_accuser() -> None:
    """Found by `make chaos` (seed 927005): s5, isolated for 6.5 s, suspected every member; its
    timers fired just after the heal and told everyone c2 had failed, though c2 had refuted
    70 ms earlier by gossip. A refutation now also goes straight back to whoever told us."""
    w = three()
    a, c = w["a"], w["c"]
    _isolated_a_suspects_c_then_heals(w)
    start_probe(w, "c", "a", 12.0)  # c talks to a: a acks and tells c it is suspected
    told = w.take("a")
    assert ("c", Suspect(1, "c", "a")) in [(d, x) for _, d, x in of(told, Suspect)]
    w.deliver(told, 12.0)
    assert c.me.incarnation == 2
    answers = [(d, x) for _, d, x in of(w.take("c"), Alive) if isinstance(x, Alive) and x.node == "c"]
    assert ("a", Alive(2, "c", "10.0.0.3", 7946)) in [(d, dataclasses.replace(x, tags={})) for d, x in answers]
    w.deliver([("c", "a", [x]) for d, x in answers if d == "a"], 12.0)
    assert a.members["c"].state == State.ALIVE and "c" not in a.suspicions


def test_a_suspect_that_talked_to_us_gets_the_minimum_again_at_the_deadline() -> None:
    """Evidence of life beats a timer: c reached a after the suspicion began, but a's word to c
    was lost. At the deadline a tells c again instead of declaring it dead, and c refutes."""
    w = three()
    a = w["a"]
    deadline = _isolated_a_suspects_c_then_heals(w)
    start_probe(w, "c", "a", deadline - 1.0)
    w.take("a")  # a's ack and its word to c are lost
    a.handle_timer(deadline)
    assert a.members["c"].state == State.SUSPECT and a.stats["suspicions_extended"] == 1
    assert a.suspicions["c"].deadline == pytest.approx(deadline + a.suspicions["c"].min)
    retold = w.take("a")
    assert ("c", Suspect(1, "c", "a")) in [(d, x) for _, d, x in of(retold, Suspect)]
    w.deliver(retold, deadline)
    w.settle(deadline)
    assert a.members["c"].state == State.ALIVE and a.members["c"].incarnation == 2
    assert not [e for e in a.events() if e.kind == EventKind.FAILED]


def test_a_suspect_that_sends_but_never_hears_is_declared_dead_after_two_extensions() -> None:
    """A member that can send to us but not hear us cannot refute: the extensions are bounded, and
    the positive control of the test above (no datagram from c: dead at the first deadline) holds."""
    w = three()
    a = w["a"]
    deadline = _isolated_a_suspects_c_then_heals(w)
    for i in range(3):
        start_probe(w, "c", "a", deadline - 0.5)
        w.take("a")  # nothing reaches c
        a.handle_timer(deadline)
        deadline = a.suspicions["c"].deadline if "c" in a.suspicions else deadline
        if i < 2:
            assert a.members["c"].state == State.SUSPECT
    assert a.members["c"].state == State.DEAD and a.stats["suspicions_extended"] == 2
    w2 = three()
    deadline2 = _isolated_a_suspects_c_then_heals(w2)
    w2["a"].handle_timer(deadline2)
    assert w2["a"].members["c"].state == State.DEAD and w2["a"].stats["suspicions_extended"] == 0


def test_a_suspicion_still_held_halfway_is_gossiped_again() -> None:
    """A member that missed every copy of a refutation asks again before its verdict."""
    w = three()
    a = w["a"]
    a.receive(wire.packet(Suspect(1, "c", "b")), w.addr("b"), 1.0)
    susp = a.suspicions["c"]
    assert susp.reask_at == pytest.approx(1.0 + susp.min / 2)
    while a.broadcasts.has("c"):  # the first round of gossip about it is spent
        a.next_gossip = 1.1
        a.handle_timer(1.1)
        w.take("a")
    a.handle_timer(susp.reask_at)
    assert a.broadcasts.has("c") and a.stats["suspicions_reasked"] == 1
    a.next_gossip = susp.reask_at
    a.handle_timer(susp.reask_at)
    w.quiet(["b", "c"], 1000.0)
    # c has long since refuted; whoever hears the re-ask answers with the news a missed.
    w["b"].receive(wire.packet(Alive(2, "c", "10.0.0.3", 7946)), w.addr("c"), 1.0)
    w["c"].me.incarnation = 2
    w.settle(susp.reask_at)
    assert a.members["c"].state == State.ALIVE and a.members["c"].incarnation == 2


# ---- stale acks ----------------------------------------------------------------------------------
def test_ack_with_a_wrong_sequence_number_is_ignored_and_counted() -> None:
    w = three()
    a = w["a"]
    ping = start_probe(w, "a", "c", 10.0)
    w.take("c")
    a.receive(wire.packet(Ack(ping.seq + 1000)), w.addr("c"), 10.1)
    assert a.probe is not None and not a.probe.acked
    assert a.stats["stale_acks"] == 1


def test_paused_member_answering_its_backlog_after_the_probe_concluded() -> None:
    """SIGSTOP: c's socket buffers a's pings while c is stopped; after SIGCONT c answers them all,
    long after a gave up on those probes. Those acks must not count for anything."""
    w = three()
    a, c = w["a"], w["c"]
    backlog: list[Sent] = []
    t = 10.0
    for i in range(3):  # three probes of c while it is stopped (all within the suspicion timeout)
        now = t + 1.5 * i
        a.probe_order, a.probe_index, a.next_probe, a.probe = ["c"], 0, now, None  # force a probe of c
        a.handle_timer(now)
        backlog += [p for p in w.take("a") if p[1] == "c"]
        a.handle_timer(now + 0.5)
        for req in a.streams_to_open():
            a.stream_result(req.token, None, now + 0.5)  # connect succeeds, no answer: a timeout
        w.settle(now + 0.5, drop=lambda p: p[1] == "c")
        w["b"].handle_timer(now + 1.0)
        w.settle(now + 1.0, drop=lambda p: p[1] == "c")
        a.handle_timer(now + 1.0)
    assert a.members["c"].state == State.SUSPECT
    stale_before = a.stats["stale_acks"]
    w.deliver(backlog, t + 4.5)  # SIGCONT: c reads its backlog
    answers = w.take("c")
    pings = of(backlog, Ping)  # the three forced probes, and any of c the schedule drew itself
    assert len(pings) >= 3 and len(of(answers, Ack)) == len(pings)
    a.probe = None
    w.deliver([p for p in answers if p[1] == "a"], t + 4.5)
    assert a.stats["stale_acks"] - stale_before == len(pings)
    # The backlog also told c it is suspected: its refutation is what brings it back.
    assert c.me.incarnation == 2
    assert any(isinstance(x, Alive) and x.node == "c" and x.incarnation == 2 for _, _, x in of(answers, Alive))


# ---- leave, tombstones, reaping ------------------------------------------------------------------
def test_graceful_leave_is_left_not_failed_and_its_tombstone_is_reaped() -> None:
    w = three()
    a, b, c = w["a"], w["b"], w["c"]
    c.leave(5.0)
    assert c.me.state == State.LEFT and c.me.incarnation == 2
    assert not c.leave_sent()
    t = 5.0
    while not c.leave_sent():
        t += c.config.gossip_interval
        c.next_gossip = t
        c.handle_timer(t)
        w.settle(t)
        w.quiet(["a", "b"], 1000.0)
    for m in (a, b):
        assert m.members["c"].state == State.LEFT
        assert [(e.kind, e.name) for e in m.events() if e.name == "c"] == [(EventKind.LEAVE, "c")]
        assert m.stats["deaths_declared"] == 0
    # A late rumour from c's old life cannot bring it back while the tombstone stands ...
    a.receive(wire.packet(Alive(1, "c", "10.0.0.3", 7946)), w.addr("b"), 6.0)
    assert a.members["c"].state == State.LEFT
    # ... and the tombstone goes once tombstone_timeout has passed (not before).
    left_at = a.members["c"].state_change
    a.next_reap = left_at + a.config.tombstone_timeout - 1
    a.handle_timer(a.next_reap)
    assert "c" in a.members
    a.next_reap = left_at + a.config.tombstone_timeout + 1
    a.handle_timer(a.next_reap)
    assert "c" not in a.members
    assert [(e.kind, e.name) for e in a.events()] == [(EventKind.REAP, "c")]


def test_failed_member_is_reaped_after_reconnect_timeout() -> None:
    w = three()
    a = w["a"]
    a.receive(wire.packet(Dead(1, "c", "b")), w.addr("b"), 10.0)
    assert a.members["c"].state == State.DEAD
    a.next_reap = 10.0 + a.config.reconnect_timeout - 1
    a.handle_timer(a.next_reap)
    assert "c" in a.members
    a.next_reap = 10.0 + a.config.reconnect_timeout + 1
    a.handle_timer(a.next_reap)
    assert "c" not in a.members
    assert [e.kind for e in a.events() if e.name == "c"] == [EventKind.FAILED, EventKind.REAP]


def test_force_leave_turns_a_failed_member_left_everywhere() -> None:
    w = three()
    a, b = w["a"], w["b"]
    for m in (a, b):
        m.receive(wire.packet(Dead(1, "c", "x")), w.addr("c"), 10.0)
        assert m.members["c"].state == State.DEAD
    w.take("a")
    w.take("b")
    assert not a.force_leave("b", 11.0)  # alive: refused
    assert a.force_leave("c", 11.0)
    assert a.members["c"].state == State.LEFT
    assert [e.kind for e in a.events() if e.name == "c"][-1] == EventKind.LEAVE
    a.next_gossip = 11.0
    a.handle_timer(11.0)
    w.settle(11.0)
    assert b.members["c"].state == State.LEFT  # the leave travels: DEAD -> LEFT elsewhere too
    assert a.prune("c") and "c" not in a.members


# ---- joining, push-pull, tags --------------------------------------------------------------------
def test_push_pull_join_makes_both_sides_know_each_other() -> None:
    w = Wires(["a", "b"])
    a, b = w["a"], w["b"]
    a.clock.witness(41)
    (token,) = b.join([w.addr("a")], 1.0)
    (req,) = b.streams_to_open()
    assert req.kind == StreamKind.JOIN and req.deadline == 1.0 + b.config.tcp_timeout
    reply = a.handle_stream(req.payload[4:], w.addr("b"), 1.0)
    assert reply is not None
    assert b.stream_result(token, reply[4:], 1.0)
    assert set(a.members) == set(b.members) == {"a", "b"}
    assert [(e.kind, e.name) for e in a.events()] == [(EventKind.JOIN, "b")]
    assert [(e.kind, e.name) for e in b.events()] == [(EventKind.JOIN, "a")]
    assert b.clock.time > 41  # the Lamport time travels with the state
    assert a.stats["push_pulls"] == 1
    assert not b.stream_result(token, reply[4:], 1.0)  # a token is good once


def test_failed_join_reports_false() -> None:
    w = Wires(["a", "b"])
    (token,) = w["b"].join([w.addr("a")], 1.0)
    assert not w["b"].stream_result(token, None, 1.5)
    assert set(w["b"].members) == {"b"}


def test_push_pull_reports_dead_members_as_suspects_to_give_them_a_chance() -> None:
    w = Wires(["a", "b", "c"])
    w.join()
    a, b = w["a"], w["b"]
    a.receive(wire.packet(Dead(1, "c", "a")), w.addr("a"), 5.0)
    (token,) = b.join([w.addr("a")], 6.0)
    (req,) = b.streams_to_open()
    reply = a.handle_stream(req.payload[4:], w.addr("b"), 6.0)
    assert reply is not None and b.stream_result(token, reply[4:], 6.0)
    assert b.members["c"].state == State.SUSPECT


def test_tag_update_bumps_incarnation_and_is_an_update_elsewhere() -> None:
    w = three()
    a, c = w["a"], w["c"]
    c.update_tags({"role": "db"}, 20.0)
    assert c.me.incarnation == 2 and c.clock.time >= 1
    c.next_gossip = 20.0
    c.handle_timer(20.0)
    w.settle(20.0)
    assert a.members["c"].tags == {"role": "db"}
    assert [(e.kind, e.name, e.tags) for e in a.events() if e.name == "c"] == [
        (EventKind.UPDATE, "c", {"role": "db"})]


def test_someone_else_claiming_our_name_with_other_tags_is_refuted() -> None:
    w = Wires(["a", "b"])
    a = w["a"]
    a.receive(wire.packet(Alive(1, "a", "10.0.0.1", 7946, {"role": "impostor"})), w.addr("b"), 1.0)
    assert a.me.incarnation == 2 and a.me.tags == {}
    a.receive(wire.packet(Alive(2, "a", "10.0.0.1", 7946)), w.addr("b"), 1.0)  # our own story: no refute
    assert a.me.incarnation == 2


def test_name_conflict_keeps_the_member_we_know() -> None:
    w = three()
    a = w["a"]
    a.receive(wire.packet(Alive(9, "c", "10.9.9.9", 7946)), w.addr("b"), 1.0)
    a.events()
    a.receive(wire.packet(Alive(9, "c", "10.9.9.9", 7946)), w.addr("b"), 1.0)
    assert a.members["c"].address == w.addr("c") and a.stats["conflicts"] == 2
    # One event names the claimant (once per claimant address, however often it is gossiped).
    conflicts = [e for e in a.events() if e.kind == EventKind.CONFLICT]
    assert [(e.name, e.addr) for e in conflicts] == []  # already reported by the first packet
    a.receive(wire.packet(Alive(9, "c", "10.9.9.8", 7946)), w.addr("b"), 1.0)
    assert [(e.kind, e.name, e.addr) for e in a.events()] == [(EventKind.CONFLICT, "c", "10.9.9.8")]


def test_another_process_claiming_our_name_is_reported_not_refuted() -> None:
    """Refuting would start an incarnation war flapping the name between two addresses."""
    w = three()
    a = w["a"]
    a.events()
    before = a.me.incarnation
    for _ in range(3):
        a.receive(wire.packet(Alive(before + 5, "a", "10.7.7.7", 7946)), w.addr("b"), 2.0)
    assert a.me.incarnation == before and a.me.address == w.addr("a")
    assert [(e.kind, e.name, e.addr) for e in a.events()] == [(EventKind.CONFLICT, "a", "10.7.7.7")]
    assert a.stats["conflicts"] == 3
    # Positive control: the same claim at our own address is a story about us, refuted.
    a.receive(wire.packet(Alive(before + 5, "a", *w.addr("a"))), w.addr("b"), 2.0)
    assert a.me.incarnation == before + 6


def test_a_member_with_a_taken_node_id_is_refused() -> None:
    """A cloned VM: new name, copied data dir, so the same node-ID tag as a live member."""
    cfg = GossipConfig.lan()
    a = Membership(cfg, "a", "10.0.0.1", 7946, random.Random(1), 0.0, tags={"id": "A"}, unique_tag="id")
    a.receive(wire.packet(Alive(1, "b", "10.0.0.2", 7946, {"id": "B"})), ("10.0.0.2", 7946), 1.0)
    assert "b" in a.members
    a.events()
    a.receive(wire.packet(Alive(1, "b-clone", "10.0.0.3", 7946, {"id": "B"})), ("10.0.0.3", 7946), 1.0)
    a.receive(wire.packet(Alive(1, "a-clone", "10.0.0.4", 7946, {"id": "A"})), ("10.0.0.4", 7946), 1.0)
    assert "b-clone" not in a.members and "a-clone" not in a.members
    assert [(e.kind, e.name) for e in a.events()] == [(EventKind.CONFLICT, "b-clone"), (EventKind.CONFLICT, "a-clone")]
    # Positive control: a distinct ID joins.
    a.receive(wire.packet(Alive(1, "c", "10.0.0.5", 7946, {"id": "C"})), ("10.0.0.5", 7946), 1.0)
    assert "c" in a.members
    # Once the holder is dead, the ID is free again (the VM was replaced, not cloned).
    a.receive(wire.packet(Dead(1, "b", "c")), ("10.0.0.5", 7946), 2.0)
    a.receive(wire.packet(Alive(1, "b-clone", "10.0.0.3", 7946, {"id": "B"})), ("10.0.0.3", 7946), 2.0)
    assert a.members["b-clone"].state == State.ALIVE


def test_rotation_probes_every_member_exactly_once_per_tick_and_each_prober_covers_all_per_pass() -> None:
    """probe_rotation: all members derive one order per pass; at tick t each probes the member t
    steps after itself, so the probes of one tick form a permutation (nobody unprobed, nobody twice)."""
    names = [f"m{i}" for i in range(7)]
    w = Wires(names, GossipConfig.lan())
    w.join()
    w.quiet(names, 1000.0)
    seen: dict[str, set[str]] = {n: set() for n in names}
    for tick in range(12):  # two passes of N-1 = 6 ticks
        t = 2000.0 + tick + 0.37  # every member's probe fires somewhere inside the same wall second
        targets = []
        for i, n in enumerate(names):
            m = w[n]
            m.probe, m.next_probe = None, t + i * 0.01
            m.handle_timer(t + i * 0.01)
            pings = [p for p in of(w.take(n), Ping)]
            assert len(pings) == 1
            targets.append(pings[0][2].target)
            seen[n].add(pings[0][2].target)
        assert sorted(targets) == sorted(names), f"tick {tick}: {targets}"
        w.quiet(names, t + 0.5)
    for n in names:
        assert seen[n] == set(names) - {n}  # a whole pass covers everyone else


def test_rotation_falls_back_to_the_shuffle_when_we_are_not_in_our_own_view() -> None:
    cfg = GossipConfig.lan()
    m = Membership(cfg, "a", "10.0.0.1", 7946, random.Random(1), 0.0)
    assert m._next_target(5.0) is None  # alone: nothing to probe either way
    m.receive(wire.packet(Alive(1, "b", "10.0.0.2", 7946)), ("10.0.0.2", 7946), 1.0)
    assert m._next_target(5.0).name == "b"


def test_a_member_we_hold_dead_is_told_when_it_talks_to_us_and_its_alive_comes_back() -> None:
    """c refuted long ago, but a missed every gossiped copy and still holds c dead. The next
    datagram from c makes a tell c; c answers the stale verdict with its alive, straight to a."""
    w = three()
    a, c = w["a"], w["c"]
    a.receive(wire.packet(Dead(1, "c", "b")), w.addr("b"), 5.0)
    assert a.members["c"].state == State.DEAD
    c.me.incarnation = 3  # c refuted meanwhile; a never heard
    w.quiet(["a", "b", "c"], 1000.0)
    a.broadcasts.items.clear()  # the verdict's own gossip is done: only the tell may carry it
    c.receive(wire.packet(Ping(77, "c", "b", *w.addr("b"))), w.addr("b"), 6.0)
    w.take("c")
    a.receive(wire.packet(Ping(78, "a", "c", *w.addr("c"))), w.addr("c"), 6.0)  # c probes a
    out = w.take("a")
    assert [(d, x.node, x.incarnation) for _, d, x in of(out, Dead)] == [("c", "c", 1)]
    assert a.stats["dead_told"] == 1
    w.deliver(out, 6.0)
    w.settle(6.0)
    assert a.members["c"].state == State.ALIVE and a.members["c"].incarnation == 3
    # Positive control: from then on a says nothing more to c.
    a.receive(wire.packet(Ping(79, "a", "c", *w.addr("c"))), w.addr("c"), 7.0)
    assert not of(w.take("a"), Dead) and a.stats["dead_told"] == 1
