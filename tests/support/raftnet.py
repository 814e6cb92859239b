"""An in-memory network of RawNodes for transcript tests (etcd-io/raft's `network`, in spirit).

`send` delivers messages depth-first until nothing is left, through per-link drop rules, while
each node's Ready is "persisted" into a record (hard state + entries) and applied to a list.
A node can be crashed and restarted from what it persisted, to test durability.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from murmur.raft.config import RaftConfig
from murmur.raft.core import ProposalDropped
from murmur.raft.messages import Entry, EntryType, HardState, Message, MessageType, Role, Snapshot
from murmur.raft.rawnode import RawNode


@dataclass
class Disk:
    hard: HardState = field(default_factory=HardState)
    entries: list[Entry] = field(default_factory=list)  # from base + 1
    snapshot: Snapshot | None = None
    base: int = 0

    def offset(self) -> int:
        return self.base

    def log_after_snapshot(self) -> list[Entry]:
        """What a restart reads: the entries after the snapshot."""
        s = self.snapshot.meta.index if self.snapshot else 0
        return [e for e in self.entries if e.index > s]

    def persist(self, hard: HardState | None, entries: list[Entry], snapshot: Snapshot | None = None) -> None:
        if snapshot is not None:  # a leader's snapshot replaces the whole log
            self.snapshot = snapshot
            self.entries = []
            self.base = snapshot.meta.index
        if hard is not None:
            self.hard = hard
        if entries:
            first = entries[0].index
            del self.entries[first - 1 - self.offset():]
            self.entries.extend(entries)

    def compact(self, snapshot: Snapshot, upto: int | None = None) -> None:
        """The application's own snapshot: drop the entries up to `upto` (default: all it covers)."""
        upto = snapshot.meta.index if upto is None else upto
        del self.entries[:max(0, upto - self.base)]
        self.base = max(self.base, upto)
        self.snapshot = snapshot


class Net:
    def __init__(self, n: int, seed: int = 0, **cfg: object) -> None:
        self.ids = list(range(1, n + 1))
        self.rng = random.Random(seed)
        self.cfg = cfg
        self.disks = {i: Disk() for i in self.ids}
        self.applied: dict[int, list[Entry]] = {i: [] for i in self.ids}
        self.nodes: dict[int, RawNode] = {}
        self.down: set[int] = set()
        self.cut: set[tuple[int, int]] = set()  # (from, to) links that drop messages
        self.drop_types: set[MessageType] = set()
        self.log: list[Message] = []
        for i in self.ids:
            self.start(i)

    def start(self, i: int) -> None:
        disk = self.disks[i]
        config = RaftConfig(id=i, **self.cfg)  # type: ignore[arg-type]
        self.nodes[i] = RawNode(config, self.ids, random.Random(self.rng.random()), disk.hard, disk.log_after_snapshot(),
                                snapshot=disk.snapshot, applied=0)
        self.applied[i] = []
        self.down.discard(i)

    def crash(self, i: int) -> None:
        self.down.add(i)

    def isolate(self, i: int) -> None:
        for j in self.ids:
            if j != i:
                self.cut.add((i, j))
                self.cut.add((j, i))

    def heal(self) -> None:
        self.cut.clear()

    def node(self, i: int) -> RawNode:
        return self.nodes[i]

    def _drain(self, i: int) -> list[Message]:
        node = self.nodes[i]
        out: list[Message] = []
        while node.has_ready():
            rd = node.ready()
            self.disks[i].persist(rd.hard_state, rd.entries, rd.snapshot)
            out.extend(rd.messages)
            self.applied[i].extend(rd.committed_entries)
            node.advance(rd)
        return out

    def deliver(self, msgs: list[Message], limit: int = 100_000) -> None:
        queue = list(msgs)
        for _ in range(limit):
            if not queue:
                return
            m = queue.pop(0)
            if m.to in self.down or (m.frm, m.to) in self.cut or m.type in self.drop_types:
                continue
            self.log.append(m)
            self.nodes[m.to].step(m)
            queue.extend(self._drain(m.to))
        raise AssertionError("message storm: delivery did not settle")

    def campaign(self, i: int) -> None:
        self.nodes[i].campaign()
        self.deliver(self._drain(i))

    def propose(self, i: int, data: bytes) -> None:
        self.nodes[i].propose(data)
        self.deliver(self._drain(i))

    def tick(self, i: int, times: int = 1) -> None:
        for _ in range(times):
            self.nodes[i].tick()
            self.deliver(self._drain(i))

    def tick_all(self, times: int = 1) -> None:
        for _ in range(times):
            for i in self.ids:
                if i not in self.down:
                    self.tick(i)

    def leader(self) -> int | None:
        leaders = [i for i in self.ids if i not in self.down and self.nodes[i].raft.role == Role.LEADER]
        return leaders[0] if len(leaders) == 1 else None

    def data(self, i: int) -> list[bytes]:
        return [e.data for e in self.applied[i] if e.type == EntryType.NORMAL]


__all__ = ["Net", "ProposalDropped"]
