"""Lifeguard's local health awareness: a small score that slows us down when we look unwell.

A member that misses nacks from its helpers, or has to refute suspicions of itself, is probably
the slow one (CPU starvation, a full socket buffer). Scaling its own probe interval and timeout by
(score + 1) keeps it from accusing healthy peers while it recovers.
"""

from __future__ import annotations


class Awareness:
    def __init__(self, max_multiplier: int) -> None:
        self.max = max_multiplier
        self.score = 0

    def apply_delta(self, delta: int) -> None:
        self.score = min(self.max - 1, max(0, self.score + delta))

    def scale(self, timeout: float) -> float:
        return timeout * (self.score + 1)
