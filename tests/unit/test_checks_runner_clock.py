"""The check runner on trio's virtual clock, with scripted probe results: flap damping as the
catalog sees it, and TTL expiry to the (virtual) millisecond."""

from __future__ import annotations

import random
from typing import Any

import pytest
import trio
import trio.testing
from murmur.agent import checks_runner
from murmur.agent.checks_runner import CheckRunner
from murmur.agent.local_state import LocalState, NodeInfo
from murmur.catalog import commands as cmds
from murmur.catalog.commands import ServiceSpec
from murmur.catalog.store import StateStore
from murmur.checks.definitions import from_api

P, C = "passing", "critical"


class Catalog:
    """A StateStore kept in sync by the runner's on_change, recording every status it shows."""

    def __init__(self, local: LocalState, cid: str) -> None:
        self.store, self.index, self.local, self.cid = StateStore(), 0, local, cid
        self.statuses: list[str] = []

    async def sync(self) -> None:
        for cmd in self.local.sync_commands(self.store, trio.current_time()):
            self.index += 1
            assert self.store.apply(self.index, cmds.encode(cmd)) is True
        rec = self.store.checks.get("n1", {}).get(self.cid)
        if rec is not None and (not self.statuses or self.statuses[-1] != rec.spec.status):
            self.statuses.append(rec.spec.status)


def changes(statuses: list[str]) -> int:
    """The flap counter: status changes the catalog went through after the first passing."""
    if P not in statuses:
        return 0
    seen = statuses[statuses.index(P):]
    return sum(1 for a, b in zip(seen, seen[1:], strict=False) if a != b)


def test_flap_counter_sees_flaps() -> None:
    # Proving the checker: a known-flapping history counts, a steady one does not.
    assert changes([C, P, C, P, C]) == 3
    assert changes([C, P]) == 0 and changes([C]) == 0


def run_scripted(monkeypatch: pytest.MonkeyPatch, results: list[str], **thresholds: Any) -> list[str]:
    script = list(results)

    async def probe(defn: Any, http: Any = None) -> tuple[str, str]:
        return (script.pop(0), "scripted") if script else (P, "done")

    monkeypatch.setattr(checks_runner, "run_probe", probe)
    local = LocalState(NodeInfo("n1", "id-1", "10.0.0.1", "dc1"))
    local.add_service(ServiceSpec(id="web", name="web"))
    defn = from_api({"Name": "web", "TCP": "127.0.0.1:1", "Interval": "10s", "ServiceID": "web", **thresholds})
    local.add_check(defn, 0.0)
    cat = Catalog(local, defn.id)

    async def main() -> None:
        runner = CheckRunner(local, cat.sync, random.Random(7))
        async with trio.open_nursery() as nursery:
            await nursery.start(runner.serve)
            await cat.sync()
            runner.reconcile()
            await trio.sleep(10 * (len(results) + 2))  # virtual: one probe per 10 s interval
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    return cat.statuses


FLAPPY = [P, C, C, P, C, P, C, C, P, P, C, P]  # never 3 failures in a row


def test_no_run_of_three_failures_gives_no_catalog_change(monkeypatch: pytest.MonkeyPatch) -> None:
    damped = run_scripted(monkeypatch, FLAPPY, FailuresBeforeCritical=3)
    assert damped == [C, P] and changes(damped) == 0
    # Positive control: the same results without damping flap the catalog.
    assert changes(run_scripted(monkeypatch, FLAPPY)) >= 8


def test_exactly_three_failures_give_one_change_and_successes_one_back(monkeypatch: pytest.MonkeyPatch) -> None:
    statuses = run_scripted(monkeypatch, [P, P, C, C, C, P, P, P], FailuresBeforeCritical=3, SuccessBeforePassing=2)
    # Starts critical; 2 successes to passing; 3 failures: one change to critical; 2 successes: one back.
    assert statuses == [C, P, C, P] and changes(statuses) == 2
    # A run of 2 failures only, with the same thresholds: no change after the first passing.
    assert run_scripted(monkeypatch, [P, P, C, C, P, P], FailuresBeforeCritical=3, SuccessBeforePassing=2) == [C, P]


