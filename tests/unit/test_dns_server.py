"""agent/dns/server.py: `DNSServer.respond(data, udp)` (cache, hostile bytes, FORMERR, UDP limits,
rotation) with a minimal agent carrying a real config and a real StateStore."""

from __future__ import annotations

import dataclasses
import random
import socket
import struct
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from murmur.agent import config
from murmur.agent.dns.server import DNSServer
from murmur.agent.metrics import Metrics
from murmur.catalog import commands as cmds
from murmur.catalog.commands import CheckSpec, Register, ServiceSpec
from murmur.catalog.store import StateStore


@dataclass
class FakeAgent:
    """The fields DNSServer reads from the agent, nothing more."""

    cfg: Any
    rng: random.Random = field(default_factory=lambda: random.Random(1))
    store: StateStore = field(default_factory=StateStore)
    stats: dict[str, int] = field(default_factory=lambda: {"dns_dropped": 0, "dns_formerr": 0})
    metrics: Metrics = field(default_factory=Metrics)
    local: Any = field(default_factory=lambda: SimpleNamespace(node=SimpleNamespace(name="n0")))
    index: int = 0

    def apply(self, cmd: Register) -> None:
        self.index += 1
        assert self.store.apply(self.index, cmds.encode(cmd)) is True


DEV_CFG = config.load([], dev=True)


def make_agent(instances: int = 1, **overrides: Any) -> FakeAgent:
    cfg = config.load([], overrides=overrides, dev=True) if overrides else DEV_CFG
    agent = FakeAgent(cfg)
    for i in range(instances):
        agent.apply(Register(node=f"n{i}", address=f"10.0.0.{i + 1}", datacenter="dc1",
                             service=ServiceSpec(id=f"web{i}", name="web", port=8000 + i),
                             checks=(CheckSpec("serfHealth", "s", "passing"),)))
    agent.apply(Register(node="sick", address="10.9.9.9", datacenter="dc1",
                         service=ServiceSpec(id="websick", name="web", port=1),
                         checks=(CheckSpec("serfHealth", "s", "critical"),)))
    return agent


def query(name: str, rdtype: str = "A", qid: int = 1234, **kw: Any) -> bytes:
    q = dns.message.make_query(name, rdtype, **kw)
    q.id = qid
    return q.to_wire()


def parse(wire: bytes | None) -> dns.message.Message:
    assert wire is not None
    return dns.message.from_wire(wire)


def answers(wire: bytes | None) -> list[str]:
    """Answer records in wire order."""
    return [rd.to_text() for rrset in parse(wire).answer for rd in rrset]


HEALTHY10 = {f"10.0.0.{i}" for i in range(1, 11)}


# ---- cache ---------------------------------------------------------------------------------------
def test_cached_answer_equals_fresh_and_carries_the_query_id() -> None:
    agent = make_agent(instances=1)
    server = DNSServer(agent)
    first = server.respond(query("web.service.murmur", qid=1), udp=True)
    assert parse(first).id == 1 and answers(first) == ["10.0.0.1"]
    assert len(server.cache) == 1  # single-record answers are cached after one rendering
    cached = server.respond(query("web.service.murmur", qid=0xBEEF), udp=True)
    assert cached is not None and first is not None
    assert struct.unpack("!H", cached[:2])[0] == 0xBEEF
    assert cached[2:] == first[2:]
    fresh = DNSServer(make_agent(instances=1)).respond(query("web.service.murmur", qid=0xBEEF), udp=True)
    assert cached == fresh
    # UDP and TCP are cached apart (their limits differ)
    tcp = server.respond(query("web.service.murmur", qid=7), udp=False)
    assert parse(tcp).id == 7 and answers(tcp) == ["10.0.0.1"]
    assert len(server.cache) == 2


def test_negative_answers_are_cached_too() -> None:
    server = DNSServer(make_agent())
    a = server.respond(query("nope.service.murmur", qid=1), udp=True)
    b = server.respond(query("nope.service.murmur", qid=2), udp=True)
    assert parse(a).rcode() == dns.rcode.NXDOMAIN and parse(b).rcode() == dns.rcode.NXDOMAIN
    assert a is not None and b is not None and a[2:] == b[2:] and parse(b).id == 2


def test_cache_invalidated_when_the_store_index_moves() -> None:
    agent = make_agent(instances=1)
    server = DNSServer(agent)
    assert answers(server.respond(query("web.service.murmur"), udp=True)) == ["10.0.0.1"]
    assert answers(server.respond(query("web.service.murmur"), udp=True)) == ["10.0.0.1"]  # from cache
    agent.apply(Register(node="n0", address="10.0.0.77", datacenter="dc1"))
    assert answers(server.respond(query("web.service.murmur"), udp=True)) == ["10.0.0.77"]
    # the instance turning critical removes it at once
    agent.apply(Register(node="n0", address="10.0.0.77", datacenter="dc1",
                         checks=(CheckSpec("serfHealth", "s", "critical"),)))
    assert parse(server.respond(query("web.service.murmur"), udp=True)).rcode() == dns.rcode.NXDOMAIN


