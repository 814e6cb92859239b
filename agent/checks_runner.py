"""Runs the agent's checks: one trio task per probed or TTL check.

A task owns nothing but its loop; results go into the check's StatusMachine (pure) and a change
triggers anti-entropy. Reload keeps the task of an unchanged check running, so its status and
thresholds carry over; a changed definition restarts it.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio
from murmur.checks.alias import alias_status
from murmur.checks.definitions import CheckDefinition
from murmur.checks.probes import run_probe
from murmur.checks.status import CRITICAL, TTLTimer

from .local_state import LocalCheck, LocalState

if TYPE_CHECKING:
    from .metrics import Aggregate, Metrics

log = logging.getLogger("murmur.checks")

ALIAS_POLL = 1.0  # at most this many seconds between looks at the local checks for a local alias


class CheckRunner:
    def __init__(self, local: LocalState, on_change: Callable[[], Awaitable[object]], rng: random.Random) -> None:
        self.local = local
        self.on_change = on_change
        self.rng = rng
        self.nursery: trio.Nursery | None = None
        self.running: dict[str, tuple[CheckDefinition, trio.CancelScope]] = {}
        self.wakeups: dict[str, trio.Event] = {}
        self.metrics: Metrics | None = None  # set by the agent (agent/metrics.py)
        self._aggs: dict[str, Aggregate] = {}  # the metrics series each run adds to
        self.changed = trio.Event()  # set by poke() when local state may have changed (alias checks)
        # Alias checks of another node: (node, index) -> (index, health.node rows). Set by the agent.
        self.read_node_checks: Callable[[str, int], Awaitable[tuple[int, list[dict[str, Any]]]]] | None = None

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    def reconcile(self) -> None:
        """Start tasks for new or changed checks, stop those of removed checks."""
        for cid in list(self.running):
            defn, scope = self.running[cid]
            check = self.local.checks.get(cid)
            if check is None or check.defn != defn:
                scope.cancel()
                del self.running[cid]
                self.wakeups.pop(cid, None)
        for cid, check in self.local.checks.items():
            if cid in self.running or check.defn.kind not in ("http", "tcp", "script", "grpc", "ttl", "alias"):
                continue
            scope = trio.CancelScope()
            self.running[cid] = (check.defn, scope)
            assert self.nursery is not None, "CheckRunner.serve must be started first"
            target = {"ttl": self._ttl_loop, "alias": self._alias_loop}.get(check.defn.kind, self._probe_loop)
            self.nursery.start_soon(target, cid, check.defn, scope)

    async def _probe_loop(self, cid: str, defn: CheckDefinition, scope: trio.CancelScope) -> None:
        with scope:
            # Stagger the first run over one interval, as Consul does, so many checks do not fire
            # together after a start or reload, and their runs stay spread evenly afterwards.
            await trio.sleep(self.rng.uniform(0, defn.interval))
            while True:
                t0 = time.perf_counter()
                try:
                    status, output = await run_probe(defn)
                except Exception as exc:  # a probe bug must not kill the agent
                    log.exception("check %s: probe failed", cid)
                    status, output = CRITICAL, f"probe error: {exc}"
                if self.metrics is not None:
                    self._run_sample(defn.kind).add((time.perf_counter() - t0) * 1000.0, True)
                    self._result_counter(defn.kind, status).add(1.0, False)
                check = self.local.checks.get(cid)
                if check is None or (check.defn is not defn and check.defn != defn):
                    return
                before = check.machine.status
                if check.machine.record(status, output):
                    if check.machine.status != before:
                        log.info("check %s: %s -> %s", cid, before, check.machine.status)
                        await self.on_change()
                    elif self.output_due(check):
                        await self.on_change()
                    # else: only the output changed, and check_update_interval says it is not due
                    # yet: a pass now would write nothing. The periodic anti-entropy pass writes it
                    # once due (a target whose body changes every run costs no pass per run).
                await trio.sleep(defn.interval)

    def _run_sample(self, kind: str) -> Aggregate:
        """murmur.check.run{type}: looked up once per kind, not per run."""
        agg = self._aggs.get(kind)
        if agg is None:
            assert self.metrics is not None
            agg = self._aggs[kind] = self.metrics.sample("murmur.check.run", {"type": kind})
        return agg

    def _result_counter(self, kind: str, status: str) -> Aggregate:
        """murmur.check.results{type, status}."""
        key = kind + "\0" + status
        agg = self._aggs.get(key)
        if agg is None:
            assert self.metrics is not None
            agg = self._aggs[key] = self.metrics.counter("murmur.check.results", {"type": kind, "status": status})
        return agg

    def output_due(self, check: LocalCheck) -> bool:
        """May a change to this check's output alone be written now (check_update_interval)?"""
        interval = self.local.check_update_interval
        return interval <= 0 or trio.current_time() - check.output_synced_at >= interval

    def poke(self) -> None:
        """Local checks may have changed (the agent syncs after every change): wake local aliases."""
        self.changed.set()
        self.changed = trio.Event()

    def refreshed(self, cid: str) -> None:
        """A TTL check got an update: wake its task so it re-arms at the new deadline."""
        event = self.wakeups.get(cid)
        if event is not None:
            event.set()

    async def _ttl_loop(self, cid: str, defn: CheckDefinition, scope: trio.CancelScope) -> None:
        with scope:
            while True:
                check = self.local.checks.get(cid)
                if check is None or check.ttl is None or check.defn != defn:
                    return
                timer: TTLTimer = check.ttl
                event = self.wakeups[cid] = trio.Event()
                if timer.expired(trio.current_time()):
                    if check.machine.status != CRITICAL:
                        log.info("check %s: TTL expired", cid)
                        check.machine.force(CRITICAL, TTLTimer.expiry_output(timer.ttl))
                        await self.on_change()
                    await event.wait()
                else:
                    with trio.move_on_at(timer.deadline):
                        await event.wait()

    async def _alias_loop(self, cid: str, defn: CheckDefinition, scope: trio.CancelScope) -> None:
        """Follow the aliased service or node: the local agent's checks (polled), or another node's
        through blocking reads of its health (from the catalog, so a server or over RPC)."""
        with scope:
            local_node = not defn.alias_node or defn.alias_node == self.local.node.name
            index = 0
            while True:
                check = self.local.checks.get(cid)
                if check is None or check.defn != defn:
                    return
                changed = self.changed
                if local_node:
                    rows = [(c.defn.id, c.defn.service_id, c.machine.status) for c in self.local.checks.values()]
                    status, output = alias_status(rows, defn.alias_service, own_id=cid)
                elif self.read_node_checks is None:
                    status, output = CRITICAL, "alias of another node: no catalog to read"
                else:
                    try:
                        index, data = await self.read_node_checks(defn.alias_node, index)
                        rows = [(str(r.get("CheckID", "")), str(r.get("ServiceID", "")), str(r.get("Status", "")))
                                for r in data]
                        status, output = alias_status(rows, defn.alias_service, own_id=cid)
                        if not data:
                            status, output = CRITICAL, f"Node {defn.alias_node!r} not found"
                    except Exception as exc:  # no server reachable, say: critical, retry after a pause
                        status, output = CRITICAL, f"alias of node {defn.alias_node!r}: {exc}"
                        index = 0
                        await trio.sleep(ALIAS_POLL)
                check = self.local.checks.get(cid)
                if check is None or check.defn != defn:
                    return
                if check.machine.force(status, output):
                    await self.on_change()
                if local_node:
                    with trio.move_on_after(ALIAS_POLL):  # woken by any local change; the poll is a backstop
                        await changed.wait()
