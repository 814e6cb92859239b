"""gossip/wire.py: the versioned msgpack codec, and the core's promise that no datagram or stream
frame from the network can raise out of Membership (bad input is counted and dropped)."""

from __future__ import annotations

import random
import struct

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from murmur.gossip import wire
from murmur.gossip.config import GossipConfig
from murmur.gossip.membership import LIVE, Membership, State
from murmur.gossip.wire import (
    MAX_INT,
    Ack,
    Alive,
    Dead,
    IndirectPing,
    MemberStateCode,
    Message,
    Nack,
    Ping,
    PushPull,
    PushState,
    Suspect,
    WireError,
)

# ---- strategies ----------------------------------------------------------------------------------
names = st.text(min_size=0, max_size=20)
# Node fields: often the member under test ("a") or one of the peers it knows, else anything.
targets = st.one_of(st.sampled_from(["a", "p0", "p1", "p2"]), names)
ints = st.one_of(st.sampled_from([0, 1, 2, MAX_INT - 1, MAX_INT]), st.integers(min_value=0, max_value=MAX_INT))
ports = st.integers(min_value=0, max_value=65535)
small = st.integers(min_value=0, max_value=255)
vsns = st.tuples(small, small, small, small, small, small)
tags = st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=4)

messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(Ping, ints, targets, names, names, ports),
    st.builds(IndirectPing, ints, targets, names, ports, st.booleans(), names, names, ports),
    st.builds(Ack, ints),
    st.builds(Nack, ints),
    st.builds(Suspect, ints, targets, targets),
    st.builds(Alive, ints, targets, names, ports, tags, vsns),
    st.builds(Dead, ints, targets, targets),
)
push_states = st.builds(PushState, names, names, ports, ints, st.sampled_from(list(MemberStateCode)), tags, vsns)
push_pulls = st.builds(PushPull, st.booleans(), ints, st.lists(push_states, max_size=5).map(tuple))


# ---- round trips ---------------------------------------------------------------------------------
@settings(deadline=None)
@given(st.lists(messages, min_size=0, max_size=20))
def test_packet_round_trip(msgs: list[Message]) -> None:
    decoded, unknown = wire.decode_packet(wire.packet(*msgs))
    assert decoded == msgs
    assert unknown == 0


@settings(deadline=None)
@given(st.one_of(messages, push_pulls))
def test_stream_frame_round_trip(msg: Message) -> None:
    framed = wire.frame(msg)
    assert wire.frame_length(framed[:4]) == len(framed) - 4
    assert wire.decode_frame_payload(framed[4:]) == msg


def test_unknown_message_types_are_skipped_and_counted() -> None:
    """A newer member's new message type must not spoil the rest of the packet."""
    future = msgpack.packb([200, [1, "x"]])
    data = wire.pack_packet([wire.encode_message(Ack(7)), future, wire.encode_message(Nack(8))])
    msgs, unknown = wire.decode_packet(data)
    assert msgs == [Ack(7), Nack(8)]
    assert unknown == 1


def test_extra_trailing_fields_are_ignored() -> None:
    """Decoders ignore fields a newer version appends to a body."""
    data = bytes([wire.VERSION]) + msgpack.packb([[int(wire.MessageType.SUSPECT), [3, "b", "a", "new-field"]]])
    assert wire.decode_packet(data) == ([Suspect(3, "b", "a")], 0)


@pytest.mark.parametrize("data, why", [
    (b"", "empty"),
    (bytes([wire.VERSION | wire.ENCRYPTED_FLAG]) + b"\x90", "encrypted"),
    (bytes([9]) + b"\x90", "version"),
    (bytes([wire.VERSION]) + b"\xc1", "undecodable"),
    (bytes([wire.VERSION]) + msgpack.packb({"a": 1}), "not a list"),
    (bytes([wire.VERSION]) + msgpack.packb([[2]]), "not [type, body]"),
    (bytes([wire.VERSION]) + msgpack.packb([[2, []]]), "missing fields"),
    (bytes([wire.VERSION]) + msgpack.packb([[2, [-1]]]), "integer"),
    (bytes([wire.VERSION]) + msgpack.packb([[2, [True]]]), "integer"),
    (bytes([wire.VERSION]) + msgpack.packb([[2, [2**64 - 1]]]), "integer"),
    (bytes([wire.VERSION]) + msgpack.packb([[0, [1, "t", "s", "127.0.0.1", 70000]]]), "port"),
    (bytes([wire.VERSION]) + msgpack.packb([[5, [1, "n", "a", 1, {"k": 1}, [1, 5, 2, 2, 5, 4]]]]), "tags"),
    (bytes([wire.VERSION]) + msgpack.packb([[5, [1, "n", "a", 1, {}, [1, 5]]]]), "vsn"),
    (bytes([wire.VERSION]) + msgpack.packb([[7, [True, 1, [["n", "a", 1, 1, 9, {}, [1, 5, 2, 2, 5, 4]]]]]]), "state"),
    (bytes([wire.VERSION]) + msgpack.packb([[1, 2]]) + b"\x00", "trailing bytes"),
])
def test_malformed_packets_raise_wire_error(data: bytes, why: str) -> None:
    with pytest.raises(WireError):
        wire.decode_packet(data)


