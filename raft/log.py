"""The Raft log as the core sees it: what is durable, what is not yet, what is committed and applied.

Indexes start at 1. Entries up to `offset` have been compacted away; the term at `offset` is kept
so the log-matching check still works at the boundary. The snapshot covers at least that much; a
compaction may keep some entries the snapshot also covers (`keep`, Consul's trailing logs), so a
follower just behind a fresh snapshot still gets entries rather than the whole snapshot. `stabled` is the last index the
driver has made durable; `in_progress` (>= stabled) the last it has been handed (etcd-io/raft's
"in progress" writes, for asynchronous storage writes): everything after `in_progress` goes out
in the next Ready, and an entry counts as durable only once the driver reports its write done
(`stable_to`). `epoch` counts the truncations of the log (entries replaced, or the log replaced by
a snapshot): a write report from before one is ignored, since the entries it wrote may since have
been overwritten on disk by a later write still in the queue.

`snapshot` is the newest snapshot this node has (made by its application and handed over with
`compact`, or received from a leader): the one a leader sends a follower that needs entries it no
longer has. `pending_snapshot` is a received snapshot the driver has not yet persisted and restored
(etcd's unstable snapshot): it goes out in the next Ready, before any entry after it.
"""

from __future__ import annotations

from collections.abc import Sequence

from .messages import Entry, Snapshot, SnapshotMeta


class LogError(Exception):
    """A request the log cannot satisfy: a protocol bug, never bad input from the network."""


