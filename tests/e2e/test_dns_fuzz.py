"""Fuzzing the DNS front end of a real agent with hypothesis, over UDP and TCP.

Each example is a batch of packets: malformed (random bytes), truncated valid queries, oversized
ones (a valid query plus up to ~60 KB of trailing garbage), compression loops (pointers to
themselves or each other, in the question or in later sections), other opcodes, bit-flipped
valid queries and junk sections after a valid question, interleaved with valid queries whose
answers were recorded before fuzzing started. The rules:

- a valid query always gets its correct answer (same rcode, same records);
- a packet that is not a response (QR clear) and whose header and first question parse (checked
  by this file's own small parser) always gets a reply: FORMERR or NOTIMP when the rest of the
  packet does not parse, an ordinary answer when all of it does; never silence;
- the agent's `dns_catchall` counter (exceptions outside the planned paths) stays 0.

Both a dev agent and a client agent (joined to a dev agent; it answers from fetched catalog
slices, the benchmark's setup) are fuzzed. The CI run is a smoke (MURMUR_DNS_FUZZ_EXAMPLES,
default 60 batches per agent). `make fuzz-dns` (part of
`make test-full`) runs batches for MURMUR_DNS_FUZZ_SECONDS (600 there).
"""

from __future__ import annotations

import json
import os
import random
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import dns.exception
import dns.message
import dns.name
import dns.rcode
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.procs import AgentProc, wait_for

pytestmark = pytest.mark.e2e

EXAMPLES = int(os.environ.get("MURMUR_DNS_FUZZ_EXAMPLES", "60"))
SECONDS = float(os.environ.get("MURMUR_DNS_FUZZ_SECONDS", "0"))
UDP_ANSWER_LIMIT = 3  # the default
REPLY_TIMEOUT = 5.0  # seconds; generous (10x) for a loaded box

VALID = [("web.service.murmur", "A"), ("web.service.murmur", "SRV"), ("_web._tcp.service.murmur", "SRV"),
         ("fuzz.node.murmur", "TXT"), ("nothing.murmur", "TXT"), ("murmur", "NS"), ("1.0.0.127.in-addr.arpa", "PTR"),
         ("7f000001.addr.dc1.murmur", "A"), ("web.service.murmur", "AAAA"), ("db.service.murmur", "A")]


def header_and_question_parse(data: bytes) -> bool:
    """Our own reading of the rule: a query (QR clear) with qdcount >= 1 whose first name is a
    valid wire name and whose type and class fit in the packet."""
    if len(data) < 12:
        return False
    flags, qdcount = struct.unpack("!HH", data[2:6])
    if flags & 0x8000 or qdcount < 1:
        return False
    try:
        _, used = dns.name.from_wire(data, 12)
    except (dns.exception.DNSException, IndexError, ValueError):
        return False
    return 12 + used + 4 <= len(data)


def fully_parses(data: bytes) -> bool:
    try:
        dns.message.from_wire(data)
    except Exception:  # noqa: BLE001 - anything dnspython raises means "does not parse"
        return False
    return True


def signature(msg: dns.message.Message) -> tuple[int, list[str]]:
    """rcode and answer records (SOA serials are the clock: VALID asks for no SOA in the answer)."""
    return msg.rcode(), sorted(f"{r.name} {r.rdtype} {rd}" for r in msg.answer for rd in r)