def test_frame_limits() -> None:
    with pytest.raises(WireError):
        wire.frame_length(struct.pack("!I", wire.MAX_FRAME + 1))
    with pytest.raises(WireError):
        wire.frame_length(struct.pack("!I", 1))
    with pytest.raises(WireError):
        wire.decode_frame_payload(bytes([wire.VERSION]) + msgpack.packb([200, []]))  # unknown type on a stream
    with pytest.raises(WireError):
        wire.decode_frame_payload(b"\x07" + msgpack.packb([2, [1]]))


def test_decoded_numbers_leave_room_for_our_own_increment() -> None:
    """The largest incarnation we accept, plus one (a refutation), must still encode: otherwise a
    single hostile number would make every later packet of ours raise."""
    m = member("a")
    m.receive(wire.packet(Suspect(MAX_INT, "a", "evil")), ("10.0.0.9", 1), 1.0)  # we refute: MAX_INT + 1
    assert m.me.incarnation == MAX_INT + 1
    m.handle_stream(wire.frame(PushPull(False, MAX_INT, ()))[4:], ("10.0.0.9", 1), 1.0)  # Lamport witness
    assert m.clock.time == MAX_INT + 1
    m.join([("10.0.0.9", 1)], 1.0)  # encodes both numbers: no OverflowError
    assert_consistent(m)


# ---- hostile input never raises out of the core --------------------------------------------------
def member(name: str = "a", peers: int = 2) -> Membership:
    """A member that knows a few peers, one of them suspected, with a probe in flight."""
    m = Membership(GossipConfig.lan(), name, "10.0.0.1", 7946, random.Random(1), 0.0)
    for i in range(peers):
        m.receive(wire.packet(Alive(1, f"p{i}", f"10.0.1.{i}", 7946)), ("10.0.1.9", 7946), 0.0)
    m.receive(wire.packet(Suspect(1, "p0", "p1")), ("10.0.1.1", 7946), 0.0)
    m.handle_timer(m.next_probe)
    return m


def assert_consistent(m: Membership) -> None:
    m.handle_timer(m.next_deadline())
    for _addr, data in m.packets_to_send():
        assert len(data) <= m.config.udp_buffer_size
    m.streams_to_open()
    m.events()
    assert m.live_count() == sum(1 for x in m.members.values() if x.state in LIVE)
    assert m.me.state in (State.ALIVE, State.LEFT)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_random_bytes_never_raise(data: bytes) -> None:
    m = member()
    before = m.stats["bad_packets"]
    m.receive(data, ("10.9.9.9", 1), 1.0)
    m.receive(bytes([wire.VERSION]) + data, ("10.9.9.9", 1), 1.0)
    assert m.stats["packets_in"] >= 2
    assert m.stats["bad_packets"] - before <= 2
    m.handle_stream(data, ("10.9.9.9", 1), 1.0)
    assert_consistent(m)


def valid_packets() -> list[bytes]:
    return [
        wire.packet(Ping(1, "a", "p1", "10.0.1.1", 7946), Suspect(1, "a", "p1")),
        wire.packet(IndirectPing(2, "p1", "10.0.1.1", 7946, True, "p0", "10.0.1.0", 7946), Ack(1), Nack(1)),
        wire.packet(Alive(3, "p2", "10.0.1.2", 7946, {"role": "node"}), Dead(2, "p1", "p0"), Dead(5, "a", "a")),
    ]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(valid_packets()), st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=6),
       st.integers(0, 400))
def test_mutated_valid_packets_never_raise(data: bytes, flips: list[tuple[int, int]], cut: int) -> None:
    """Flip bytes of real packets and truncate them: whatever still decodes is acted on, the rest
    is counted in bad_packets; nothing raises, now or at the next timer."""
    buf = bytearray(data)
    for pos, value in flips:
        buf[pos % len(buf)] = value
    m = member()
    m.receive(bytes(buf[:max(1, cut)]), ("10.0.1.1", 7946), 1.0)
    m.receive(bytes(buf), ("10.0.1.1", 7946), 1.0)
    assert_consistent(m)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(messages, min_size=1, max_size=8))