# ---- hostile input -------------------------------------------------------------------------------
@pytest.mark.parametrize("data", [b"", b"\x00", b"\x12\x34\x01\x00\x00\x01", b"\x00" * 11])
def test_short_packets_are_dropped_and_counted(data: bytes) -> None:
    agent = make_agent()
    server = DNSServer(agent)
    assert server.respond(data, udp=True) is None
    assert agent.stats == {"dns_dropped": 1, "dns_formerr": 0, "dns_catchall": 0}
    assert server.respond(query("web.service.murmur"), udp=True) is not None  # positive control
    assert agent.stats == {"dns_dropped": 1, "dns_formerr": 0, "dns_catchall": 0}


def test_truncated_question_is_dropped() -> None:
    agent = make_agent()
    server = DNSServer(agent)
    good = query("web.service.murmur")
    for cut in (13, 20, len(good) - 1):
        assert server.respond(good[:cut], udp=True) is None
    assert agent.stats["dns_dropped"] == 3 and agent.stats["dns_formerr"] == 0


def test_response_packets_are_dropped() -> None:
    agent = make_agent()
    server = DNSServer(agent)
    resp = server.respond(query("web.service.murmur"), udp=True)
    assert resp is not None
    assert server.respond(resp, udp=True) is None  # a response sent back at us: no reply loops
    assert agent.stats["dns_dropped"] == 1
    q = bytearray(query("web.service.murmur"))
    q[2] |= 0x80
    assert server.respond(bytes(q), udp=True) is None
    assert agent.stats["dns_dropped"] == 2


def _assert_formerr(reply: bytes | None, original: bytes) -> None:
    msg = parse(reply)
    assert msg.rcode() == dns.rcode.FORMERR
    assert msg.flags & dns.flags.QR
    assert msg.id == struct.unpack("!H", original[:2])[0]
    assert [(q.name.to_text(), q.rdtype) for q in msg.question] == [("web.service.murmur.", dns.rdatatype.A)]
    assert msg.answer == [] and msg.authority == []


def test_trailing_garbage_is_formerr_echoing_the_question() -> None:
    agent = make_agent()
    server = DNSServer(agent)
    good = query("web.service.murmur", qid=42)
    for bad in (good + b"junk", good + b"\x00"):
        _assert_formerr(server.respond(bad, udp=True), bad)
    assert agent.stats == {"dns_dropped": 0, "dns_formerr": 2, "dns_catchall": 0}


def test_bad_additional_section_is_formerr() -> None:
    agent = make_agent()
    server = DNSServer(agent)
    good = query("web.service.murmur", qid=43)
    claims_additional = good[:10] + struct.pack("!H", 1) + good[12:]  # ARCOUNT=1, nothing there
    claims_answer = good[:6] + struct.pack("!H", 2) + good[8:]  # ANCOUNT=2, nothing there
    bad_opt = query("web.service.murmur", qid=44, use_edns=0)[:-3] + b"\xff\xff\xff"  # OPT rdlen past the end
    for bad in (claims_additional, claims_answer, bad_opt):
        _assert_formerr(server.respond(bad, udp=True), bad)
    assert agent.stats == {"dns_dropped": 0, "dns_formerr": 3, "dns_catchall": 0}
    assert parse(server.respond(good, udp=True)).rcode() == dns.rcode.NOERROR  # positive control


@settings(max_examples=200)
@given(st.one_of(
    st.binary(max_size=80),
    st.tuples(st.integers(0, 60), st.integers(0, 255)).map(
        lambda t: _mutate(query("web.service.murmur", qid=9, use_edns=0), *t)),
    st.binary(max_size=20).map(lambda junk: query("web.service.murmur", qid=9) + junk),
))
def test_any_bytes_never_raise(data: bytes) -> None:
    agent = make_agent()
    server = DNSServer(agent)
    before = dict(agent.stats)
    reply = server.respond(data, udp=True)
    if reply is None:
        assert agent.stats["dns_dropped"] == before["dns_dropped"] + 1
    else:
        msg = dns.message.from_wire(reply)
        assert msg.flags & dns.flags.QR
        assert reply[:2] == data[:2]  # the query's ID
        assert len(reply) <= 512 or msg.edns >= 0
        assert agent.stats["dns_dropped"] == before["dns_dropped"]


def _mutate(wire: bytes, pos: int, value: int) -> bytes:
    pos %= len(wire)
    return wire[:pos] + bytes([value]) + wire[pos + 1:]