class Client:
    def __init__(self, agent: AgentProc) -> None:
        self.agent = agent
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.connect(("127.0.0.1", agent.dns_port))
        self.sock.settimeout(REPLY_TIMEOUT)
        self.expected: dict[tuple[str, str], tuple[int, list[str]]] = {}

    def udp(self, data: bytes, wait: bool) -> bytes | None:
        """Send; with `wait` return the reply carrying this packet's ID (None after the timeout);
        without, give the agent a short moment and drain whatever came back."""
        self.sock.send(data)
        if not wait:
            self.drain(0.002)
            return None
        qid = data[:2]
        deadline = time.monotonic() + REPLY_TIMEOUT
        while time.monotonic() < deadline:
            try:
                reply = self.sock.recv(65535)
            except TimeoutError:
                return None
            if reply[:2] == qid:
                return reply
        return None

    def drain(self, wait: float) -> None:
        self.sock.settimeout(wait)
        try:
            for _ in range(1000):
                self.sock.recv(65535)
        except (TimeoutError, BlockingIOError):
            pass
        finally:
            self.sock.settimeout(REPLY_TIMEOUT)

    def tcp(self, data: bytes) -> bytes | None:
        with socket.create_connection(("127.0.0.1", self.agent.dns_port), timeout=REPLY_TIMEOUT) as s:
            s.sendall(struct.pack("!H", len(data)) + data)
            buf = b""
            try:
                while len(buf) < 2 or len(buf) < 2 + struct.unpack("!H", buf[:2])[0]:
                    chunk = s.recv(65536)
                    if not chunk:
                        return None
                    buf += chunk
            except TimeoutError:
                return None
            return buf[2:2 + struct.unpack("!H", buf[:2])[0]]

    def check_valid(self, name: str, rdtype: str, qid: int) -> None:
        q = dns.message.make_query(name, rdtype)
        q.id = qid
        reply = self.udp(q.to_wire(), wait=True)
        assert reply is not None, f"no answer to a valid query {name} {rdtype}"
        rcode, records = signature(dns.message.from_wire(reply))
        want_rcode, everything = self.expected[(name, rdtype)]
        # Over UDP without EDNS, udp_answer_limit (3) instances of the full set, any of them.
        assert rcode == want_rcode and set(records) <= set(everything), (name, rdtype, records)
        assert len(records) == min(len(everything), UDP_ANSWER_LIMIT), (name, rdtype, records)

    def check_packet(self, data: bytes, tcp: bool) -> None:
        must_reply = header_and_question_parse(data)
        if tcp:
            reply = self.tcp(data)
        else:
            reply = self.udp(data, wait=must_reply)
            if not must_reply:
                return
        if not must_reply:
            return
        assert reply is not None, f"silence for a packet whose header and question parse: {data[:64].hex()}"
        rcode = reply[3] & 0x0F
        if not fully_parses(data):
            assert rcode in (dns.rcode.FORMERR, dns.rcode.NOTIMP), (rcode, data[:64].hex())


# ---- packet strategies --------------------------------------------------------------------------
def wire(name: str, rdtype: str, qid: int = 0) -> bytes:
    q = dns.message.make_query(name, rdtype)
    q.id = qid
    return q.to_wire()


ids = st.integers(0, 0xFFFF)
valid_q = st.builds(lambda nt, qid: wire(nt[0], nt[1], qid), st.sampled_from(VALID), ids)
header = st.builds(lambda qid, flags, counts: struct.pack("!HH", qid, flags) + struct.pack("!HHHH", *counts),
                   ids, st.integers(0, 0xFFFF) | st.sampled_from([0x0100, 0x0000, 0x2800, 0x1000]),
                   st.tuples(*[st.integers(0, 3) | st.integers(0, 0xFFFF)] * 4))


@st.composite
def truncated(draw: st.DrawFn) -> bytes:
    q = draw(valid_q)
    return q[: draw(st.integers(0, len(q) - 1))]


@st.composite
def oversized(draw: st.DrawFn) -> bytes:
    q = draw(valid_q)
    size = draw(st.integers(1, 60_000))
    return q + random.Random(draw(st.integers(0, 2**32))).randbytes(size)


@st.composite
def compression_loop(draw: st.DrawFn) -> bytes:
    qid = draw(ids)
    kind = draw(st.sampled_from(["self", "pair", "forward", "answer-loop", "deep"]))
    if kind == "self":  # the question name points at itself
        return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + b"\xc0\x0c" + b"\x00\x01\x00\x01"
    if kind == "pair":  # a label then a pointer back to its start
        return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + b"\x01a\xc0\x0c" + b"\x00\x01\x00\x01"
    if kind == "forward":  # a pointer past the end
        return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + b"\xc0\xff" + b"\x00\x01\x00\x01"
    if kind == "deep":  # a long chain of pointers, each to the previous
        body = b"\x00"
        for i in range(draw(st.integers(1, 200))):
            body += struct.pack("!H", 0xC000 | (12 + len(body) - 2 if i else 12))
        return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + body + b"\x00\x01\x00\x01"
    # a good question, then an answer record whose owner name loops
    q = wire("web.service.murmur", "A", qid)
    q = q[:6] + b"\x00\x01" + q[8:]
    off = len(q)
    rr = struct.pack("!H", 0xC000 | off) + struct.pack("!HHIH", 1, 1, 0, 4) + b"\x7f\x00\x00\x01"
    return q + rr


