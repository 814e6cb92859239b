"""Offline quorum-loss recovery (agent/storage/recovery.py) on a data dir built by hand: the new
configuration is in force on load, the catalog state is the snapshot plus the whole log, and
what the server starts from is consistent."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from murmur.agent.storage.raft_log import RaftStorage, StorageError
from murmur.agent.storage.recovery import recover
from murmur.agent.storage.snapshots import SnapshotStore
from murmur.catalog import commands
from murmur.catalog.store import StateStore
from murmur.raft.config import RaftConfig
from murmur.raft.messages import (
    ConfChange,
    ConfChangeType,
    Entry,
    EntryType,
    HardState,
    Snapshot,
    SnapshotMeta,
)
from murmur.raft.rawnode import RawNode


def put(key: str, value: str) -> bytes:
    return commands.encode(commands.KV(commands.KVOp.SET, key, value.encode()))


def build(raft_dir: Path) -> None:
    """A snapshot at 3 (k0, k1; voters 1,2,3), then entries 4..8 with a conf change (add 4) and
    two more writes, the last one past the commit index (never acknowledged)."""
    store = StateStore()
    store.apply(1, put("k0", "a"))
    store.apply(2, put("k1", "b"))
    SnapshotStore(raft_dir / "snapshots").write(Snapshot(SnapshotMeta(3, 1, (1, 2, 3)), store.snapshot()))
    storage = RaftStorage(raft_dir / "raft.db")
    storage.save(HardState(term=2, vote=1, commit=7), [
        Entry(1, 4, EntryType.NORMAL, put("k1", "b2")),
        Entry(2, 5, EntryType.NOOP),
        Entry(2, 6, EntryType.CONF_CHANGE, ConfChange(ConfChangeType.ADD_VOTER, 4, (1, 2, 3, 4)).encode()),
        Entry(2, 7, EntryType.NORMAL, put("k2", "c")),
        Entry(2, 8, EntryType.NORMAL, put("k3", "uncommitted")),
    ])
    storage.close()


def start(raft_dir: Path, me: int) -> tuple[RawNode, StateStore]:
    """What a server does on start: the newest snapshot, the log after it, the catalog."""
    snap = SnapshotStore(raft_dir / "snapshots").load()
    storage = RaftStorage(raft_dir / "raft.db")
    hard, entries = storage.load(snap.meta if snap else None)
    storage.close()
    store = StateStore()
    if snap is not None:
        store.load(snap.data)
    return RawNode(RaftConfig(id=me), (1, 2, 3), random.Random(1), hard, entries, snapshot=snap), store


def test_recover_to_one_survivor(tmp_path: Path) -> None:
    build(tmp_path)
    before, _ = start(tmp_path, 2)
    assert sorted(before.raft.voters) == [1, 2, 3, 4]  # positive control: 1 of 4 cannot elect
    report = recover(tmp_path, [2], {2: ("127.0.0.1", 8300)})
    assert report.old_voters == [1, 2, 3, 4] and report.new_voters == [2]
    assert (report.snapshot_index, report.snapshot_term, report.replayed) == (8, 2, 5)
    node, store = start(tmp_path, 2)
    assert sorted(node.raft.voters) == [2] and node.raft.log.last_index() == 8
    assert node.raft.log.committed == 8  # every entry in the log now counts as committed
    assert {k: r.value for k, r in store.kvs.items()} == {"k0": b"a", "k1": b"b2", "k2": b"c", "k3": b"uncommitted"}
    node.campaign()
    assert node.is_leader  # a lone voter leads at once
    # Running it again (say, the operator repeats the step) changes nothing more.
    again = recover(tmp_path, [2])
    assert again.snapshot_index == 8 and again.replayed == 0 and again.old_voters == [2]


def test_bad_input_changes_nothing(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="no raft.db"):
        recover(tmp_path, [1])
    build(tmp_path)
    with pytest.raises(ValueError):
        recover(tmp_path, [])
    with pytest.raises(ValueError):
        recover(tmp_path, [0])
    node, _ = start(tmp_path, 1)
    assert sorted(node.raft.voters) == [1, 2, 3, 4] and node.raft.log.committed == 7
