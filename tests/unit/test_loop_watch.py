"""The loop watch logs a stall only when the loop really did not run, and says which kind."""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing
from murmur.agent.loop_watch import PERIOD, LoopWatch


async def test_a_loop_that_did_not_run_for_two_seconds_is_reported_once(
        mock_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture) -> None:
    w = LoopWatch()
    caplog.set_level(logging.WARNING, logger="murmur.agent")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(w.run)
        for _ in range(8):  # positive control: two seconds of on-time wake-ups are not stalls
            await trio.testing.wait_all_tasks_blocked()
            mock_clock.jump(PERIOD)
        await trio.testing.wait_all_tasks_blocked()
        assert w.stalls == 0
        mock_clock.jump(PERIOD + 2.0)  # the watch wakes 2 s late, with no CPU spent meanwhile
        await trio.testing.wait_all_tasks_blocked()
        assert w.stalls == 1 and w.worst == pytest.approx(2.0, abs=0.01)
        mock_clock.jump(PERIOD)
        await trio.testing.wait_all_tasks_blocked()
        assert w.stalls == 1
        nursery.cancel_scope.cancel()
    (rec,) = [r for r in caplog.records if "stalled" in r.getMessage()]
    assert "2000 ms" in rec.getMessage() and "starved" in rec.getMessage()
