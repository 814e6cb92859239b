"""gossip/userevents.py: Serf's user events and queries over real Membership cores, wired by hand.

Lamport clocks, deduplication of re-gossiped events and queries, the buffer window, coalescing,
size limits, filters, the origin's one-answer-per-member rule, the default timeout and the relay
factor. The simulator test (tests/sim/test_gossip_userevents_sim.py) runs the same code at N=100.
"""

from __future__ import annotations

import random

import pytest
from murmur.gossip import wire
from murmur.gossip.clock import LamportClock
from murmur.gossip.config import GossipConfig
from murmur.gossip.membership import USER_MIN_TRANSMITS, Membership, State
from murmur.gossip.userevents import (
    EVENT_BUFFER,
    EVENT_SIZE_LIMIT,
    PING_QUERY,
    Coalescer,
    DeliveredEvent,
    QueryState,
    UserLayer,
    UserMessageTooLarge,
    default_query_timeout,
    event_matches,
    query_matches,
    regex_matches,
    tags_match,
)
from murmur.gossip.wire import PushState, Query, QueryResponse, Relay, UserEvent

LAN = GossipConfig.lan()


class Net:
    """A few preloaded cores, each with its user layer, and a hand-run network between them."""

    def __init__(self, n: int, tags: dict[str, dict[str, str]] | None = None) -> None:
        self.names = [f"n{i}" for i in range(n)]
        self.m: dict[str, Membership] = {}
        self.u: dict[str, UserLayer] = {}
        self.at: dict[tuple[str, int], str] = {}
        for i, name in enumerate(self.names):
            m = Membership(LAN, name, f"10.0.0.{i + 1}", 7946, random.Random(i), 0.0, tags=(tags or {}).get(name))
            self.m[name], self.u[name] = m, UserLayer(m)
            self.at[m.me.address] = name
        table = [PushState(m.name, m.me.addr, m.me.port, 1, State.ALIVE, dict(m.me.tags), m.me.vsn)
                 for m in self.m.values()]
        for m in self.m.values():
            m.preload(table, 0.0)
            m.broadcasts = type(m.broadcasts)(max_size=m.broadcasts.max_size)
        self.sent: list[tuple[str, str, list[wire.Message]]] = []

    def take(self, name: str) -> list[tuple[str, str, list[wire.Message]]]:
        out = []
        for dst, data in self.m[name].packets_to_send():
            out.append((name, self.at[dst], wire.decode_packet(data)[0]))
        return out

    def deliver(self, packets: list[tuple[str, str, list[wire.Message]]], now: float) -> None:
        for src, dst, msgs in packets:
            self.sent.append((src, dst, msgs))
            self.m[dst].receive(wire.packet(*msgs), self.m[src].me.address, now)
            self.u[dst].pump(now)

    def run(self, start: float, seconds: float) -> float:
        """Gossip rounds (timers, then every datagram delivered) until `seconds` have passed."""
        now = start
        while now < start + seconds:
            now += LAN.gossip_interval / 2
            for name in self.names:
                m = self.m[name]
                if m.next_deadline() <= now:
                    m.handle_timer(now)
                self.u[name].pump(now)
            for _ in range(10):
                packets = [p for name in self.names for p in self.take(name)]
                if not packets:
                    break
                self.deliver(packets, now)
        return now


def user_msgs(packets: list[tuple[str, str, list[wire.Message]]], kind: type) -> list[tuple[str, str, wire.Message]]:
    return [(s, d, msg) for s, d, msgs in packets for msg in msgs if isinstance(msg, kind)]


# ---- Lamport clocks ------------------------------------------------------------------------------
def test_lamport_clock_witness_and_increment() -> None:
    c = LamportClock()
    assert c.increment() == 1
    c.witness(0)  # older: no change
    assert c.time == 1
    c.witness(1)  # equal: move past it
    assert c.time == 2
    c.witness(10)
    assert c.time == 11
    assert c.increment() == 12


def test_fire_uses_the_event_clock_and_receivers_witness_it() -> None:
    net = Net(2)
    a, b = net.u["n0"], net.u["n1"]
    first = a.fire("deploy", b"v1", 0.0)
    second = a.fire("deploy", b"v2", 0.0)
    assert (first.ltime, second.ltime) == (0, 1)
    b._on_event(UserEvent(41, "x", b"", False), 0.0)  # a receiver far ahead
    assert b.event_clock.time == 42
    third = b.fire("deploy", b"v3", 0.0)
    assert third.ltime == 42
    assert [e.ltime for e in a.events()] == [first.ltime, second.ltime]