class RaftLog:
    def __init__(self, snapshot: Snapshot | None = None, entries: Sequence[Entry] = (),
                 committed: int = 0, applied: int = 0) -> None:
        self.snapshot = snapshot or Snapshot()
        self.pending_snapshot: Snapshot | None = None
        snap = self.snapshot.meta
        self.offset = snap.index
        self.offset_term = snap.term
        self.entries: list[Entry] = list(entries)
        for i, e in enumerate(self.entries):
            if e.index != self.offset + 1 + i:
                raise LogError(f"entry {i} has index {e.index}, want {self.offset + 1 + i}")
        self.stabled = self.last_index()
        self.in_progress = self.stabled
        self.epoch = 0
        self.committed = max(committed, self.offset)
        self.applied = max(applied, self.offset)

    # ---- reads ----------------------------------------------------------------------------------
    def last_index(self) -> int:
        return self.offset + len(self.entries)

    def last_term(self) -> int:
        return self.entries[-1].term if self.entries else self.offset_term

    def term(self, index: int) -> int | None:
        """The term of the entry at `index`; None if compacted away or beyond the end."""
        if index == self.offset:
            return self.offset_term
        if index < self.offset or index > self.last_index():
            return None
        return self.entries[index - self.offset - 1].term

    def match_term(self, index: int, term: int) -> bool:
        return self.term(index) == term

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Raft §5.4.1: a candidate's log is at least as up to date as ours."""
        return last_term > self.last_term() or (last_term == self.last_term() and last_index >= self.last_index())

    def slice(self, lo: int, hi: int, max_bytes: int = 0) -> list[Entry]:
        """Entries [lo, hi), at least one, at most about max_bytes of data (0: no limit)."""
        if lo <= self.offset:
            raise LogError(f"entries before {lo} are compacted (offset {self.offset})")
        out = self.entries[lo - self.offset - 1: hi - self.offset - 1]
        if max_bytes and out:
            size = 0
            for n, e in enumerate(out):
                size += len(e.data) + 16
                if size > max_bytes and n > 0:
                    return out[:n]
        return out

    def unstable_entries(self) -> list[Entry]:
        """The entries not yet handed to storage."""
        return self.entries[self.in_progress - self.offset:] if self.in_progress >= self.offset else list(self.entries)

    def next_committed(self) -> list[Entry]:
        if self.committed <= self.applied:
            return []
        return self.slice(self.applied + 1, self.committed + 1)

    # ---- writes ---------------------------------------------------------------------------------
    def find_conflict(self, entries: Sequence[Entry]) -> int:
        """The index of the first entry that is new or disagrees with ours; 0 if all match."""
        for e in entries:
            if not self.match_term(e.index, e.term):
                return e.index
        return 0

    def append(self, entries: Sequence[Entry]) -> int:
        """Append, truncating any conflicting suffix first. Returns the new last index."""
        if not entries:
            return self.last_index()
        first = entries[0].index
        if first <= self.committed:
            raise LogError(f"would overwrite committed entry {first} (committed {self.committed})")
        if first > self.last_index() + 1:
            raise LogError(f"gap: appending {first} after {self.last_index()}")
        if first <= self.last_index():
            self.epoch += 1  # entries replaced: earlier write reports no longer say what is on disk
        del self.entries[first - self.offset - 1:]
        self.entries.extend(entries)
        self.stabled = min(self.stabled, first - 1)
        self.in_progress = min(self.in_progress, first - 1)
        return self.last_index()

    def maybe_append(self, index: int, log_term: int, committed: int, entries: Sequence[Entry]) -> int | None:
        """A follower's AppendEntries: None if our log does not contain (index, log_term)."""
        if not self.match_term(index, log_term):
            return None
        last_new = index + len(entries)
        conflict = self.find_conflict(entries)
        if conflict:
            self.append(entries[conflict - index - 1:])
        self.commit_to(min(committed, last_new))
        return last_new

    def commit_to(self, index: int) -> None:
        if index > self.committed:
            if index > self.last_index():
                raise LogError(f"commit {index} beyond the last index {self.last_index()}")
            self.committed = index

    def applied_to(self, index: int) -> None:
        if index > self.committed or index < self.applied:
            raise LogError(f"applied {index} outside [{self.applied}, {self.committed}]")
        self.applied = index

    def accept(self, index: int) -> None:
        """Entries up to `index` were handed to storage (in a Ready): not handed out again."""
        self.in_progress = max(self.in_progress, min(index, self.last_index()))

    def stable_to(self, index: int, term: int, epoch: int | None = None) -> bool:
        """The driver made entries up to (index, term) durable, in a write handed out at `epoch`
        (None: now). False, and nothing changes, if the log was truncated since or no longer holds
        (index, term)."""
        if epoch is not None and epoch != self.epoch:
            return False
        if not self.match_term(index, term):
            return False
        if index > self.stabled:
            self.stabled = index
            self.in_progress = max(self.in_progress, index)
        return True

    def compact(self, snapshot: Snapshot, keep: int = 0) -> None:
        """The application made `snapshot` (of its state as applied up to its index) durable:
        keep it to send to followers that need it, and drop the entries it covers but the last
        `keep` of them."""
        meta = snapshot.meta
        if meta.index <= self.snapshot.meta.index:
            return  # no newer than the one we have: nothing to do
        if meta.index > self.applied:
            raise LogError(f"compacting to {meta.index} beyond the applied index {self.applied}")
        if self.term(meta.index) != meta.term:
            raise LogError(f"snapshot at {meta.index}@{meta.term} does not match the log")
        self.snapshot = snapshot
        upto = meta.index - keep
        if upto > self.offset:
            term = self.term(upto)
            assert term is not None
            del self.entries[:upto - self.offset]
            self.offset, self.offset_term = upto, term
            self.stabled = max(self.stabled, upto)
            self.in_progress = max(self.in_progress, upto)

    def restore(self, snapshot: Snapshot) -> None:
        """Replace the log by a snapshot from the leader: it becomes the pending snapshot, which
        the driver persists and hands to the state machine before any later entry."""
        meta: SnapshotMeta = snapshot.meta
        self.offset, self.offset_term = meta.index, meta.term
        self.entries = []
        self.committed = self.applied = self.stabled = self.in_progress = meta.index
        self.epoch += 1
        self.snapshot = self.pending_snapshot = snapshot

    def stable_snapshot(self, index: int) -> None:
        """The driver persisted and restored the pending snapshot at `index`."""
        if self.pending_snapshot is not None and self.pending_snapshot.meta.index == index:
            self.pending_snapshot = None
