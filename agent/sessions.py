"""Sessions on the agent side: Consul's create-body rules, and the server tasks that run the clocks.

* Every server keeps lock-delay deadlines (`catalog.sessions.LockDelays`), fed synchronously from
  the change feed so a deadline starts when the invalidation is applied here.
* The Raft leader alone runs the session TTL timers and the tombstone GC. On becoming leader it
  starts every TTL timer afresh with the full TTL (as Consul does); an expiry is a replicated
  EXPIRE command (ignored if a renewal got in first), a reap is a replicated KV REAP.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

import trio
from murmur.catalog.commands import KV, KVOp, Session, SessionOp
from murmur.catalog.sessions import SessionTimers, TombstoneGC
from murmur.checks.durations import HOUR, SECOND, parse_duration_ns

from .writer import WriteFailed

if TYPE_CHECKING:
    from .agent import Agent

log = logging.getLogger("murmur.sessions")

SESSION_TTL_MIN = 10 * SECOND
SESSION_TTL_MAX = 24 * HOUR
LOCK_DELAY_MAX = 60 * SECOND
LOCK_DELAY_SECONDS_BELOW = 1000  # a JSON number below this counts seconds (Ansible sends 15), else ns
POLL = 0.5  # seconds between looks at the leadership when nothing else wakes the task


class SessionError(ValueError):
    """A create body that breaks Consul's rules (HTTP 400)."""


def parse_lock_delay(value: Any) -> int:
    """LockDelay in nanoseconds: a Go duration string ("15s"), or a number: below 1000 it counts
    seconds, else nanoseconds. 0 (no delay) to 60 s."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise SessionError(f"Invalid LockDelay {value!r}: want a duration such as \"15s\"")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise SessionError(f"Invalid LockDelay {value!r}")
        ns = int(value * SECOND) if value < LOCK_DELAY_SECONDS_BELOW else int(value)
    else:
        try:
            ns = parse_duration_ns(value)
        except ValueError as exc:
            raise SessionError(f"Invalid LockDelay: {exc}") from exc
    if ns < 0:
        raise SessionError(f"Invalid LockDelay {value!r}: negative")
    if ns > LOCK_DELAY_MAX:
        raise SessionError(f"Lock delay must be at most 60s (got {value!r})")
    return ns


def parse_ttl(value: Any) -> str:
    """TTL as given ("20s"), validated: empty or zero for none, else 10 s to 24 h."""
    if value is None or value == "":
        return ""
    if not isinstance(value, str):
        raise SessionError(f"Session TTL {value!r} invalid: want a duration string such as \"30s\"")
    try:
        ns = parse_duration_ns(value)
    except ValueError as exc:
        raise SessionError(f"Session TTL '{value}' invalid: {exc}") from exc
    if ns == 0:
        return ""
    if not SESSION_TTL_MIN <= ns <= SESSION_TTL_MAX:
        raise SessionError(f"Invalid Session TTL '{value}', must be between [10s=24h0m0s]")
    return value


def ttl_seconds(ttl: str) -> float:
    try:
        return parse_duration_ns(ttl) / SECOND if ttl else 0.0
    except ValueError:
        return float(SESSION_TTL_MAX // SECOND)  # (validated on the way in; never expire early)


async def leader_clocks(agent: Agent, tombstone_ttl: float | None = None) -> None:
    """Session TTL timers and tombstone GC, on the Raft leader only."""
    timers = SessionTimers(ttl_seconds)
    gc = TombstoneGC() if tombstone_ttl is None else TombstoneGC(tombstone_ttl, min(30.0, tombstone_ttl))
    leading = False
    gc_seen = 0
    seen = -1
    synced: tuple[int, int, int] | None = None  # the store's sessions_version the timers last saw
    while True:
        srv = agent.server
        is_leader = srv is not None and srv.driver is not None and srv.driver.is_leader
        now = trio.current_time()
        store = agent.store
        if is_leader != leading:
            synced = None
        if is_leader and not leading:  # fresh timers, full TTL; every tombstone from now
            timers.clear()
            gc.clear()
            gc.hint(store.gc_index, now)
            gc_seen = store.gc_index
        elif not is_leader and leading:
            timers.clear()
            gc.clear()
        leading = is_leader
        if leading:
            version = store.sessions_version()
            if version != synced:  # (a KV write changes no session: no scan of them all)
                timers.sync(store, now)
                synced = version
            if store.gc_index != gc_seen:
                gc.hint(store.gc_index, now)
                gc_seen = store.gc_index
            for sid, renew_index in timers.expired(now):
                timers.deadlines.pop(sid, None)  # proposed once; a renewal or a new term restarts it
                log.info("session %s expired (TTL, not renewed): invalidating it", sid)
                if not await _write(agent, Session(SessionOp.EXPIRE, sid, renew_index=renew_index)):
                    timers.deadlines[sid] = trio.current_time() + 1.0  # try again shortly
            reap = gc.due(now)
            if reap:
                await _write(agent, KV(KVOp.REAP, "", index=reap))
        deadlines = [d for d in (timers.next_deadline(), gc.next_deadline()) if d is not None]
        timeout = max(0.01, min([POLL, *(d - trio.current_time() for d in deadlines)]))
        seen = agent.store.last_index
        await agent.feed.wait_past(lambda: agent.store.last_index, seen, timeout)


async def _write(agent: Agent, cmd: Any) -> bool:
    try:
        await agent.writer.apply(cmd)
    except WriteFailed as exc:  # lost the leadership meanwhile: the next leader restarts the clocks
        log.debug("session clock write deferred: %s", exc)
        return False
    return True