def test_well_formed_hostile_messages_never_raise(msgs: list[Message]) -> None:
    """Valid encodings with hostile contents: our own name, huge incarnations, odd addresses."""
    m = member()
    m.receive(wire.packet(*msgs), ("10.0.1.1", 7946), 1.0)
    assert m.stats["bad_packets"] == 0
    assert_consistent(m)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(push_pulls, st.booleans())
def test_hostile_push_pull_never_raises(msg: PushPull, as_reply: bool) -> None:
    m = member()
    payload = wire.frame(msg)[4:]
    if as_reply:
        (token,) = m.join([("10.0.2.1", 7946)], 1.0)
        m.stream_result(token, payload, 1.0)
    else:
        assert m.handle_stream(payload, ("10.0.2.1", 7946), 1.0) is not None
    assert_consistent(m)


def test_bad_packets_are_counted() -> None:
    m = member()
    m.receive(b"\x01\xc1", ("10.9.9.9", 1), 1.0)
    m.receive(b"", ("10.9.9.9", 1), 1.0)
    m.receive(wire.packet(Ack(12345)), ("10.9.9.9", 1), 1.0)  # valid, merely stale
    assert m.stats["bad_packets"] == 2
    assert m.stats["stale_acks"] == 1
    assert m.handle_stream(b"\x01\xc1", ("10.9.9.9", 1), 1.0) is None
    assert m.handle_stream(wire.frame(Suspect(1, "p0", "x"))[4:], ("10.9.9.9", 1), 1.0) is None
    assert m.stats["bad_streams"] == 2


# ---- packet size ---------------------------------------------------------------------------------
def test_compound_packets_fit_the_udp_budget_with_many_queued_broadcasts() -> None:
    cfg = GossipConfig.lan()
    m = Membership(cfg, "a", "10.0.0.1", 7946, random.Random(3), 0.0)
    long_tags = {"k" + str(i): "v" * 20 for i in range(12)}
    for i in range(300):  # every new member's alive is queued for re-broadcast
        m.receive(wire.packet(Alive(1, f"member-with-a-long-name-{i:04d}", f"10.1.{i // 250}.{i % 250}", 7946,
                                    long_tags)), ("10.1.0.0", 7946), 0.0)
    assert len(m.broadcasts) > 100
    sizes: list[int] = []
    now = 0.0
    for _ in range(50):
        now = m.next_deadline()
        m.handle_timer(now)
        m.receive(wire.packet(Ping(99, "a", "x", "10.1.0.0", 7946)), ("10.1.0.0", 7946), now)  # acks piggyback too
        sizes += [len(d) for _, d in m.packets_to_send()]
    assert sizes and max(sizes) <= cfg.udp_buffer_size
    assert max(sizes) > cfg.udp_buffer_size - 200  # they are filled, not merely small


def test_oversized_tags_are_refused_at_the_source() -> None:
    m = Membership(GossipConfig.lan(), "a", "10.0.0.1", 7946, random.Random(3), 0.0)
    with pytest.raises(ValueError):
        m.update_tags({"big": "x" * 600}, 1.0)
    with pytest.raises(ValueError):
        Membership(GossipConfig.lan(), "b", "10.0.0.2", 7946, random.Random(3), 0.0, tags={"big": "x" * 600})
    m.update_tags({"small": "x" * 100}, 1.0)  # positive control
    assert m.me.incarnation == 2


def test_push_pull_built_from_the_table_is_byte_identical_and_decodes_back() -> None:
    """Membership._push_pull_frame skips the PushState objects, and the decoder builds the common
    row (no tags, current version) on a fast path: same bytes, same message, both ways."""
    from murmur.gossip.membership import Member

    m = Membership(GossipConfig.lan(), "a", "127.0.0.1", 7946, random.Random(1), 0.0, tags={"role": "web"})
    m.preload_shared([Member(f"n{i}", "127.0.0.2", 7000 + i, 1 + i % 3, State(i % 4), 0.0,
                             {"dc": "x"} if i % 5 == 0 else {}, (1, 5, 2, 2, 5, 4) if i % 7 else (1, 5, 2, 2, 5, 3),
                             shared=True) for i in range(40)])
    m.recent_user_events = lambda: (wire.UserEvent(3, "deploy", b"x", False),)
    for join in (True, False):
        fast = m._push_pull_frame(join)
        assert fast == wire.frame(m._push_pull_msg(join))
        assert wire.decode_frame_payload(fast[4:]) == m._push_pull_msg(join)
    bad = m._push_pull_frame(False)[4:].replace(b"\xa2n3", b"\x03\x03", 1)  # a name that is not a string
    with pytest.raises(wire.WireError):
        wire.decode_frame_payload(bad)
