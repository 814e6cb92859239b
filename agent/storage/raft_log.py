"""The Raft log and hard state in sqlite3 (WAL mode, synchronous=FULL).

Why sqlite: measured as fast as a hand-written fdatasync'd log (~5k durable commits/s, ~85k
entries/s batched), transactional, and in the standard library. synchronous=FULL makes every
commit durable before it returns; NORMAL can lose acknowledged entries on power loss, so it is
never used here. Each entry carries a CRC32 of its fields: a mismatch at the tail (a torn write
that somehow survived) is truncated; anywhere else it is corruption and the agent stops.

Every write is one transaction (hard state and entries together), which is the group commit: the
driver hands over everything the core produced since the previous write.

Snapshots live in files beside the database (snapshots.py). The log deletes the entries a snapshot
covers only once the snapshot file is durable, so a crash between the two leaves entries the
snapshot also covers, which `load` drops. A leader's snapshot replaces the whole log: if the
process dies after the file is durable but before the log was reset, `load` keeps the entries
after the snapshot only if the log holds the snapshot's last entry (index and term), since only
then are they the same history.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import zlib
from pathlib import Path

from murmur.raft.codec import CodecError, decode_hard_state, encode_hard_state
from murmur.raft.messages import Entry, EntryType, HardState, SnapshotMeta

log = logging.getLogger("murmur.raft.storage")

# Bump when the schema or its meaning changes; older data dirs are migrated, newer refused.
# 2: the log may start after 1 (entries covered by a snapshot file are deleted), so a murmur
# without snapshots must refuse it rather than call it damaged. 1 -> 2 needs no change to the data.
FORMAT_VERSION = 2


class StorageError(Exception):
    """The log cannot be trusted or written (corruption, fsync failure): the agent must stop."""


def entry_crc(e: Entry) -> int:
    return zlib.crc32(b"%d:%d:%d:" % (e.term, e.index, int(e.type)) + e.data)


class RaftStorage:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        # One connection, used from worker threads (saves) and the event loop (meta writes):
        # one transaction at a time.
        self.lock = threading.Lock()
        try:
            self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL)")
            self.db.execute("CREATE TABLE IF NOT EXISTS entries (idx INTEGER PRIMARY KEY, term INTEGER NOT NULL,"
                            " type INTEGER NOT NULL, data BLOB NOT NULL, crc INTEGER NOT NULL)")
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: cannot open the raft log: {exc}") from exc
        self._check_format()

    def _check_format(self) -> None:
        row = self.db.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
        if row is None:
            self.db.execute("INSERT INTO meta VALUES ('format', ?)", (str(FORMAT_VERSION).encode(),))
            return
        version = int(row[0])
        if version > FORMAT_VERSION:
            raise StorageError(f"{self.path}: data format {version} is newer than this murmur understands "
                               f"({FORMAT_VERSION}); run a newer murmur or restore a backup")
        if version < FORMAT_VERSION:
            log.info("raft log: migrating data format %d to %d", version, FORMAT_VERSION)
            self.db.execute("UPDATE meta SET value = ? WHERE key = 'format'", (str(FORMAT_VERSION).encode(),))

    def load(self, snapshot: SnapshotMeta | None = None) -> tuple[HardState, list[Entry]]:
        """The persisted hard state and the log after `snapshot` (the newest snapshot file).
        Truncates a damaged tail; raises on other damage."""
        snap = snapshot or SnapshotMeta()
        row = self.db.execute("SELECT value FROM meta WHERE key = 'hard'").fetchone()
        try:
            hard = decode_hard_state(row[0]) if row else HardState()
        except CodecError as exc:
            raise StorageError(f"{self.path}: hard state unreadable: {exc}") from exc
        entries: list[Entry] = []
        expected: int | None = None
        for idx, term, kind, data, crc in self.db.execute("SELECT idx, term, type, data, crc FROM entries ORDER BY idx"):
            e = Entry(term, idx, EntryType(kind), bytes(data))
            if entry_crc(e) != crc or (expected is not None and idx != expected):
                tail = self.db.execute("SELECT MAX(idx) FROM entries").fetchone()[0]
                if idx > hard.commit:
                    log.warning("raft log: entry %d is damaged; truncating the uncommitted tail %d..%d",
                                idx, idx, tail)
                    self._truncate_from(idx)
                    break
                raise StorageError(f"{self.path}: committed entry {idx} is damaged (checksum or gap)")
            entries.append(e)
            expected = idx + 1
        if snap.index:
            at_snap = [e for e in entries if e.index == snap.index]
            follows = bool(entries) and entries[0].index == snap.index + 1
            if at_snap and at_snap[0].term == snap.term or follows:
                entries = [e for e in entries if e.index > snap.index]
            else:
                if any(e.index > snap.index for e in entries):
                    log.warning("raft log: entries after %d are from before the leader's snapshot %d@%d; "
                                "dropping them", snap.index, snap.index, snap.term)
                entries = []
        if entries and entries[0].index != snap.index + 1:
            raise StorageError(f"{self.path}: log starts at {entries[0].index}, but the snapshot ends at "
                               f"{snap.index}")
        last = entries[-1].index if entries else snap.index
        if hard.commit > last:
            raise StorageError(f"{self.path}: commit index {hard.commit} beyond the last entry {last}")
        return hard, entries

    def _truncate_from(self, index: int) -> None:
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute("DELETE FROM entries WHERE idx >= ?", (index,))
            self.db.execute("COMMIT")

    def save(self, hard: HardState | None, entries: list[Entry], reset_to: int = 0) -> None:
        """One durable transaction: entries (replacing any suffix from the first) and hard state.
        With `reset_to` (a leader's snapshot ending there is durable), every older entry goes first."""
        if hard is None and not entries and not reset_to:
            return
        with self.lock:
            self._save(hard, entries, reset_to)

    def save_many(self, saves: list[tuple[HardState | None, list[Entry], int]]) -> None:
        """Several saves, in order, as one durable transaction (the storage writer's group commit:
        the saves that queued up while the previous one was being written)."""
        with self.lock:
            self._save_all(saves)

    def _save(self, hard: HardState | None, entries: list[Entry], reset_to: int) -> None:
        self._save_all([(hard, entries, reset_to)])

    def _save_all(self, saves: list[tuple[HardState | None, list[Entry], int]]) -> None:
        try:
            self.db.execute("BEGIN IMMEDIATE")
            for hard, entries, reset_to in saves:
                if reset_to:
                    self.db.execute("DELETE FROM entries")
                if entries:
                    self.db.execute("DELETE FROM entries WHERE idx >= ?", (entries[0].index,))
                    self.db.executemany("INSERT INTO entries VALUES (?, ?, ?, ?, ?)",
                                        [(e.index, e.term, int(e.type), e.data, entry_crc(e)) for e in entries])
                if hard is not None:
                    self.db.execute("INSERT OR REPLACE INTO meta VALUES ('hard', ?)", (encode_hard_state(hard),))
            self.db.execute("COMMIT")
        except sqlite3.Error as exc:
            # An fsync or write error: never retry silently; the caller stops the agent.
            raise StorageError(f"{self.path}: writing the raft log failed: {exc}") from exc

    def compact(self, index: int) -> None:
        """Delete the entries up to `index`: a durable snapshot covers them."""
        try:
            with self.lock:
                self.db.execute("BEGIN IMMEDIATE")
                self.db.execute("DELETE FROM entries WHERE idx <= ?", (index,))
                self.db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: compacting the raft log failed: {exc}") from exc

    def close(self) -> None:
        self.db.close()
