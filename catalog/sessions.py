"""Session rules and the time-driven bookkeeping around them, kept pure: `now` comes in.

* `SessionTimers`: the leader's TTL timers. Consul's rule: a session expires when it was not
  renewed for TTL x 2 (SESSION_TTL_MULTIPLIER); a new leader starts every timer afresh with the
  full TTL, so a leader change never shortens a session's life.
* `LockDelays`: turns the store's replicated lock-delay records (key -> (delay, index)) into
  deadlines on this server's clock, taken when the server first sees the record.
* `TombstoneGC`: when to reap KV tombstones (and lock-delay records): TTL after they appeared,
  bucketed by a granularity so that one reap covers many deletes (Consul's TombstoneGC).

The agent drives them (agent/sessions.py): timers and GC on the Raft leader only, lock delays on
every server.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from .store import StateStore

SESSION_TTL_MULTIPLIER = 2  # Consul invalidates a TTL session after TTL x 2 without a renewal
TOMBSTONE_TTL = 15 * 60.0  # seconds (Consul's tombstone_ttl)
TOMBSTONE_GRANULARITY = 30.0  # seconds
NS_PER_SECOND = 10**9


class SessionTimers:
    """The leader's TTL deadlines. `sync(store, now)` follows the store: new TTL sessions start a
    timer, a renewal (a new renew_index) restarts one, destroyed sessions drop theirs. `expired(now)`
    lists (session, renew_index) whose time ran out; the caller proposes an EXPIRE for each."""

    def __init__(self, ttl_seconds: Callable[[str], float]) -> None:
        self.ttl_seconds = ttl_seconds  # "20s" -> 20.0 (the agent's duration parser)
        self.deadlines: dict[str, float] = {}
        self.renewals: dict[str, int] = {}

    def clear(self) -> None:
        """Lost the leadership: the next leader owns the timers."""
        self.deadlines.clear()
        self.renewals.clear()

    def sync(self, store: StateStore, now: float) -> None:
        for sid in [s for s in self.deadlines if s not in store.sessions]:
            del self.deadlines[sid]
            del self.renewals[sid]
        for sid, rec in store.sessions.items():
            if not rec.ttl:
                continue
            if self.renewals.get(sid) != rec.renew_index:
                self.renewals[sid] = rec.renew_index
                self.deadlines[sid] = now + self.ttl_seconds(rec.ttl) * SESSION_TTL_MULTIPLIER

    def expired(self, now: float) -> list[tuple[str, int]]:
        return [(sid, self.renewals[sid]) for sid, at in sorted(self.deadlines.items()) if at <= now]

    def next_deadline(self) -> float | None:
        return min(self.deadlines.values(), default=None)


class LockDelays:
    """Lock-delay deadlines on this server's clock. `observe` must run soon after each apply (the
    agent calls it from the change feed), so a record's deadline starts when it was applied."""

    def __init__(self) -> None:
        self.deadlines: dict[str, float] = {}
        self.seen: dict[str, int] = {}  # key -> index of the record the deadline came from
        self.gc_index = -1

    def observe(self, store: StateStore, now: float) -> None:
        if store.gc_index == self.gc_index:  # no record was added since the last look
            return
        self.gc_index = store.gc_index
        for key, (delay_ns, index) in store.lock_delays.items():
            if self.seen.get(key) != index:
                self.seen[key] = index
                self.deadlines[key] = now + delay_ns / NS_PER_SECOND
        for key in [k for k in self.seen if k not in store.lock_delays]:
            del self.seen[key]
            self.deadlines.pop(key, None)

    def remaining(self, key: str, now: float) -> float:
        """Seconds before `key` may be locked again (0 when free)."""
        return max(0.0, self.deadlines.get(key, 0.0) - now)


class TombstoneGC:
    """Reap hints: `hint(index, now)` when the store's gc_index moves; `due(now)` is the highest
    index whose TTL ran out (reap everything at or below it), or 0."""

    def __init__(self, ttl: float = TOMBSTONE_TTL, granularity: float = TOMBSTONE_GRANULARITY) -> None:
        self.ttl = ttl
        self.granularity = granularity
        self.buckets: dict[float, int] = {}  # expiry time -> highest index hinted for it

    def clear(self) -> None:
        self.buckets.clear()

    def hint(self, index: int, now: float) -> None:
        if index <= 0:
            return
        at = math.ceil((now + self.ttl) / self.granularity) * self.granularity
        self.buckets[at] = max(index, self.buckets.get(at, 0))

    def due(self, now: float) -> int:
        ready = [at for at in self.buckets if at <= now]
        out = max((self.buckets.pop(at) for at in ready), default=0)
        return out

    def next_deadline(self) -> float | None:
        return min(self.buckets, default=None)
