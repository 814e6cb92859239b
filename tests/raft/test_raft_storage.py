"""The sqlite Raft log: round trips, group writes, damage handling, format versions, codec hostility."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from murmur.agent.storage.raft_log import FORMAT_VERSION, RaftStorage, StorageError
from murmur.raft import codec
from murmur.raft.messages import Entry, EntryType, HardState, Message, MessageType


def entries(first: int, last: int, term: int = 1) -> list[Entry]:
    return [Entry(term, i, EntryType.NORMAL, b"v%d" % i) for i in range(first, last + 1)]


def test_round_trip_and_suffix_replacement(tmp_path: Path) -> None:
    s = RaftStorage(tmp_path / "raft.db")
    s.save(HardState(1, 2, 0), entries(1, 5))
    s.save(HardState(2, 3, 3), entries(4, 6, term=2))  # a new leader overwrote 4..5
    s.close()
    hard, log = RaftStorage(tmp_path / "raft.db").load()
    assert hard == HardState(2, 3, 3)
    assert [(e.index, e.term) for e in log] == [(1, 1), (2, 1), (3, 1), (4, 2), (5, 2), (6, 2)]


def test_save_many_applies_the_saves_in_order_as_one_write(tmp_path: Path) -> None:
    """The storage writer's group commit: queued saves land as if written one after the other
    (a later one's suffix replacement and hard state win), or not at all."""
    s = RaftStorage(tmp_path / "raft.db")
    s.save_many([(HardState(1, 1, 0), entries(1, 5), 0), (None, entries(6, 7), 0),
                 (HardState(2, 2, 4), entries(5, 6, term=2), 0), (None, [], 0)])
    s.close()
    hard, log = RaftStorage(tmp_path / "raft.db").load()
    assert hard == HardState(2, 2, 4)
    assert [(e.index, e.term) for e in log] == [(1, 1), (2, 1), (3, 1), (4, 1), (5, 2), (6, 2)]
    # One transaction: a save that fails takes the whole batch with it.
    s = RaftStorage(tmp_path / "raft.db")
    bad = Entry(3, 7, EntryType.NORMAL, b"x")
    with pytest.raises(StorageError):
        s.save_many([(HardState(3, 3, 4), [bad], 0), (None, [bad, bad], 0)])  # the same index twice
    s.close()  # (the failed transaction was never committed)
    hard, log = RaftStorage(tmp_path / "raft.db").load()
    assert hard == HardState(2, 2, 4) and log[-1].index == 6


def test_damaged_uncommitted_tail_is_truncated_but_committed_damage_stops(tmp_path: Path) -> None:
    path = tmp_path / "raft.db"
    s = RaftStorage(path)
    s.save(HardState(1, 1, 3), entries(1, 6))
    s.close()
    db = sqlite3.connect(path)
    db.execute("UPDATE entries SET data = x'00' WHERE idx = 5")  # damage past the commit index
    db.commit()
    db.close()
    hard, log = RaftStorage(path).load()
    assert [e.index for e in log] == [1, 2, 3, 4]
    db = sqlite3.connect(path)
    db.execute("UPDATE entries SET data = x'00' WHERE idx = 2")  # damage to a committed entry
    db.commit()
    db.close()
    with pytest.raises(StorageError, match="committed entry 2"):
        RaftStorage(path).load()


def test_a_newer_format_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "raft.db"
    RaftStorage(path).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value = ? WHERE key = 'format'", (str(FORMAT_VERSION + 1).encode(),))
    db.commit()
    db.close()
    with pytest.raises(StorageError, match="newer"):
        RaftStorage(path)


def test_a_format_1_data_dir_is_migrated_to_2(tmp_path: Path) -> None:
    path = tmp_path / "raft.db"
    s = RaftStorage(path)
    s.save(HardState(1, 1, 2), entries(1, 3))
    s.close()
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value = ? WHERE key = 'format'", (b"1",))  # as the release before snapshots
    db.commit()
    db.close()
    hard, log = RaftStorage(path).load()
    assert hard == HardState(1, 1, 2) and [e.index for e in log] == [1, 2, 3]
    db = sqlite3.connect(path)
    assert db.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()[0] == b"2" == str(FORMAT_VERSION).encode()
    db.close()


def test_a_write_failure_raises_storage_error(tmp_path: Path) -> None:
    s = RaftStorage(tmp_path / "raft.db")
    s.db.close()  # any sqlite failure (disk full, fsync error) must surface, never be retried
    with pytest.raises(StorageError):
        s.save(HardState(1, 1, 0), entries(1, 1))


def test_message_codec_round_trip() -> None:
    m = Message(MessageType.APP, to=2, frm=1, term=3, log_term=2, index=7, entries=tuple(entries(8, 9, 3)),
                commit=7, context=b"ctx")
    assert codec.decode_message(codec.encode_message(m)) == m


@given(st.binary(max_size=300))
def test_garbage_never_decodes_into_a_message_silently(data: bytes) -> None:
    try:
        m = codec.decode_message(data)
    except codec.CodecError:
        return
    assert codec.decode_message(codec.encode_message(m)) == m  # if it decodes, it is well formed
