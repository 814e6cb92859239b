"""The write path: every catalog change is a command applied through here.

`LocalSequencer` numbers commands itself and applies them to the local store at once: the
stand-in for Raft in `--dev`, behind the interface a Raft-backed writer fills later
(`apply(command)` returns the command's result once it is committed and applied).
"""

from __future__ import annotations

from typing import Any, Protocol

from murmur.catalog import commands
from murmur.catalog.store import StateStore

from .watch import ChangeFeed


class Writer(Protocol):
    async def apply(self, cmd: commands.Command) -> Any: ...


class LocalSequencer:
    def __init__(self, store: StateStore, feed: ChangeFeed) -> None:
        self.store = store
        self.feed = feed

    async def apply(self, cmd: commands.Command) -> Any:
        result = self.store.apply(self.store.last_index + 1, commands.encode(cmd))
        self.feed.notify()
        return result

    @property
    def leader(self) -> bool:
        return True
