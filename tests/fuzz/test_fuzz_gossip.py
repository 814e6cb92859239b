"""Fuzzing the gossip decoders (the packet after decryption, stream frames, the sealed envelope)
and the gossip core (Membership) behind them.

Rules: `wire.decode_packet` / `decode_frame_payload` return messages or raise WireError;
`Keyring.open` returns plaintext or raises SealError; the core (and the user-event layer above
it, which runs queries' tag regexes) never raises on any datagram or frame, and one it cannot
decode leaves its state exactly as it was (nothing learnt, nothing queued to send). The agent's
envelopes inside user events and queries (Consul events, keyring answers) decode or raise
ValueError / report themselves undecodable.
"""

from __future__ import annotations

import random
from typing import Any

import msgpack
from hypothesis import strategies as st
from murmur.agent import keyring_ops
from murmur.agent.events import ConsulEvent
from murmur.gossip import keyring, wire
from murmur.gossip.config import GossipConfig
from murmur.gossip.membership import Membership
from murmur.gossip.userevents import UserLayer
from murmur.gossip.wire import (
    Ack,
    Alive,
    Dead,
    IndirectPing,
    MemberStateCode,
    Nack,
    Ping,
    PushPull,
    PushState,
    Query,
    QueryResponse,
    Relay,
    Suspect,
    UserEvent,
    WireError,
)

from .fuzzing import byte_mutations, fuzz, mutated, values

RESP = QueryResponse(3, 9, "p1", False, b"out")
VALID = [
    Ping(1, "a", "p1", "10.0.1.1", 7946), IndirectPing(2, "p1", "10.0.1.1", 7946, True, "p0", "10.0.1.0", 7946),
    Ack(1), Nack(1), Suspect(1, "p0", "p1"), Alive(3, "p2", "10.0.1.2", 7946, {"role": "node"}),
    Dead(2, "p1", "p0"), Dead(5, "a", "a"), UserEvent(4, "deploy", b"v1", True),
    Query(5, 77, "ping", b"", "p1", "10.0.1.1", 7946, ("a",), (("role", "n.*"),), True, 1, 500), RESP,
    Relay("10.0.1.1", 7946, RESP),
    PushPull(True, 7, (PushState("p3", "10.0.1.3", 7946, 2, MemberStateCode.ALIVE, {}, wire.COMMON_VSN),),
             2, 1, (UserEvent(1, "e", b"", False),)),
]
STRUCTS = [msgpack.unpackb(wire.encode_message(m), raw=False) for m in VALID]

# A datagram's payload (after the version byte): a msgpack array of [type, body] messages.
structured = st.lists(st.sampled_from(STRUCTS).flatmap(mutated), min_size=1, max_size=4).map(
    lambda msgs: bytes([wire.VERSION]) + bytes(msgpack.packb(msgs)))
datagrams = st.one_of(
    st.binary(max_size=200),
    st.binary(max_size=120).map(lambda b: bytes([wire.VERSION]) + b),
    values.map(lambda v: bytes([wire.VERSION]) + bytes(msgpack.packb(v))),
    structured,
    st.lists(st.sampled_from(VALID), min_size=1, max_size=3).map(lambda ms: wire.packet(*ms)).flatmap(byte_mutations),
)
frames = st.one_of(st.binary(max_size=200),
                   st.sampled_from(STRUCTS).flatmap(mutated).map(lambda v: bytes([wire.VERSION]) + bytes(msgpack.packb(v))),
                   st.sampled_from(VALID).map(lambda m: wire.frame(m)[4:]).flatmap(byte_mutations))


def member() -> Membership:
    """A member that knows a few peers, one suspected, with a probe in flight."""
    m = Membership(GossipConfig.lan(), "a", "10.0.0.1", 7946, random.Random(1), 0.0)
    for i in range(3):
        m.receive(wire.packet(Alive(1, f"p{i}", f"10.0.1.{i}", 7946)), ("10.0.1.9", 7946), 0.0)
    m.receive(wire.packet(Suspect(1, "p0", "p1")), ("10.0.1.1", 7946), 0.0)
    m.handle_timer(m.next_probe)
    m.packets_to_send()
    m.events()
    return m


