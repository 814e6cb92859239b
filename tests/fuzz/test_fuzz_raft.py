"""Fuzzing the Raft decoders (messages, log entries, hard state, conf changes), the Raft transport
that decodes frames off the server port (Raft frames, snapshot streams), and the Raft core behind it.

Rules: the codec returns a value or raises CodecError (ConfChange.decode: ValueError); the
transport drops a connection at its first bad frame and delivers only what decoded; the core
never raises on a decoded message, and one it refuses (step() is False) leaves its state exactly
as it was.
"""

from __future__ import annotations

import math
import random
import struct
import zlib
from typing import Any

import msgpack
import trio
from hypothesis import strategies as st
from murmur.agent.drivers.raft_transport import TCPTransport
from murmur.agent.rpc.mux import FramedStream
from murmur.raft import codec
from murmur.raft.config import RaftConfig
from murmur.raft.messages import (
    ConfChange,
    ConfChangeType,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    Snapshot,
    SnapshotMeta,
)
from murmur.raft.rawnode import RawNode

from .fuzzing import EXAMPLE_TIMEOUT, byte_mutations, fuzz, mutated, packb, values

CC = ConfChange(ConfChangeType.ADD_VOTER, 4, (1, 2, 3, 4)).encode()
ENTRIES = (Entry(2, 4, EntryType.NORMAL, b"x"), Entry(2, 5, EntryType.CONF_CHANGE, CC), Entry(2, 6, EntryType.NOOP))
VALID = [
    Message(MessageType.APP, to=2, frm=1, term=2, log_term=2, index=3, entries=ENTRIES, commit=4),
    Message(MessageType.HEARTBEAT, to=2, frm=1, term=2, commit=3),
    Message(MessageType.VOTE, to=2, frm=3, term=3, log_term=2, index=3),
    Message(MessageType.PRE_VOTE_RESP, to=2, frm=3, term=3, reject=True),
    Message(MessageType.APP_RESP, to=2, frm=1, term=2, index=3, reject=True, reject_hint=2),
    Message(MessageType.READ_INDEX_RESP, to=2, frm=1, term=2, index=3, context=b"ctx"),
    Message(MessageType.SNAP, to=2, frm=1, term=2,
            snapshot=Snapshot(SnapshotMeta(9, 2, (1, 2, 3), (5,)), b"state")),
    Message(MessageType.TIMEOUT_NOW, to=2, frm=1, term=2),
]
ENCODED = [codec.encode_message(m) for m in VALID]
STRUCTS = [msgpack.unpackb(e[1:], raw=False) for e in ENCODED]

raft_frames = st.one_of(
    st.binary(max_size=150),
    st.binary(max_size=100).map(lambda b: bytes([codec.VERSION]) + b),
    values.map(lambda v: bytes([codec.VERSION]) + bytes(msgpack.packb(v))),
    st.sampled_from(STRUCTS).flatmap(mutated).map(lambda v: bytes([codec.VERSION]) + bytes(msgpack.packb(v))),
    st.sampled_from(ENCODED).flatmap(byte_mutations),
)


def decoded(data: bytes) -> Message | None:
    try:
        return codec.decode_message(data)
    except codec.CodecError:
        return None


@fuzz(raft_frames)
def test_fuzz_raft_message_decoder(data: bytes) -> None:
    m = decoded(data)
    if m is not None:
        assert codec.decode_message(codec.encode_message(m)) == m  # what decodes round-trips


ENTRY = codec.encode_entry(ENTRIES[1])


@fuzz(st.one_of(st.binary(max_size=80), st.just(ENTRY).flatmap(byte_mutations),
                st.just(msgpack.unpackb(ENTRY[1:])).flatmap(mutated).map(lambda v: b"\x01" + bytes(msgpack.packb(v))),
                st.just(codec.encode_hard_state(HardState(3, 1, 7))).flatmap(byte_mutations),
                values.map(lambda v: bytes(msgpack.packb(v)))))
def test_fuzz_raft_entry_and_hard_state_decoders(data: bytes) -> None:
    try:
        e = codec.decode_entry(data)
        assert codec.decode_entry(codec.encode_entry(e)) == e
    except codec.CodecError:
        pass
    try:
        h = codec.decode_hard_state(data)
        assert codec.decode_hard_state(codec.encode_hard_state(h)) == h
    except codec.CodecError:
        pass


@fuzz(st.one_of(st.binary(max_size=40), st.just(CC).flatmap(byte_mutations),
                st.text(alphabet="0123456789, adremove_vtlnAR-", max_size=30).map(str.encode)))
def test_fuzz_raft_conf_change_decoder(data: bytes) -> None:
    try:
        cc = ConfChange.decode(data)
    except ValueError:
        return
    assert ConfChange.decode(cc.encode()) == cc


