"""Offline quorum-loss recovery (`murmur operator raft recover`), Consul's peers.json idea.

When most servers are gone for good, the survivors cannot elect a leader: every election needs a
majority of a configuration whose members are mostly dead. With every surviving server stopped,
this rewrites one server's data dir so that its configuration is the new peer set:

1. load the newest snapshot and the log after it;
2. replay the whole log into a catalog state store (from the snapshot's state);
3. write a new snapshot at the log's last entry (same index and term) whose configuration is the
   new peer set, durably (snapshots.py: temp file, fsync, rename, directory fsync);
4. drop the log entries it covers, set the commit index to it, and record the new voters (and
   any peer addresses given) in the log's meta table.

On start the server takes its configuration from that snapshot. Run it on every survivor with the
same peer set, then start them: the most up-to-date one wins the election and brings the others
(and any new server in the set) up to date.

Why a snapshot rather than a configuration entry appended to the log: an appended entry needs an
(index, term) that no other server could hold with different contents, and a recovered server
cannot know that; a snapshot at the log's own last entry makes no such claim (that entry is real).

The cost, as with Consul: every entry in the survivor's log counts as committed, including writes
that were never acknowledged; and committed writes that reached only the lost servers are gone.
Recover the survivor whose log is longest (`last_index` in the report) to keep the most.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
from murmur.catalog import commands
from murmur.catalog.store import StateStore
from murmur.raft.messages import ConfChange, EntryType, HardState, Snapshot, SnapshotMeta

from .raft_log import RaftStorage, StorageError
from .snapshots import SnapshotStore

log = logging.getLogger("murmur.raft.recovery")


@dataclass
class RecoveryReport:
    old_voters: list[int]
    new_voters: list[int]
    snapshot_index: int  # the new snapshot's index (0: the log was empty, nothing to snapshot)
    snapshot_term: int
    replayed: int  # log entries applied on top of the old snapshot
    skipped_unknown: int  # ignorable commands this version does not know


def _meta(storage: RaftStorage, key: str) -> Any:
    row = storage.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return msgpack.unpackb(row[0], raw=False, strict_map_key=False) if row else None


def _set_meta(storage: RaftStorage, values: Mapping[str, Any]) -> None:
    with storage.lock:
        storage.db.execute("BEGIN IMMEDIATE")
        for key, value in values.items():
            storage.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, bytes(msgpack.packb(value))))
        storage.db.execute("COMMIT")


def recover(raft_dir: str | Path, voters: Sequence[int],
            addresses: Mapping[int, tuple[str, int]] | None = None) -> RecoveryReport:
    """Rewrite the Raft state in `raft_dir` (data_dir/raft) so its configuration is `voters`.
    The server must be stopped. Raises StorageError if the data cannot be read or written."""
    if not voters or any(v <= 0 for v in voters):
        raise ValueError("the new configuration needs at least one server, with positive ids")
    path = Path(raft_dir)
    if not (path / "raft.db").exists():
        raise StorageError(f"{path}: no raft.db here; is this a server's data_dir/raft?")
    new = sorted(set(voters))
    storage = RaftStorage(path / "raft.db")
    try:
        snaps = SnapshotStore(path / "snapshots")
        snap = snaps.load()
        hard, entries = storage.load(snap.meta if snap else None)
        old = list(snap.meta.voters) if snap else []
        store = StateStore()
        if snap is not None:
            store.load(snap.data)
        skipped = 0
        for e in entries:
            if e.type == EntryType.CONF_CHANGE:
                try:
                    old = list(ConfChange.decode(e.data).voters)
                except ValueError:
                    pass
            if e.type != EntryType.NORMAL:
                continue
            try:
                store.apply(e.index, e.data)
            except commands.UnknownCommand as exc:
                if not exc.ignorable:
                    raise StorageError(f"entry {e.index} holds a command this murmur does not know; "
                                       "recover with the newest murmur") from exc
                store.last_index = e.index
                skipped += 1
        if not old:
            old = list(_meta(storage, "voters") or _meta(storage, "bootstrap_voters") or [])
        last_index, last_term = (entries[-1].index, entries[-1].term) if entries else \
            ((snap.meta.index, snap.meta.term) if snap else (0, 0))
        if last_index:
            new_snap = Snapshot(SnapshotMeta(last_index, last_term, tuple(new)), store.snapshot())
            snaps.write(new_snap)  # durable before the log lets go of anything
            storage.compact(last_index)
            storage.save(HardState(hard.term, hard.vote, last_index), [])
        meta: dict[str, Any] = {"voters": new, "bootstrap_voters": new}
        if addresses:
            peers = dict(_meta(storage, "peers") or {})
            for rid, (host, port) in addresses.items():
                peers[str(rid)] = [host, int(port)]
            meta["peers"] = peers
        _set_meta(storage, meta)
        log.warning("raft recovery: configuration %s -> %s at index %d (term %d)", old, new, last_index, last_term)
        return RecoveryReport(sorted(old), new, last_index, last_term, len(entries), skipped)
    finally:
        storage.close()
