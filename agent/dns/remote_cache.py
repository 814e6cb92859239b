"""DNS on a client agent: per-name catalog slices fetched from the servers and kept current.

A client has no catalog. For each name asked (keyed by `catalog.dns.slice_key`: one service, one
node, all nodes for PTR) it makes a stale read (`dns.slice`, any server, as DNS reads are stale by
default) and keeps the slice as a scratch store; the agent's Answerer answers from it, so answers
match a server's. After the first fetch a watcher task keeps the slice current with blocking
stale reads on the slice's own index (one per name asked for), so a change on the servers
reaches the client's answers as soon as the server that is asked has it. The slice counts as
current while its watcher's last read (or the fetch that started the watcher) is at most
WATCH_WAIT (plus slack) old; otherwise, or when no watcher runs, for FRESH_FOR seconds after a
fetch (a short-TTL cache). A watcher's read that brings the same bytes keeps the same store
object, so answers rendered from it stay valid (agent/dns/server.py). A name nobody asked for
in IDLE_EVICT seconds is dropped and its watcher ends. When no server answers, a slice we
already hold is served rather than failing (stale-if-error); with none, the query gets SERVFAIL.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio
from murmur.catalog.dns import SliceKey
from murmur.catalog.store import StateStore

from ..reads import ReadError

if TYPE_CHECKING:
    from ..remote import Remote

log = logging.getLogger("murmur.dns")

FRESH_FOR = 1.0  # seconds a fetched slice answers without asking again, when not watched
WATCH_WAIT = 10.0  # seconds a watcher's blocking read waits for a change
IDLE_EVICT = 60.0  # seconds a slice nobody asked for is kept
MAX_ENTRIES = 4096
FETCH_BUDGET = 2.0  # seconds a fetch keeps trying servers before the query gets SERVFAIL
WATCH_RETRY = 1.0  # seconds a watcher waits after a failed read


@dataclass
class Entry:
    store: StateStore
    index: int
    fetched: float  # when a server last confirmed this slice (fetch, or a watcher's read)
    used: float
    watched: bool = False  # a watcher's last read succeeded
    raw: bytes = b""  # the snapshot the store was restored from: a watcher's read that brings the
    # same bytes keeps the same store object, so the DNS server's renderings of it stay valid


class SliceCache:
    def __init__(self, remote: Remote, allow_stale: bool = True, max_stale: float = 87600 * 3600.0) -> None:
        self.remote = remote
        # The ACL token slices are fetched with (the agent's `default` token; None with ACLs off):
        # the server filters each slice to what that token may read.
        self.token: Callable[[], str | None] = lambda: None
        # dns_config.allow_stale / max_stale: stale reads from any server by default; a stale
        # answer from a server that has not heard from a leader for over max_stale is asked again
        # of the leader (and kept if no leader answers: DNS keeps answering without one).
        self.mode = "stale" if allow_stale else "default"
        self.max_stale_ms = max_stale * 1000.0
        self.entries: dict[SliceKey, Entry] = {}
        self.inflight: dict[SliceKey, trio.Event] = {}
        self.nursery: trio.Nursery | None = None  # set by the DNS server: watchers run here
        self.watching: set[SliceKey] = set()
        self.stats = {"dns_slice_fetches": 0, "dns_slice_errors": 0, "dns_slice_evicted": 0, "dns_slice_watchers": 0,
                      "dns_slice_watch_reads": 0, "dns_slice_changes": 0, "dns_slice_too_stale": 0}

    def _evict(self, now: float) -> None:
        for key in [k for k, e in self.entries.items() if now - e.used > IDLE_EVICT]:
            del self.entries[key]
            self.stats["dns_slice_evicted"] += 1
        while len(self.entries) > MAX_ENTRIES:
            oldest = min(self.entries, key=lambda k: self.entries[k].used)
            del self.entries[oldest]
            self.stats["dns_slice_evicted"] += 1

    @staticmethod
    def current(entry: Entry, now: float) -> bool:
        age = now - entry.fetched
        return age < FRESH_FOR or (entry.watched and age < WATCH_WAIT * 1.5 + FETCH_BUDGET)

    async def _read(self, key: SliceKey, index: int = 0, wait: float = 0.0) -> tuple[StateStore, int, bytes]:
        tok = self.token()
        auth: dict[str, Any] = {"token": tok} if tok is not None else {}
        res = await self.remote.read("dns.slice", {"key": list(key)}, mode=self.mode, index=index, wait=wait,
                                     budget=FETCH_BUDGET, **auth)
        if self.mode == "stale" and res.last_contact_ms > self.max_stale_ms:
            self.stats["dns_slice_too_stale"] += 1
            try:
                res = await self.remote.read("dns.slice", {"key": list(key)}, mode="default", budget=FETCH_BUDGET,
                                             **auth)
            except ReadError as exc:
                log.debug("dns: %s is over max_stale and no leader answered: %s", key, exc)
        if not isinstance(res.data, bytes):
            raise ReadError("bad_request", "dns.slice answered without a snapshot")
        return StateStore.restore(res.data), res.index, res.data

    async def get(self, key: SliceKey) -> StateStore:
        """The slice for `key` (see the module docstring). Raises ReadError if none can be had."""
        now = trio.current_time()
        self._evict(now)
        if key == ("none",):
            return StateStore()
        entry = self.entries.get(key)
        if entry is not None and self.current(entry, now):
            entry.used = now
            return entry.store
        pending = self.inflight.get(key)
        if pending is not None:  # someone is fetching it: use their answer
            await pending.wait()
            entry = self.entries.get(key)
            if entry is None:
                raise ReadError("no_leader", "No cluster leader")
            entry.used = trio.current_time()
            return entry.store
        done = trio.Event()
        self.inflight[key] = done
        try:
            self.stats["dns_slice_fetches"] += 1
            store, index, raw = await self._read(key)
        except ReadError:
            self.stats["dns_slice_errors"] += 1
            if entry is not None:
                entry.used = trio.current_time()
                return entry.store
            raise
        finally:
            del self.inflight[key]
            done.set()
        now = trio.current_time()
        # With a watcher (started below, or already running) the slice is watched from now on:
        # its blocking read on this index returns as soon as the slice changes.
        self.entries[key] = Entry(store, index, now, now, watched=self.nursery is not None, raw=raw)
        if self.nursery is not None and key not in self.watching:
            self.watching.add(key)
            self.nursery.start_soon(self._watch, key)
        return store

    async def _watch(self, key: SliceKey) -> None:
        """Keep one slice current with blocking stale reads until nobody asks for it."""
        self.stats["dns_slice_watchers"] += 1
        try:
            while key in self.entries:
                entry = self.entries[key]
                if trio.current_time() - entry.used > IDLE_EVICT:
                    del self.entries[key]
                    self.stats["dns_slice_evicted"] += 1
                    return
                try:
                    store, index, raw = await self._read(key, entry.index, WATCH_WAIT)
                except ReadError as exc:
                    entry.watched = False
                    self.stats["dns_slice_errors"] += 1
                    log.debug("dns: watching %s: %s", key, exc)
                    await trio.sleep(WATCH_RETRY)
                    continue
                self.stats["dns_slice_watch_reads"] += 1
                current = self.entries.get(key)
                if current is not None:
                    if raw != current.raw:  # a change: the new store (renderings of the old one lapse)
                        self.stats["dns_slice_changes"] += 1
                        current.store, current.raw = store, raw
                    current.index = index
                    current.fetched, current.watched = trio.current_time(), True
        finally:
            self.watching.discard(key)
            self.stats["dns_slice_watchers"] -= 1
