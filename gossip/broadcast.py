"""The piggyback queue: updates waiting to ride on outgoing packets, each a limited number of times.

An update about a member supersedes every older queued update about the same member (a later
`alive` makes an earlier `suspect` pointless), so the queue holds at most one item per member
name. The least-sent items go first, and among equals the newest.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Broadcast:
    key: str  # the member the update is about; "" for items that never supersede each other
    msg: bytes  # one encoded message
    transmits: int = 0
    id: int = 0
    min_transmits: int = 0  # sent at least this often, whatever the queue's limit (user messages)


class BroadcastQueue:
    def __init__(self, max_size: int = 1 << 30) -> None:
        self.items: dict[str, Broadcast] = {}
        self.anonymous: list[Broadcast] = []
        self._next_id = 0
        # A message longer than this can never ride in a packet: queued, it would wait forever
        # (and keep a graceful leave waiting for the queue to drain). Such messages are dropped.
        self.max_size = max_size
        self.dropped_oversize = 0

    def __len__(self) -> int:
        return len(self.items) + len(self.anonymous)

    def queue(self, key: str, msg: bytes, min_transmits: int = 0) -> None:
        if len(msg) > self.max_size:
            self.dropped_oversize += 1
            return
        self._next_id += 1
        b = Broadcast(key, msg, 0, self._next_id, min_transmits)
        if key:
            self.items[key] = b  # replaces (invalidates) any older update about this member
        else:
            self.anonymous.append(b)

    def has(self, key: str) -> bool:
        """True if an update about member `key` is waiting."""
        return key in self.items

    def get(self, budget: int, overhead: int, limit: int) -> list[bytes]:
        """Messages fitting in `budget` bytes (each costing `overhead` extra), least-sent first.
        Each returned item counts one transmit and is dropped once it reaches `limit`."""
        out: list[bytes] = []
        candidates = sorted([*self.items.values(), *self.anonymous], key=lambda b: (b.transmits, -b.id))
        used = 0
        for b in candidates:
            cost = len(b.msg) + overhead
            if used + cost > budget:
                continue
            used += cost
            out.append(b.msg)
            b.transmits += 1
            if b.transmits >= limit and b.transmits >= b.min_transmits:
                if b.key and self.items.get(b.key) is b:
                    del self.items[b.key]
                elif not b.key:
                    self.anonymous.remove(b)
        return out

    def drain_pending(self) -> bool:
        """True while anything is still queued (a graceful leave waits for this to be False)."""
        return bool(self.items or self.anonymous)