# ---- UDP limits ----------------------------------------------------------------------------------
def test_udp_without_edns_trims_to_udp_answer_limit() -> None:
    agent = make_agent(instances=10)
    server = DNSServer(agent)
    assert server.udp_answer_limit == 3
    got = answers(server.respond(query("web.service.murmur"), udp=True))
    assert len(got) == 3 and set(got) <= HEALTHY10
    assert not parse(server.respond(query("web.service.murmur"), udp=True)).flags & dns.flags.TC
    # EDNS: the advertised size decides, every healthy instance fits
    edns = answers(server.respond(query("web.service.murmur", use_edns=0, payload=4096), udp=True))
    assert set(edns) == HEALTHY10 and len(edns) == 10
    # TCP: complete
    assert set(answers(server.respond(query("web.service.murmur"), udp=False))) == HEALTHY10


def test_udp_trimmed_srv_keeps_matching_glue() -> None:
    agent = make_agent(instances=10)
    server = DNSServer(agent)
    msg = parse(server.respond(query("web.service.murmur", "SRV"), udp=True))
    targets = {rd.target for rrset in msg.answer for rd in rrset}
    assert len(targets) == 3
    assert {rrset.name for rrset in msg.additional} == targets
    full = parse(server.respond(query("web.service.murmur", "SRV"), udp=False))
    assert len(full.answer[0]) == 10 and len(full.additional) == 10


def test_enable_truncate_sets_tc_when_trimmed() -> None:
    agent = make_agent(instances=10, **{"dns_config.enable_truncate": True})
    server = DNSServer(agent)
    msg = parse(server.respond(query("web.service.murmur"), udp=True))
    assert msg.flags & dns.flags.TC and len(msg.answer[0]) == 3
    # positive control: an answer that fits is not marked
    small = make_agent(instances=2, **{"dns_config.enable_truncate": True})
    assert not parse(DNSServer(small).respond(query("web.service.murmur"), udp=True)).flags & dns.flags.TC


def test_udp_answer_limit_setting() -> None:
    agent = make_agent(instances=10, **{"dns_config.udp_answer_limit": 5})
    assert len(answers(DNSServer(agent).respond(query("web.service.murmur"), udp=True))) == 5


# ---- rotation ------------------------------------------------------------------------------------
def test_multi_record_answers_rotate_and_stay_correct() -> None:
    agent = make_agent(instances=10)
    server = DNSServer(agent)
    orders = [answers(server.respond(query("web.service.murmur", qid=i, use_edns=0, payload=4096), udp=True))
              for i in range(12)]
    assert all(sorted(o) == sorted(HEALTHY10) for o in orders)  # every answer is the whole healthy set
    assert len({tuple(o) for o in orders}) > 1  # but not always in the same order
    assert len({o[0] for o in orders}) > 1  # so the first record, which most clients use, moves


def test_trimmed_udp_answers_spread_over_instances() -> None:
    agent = make_agent(instances=10)
    server = DNSServer(agent)
    seen: set[str] = set()
    for i in range(12):
        got = answers(server.respond(query("web.service.murmur", qid=i), udp=True))
        assert len(got) == 3 and set(got) <= HEALTHY10 and len(set(got)) == 3
        seen |= set(got)
    assert len(seen) > 3


def test_trimmed_selection_is_deterministic_given_the_agent_rng() -> None:
    """Which instances a trimmed answer holds follows the agent's seeded rng. (The order of records
    inside an RRset on the wire does not: dnspython's Rdataset.to_wire shuffles with the global
    random module by default.)"""
    def run(seed: int) -> list[list[str]]:
        agent = make_agent(instances=10)
        agent.rng = random.Random(seed)
        server = DNSServer(agent)
        return [sorted(answers(server.respond(query("web.service.murmur", qid=i), udp=True))) for i in range(6)]

    assert run(5) == run(5)
    assert run(5) != run(6)


# ---- transports: the same answers over real UDP and TCP sockets ----------------------------------
async def test_serve_udp_and_tcp_on_loopback() -> None:
    agent = make_agent(instances=5)
    server = DNSServer(agent)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(server.serve, "127.0.0.1", 0)
            udp = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            await udp.connect(("127.0.0.1", port))
            await udp.send(b"\x00" * 5)  # garbage first: dropped, the loop goes on
            await udp.send(query("web.service.murmur", qid=77))
            reply = await udp.recv(65535)
            assert parse(reply).id == 77 and len(answers(reply)) == 3
            udp.close()

            stream = await trio.open_tcp_stream("127.0.0.1", port)
            for qid in (1, 2):  # two queries on one connection
                q = query("web.service.murmur", qid=qid)
                await stream.send_all(struct.pack("!H", len(q)) + q)
                buf = b""
                while len(buf) < 2 or len(buf) < 2 + struct.unpack("!H", buf[:2])[0]:
                    buf += await stream.receive_some(65536)
                msg = parse(buf[2:])
                assert msg.id == qid and len(answers(buf[2:])) == 5
            await stream.aclose()
            nursery.cancel_scope.cancel()
    assert agent.stats["dns_dropped"] == 1


