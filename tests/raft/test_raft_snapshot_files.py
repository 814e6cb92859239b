"""Snapshot files (agent/storage/snapshots.py) and the sqlite log beside them: round trips, torn and
corrupt files ignored in favour of the previous snapshot, leftover temp files, newer formats
refused, the log compacted and reset around snapshots."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from murmur.agent.storage import snapshots
from murmur.agent.storage.raft_log import RaftStorage, StorageError
from murmur.agent.storage.snapshots import SnapshotFormatError, SnapshotStore
from murmur.raft.messages import Entry, EntryType, HardState, Snapshot, SnapshotMeta


def snap(index: int, term: int = 1, size: int = 1000) -> Snapshot:
    return Snapshot(SnapshotMeta(index, term, (1, 2, 3)), bytes(range(256)) * (size // 256) + b"x" * (size % 256))


def entries(first: int, last: int, term: int = 1) -> list[Entry]:
    return [Entry(term, i, EntryType.NORMAL, b"v%d" % i) for i in range(first, last + 1)]


def test_round_trip_keeps_the_newest_two(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    assert store.load() is None
    for i in (10, 20, 30):
        store.write(snap(i, term=2))
    assert sorted(p.name for p in tmp_path.iterdir()) == [snapshots.file_name(snap(i, 2).meta) for i in (20, 30)]
    got = SnapshotStore(tmp_path).load()
    assert got == snap(30, term=2)


def test_an_empty_body_round_trips(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    store.write(Snapshot(SnapshotMeta(5, 1, (7,)), b""))
    assert SnapshotStore(tmp_path).load() == Snapshot(SnapshotMeta(5, 1, (7,)), b"")


@pytest.mark.parametrize("damage", ["torn-body", "torn-header", "bad-body-crc", "bad-header-crc", "empty"])
def test_a_damaged_newest_snapshot_is_ignored_and_the_previous_one_used(tmp_path: Path, damage: str,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    store = SnapshotStore(tmp_path)
    store.write(snap(10))
    newest = store.write(snap(20))
    raw = bytearray(newest.read_bytes())
    if damage == "torn-body":
        raw = raw[: len(raw) - 300]  # cut mid-body, as a crash during an unsynced write leaves it
    elif damage == "torn-header":
        raw = raw[:20]
    elif damage == "bad-body-crc":
        raw[-1] ^= 0xFF
    elif damage == "bad-header-crc":
        raw[snapshots._PREAMBLE.size + 2] ^= 0x01
    else:
        raw = bytearray()
    newest.write_bytes(bytes(raw))
    fresh = SnapshotStore(tmp_path)
    assert fresh.load() == snap(10)
    assert fresh.stats["ignored_corrupt"] == 1
    assert "unusable" in caplog.text
    assert (tmp_path / (newest.name + ".corrupt")).exists()
    # Positive control: the undamaged file loads as the newest.
    newest.unlink(missing_ok=True)
    SnapshotStore(tmp_path).write(snap(20))
    assert SnapshotStore(tmp_path).load() == snap(20)


def test_a_leftover_temp_file_is_removed_and_ignored(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    store.write(snap(10))
    tmp = tmp_path / (snapshots.file_name(snap(20).meta) + ".tmp")
    tmp.write_bytes(snapshots.encode(snap(20))[:500])  # died before the rename
    fresh = SnapshotStore(tmp_path)
    assert fresh.load() == snap(10)
    assert not tmp.exists() and fresh.stats["removed_temp"] == 1


def test_a_newer_format_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    store.write(snap(10))
    path = tmp_path / snapshots.file_name(snap(10).meta)
    raw = bytearray(path.read_bytes())
    struct.pack_into("!H", raw, 8, snapshots.FORMAT_VERSION + 1)
    path.write_bytes(bytes(raw))
    with pytest.raises(SnapshotFormatError, match=r"snapshot format 2 is newer than this murmur understands \(1\)"):
        SnapshotStore(tmp_path).load()
    assert issubclass(SnapshotFormatError, StorageError)  # the agent stops on it


def test_the_failpoints_exist_in_the_registry() -> None:
    from murmur.agent.failpoints import KNOWN, Failpoints

    for name in ("raft-before-snapshot-write", "raft-after-snapshot-write", "raft-after-snapshot-rename",
                 "raft-after-snapshot-dirsync"):
        assert name in KNOWN
        assert Failpoints(f"{name}=kill@3").armed == {name: 3}


# ---- the sqlite log around snapshots --------------------------------------------------------------
def test_compaction_deletes_covered_entries_and_load_starts_after_the_snapshot(tmp_path: Path) -> None:
    s = RaftStorage(tmp_path / "raft.db")
    s.save(HardState(1, 1, 8), entries(1, 10))
    s.compact(6)
    s.close()
    hard, log = RaftStorage(tmp_path / "raft.db").load(SnapshotMeta(6, 1))
    assert hard.commit == 8 and [e.index for e in log] == [7, 8, 9, 10]
    # Without the snapshot the log would have a hole at its start: refused.
    with pytest.raises(StorageError, match="snapshot ends at 0"):
        RaftStorage(tmp_path / "raft.db").load()


def test_a_crash_before_compaction_leaves_covered_entries_that_load_drops(tmp_path: Path) -> None:
    s = RaftStorage(tmp_path / "raft.db")
    s.save(HardState(1, 1, 8), entries(1, 10))
    s.close()  # the snapshot at 6 is durable, the log was not compacted yet
    _, log = RaftStorage(tmp_path / "raft.db").load(SnapshotMeta(6, 1))
    assert [e.index for e in log] == [7, 8, 9, 10]


def test_a_crash_before_a_leaders_snapshot_reset_the_log_drops_the_other_history(tmp_path: Path) -> None:
    s = RaftStorage(tmp_path / "raft.db")
    s.save(HardState(2, 1, 3), entries(1, 3) + entries(4, 9, term=2))  # 4..9 of a deposed leader
    s.close()  # the leader's snapshot 6@3 is durable; the log was not reset yet
    _, log = RaftStorage(tmp_path / "raft.db").load(SnapshotMeta(6, 3))
    assert log == []
    # Reset and the entries after the snapshot in one transaction.
    s = RaftStorage(tmp_path / "raft.db")
    s.save(HardState(3, 0, 7), entries(7, 8, term=3), reset_to=6)
    s.close()
    hard, log = RaftStorage(tmp_path / "raft.db").load(SnapshotMeta(6, 3))
    assert hard == HardState(3, 0, 7) and [(e.index, e.term) for e in log] == [(7, 3), (8, 3)]


# ---- hostile bytes ------------------------------------------------------------------------------
@given(st.binary(max_size=400))
def test_arbitrary_bytes_never_decode_to_a_snapshot_or_raise_anything_else(raw: bytes) -> None:
    with pytest.raises((ValueError, SnapshotFormatError)):
        snapshots.decode(raw)


@given(st.integers(min_value=0), st.integers(min_value=1, max_value=255), st.integers(min_value=0))
def test_any_single_byte_change_or_truncation_is_detected(pos: int, flip: int, cut: int) -> None:
    good = snapshots.encode(snap(40, term=3, size=300))
    damaged = bytearray(good)
    damaged[pos % len(good)] ^= flip
    with pytest.raises((ValueError, SnapshotFormatError)):
        snapshots.decode(bytes(damaged))
    with pytest.raises(ValueError):
        snapshots.decode(good[: cut % len(good)])
    assert snapshots.decode(good) == snap(40, term=3, size=300)  # positive control
