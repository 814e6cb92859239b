"""A lab-only delay on what this agent sends (gossip datagrams, Raft frames), for the fault lab's
`delay` fault (tests/lab/chaos.py): this kernel has no netem, so the delay lives in our own send
path instead.

Off unless MURMUR_LAB_DELAY_FILE names a file; then that file, re-read at most once a second,
holds "LO HI" in milliseconds (each send waits a uniform random time in [LO, HI]) or nothing / is
missing (no delay). When the variable is unset, `seconds()` is one attribute check. Never set it
outside the lab.
"""

from __future__ import annotations

import os
import random
import time


class LabDelay:
    def __init__(self, path: str = "") -> None:
        self.path = path
        self.range_s: tuple[float, float] = (0.0, 0.0)
        self._read_at = -1e9
        self._rng = random.Random()

    def seconds(self) -> float:
        """The delay for one send now, in seconds (0.0: send at once)."""
        if not self.path:
            return 0.0
        now = time.monotonic()
        if now - self._read_at >= 1.0:
            self._read_at = now
            self.range_s = self._load()
        lo, hi = self.range_s
        return self._rng.uniform(lo, hi) if hi > 0 else 0.0

    def _load(self) -> tuple[float, float]:
        try:
            with open(self.path) as f:
                parts = f.read().split()
            lo, hi = (float(parts[0]), float(parts[-1])) if parts else (0.0, 0.0)
        except (OSError, ValueError):
            return (0.0, 0.0)
        lo, hi = max(0.0, min(lo, hi)), max(0.0, lo, hi)
        return (lo / 1000.0, min(hi, 10_000.0) / 1000.0)


DELAY = LabDelay(os.environ.get("MURMUR_LAB_DELAY_FILE", ""))