# ---- events: delivery, deduplication, window -----------------------------------------------------
def test_event_reaches_everyone_once_despite_regossip() -> None:
    net = Net(5)
    net.u["n0"].fire("deploy", b"v1", 0.0)
    net.run(0.0, 3.0)
    for name in net.names:
        evs = net.u[name].events()
        assert [(e.name, e.payload) for e in evs] == [("deploy", b"v1")], name
    # Every member re-gossips what it hears, so most heard it more than once: those were dropped.
    dups = sum(net.u[n].stats["events_duplicate"] for n in net.names)
    assert dups > 0
    assert all(net.u[n].stats["events"] == 1 for n in net.names)


def test_redelivered_event_is_dropped_but_same_time_other_payload_is_not() -> None:
    net = Net(1)
    u = net.u["n0"]
    ev = UserEvent(5, "deploy", b"v1", False)
    u._on_event(ev, 1.0)
    u._on_event(ev, 2.0)  # the same event, gossiped to us again
    u._on_event(UserEvent(5, "deploy", b"v2", False), 3.0)  # same time and name, other payload
    u._on_event(UserEvent(5, "restart", b"v1", False), 3.0)  # other name
    assert [(e.name, e.payload) for e in u.events()] == [("deploy", b"v1"), ("deploy", b"v2"), ("restart", b"v1")]
    assert u.stats["events_duplicate"] == 1


def test_events_older_than_the_buffer_window_are_dropped() -> None:
    net = Net(1)
    u = net.u["n0"]
    u._on_event(UserEvent(99, "new", b"", False), 0.0)
    assert u.event_clock.time == 100
    oldest_kept = 100 - EVENT_BUFFER
    u._on_event(UserEvent(oldest_kept - 1, "old", b"", False), 0.0)
    u._on_event(UserEvent(oldest_kept, "edge", b"", False), 0.0)
    assert [e.name for e in u.events()] == ["new", "edge"]
    assert u.stats["events_too_old"] == 1


def test_dropped_events_are_not_regossiped() -> None:
    net = Net(1)
    u, m = net.u["n0"], net.m["n0"]
    ev = UserEvent(3, "deploy", b"x", False)
    u._on_event(ev, 0.0)
    assert len(m.broadcasts) == 1
    u._on_event(ev, 0.0)
    assert len(m.broadcasts) == 1


# ---- coalescing ----------------------------------------------------------------------------------
def ev(ltime: int, name: str, t: float) -> DeliveredEvent:
    return DeliveredEvent(ltime, name, f"{name}@{ltime}".encode(), True, t)


def test_coalescer_keeps_the_newest_of_each_name_until_the_window_closes() -> None:
    c = Coalescer(period=1.0, quiet=0.3)
    assert c.next_deadline() == float("inf") and c.flush(0.0) == []
    c.add(ev(5, "deploy", 0.0), 0.0)
    c.add(ev(7, "deploy", 0.1), 0.1)
    c.add(ev(6, "deploy", 0.2), 0.2)  # older than the one held: ignored
    c.add(ev(3, "restart", 0.25), 0.25)
    assert c.next_deadline() == pytest.approx(0.55)  # quiet period after the last one
    assert c.flush(0.5) == []
    out = c.flush(0.55)
    assert [(e.name, e.ltime) for e in out] == [("restart", 3), ("deploy", 7)]
    assert c.flush(10.0) == []


def test_coalescer_period_bounds_a_busy_stream() -> None:
    c = Coalescer(period=1.0, quiet=0.3)
    t = 0.0
    flushed: list[list[DeliveredEvent]] = []
    for i in range(20):  # an event every 0.2 s: the quiet period never passes
        c.add(ev(i, "deploy", t), t)
        t += 0.2
        got = c.flush(t)
        if got:
            flushed.append(got)
    assert flushed[0][0].ltime == 4  # the batch closed at t=1.0 (period) with the newest one
    assert all(len(b) == 1 for b in flushed)


