"""A Lamport clock: orders intents (tag updates, leaves, user events) across members."""

from __future__ import annotations


class LamportClock:
    def __init__(self) -> None:
        self.time = 0

    def increment(self) -> int:
        self.time += 1
        return self.time

    def witness(self, other: int) -> None:
        """Move past a time seen from another member."""
        if other >= self.time:
            self.time = other + 1