@st.composite
def junk_after_question(draw: st.DrawFn) -> bytes:
    q = draw(valid_q)
    counts = draw(st.tuples(st.integers(0, 5), st.integers(0, 5), st.integers(0, 5)))
    return q[:6] + struct.pack("!HHH", *counts) + q[12:] + draw(st.binary(max_size=64))


@st.composite
def other_opcode(draw: st.DrawFn) -> bytes:
    q = bytearray(draw(valid_q))
    q[2] = (q[2] & 0x87) | (draw(st.integers(1, 15)) << 3)
    return bytes(q) + draw(st.binary(max_size=16))


@st.composite
def bitflip(draw: st.DrawFn) -> bytes:
    q = bytearray(draw(valid_q))
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(q) - 1))
        q[i] ^= 1 << draw(st.integers(0, 7))
    return bytes(q)


hostile = st.one_of(st.binary(max_size=600), st.builds(lambda h, b: h + b, header, st.binary(max_size=300)),
                    truncated(), oversized(), compression_loop(), junk_after_question(), other_opcode(),
                    bitflip())
batch = st.lists(st.tuples(hostile, st.booleans(), st.sampled_from(VALID)), min_size=1, max_size=8)


@pytest.fixture(scope="module", params=["dev", "client"])
def agent(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProc]:
    """A dev agent (answers from its own catalog), and a client agent joined to one (answers from
    catalog slices it fetches from the server, with its own fast path): the bench's setup."""
    tmp: Path = tmp_path_factory.mktemp(f"fuzz-{request.param}")
    conf = tmp / "conf"
    conf.mkdir()
    (conf / "a.json").write_text(json.dumps({
        "node_meta": {"rack": "r1"},
        "services": [{"ID": f"web{i}", "Name": "web", "Port": 80 + i, "Address": f"127.0.2.{i + 1}"}
                     for i in range(5)]}))
    server = AgentProc(tmp, [conf], node="fuzz").start()
    if request.param == "dev":
        yield server
        server.stop()
        return
    empty = tmp / "client-conf"
    empty.mkdir()
    client = AgentProc(tmp, [empty], ["--join", f"127.0.0.1:{server.serf_port}"], node="fuzzc", dev=False)
    # The services live on the server's node; the client answers for them through slices.
    try:
        client.start()
        yield client
    finally:
        client.stop()
        server.stop()


def test_fuzz_interleaved_with_valid_queries(agent: AgentProc) -> None:
    client = Client(agent)
    wait_for(lambda: client.udp(wire("web.service.murmur", "A", 1), wait=True) is not None, 10, what="DNS up")
    for name, rdtype in VALID:  # the truth, before any fuzzing: over TCP, so untrimmed
        reply = client.tcp(wire(name, rdtype, 7))
        assert reply is not None
        client.expected[(name, rdtype)] = signature(dns.message.from_wire(reply))
    assert client.expected[("web.service.murmur", "A")][0] == dns.rcode.NOERROR  # positive controls
    assert len(client.expected[("web.service.murmur", "A")][1]) == 5
    counter = iter(range(1, 10**9))

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])
    @given(batch)
    def run(packets: list[tuple[bytes, bool, tuple[str, str]]]) -> None:
        for data, over_tcp, (name, rdtype) in packets:
            client.check_packet(data, tcp=over_tcp and len(data) <= 65535)
            client.check_valid(name, rdtype, next(counter) & 0xFFFF)

    end = time.monotonic() + SECONDS
    rounds = 0
    while True:
        run()
        rounds += 1
        if time.monotonic() >= end:
            break
    assert agent.proc is not None and agent.proc.poll() is None, "the agent died"
    stats = httpx.get(agent.url + "/v1/agent/self", timeout=5).json()["Stats"]["dns"]
    assert int(stats["dns_catchall"]) == 0, "exceptions reached the DNS catch-all (see the agent log)"
    # Positive controls: the hostile packets did reach both planned paths.
    assert int(stats["dns_formerr"]) > 0 and int(stats["dns_dropped"]) > 0, stats
    print(f"dns fuzz: {rounds} rounds of {EXAMPLES} batches")
