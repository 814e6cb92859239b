"""Wake blocking readers when the catalog changes.

One trio.Event per generation: every applied write sets the current event and installs a new
one. Readers compare the table index they care about and sleep on the event; a write to an
unrelated table wakes them, they re-check, and go back to sleep, which is cheap at our scale.
"""

from __future__ import annotations

from collections.abc import Callable

import trio


class ChangeFeed:
    def __init__(self) -> None:
        self._event = trio.Event()
        # Called synchronously on every change, before any waiter runs (the lock-delay clock).
        self.listeners: list[Callable[[], None]] = []

    def notify(self) -> None:
        for listener in self.listeners:
            listener()
        self._event.set()
        self._event = trio.Event()

    async def wait_past(self, current: Callable[[], int], index: int, timeout: float) -> None:
        """Return once `current()` exceeds `index`, or after `timeout` seconds."""
        with trio.move_on_after(timeout):
            while current() <= index:
                await self._event.wait()
