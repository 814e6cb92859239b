"""DNS on a client agent: per-name catalog slices fetched from the servers, cached briefly.

A client has no catalog. For each name asked (keyed by `catalog.dns.slice_key`: one service, one
node, all nodes for PTR) it makes a stale read (`dns.slice`, any server, as DNS reads are stale by
default) and keeps the slice as a scratch store; the agent's Answerer answers from it, so answers
match a server's. A slice is fresh for FRESH_FOR seconds (a short-TTL cache, not a blocking
query: an instance that fails leaves a client's answers within about a second of leaving the
servers'), one fetch per key at a time, and is evicted once unused for IDLE_EVICT seconds. When
no server answers, a slice we already hold is served rather than failing (stale-if-error).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio
from murmur.catalog.dns import SliceKey
from murmur.catalog.store import StateStore

from ..reads import ReadError

if TYPE_CHECKING:
    from ..remote import Remote

log = logging.getLogger("murmur.dns")

FRESH_FOR = 1.0  # seconds a fetched slice answers without asking again
IDLE_EVICT = 60.0  # seconds a slice nobody asked for is kept
MAX_ENTRIES = 4096
FETCH_BUDGET = 2.0  # seconds a fetch keeps trying servers before the query gets SERVFAIL


@dataclass
class Entry:
    store: StateStore
    fetched: float
    used: float


class SliceCache:
    def __init__(self, remote: Remote) -> None:
        self.remote = remote
        self.entries: dict[SliceKey, Entry] = {}
        self.inflight: dict[SliceKey, trio.Event] = {}
        self.stats = {"dns_slice_fetches": 0, "dns_slice_errors": 0, "dns_slice_evicted": 0}

    def _evict(self, now: float) -> None:
        for key in [k for k, e in self.entries.items() if now - e.used > IDLE_EVICT]:
            del self.entries[key]
            self.stats["dns_slice_evicted"] += 1
        while len(self.entries) > MAX_ENTRIES:
            oldest = min(self.entries, key=lambda k: self.entries[k].used)
            del self.entries[oldest]
            self.stats["dns_slice_evicted"] += 1

    async def get(self, key: SliceKey) -> StateStore:
        """The slice for `key`, fresh within FRESH_FOR. Raises ReadError if none can be had."""
        now = trio.current_time()
        self._evict(now)
        if key == ("none",):
            return StateStore()
        for _ in range(3):  # wait for another task's fetch at most twice, then fetch ourselves
            entry = self.entries.get(key)
            if entry is not None and now - entry.fetched < FRESH_FOR:
                entry.used = now
                return entry.store
            pending = self.inflight.get(key)
            if pending is None:
                break
            await pending.wait()
            now = trio.current_time()
        done = trio.Event()
        self.inflight[key] = done
        try:
            self.stats["dns_slice_fetches"] += 1
            res = await self.remote.read("dns.slice", {"key": list(key)}, mode="stale", budget=FETCH_BUDGET)
            if not isinstance(res.data, bytes):
                raise ReadError("bad_request", "dns.slice answered without a snapshot")
            store = StateStore.restore(res.data)
        except ReadError:
            self.stats["dns_slice_errors"] += 1
            entry = self.entries.get(key)
            if entry is not None:
                entry.used = trio.current_time()
                return entry.store
            raise
        finally:
            del self.inflight[key]
            done.set()
        now = trio.current_time()
        self.entries[key] = Entry(store, now, now)
        return store