# ---- size limits ---------------------------------------------------------------------------------
def test_event_size_limit() -> None:
    u = Net(1).u["n0"]
    u.fire("deploy", b"x" * 400, 0.0)
    with pytest.raises(UserMessageTooLarge, match=f"limit of {EVENT_SIZE_LIMIT} bytes"):
        u.fire("deploy", b"x" * EVENT_SIZE_LIMIT, 0.0)
    with pytest.raises(UserMessageTooLarge):
        u.fire("d" * 300, b"x" * 250, 0.0)  # name and payload count together
    assert u.stats["too_large"] == 2
    assert len(u.events()) == 1
    assert u.event_clock.time == 1  # a refused event takes no Lamport time


def test_query_and_response_size_limits() -> None:
    net = Net(2)
    with pytest.raises(UserMessageTooLarge, match="query exceeds"):
        net.u["n0"].query("q", b"x" * 1100, 0.0)
    net.u["n1"].handlers["big"] = lambda q: b"y" * 1100
    net.u["n1"].handlers["small"] = lambda q: b"y" * 900
    big = net.u["n0"].query("big", b"", 0.0)
    small = net.u["n0"].query("small", b"", 0.0)
    net.run(0.0, 2.0)  # an oversized answer is refused and counted, not raised into the gossip loop
    assert "n1" not in big.responses and net.u["n1"].stats["too_large"] == 1
    assert small.responses["n1"][0] == b"y" * 900


# ---- filters -------------------------------------------------------------------------------------
def test_regex_matches_like_go_matchstring() -> None:
    assert regex_matches("", "anything")
    assert regex_matches("web", "the-web-3")  # unanchored
    assert not regex_matches("^web$", "web-3")
    assert not regex_matches("(", "(")  # does not compile: matches nothing


def test_event_filters_node_service_and_tag_regexes() -> None:
    services = [("web", ["v1", "primary"]), ("db", ["replica"])]
    assert event_matches("", "", "", "node-7", services)
    assert event_matches("^node-[0-9]$", "", "", "node-7", services)
    assert not event_matches("^node-[0-9]$", "", "", "node-17", services)
    assert event_matches("", "^web$", "", "node-7", services)
    assert not event_matches("", "^api$", "", "node-7", services)
    assert event_matches("", "web", "^prim", "node-7", services)
    assert not event_matches("", "web", "replica", "node-7", services)  # the tag is on another service
    assert event_matches("", "db|web", "replica", "node-7", services)
    assert not event_matches("", "web", "", "node-7", [])


def test_query_filters_node_names_and_tag_regexes() -> None:
    def q(nodes: tuple[str, ...] = (), tags: dict[str, str] | None = None) -> Query:
        return Query(1, 1, "q", b"", "o", "10.0.0.1", 1, nodes, tuple(sorted((tags or {}).items())), False, 0, 1000)

    tags = {"role": "consul", "dc": "dc1"}
    assert query_matches(q(), "a", tags)
    assert query_matches(q(("a", "b")), "a", tags)
    assert not query_matches(q(("b",)), "a", tags)
    assert query_matches(q(tags={"role": "^cons"}), "a", tags)
    assert not query_matches(q(tags={"role": "^node$"}), "a", tags)
    assert not query_matches(q(tags={"rack": ".*"}), "a", tags)  # a tag we do not have
    assert query_matches(q(("a",), {"dc": "dc[0-9]"}), "a", tags)
    assert tags_match([], {})


def test_filtered_query_is_answered_only_by_matching_members_but_reaches_all() -> None:
    tags = {f"n{i}": {"role": "web" if i % 2 else "db"} for i in range(5)}
    net = Net(5, tags)
    st = net.u["n0"].query("_murmur_ping", b"", 0.0, filter_tags={"role": "^web$"})
    net.run(0.0, 3.0)
    assert sorted(st.responses) == ["n1", "n3"]
    assert all(net.u[n].stats["queries_filtered"] == 1 for n in ("n0", "n2", "n4"))
    st2 = net.u["n0"].query(PING_QUERY, b"", 3.0, filter_nodes=["n2", "n4"])
    net.run(3.0, 3.0)
    assert sorted(st2.responses) == ["n2", "n4"]


