"""The core's snapshot rules, stepped directly: what a follower does with a snapshot it does not
need, one whose last entry it already has, and one that replaces its log; compaction's limits;
a restart from a snapshot."""

from __future__ import annotations

import random

import pytest
from murmur.raft.config import RaftConfig
from murmur.raft.log import LogError
from murmur.raft.messages import Entry, HardState, Message, MessageType, Snapshot, SnapshotMeta
from murmur.raft.rawnode import RawNode

MT = MessageType


def follower(entries: list[tuple[int, int]], commit: int) -> RawNode:
    """Node 3 of {1,2,3}, term 2, holding index@term entries, following 1."""
    ents = [Entry(t, i, data=b"e%d" % i) for i, t in entries]
    node = RawNode(RaftConfig(id=3), [1, 2, 3], random.Random(0), HardState(2, 1, commit), ents)
    node.step(Message(MT.HEARTBEAT, to=3, frm=1, term=2, commit=commit))
    node.advance(node.ready())
    return node


def snap_msg(index: int, term: int, voters: tuple[int, ...] = (1, 2, 3)) -> Message:
    return Message(MT.SNAP, to=3, frm=1, term=2, snapshot=Snapshot(SnapshotMeta(index, term, voters), b"state"))


def test_a_snapshot_older_than_the_commit_index_changes_nothing() -> None:
    node = follower([(1, 1), (2, 1), (3, 1), (4, 1)], commit=4)
    node.step(snap_msg(3, 1))
    rd = node.ready()
    assert rd.snapshot is None and node.raft.log.offset == 0 and len(node.raft.log.entries) == 4
    assert [(m.type, m.index, m.reject) for m in rd.messages] == [(MT.APP_RESP, 4, False)]


def test_a_snapshot_whose_last_entry_we_hold_only_advances_the_commit_index() -> None:
    node = follower([(1, 1), (2, 1), (3, 1), (4, 2), (5, 2)], commit=2)
    node.step(snap_msg(4, 2))
    rd = node.ready()
    assert rd.snapshot is None
    assert node.raft.log.committed == 4 and node.raft.log.last_index() == 5 and node.raft.log.offset == 0
    assert [e.index for e in rd.committed_entries] == [3, 4]
    assert [(m.type, m.index) for m in rd.messages] == [(MT.APP_RESP, 4)]


def test_a_snapshot_of_another_history_replaces_the_log_and_comes_out_before_later_entries() -> None:
    # 3 holds 3..5 of a deposed leader (term 1); the leader's snapshot ends at 4@2.
    node = follower([(1, 1), (2, 1), (3, 1), (4, 1), (5, 1)], commit=2)
    node.step(snap_msg(4, 2, voters=(1, 2, 3)))
    # An append right after the snapshot, before the driver took the Ready.
    node.step(Message(MT.APP, to=3, frm=1, term=2, log_term=2, index=4, commit=5, entries=(Entry(2, 5, data=b"n"),)))
    rd = node.ready()
    assert rd.snapshot is not None and rd.snapshot.meta == SnapshotMeta(4, 2, (1, 2, 3))
    assert rd.must_sync and rd.hard_state == HardState(2, 1, 5)
    assert [(e.index, e.term) for e in rd.entries] == [(5, 2)]  # persisted after the snapshot
    assert [e.index for e in rd.committed_entries] == [5]  # applied after the restore
    assert [(m.type, m.index) for m in rd.messages] == [(MT.APP_RESP, 4), (MT.APP_RESP, 5)]
    node.advance(rd)
    assert not node.has_ready() and node.raft.log.pending_snapshot is None
    assert (node.raft.log.offset, node.raft.log.applied) == (4, 5)


def test_compaction_limits() -> None:
    node = follower([(1, 1), (2, 1), (3, 1), (4, 2)], commit=3)
    assert node.raft.log.applied == 3
    with pytest.raises(LogError, match="beyond the applied index"):
        node.compact(4, b"x")
    node.compact(2, b"two")
    assert node.raft.log.offset == 2 and [e.index for e in node.raft.log.entries] == [3, 4]
    node.compact(1, b"one")  # older than what we have: nothing changes
    assert node.raft.log.offset == 2 and node.raft.log.snapshot.data == b"two"
    with pytest.raises(LogError, match="not in the log"):
        node.compact(9, b"x")


def test_a_restart_from_a_snapshot_starts_at_its_index_with_its_voters() -> None:
    snap = Snapshot(SnapshotMeta(10, 3, (1, 2, 3)), b"state")
    node = RawNode(RaftConfig(id=1), [7], random.Random(0), HardState(3, 1, 11),
                   [Entry(3, 11), Entry(3, 12)], snapshot=snap)
    log = node.raft.log
    assert (log.offset, log.applied, log.committed, log.last_index()) == (10, 10, 11, 12)
    assert node.raft.voters == {1, 2, 3}  # the snapshot's, not the argument's
    rd = node.ready()
    assert rd.snapshot is None  # our own: already restored by the driver
    assert [e.index for e in rd.committed_entries] == [11]
    assert log.term(10) == 3 and log.term(9) is None


def test_compaction_keeps_trailing_entries_and_a_newer_snapshot_moves_them_on() -> None:
    node = follower([(1, 1), (2, 1), (3, 1), (4, 2), (5, 2), (6, 2)], commit=6)
    node.compact(5, b"five", keep=3)
    log = node.raft.log
    assert (log.snapshot.meta.index, log.snapshot.meta.term) == (5, 2)
    assert (log.offset, log.offset_term) == (2, 1) and [e.index for e in log.entries] == [3, 4, 5, 6]
    node.compact(4, b"four", keep=0)  # older than the snapshot: nothing changes
    assert log.snapshot.data == b"five" and log.offset == 2
    node.compact(6, b"six", keep=10)  # keeps more than there is: the offset never moves back
    assert log.snapshot.data == b"six" and log.offset == 2
    node.compact(6, b"again", keep=0)
    assert log.snapshot.data == b"six"  # same index: no change
