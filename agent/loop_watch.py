"""Notice when the agent's event loop stalls, and say whether it was busy or starved.

Gossip acks, Raft heartbeats and HTTP answers all wait on this one trio loop. A loop that does not
run for a second looks, from the outside, like a dead VM, so a "member failed" about a live agent
is best explained by its own log. This task wakes every PERIOD and compares how late it woke with
how much CPU the process used meanwhile: late with CPU spent is blocking work in the agent (a bug
to fix); late without it is the OS not scheduling us (an overloaded host, or SIGSTOP).
"""

from __future__ import annotations

import logging
import time

import trio

log = logging.getLogger("murmur.agent")

PERIOD = 0.25  # seconds between wake-ups: cheap (4 wake-ups a second) and fine enough for 0.5 s
STALL = 0.5  # seconds late before it is logged: a probe timeout is 0.2-0.5 s in the fast presets


class LoopWatch:
    def __init__(self) -> None:
        self.stalls = 0
        self.worst = 0.0  # seconds, the longest stall seen

    async def run(self) -> None:
        while True:
            t0, cpu0 = trio.current_time(), time.process_time()
            await trio.sleep(PERIOD)
            late = trio.current_time() - t0 - PERIOD
            if late < STALL:
                continue
            cpu = time.process_time() - cpu0
            self.stalls += 1
            self.worst = max(self.worst, late)
            log.warning("event loop stalled for %.0f ms (process CPU meanwhile %.0f ms: %s)", late * 1e3, cpu * 1e3,
                        "busy in the agent" if cpu > 0.5 * late else "starved by the host, or stopped")