# ---- queries: answers, acks, dedup, timeout, relays -------------------------------------------------
def test_ping_query_collects_every_member_with_acks() -> None:
    net = Net(6)
    st = net.u["n0"].query(PING_QUERY, b"", 0.0, want_ack=True)
    net.run(0.0, 3.0)
    assert sorted(st.acks) == net.names
    assert {k: v[0] for k, v in st.responses.items()} == {n: n.encode() for n in net.names}
    assert all(t <= st.deadline for _, t in st.responses.values())


def test_origin_keeps_one_response_per_member() -> None:
    net = Net(2)
    o = net.u["n0"]
    st = o.query("custom", b"", 0.0)
    resp = QueryResponse(st.ltime, st.id, "n1", False, b"first")
    o._on_response(resp, 0.1)
    o._on_response(QueryResponse(st.ltime, st.id, "n1", False, b"second"), 0.2)  # a relayed copy, say
    o._on_response(QueryResponse(st.ltime, st.id, "n1", True, b""), 0.2)
    o._on_response(QueryResponse(st.ltime, st.id, "n1", True, b""), 0.3)
    o._on_response(QueryResponse(st.ltime + 1, st.id, "n1", False, b""), 0.3)  # not this query
    assert st.responses == {"n1": (b"first", 0.1)}
    assert list(st.acks) == ["n1"]
    assert st.duplicates == 2
    assert o.stats["responses_unknown"] == 1
    o._on_response(QueryResponse(st.ltime, st.id, "n2", False, b"late"), st.deadline + 0.01)
    assert "n2" not in st.responses and st.late == 1
    o.finish(st)
    o._on_response(QueryResponse(st.ltime, st.id, "n3", False, b""), 0.4)
    assert o.stats["responses_unknown"] == 2


def test_regossiped_query_is_answered_once() -> None:
    net = Net(2)
    b = net.u["n1"]
    q = Query(0, 77, PING_QUERY, b"", "n0", "10.0.0.1", 7946, (), (), False, 0, 5000)
    net.m["n1"].receive(wire.packet(q), ("10.0.0.1", 7946), 0.0)
    net.m["n1"].receive(wire.packet(q), ("10.0.0.1", 7946), 0.1)
    b.pump(0.1)
    answers = user_msgs(net.take("n1"), QueryResponse)
    assert len(answers) == 1 and b.stats["queries_duplicate"] == 1


def test_default_query_timeout() -> None:
    assert default_query_timeout(LAN, 1) == pytest.approx(0.2 * 16 * 1)
    assert default_query_timeout(LAN, 9) == pytest.approx(0.2 * 16 * 1)
    assert default_query_timeout(LAN, 10) == pytest.approx(0.2 * 16 * 2)
    assert default_query_timeout(LAN, 100) == pytest.approx(0.2 * 16 * 3)
    assert default_query_timeout(GossipConfig.local(), 20) == pytest.approx(0.1 * 16 * 2)
    net = Net(12)
    st = net.u["n0"].query("q", b"", 5.0)
    assert st.deadline == pytest.approx(5.0 + 0.2 * 16 * 2)  # N = 12 members


def test_responder_can_answer_late_only_before_its_deadline() -> None:
    net = Net(2)
    net.u["n0"].query("later", b"", 0.0, timeout=1.0)
    net.run(0.0, 0.5)
    (q,) = net.u["n1"].queries()  # no handler registered: handed to the hook
    assert not net.u["n1"].respond(q, b"x", q.deadline + 0.01)
    assert net.u["n1"].respond(q, b"x", q.deadline - 0.01)
    assert not net.u["n1"].respond(q, b"x", q.deadline - 0.01)  # once


