"""Learners (non-voters) through the codecs and storage: a conf change, a SNAP message and a
snapshot file carry the learner set, and a node restarted from a snapshot knows it; old
three-field conf changes still decode."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from murmur.agent.storage.snapshots import SnapshotStore
from murmur.raft.codec import decode_message, encode_message
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


def test_conf_change_encodings() -> None:
    cc = ConfChange(ConfChangeType.ADD_LEARNER, 4, (1, 2, 3), (4,))
    assert cc.encode() == b"add_learner 4 1,2,3 4"
    assert ConfChange.decode(cc.encode()) == cc
    old = ConfChange.decode(b"add_voter 4 1,2,3,4")  # written before learners existed
    assert old.voters == (1, 2, 3, 4) and old.learners == ()
    with pytest.raises(ValueError):
        ConfChange.decode(b"add_learner 4 1,2,3,4 4")  # a voter and a learner at once


def test_snap_message_and_file_carry_learners(tmp_path: Path) -> None:
    snap = Snapshot(SnapshotMeta(5, 2, (1, 2, 3), (4,)), b"state")
    m = Message(MessageType.SNAP, to=4, frm=1, term=2, snapshot=snap)
    assert decode_message(encode_message(m)).snapshot == snap
    plain = Snapshot(SnapshotMeta(5, 2, (1, 2, 3)), b"state")  # no learners: the old shape
    assert decode_message(encode_message(Message(MessageType.SNAP, to=4, frm=1, term=2, snapshot=plain))).snapshot == plain
    store = SnapshotStore(tmp_path)
    store.write(snap)
    assert store.load() == snap


def test_compaction_and_restart_keep_the_learners() -> None:
    cc = ConfChange(ConfChangeType.ADD_LEARNER, 4, (1,), (4,))
    log = [Entry(1, 1, EntryType.NOOP), Entry(1, 2, EntryType.CONF_CHANGE, cc.encode()), Entry(1, 3, data=b"x")]
    n = RawNode(RaftConfig(id=1), (1,), random.Random(1), HardState(1, 1, 3), log, applied=3)
    assert n.raft.learners == {4} and n.raft.voters == {1}
    n.compact(3, b"state")
    meta = n.raft.log.snapshot.meta
    assert meta.voters == (1,) and meta.learners == (4,)
    again = RawNode(RaftConfig(id=1), (1,), random.Random(1), HardState(1, 1, 3), snapshot=n.raft.log.snapshot)
    assert again.raft.learners == {4} and again.raft.voters == {1}
    again.campaign()
    assert again.is_leader and set(again.raft.prs) == {1, 4}  # the learner gets the log, not a vote
    learner = RawNode(RaftConfig(id=4), (1,), random.Random(1), snapshot=n.raft.log.snapshot)
    for _ in range(100):
        learner.tick()
    assert not learner.ready().messages  # it never campaigns


def test_lease_reads_need_check_quorum_and_a_lease_below_the_election_timeout() -> None:
    RaftConfig(id=1, lease_tick=5).validate()
    with pytest.raises(ValueError, match="check_quorum"):
        RaftConfig(id=1, lease_tick=5, check_quorum=False).validate()
    with pytest.raises(ValueError, match="lease_tick"):
        RaftConfig(id=1, lease_tick=10).validate()