def state(m: Membership) -> Any:
    """Everything a message could change: member records, clocks, suspicions, queues."""
    return ({n: (x.addr, x.port, x.incarnation, x.state, dict(x.tags), x.vsn) for n, x in m.members.items()},
            m.clock.time, m.event_clock.time, m.query_clock.time, sorted(m.suspicions), len(m.broadcasts),
            list(m._out), list(m._events), list(m._user_in), sorted(m.relays), sorted(m.streams), m.seq)


def decodes(data: bytes) -> bool:
    try:
        wire.decode_packet(data)
    except WireError:
        return False
    return True


@fuzz(datagrams)
def test_fuzz_gossip_packet_decoder(data: bytes) -> None:
    try:
        msgs, unknown = wire.decode_packet(data)
    except WireError:
        return
    assert unknown >= 0
    for msg in msgs:  # whatever decodes re-encodes (the core may relay it)
        wire.encode_message(msg)


@fuzz(frames)
def test_fuzz_gossip_stream_frame_decoder(payload: bytes) -> None:
    try:
        wire.frame_length(payload[:4].ljust(4, b"\0"))
    except WireError:
        pass
    try:
        msg = wire.decode_frame_payload(payload)
    except WireError:
        return
    wire.frame(msg)


RING = keyring.Keyring([bytes(range(32))], label="lab")
SEALED = RING.seal(wire.packet(Ping(1, "a", "p1", "10.0.1.1", 7946)), bytes(24))


@fuzz(st.one_of(st.binary(max_size=120), st.just(SEALED).flatmap(byte_mutations),
                st.binary(max_size=80).map(lambda b: SEALED[:25] + b)))
def test_fuzz_gossip_sealed_envelope(data: bytes) -> None:
    try:
        plain = RING.open(data)
    except keyring.SealError:
        return
    assert data == SEALED and plain  # only the untouched packet opens (the MAC covers every byte)


@fuzz(st.tuples(datagrams, frames))
def test_fuzz_gossip_core_rejects_malformed_input_without_change(example: tuple[bytes, bytes]) -> None:
    data, payload = example
    m = member()
    layer = UserLayer(m)
    before = state(m)
    m.receive(data, ("10.0.1.1", 7946), 1.0)  # never raises
    if not decodes(data):
        assert state(m) == before
    layer.pump(1.0)  # user events, queries (tag filters are regexes from the wire), responses
    layer.events()
    layer.queries()
    before = state(m)
    try:
        wire.decode_frame_payload(payload)
        ok = True
    except WireError:
        ok = False
    reply = m.handle_stream(payload, ("10.0.1.1", 7946), 1.0)
    if not ok:
        assert reply is None and state(m) == before
    m.handle_timer(m.next_deadline())  # and the member still works afterwards
    m.packets_to_send()


EVENT = ConsulEvent("6a2c6f5e-0000-4000-8000-000000000001", "deploy", b"v1", "web.*", "api", "v[0-9]+").encode()


@fuzz(st.one_of(st.binary(max_size=80), st.just(EVENT).flatmap(byte_mutations),
                st.just(msgpack.unpackb(EVENT)).flatmap(mutated).map(lambda v: bytes(msgpack.packb(v))),
                values.map(lambda v: bytes(msgpack.packb(v)))))
def test_fuzz_agent_user_event_and_keyring_envelopes(data: bytes) -> None:
    try:
        ev = ConsulEvent.decode("deploy", data, 3)
        assert ConsulEvent.decode("deploy", ev.encode(), 3) == ev
    except ValueError:
        pass
    answer = keyring_ops.decode_answer(data)
    assert isinstance(answer, dict) and isinstance(answer.get("ok"), bool)