@pytest.mark.parametrize("r", [0, 1, 3])
def test_relay_factor_sends_r_extra_copies(r: int) -> None:
    net = Net(6)
    b = net.u["n1"]
    q = Query(0, 9, PING_QUERY, b"", "n0", "10.0.0.1", 7946, (), (), True, r, 5000)
    net.m["n1"].receive(wire.packet(q), ("10.0.0.1", 7946), 0.0)
    b.pump(0.0)
    # (Without the copies of the query itself that ride along as piggybacked gossip.)
    out = [(s, d, [m for m in msgs if not isinstance(m, Query)]) for s, d, msgs in net.take("n1")]
    direct = user_msgs(out, QueryResponse)
    relays = user_msgs(out, Relay)
    assert sorted((d, m.ack) for _, d, m in direct) == [("n0", False), ("n0", True)]  # type: ignore[attr-defined]
    assert len(relays) == 2 * r  # the ack and the response, each through r members
    for ack in (True, False):
        via = [d for _, d, m in relays if m.response.ack is ack]  # type: ignore[attr-defined]
        assert len(set(via)) == r and not {"n0", "n1"} & set(via)
    # The relays forward to the origin, which keeps one copy of each.
    st_origin = net.u["n0"]
    st = QueryState(0, 9, PING_QUERY, True, r, 0.0, 5.0)
    st_origin.pending[9] = st
    net.deliver(out, 0.01)
    for name in net.names[2:]:
        net.deliver(net.take(name), 0.02)
    assert st.responses == {"n1": (b"n1", 0.01)} and list(st.acks) == ["n1"]
    assert st.duplicates == 2 * r


def test_relay_factor_is_capped() -> None:
    net = Net(10)
    st = net.u["n0"].query(PING_QUERY, b"", 0.0, relay_factor=50)
    assert st.relay_factor == 5


# ---- wire ----------------------------------------------------------------------------------------
def test_user_messages_round_trip_and_reject_bad_fields() -> None:
    msgs: list[wire.Message] = [
        UserEvent(3, "deploy", b"\x00\xff", True),
        Query(4, 2**32 - 1, "q", b"p", "n0", "10.0.0.1", 7946, ("a", "b"), (("dc", "^dc1$"), ("role", "x")), True, 2,
              9600),
        QueryResponse(4, 7, "n1", False, b"n1"),
        Relay("10.0.0.1", 7946, QueryResponse(4, 7, "n1", True, b"")),
    ]
    got, unknown = wire.decode_packet(wire.packet(*msgs))
    assert got == msgs and unknown == 0
    import msgpack

    bad = bytes([wire.VERSION]) + msgpack.packb([[int(wire.MessageType.USER), [1, "n", "not-bytes", False]]])
    with pytest.raises(wire.WireError):
        wire.decode_packet(bad)
    bad = bytes([wire.VERSION]) + msgpack.packb([[int(wire.MessageType.RELAY), ["a", 1, [1]]]])
    with pytest.raises(wire.WireError):
        wire.decode_packet(bad)


def test_user_messages_are_gossiped_at_least_user_min_transmits_times() -> None:
    """Member updates stop at retransmit_limit(N) (2 for 5 members on the local preset); a user
    event goes on to USER_MIN_TRANSMITS, because nothing repairs it for a member that missed it."""
    cfg = GossipConfig.local()
    m = Membership(cfg, "a", "10.0.0.1", 7946, random.Random(1), 0.0)
    m.preload([PushState(f"p{i}", f"10.0.1.{i}", 7946, 1, State.ALIVE, {}, m.me.vsn) for i in range(4)], 0.0)
    m.broadcasts = type(m.broadcasts)(max_size=m.broadcasts.max_size)
    assert cfg.retransmit_limit(m.live_count()) == 2 < USER_MIN_TRANSMITS
    u = UserLayer(m)
    u.fire("deploy", b"x", 0.0)
    m._queue_alive(m.me)  # a member update queued alongside
    copies = {"event": 0, "alive": 0}
    now = 0.0
    for _ in range(40):
        now += cfg.gossip_interval
        m.handle_timer(now)
        for _dst, data in m.packets_to_send():
            msgs, _ = wire.decode_packet(data)
            copies["event"] += sum(isinstance(x, UserEvent) for x in msgs)
            copies["alive"] += sum(isinstance(x, wire.Alive) for x in msgs)
    assert copies == {"event": USER_MIN_TRANSMITS, "alive": 2}


# ---- push-pull: clocks and repair (Serf's LocalState exchange) -------------------------------------
def push_pull(net: Net, src: str, dst: str, now: float) -> None:
    """`dst` receives `src`'s push-pull (and answers it, which `src` merges): both directions."""
    reply = net.m[dst].handle_stream(wire.frame(net.m[src]._push_pull_msg(False))[4:], net.m[src].me.address, now)
    assert reply is not None
    net.m[src]._merge(wire.decode_frame_payload(reply[4:]), now, net.m[dst].me.address)  # type: ignore[arg-type]
    net.u[src].pump(now)
    net.u[dst].pump(now)