def follower() -> RawNode:
    """Node 2 of {1, 2, 3}: term 2, entries 1..3 (the last two of term 2), 2 committed, leader 1."""
    log = [Entry(1, 1), Entry(2, 2), Entry(2, 3, EntryType.NORMAL, b"a")]
    n = RawNode(RaftConfig(id=2, election_tick=10, heartbeat_tick=1), (1, 2, 3), random.Random(2),
                HardState(2, 1, 2), log, applied=2)
    n.step(Message(MessageType.HEARTBEAT, to=2, frm=1, term=2, commit=2))
    if n.has_ready():
        n.advance(n.ready())
    return n


def core_state(n: RawNode) -> Any:
    r = n.raft
    return (n.status(), r.hard_state(), r.soft_state(), list(r.log.entries), len(r.msgs), len(r.read_states),
            r.log.pending_snapshot)


@fuzz(st.lists(raft_frames, min_size=1, max_size=3))
def test_fuzz_raft_core_refuses_without_change(frames: list[bytes]) -> None:
    n = follower()
    for data in frames:
        m = decoded(data)
        before = core_state(n)
        if m is None:
            continue  # the transport drops it: nothing reaches the core (next test)
        if not n.step(m):
            assert core_state(n) == before, m
        if n.has_ready():
            n.advance(n.ready())


class _Bytes(trio.abc.ReceiveStream):
    def __init__(self, data: bytes) -> None:
        self.data = data

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        out, self.data = self.data[:7], self.data[7:]  # small reads: frames arrive split
        return out

    async def aclose(self) -> None:
        pass


@fuzz(st.tuples(st.lists(raft_frames, min_size=1, max_size=4), st.binary(max_size=12)))
def test_fuzz_raft_transport_delivers_only_what_decodes(example: tuple[list[bytes], bytes]) -> None:
    frames, tail = example
    stream = b"".join(struct.pack("!I", len(f)) + f for f in frames) + tail
    expected: list[Message] = []
    for f in frames:
        m = decoded(f)
        if m is None:
            break
        expected.append(m)
    got: list[Message] = []
    transport = TCPTransport(got.append)

    async def main() -> None:
        with trio.fail_after(EXAMPLE_TIMEOUT):
            await transport.handle_incoming(FramedStream(_Bytes(stream)), ("127.0.0.1", 1))  # type: ignore[arg-type]

    trio.run(main)
    assert got == expected


class _Duplex(_Bytes):
    """A snapshot stream: the frames to read, and what the receiver writes back (acks, the verdict)."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.out = b""

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.out += bytes(data)


SNAP_BODY = b"catalog state " * 3
SNAP_MSG = codec.encode_message(Message(MessageType.SNAP, to=2, frm=1, term=3,
                                        snapshot=Snapshot(SnapshotMeta(9, 2, (1, 2, 3)), b"")))
SNAP_HEADER = {"v": 1, "m": SNAP_MSG, "n": len(SNAP_BODY), "c": zlib.crc32(SNAP_BODY), "k": 16}
SNAP_CHUNKS = [{"s": i, "d": SNAP_BODY[i * 16:(i + 1) * 16]} for i in range(3)]


_sizes = st.one_of(st.integers(-5, 1 << 40), st.sampled_from([math.inf, -math.inf, math.nan, 1.5, "12", None]), values)
snap_headers = st.one_of(
    st.just(SNAP_HEADER), st.just(SNAP_HEADER).flatmap(mutated), values,
    st.tuples(_sizes, _sizes, _sizes).map(lambda t: {**SNAP_HEADER, "n": t[0], "c": t[1], "k": t[2]}))


@fuzz(st.tuples(snap_headers,
                st.lists(st.one_of(st.sampled_from(SNAP_CHUNKS), st.sampled_from(SNAP_CHUNKS).flatmap(mutated), values),
                         max_size=4),
                st.one_of(st.just(b""), st.binary(max_size=12))))
def test_fuzz_raft_snapshot_stream(example: tuple[Any, list[Any], bytes]) -> None:
    """The receiving end of a snapshot transfer (first byte 0x03): it delivers a snapshot whose
    bytes match the header's size and checksum, or refuses; nothing raises out of it."""
    header, chunks, tail = example
    frames = [packb(header), *(packb(c) for c in chunks)]
    stream = _Duplex(b"".join(struct.pack("!I", len(f)) + f for f in frames) + tail)
    got: list[Message] = []
    transport = TCPTransport(got.append)

    async def main() -> None:
        with trio.fail_after(EXAMPLE_TIMEOUT):
            await transport.handle_snapshot(FramedStream(stream), ("127.0.0.1", 1))  # type: ignore[arg-type]

    trio.run(main)
    for m in got:
        assert m.type == MessageType.SNAP and m.snapshot is not None
        assert isinstance(header, dict) and zlib.crc32(m.snapshot.data) == header["c"] and len(m.snapshot.data) == header["n"]