def test_ttl_expiry_on_the_virtual_clock() -> None:
    local = LocalState(NodeInfo("n1", "id-1", "10.0.0.1", "dc1"))
    defn = from_api({"Name": "beat", "TTL": "10s", "Status": "passing"})
    seen: list[tuple[float, str, str]] = []

    async def on_change() -> None:
        c = local.checks["beat"]
        seen.append((trio.current_time(), c.machine.status, c.machine.output))

    async def main() -> None:
        local.add_check(defn, trio.current_time())
        runner = CheckRunner(local, on_change, random.Random(1))
        async with trio.open_nursery() as nursery:
            await nursery.start(runner.serve)
            runner.reconcile()
            await trio.sleep(6)
            ttl = local.checks["beat"].ttl
            assert ttl is not None
            local.checks["beat"].machine.force(P, "alive")  # what PUT /v1/agent/check/pass does
            ttl.refresh(trio.current_time())
            runner.refreshed("beat")
            await trio.sleep(30)
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert len(seen) == 1
    t, status, output = seen[0]
    assert status == C and output.startswith("TTL expired")
    assert t == pytest.approx(16.0, abs=1e-6)  # 6 s + the refreshed 10 s, not the first deadline at 10 s


def test_local_alias_follows_at_once_when_poked() -> None:
    local = LocalState(NodeInfo("n1", "id-1", "10.0.0.1", "dc1"))
    local.add_service(ServiceSpec(id="web", name="web"))
    seen: list[tuple[float, str]] = []

    async def main() -> None:
        local.add_check(from_api({"Name": "web", "TTL": "1h", "Status": "passing", "ServiceID": "web"}), 0.0)
        local.add_check(from_api({"Name": "follow", "AliasService": "web"}), 0.0)
        runner: CheckRunner

        async def on_change() -> None:
            seen.append((trio.current_time(), local.checks["follow"].machine.status))
            runner.poke()

        runner = CheckRunner(local, on_change, random.Random(1))
        async with trio.open_nursery() as nursery:
            await nursery.start(runner.serve)
            runner.reconcile()
            await trio.sleep(5.3)
            local.checks["web"].machine.force(C, "down")  # what check/fail does, then the agent syncs
            runner.poke()
            await trio.sleep(5)
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert seen[0] == (0.0, P)  # starts critical (the default), follows web to passing at once
    assert seen[1] == (pytest.approx(5.3), C)  # and to critical when poked, not at the next 1 s poll
    assert len(seen) == 2


def test_output_only_changes_ask_for_a_sync_only_when_due(monkeypatch: pytest.MonkeyPatch) -> None:
    """A target whose body changes every run: with check_update_interval 60 s and a 10 s interval,
    the runner asks for a sync on the status change and then about once a minute, not every run;
    with check_update_interval 0, every run."""
    def syncs_asked(update_interval: float) -> list[float]:
        n = [0]

        async def probe(defn: Any, http: Any = None) -> tuple[str, str]:
            n[0] += 1
            return P, f"body {n[0]}"

        monkeypatch.setattr(checks_runner, "run_probe", probe)
        local = LocalState(NodeInfo("n1", "id-1", "10.0.0.1", "dc1"), check_update_interval=update_interval)
        local.add_check(from_api({"Name": "web", "TCP": "127.0.0.1:1", "Interval": "10s"}), 0.0)
        store, asked = StateStore(), []

        async def on_change() -> None:  # what the agent's sync pass does, recorded
            asked.append(trio.current_time())
            for i, cmd in enumerate(local.sync_commands(store, trio.current_time())):
                assert store.apply(len(asked) * 100 + i + 1, cmds.encode(cmd)) is True

        async def main() -> None:
            runner = CheckRunner(local, on_change, random.Random(3))
            async with trio.open_nursery() as nursery:
                await nursery.start(runner.serve)
                runner.reconcile()
                await trio.sleep(305)  # ~30 runs
                nursery.cancel_scope.cancel()

        trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
        assert n[0] >= 29
        return asked

    paced = syncs_asked(60.0)
    assert 5 <= len(paced) <= 7  # the change to passing, then one per 60 s
    assert all(b - a >= 60.0 for a, b in zip(paced[1:], paced[2:], strict=False))
    assert len(syncs_asked(0.0)) >= 29  # control: unpaced, every run's new output is written