def test_push_pull_repairs_a_missed_event_and_syncs_the_clocks() -> None:
    net = Net(2)
    a, b = net.u["n0"], net.u["n1"]
    net.m["n0"].packets_to_send()
    a.fire("deploy", b"v1", 0.0)  # never gossiped to n1: n0's packets are dropped below
    a.query("_murmur_ping", b"", 0.0)
    net.m["n0"].packets_to_send()
    a.events()
    assert b.events() == [] and (b.event_clock.time, b.query_clock.time) == (0, 0)
    push_pull(net, "n1", "n0", 1.0)
    assert [(e.name, e.payload) for e in b.events()] == [("deploy", b"v1")]
    assert b.event_clock.time >= a.event_clock.time and b.query_clock.time >= a.query_clock.time
    push_pull(net, "n1", "n0", 2.0)  # the next exchange: known already
    assert b.events() == [] and a.events() == [] and b.stats["events_duplicate"] == 1


def test_a_joiner_skips_older_events_and_its_own_are_not_too_old() -> None:
    """A member that (re)starts has its clocks at 0. Without the clocks in push-pull, its first
    events would be more than EVENT_BUFFER ticks behind the cluster and dropped everywhere."""
    net = Net(1)
    old = net.u["n0"]
    for i in range(EVENT_BUFFER + 10):
        old.fire("deploy", str(i).encode(), 0.0)
    new_m = Membership(LAN, "n9", "10.0.0.9", 7946, random.Random(9), 0.0)
    new = UserLayer(new_m)
    (token,) = new_m.join([net.m["n0"].me.address], 1.0)
    (req,) = new_m.streams_to_open()
    reply = net.m["n0"].handle_stream(req.payload[4:], new_m.me.address, 1.0)
    assert reply is not None and new_m.stream_result(token, reply[4:], 1.0)
    new.pump(1.0)
    assert new.events() == []  # the cluster's recent events predate the join
    assert new.stats["events_before_join"] == EVENT_BUFFER  # the window's worth, refused
    assert new.event_clock.time >= old.event_clock.time
    ev = new.fire("hello", b"", 1.0)
    net.m["n0"].receive(wire.packet(ev), new_m.me.address, 1.1)
    old.pump(1.1)
    assert [e.name for e in old.events()][-1:] == ["hello"] and old.stats["events_too_old"] == 0
    # Positive control: the same member without the clock sync is too old for the cluster.
    stale = UserLayer(Membership(LAN, "n8", "10.0.0.8", 7946, random.Random(8), 0.0))
    ev = stale.fire("hello-again", b"", 1.0)
    net.m["n0"].receive(wire.packet(ev), ("10.0.0.8", 7946), 1.2)
    old.pump(1.2)
    assert old.events() == [] and old.stats["events_too_old"] == 1


def test_push_pull_from_an_older_member_without_user_state_still_decodes() -> None:
    import msgpack

    body = [False, 3, []]  # what a member before user events sends
    payload = bytes([wire.VERSION]) + msgpack.packb([int(wire.MessageType.PUSH_PULL), body])
    msg = wire.decode_frame_payload(payload)
    assert msg == wire.PushPull(False, 3, ())
    full = wire.PushPull(True, 3, (), 7, 8, (UserEvent(5, "x", b"y", False),))
    assert wire.decode_frame_payload(wire.frame(full)[4:]) == full


def test_filter_regexes_are_re2_linear_time_and_go_syntax() -> None:
    import time

    from murmur.gossip.userevents import regex_matches

    hostile = "(a+)+$"  # exponential for a backtracking engine on "aaa...b"
    t0 = time.process_time()
    assert regex_matches(hostile, "a" * 5000 + "b") is False
    assert time.process_time() - t0 < 1.0  # microseconds for RE2; a backtracking engine never returns
    assert regex_matches(hostile, "aaaa") is True  # positive control: the same pattern does match
    assert regex_matches("(?=web)", "web") is False  # lookahead is not Go syntax: matches nothing
    assert regex_matches("^web-[0-9]+$", "web-12") and not regex_matches("^web-[0-9]+$", "web-x")
