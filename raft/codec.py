"""Raft messages and log entries as bytes (pure): msgpack arrays behind a version byte.

Decoding validates every field's type and range and raises CodecError for anything else, so
a corrupt or hostile frame is dropped by the transport instead of reaching the state machine.
"""

from __future__ import annotations

from typing import Any

import msgpack

from .messages import Entry, EntryType, HardState, Message, MessageType, Snapshot, SnapshotMeta

VERSION = 1


class CodecError(ValueError):
    pass


def _entry_list(e: Entry) -> list[Any]:
    return [e.term, e.index, int(e.type), e.data]


def _entry_from(v: Any) -> Entry:
    if not (isinstance(v, list) and len(v) >= 4):
        raise CodecError("entry must be [term, index, type, data]")
    term, index, kind, data = v[:4]
    _nonneg(term, "entry term")
    _nonneg(index, "entry index")
    if not isinstance(data, bytes):
        raise CodecError("entry data must be bytes")
    try:
        etype = EntryType(kind)
    except ValueError as exc:
        raise CodecError(f"unknown entry type {kind!r}") from exc
    return Entry(term, index, etype, data)


def _nonneg(v: Any, what: str) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0 or v >= 1 << 63:
        raise CodecError(f"{what} must be a non-negative integer, got {v!r}")


def encode_entry(e: Entry) -> bytes:
    return bytes([VERSION]) + bytes(msgpack.packb(_entry_list(e)))


def decode_entry(data: bytes) -> Entry:
    if not data or data[0] != VERSION:
        raise CodecError("bad entry version")
    try:
        v = msgpack.unpackb(data[1:], raw=False)
    except Exception as exc:
        raise CodecError(f"undecodable entry: {type(exc).__name__}") from exc
    return _entry_from(v)


def encode_message(m: Message) -> bytes:
    snap = None
    if m.snapshot is not None:
        meta = m.snapshot.meta
        snap = [meta.index, meta.term, list(meta.voters), m.snapshot.data]
        if meta.learners:
            snap.append(list(meta.learners))  # a fifth field, only when there are learners
    body = [int(m.type), m.to, m.frm, m.term, m.log_term, m.index, [_entry_list(e) for e in m.entries],
            m.commit, m.reject, m.reject_hint, m.context, snap]
    return bytes([VERSION]) + bytes(msgpack.packb(body))


def decode_message(data: bytes) -> Message:
    """Raises CodecError for anything that is not a well-formed message of this version."""
    if not data or data[0] != VERSION:
        raise CodecError("bad raft message version")
    try:
        v = msgpack.unpackb(data[1:], raw=False, max_bin_len=64 << 20, max_array_len=1 << 20)
    except Exception as exc:
        raise CodecError(f"undecodable raft message: {type(exc).__name__}") from exc
    if not isinstance(v, list) or len(v) < 12:
        raise CodecError("raft message must be a list of 12 fields")
    kind, to, frm, term, log_term, index, entries, commit, reject, hint, context, snap = v[:12]
    try:
        mtype = MessageType(kind)
    except ValueError as exc:
        raise CodecError(f"unknown raft message type {kind!r}") from exc
    for val, what in ((to, "to"), (frm, "from"), (term, "term"), (log_term, "log term"), (index, "index"),
                      (commit, "commit"), (hint, "reject hint")):
        _nonneg(val, what)
    if not isinstance(entries, list) or not isinstance(reject, bool) or not isinstance(context, bytes):
        raise CodecError("raft message fields have the wrong types")
    snapshot = None
    if snap is not None:
        if not (isinstance(snap, list) and len(snap) >= 4 and isinstance(snap[2], list) and isinstance(snap[3], bytes)):
            raise CodecError("bad snapshot")
        _nonneg(snap[0], "snapshot index")
        _nonneg(snap[1], "snapshot term")
        for voter in snap[2]:
            _nonneg(voter, "snapshot voter")
        learners = snap[4] if len(snap) > 4 else []
        if not isinstance(learners, list):
            raise CodecError("bad snapshot learners")
        for learner in learners:
            _nonneg(learner, "snapshot learner")
        snapshot = Snapshot(SnapshotMeta(snap[0], snap[1], tuple(snap[2]), tuple(learners)), snap[3])
    return Message(mtype, to, frm, term, log_term, index, tuple(_entry_from(e) for e in entries), commit, reject,
                   hint, context, snapshot)


def encode_hard_state(h: HardState) -> bytes:
    return bytes(msgpack.packb([h.term, h.vote, h.commit]))


def decode_hard_state(data: bytes) -> HardState:
    try:
        term, vote, commit = msgpack.unpackb(data)
    except Exception as exc:
        raise CodecError(f"undecodable hard state: {type(exc).__name__}") from exc
    for val, what in ((term, "term"), (vote, "vote"), (commit, "commit")):
        _nonneg(val, what)
    return HardState(term, vote, commit)