# ---- a client agent's fast path: rendered answers tied to the slice they came from ---------------
async def test_client_fast_path_serves_while_the_slice_is_unchanged_and_current() -> None:
    from murmur.agent.dns.remote_cache import Entry

    agent = make_agent(instances=1, server="false")
    agent.remote = None  # type: ignore[attr-defined]  # never asked: the slice is already held
    server = DNSServer(agent)
    assert server.slices is not None
    now = trio.current_time()
    skey = ("service", "web")
    server.slices.entries[skey] = Entry(agent.store, 1, now, now, watched=True)
    q = query("web.service.murmur", qid=5)
    assert server.respond_cached_remote(q, True, now) is None  # a miss first
    first = await server.respond_remote(q, udp=True)
    assert isinstance(first, bytes) and answers(first) == ["10.0.0.1"]
    hit = server.respond_cached_remote(query("web.service.murmur", qid=6), True, now)
    assert hit is not None and parse(hit).id == 6 and hit[2:] == first[2:]
    # The watcher swaps in a new store (the catalog changed): the rendering is not used again.
    changed = make_agent(instances=0, server="false")
    changed.apply(Register(node="n0", address="10.7.7.7", datacenter="dc1",
                           service=ServiceSpec(id="web0", name="web", port=1)))
    server.slices.entries[skey].store = changed.store
    assert server.respond_cached_remote(q, True, now) is None
    fresh = await server.respond_remote(q, udp=True)
    assert isinstance(fresh, bytes) and answers(fresh) == ["10.7.7.7"]
    assert server.respond_cached_remote(q, True, now) is not None
    # A slice no longer current (its watcher stopped confirming it): a miss, not a stale hit.
    assert server.respond_cached_remote(q, True, now + 60) is None


async def test_client_slices_honour_allow_stale_and_max_stale() -> None:
    from murmur.agent.dns.remote_cache import SliceCache
    from murmur.agent.reads import ReadResult

    snapshot = StateStore().snapshot()

    class Remote:
        def __init__(self, contact_ms: int) -> None:
            self.contact_ms = contact_ms
            self.modes: list[str] = []

        async def read(self, name: str, args: dict[str, Any], mode: str = "default", index: int = 0,
                       wait: float = 0.0, budget: float = 0.0) -> ReadResult:
            self.modes.append(mode)
            return ReadResult(snapshot, 1, True, self.contact_ms if mode == "stale" else 0)

    fresh = Remote(contact_ms=50)
    await SliceCache(fresh, True, 5.0).get(("service", "web"))  # type: ignore[arg-type]
    assert fresh.modes == ["stale"]
    lagging = Remote(contact_ms=60_000)
    cache = SliceCache(lagging, True, 5.0)  # type: ignore[arg-type]
    await cache.get(("service", "web"))
    assert lagging.modes == ["stale", "default"] and cache.stats["dns_slice_too_stale"] == 1
    strict = Remote(contact_ms=0)
    await SliceCache(strict, False, 5.0).get(("service", "web"))  # type: ignore[arg-type]
    assert strict.modes == ["default"]


def test_a_server_answers_refused_until_it_has_caught_up_then_from_its_store() -> None:
    # REFUSED (not SERVFAIL): a resolver with several upstreams asks another one on REFUSED,
    # where dnsmasq hands a SERVFAIL straight to the asker.
    agent = make_agent()
    agent.cfg = dataclasses.replace(agent.cfg, dev=False)
    log_ = SimpleNamespace(applied=0, committed=5)
    driver = SimpleNamespace(leader=0, node=SimpleNamespace(raft=SimpleNamespace(log=log_)))
    agent.server = SimpleNamespace(driver=driver)  # type: ignore[attr-defined]
    server = DNSServer(agent)
    assert parse(server.respond(query("web.service.murmur"), udp=True)).rcode() == dns.rcode.REFUSED  # no leader
    driver.leader = 7
    assert parse(server.respond(query("web.service.murmur"), udp=True)).rcode() == dns.rcode.REFUSED  # behind
    assert server.stats["dns_not_caught_up"] == 2
    log_.applied = 5
    assert answers(server.respond(query("web.service.murmur"), udp=True))  # caught up: the catalog answers
    driver.leader = 0  # a later loss of the leader: still answers (stale, as Consul)
    assert answers(server.respond(query("web.service.murmur"), udp=True))
