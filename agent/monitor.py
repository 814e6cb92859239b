"""The agent's log, streamed to `GET /v1/agent/monitor` clients (and `murmur monitor`).

A LogHub is a logging handler on the root logger that hands each record to the subscribers whose
level it reaches. A subscriber is a bounded queue: a slow client loses lines (and is told how many)
rather than slowing the agent or growing its memory. Records may come from worker threads (Raft
storage): the wake-up goes through the trio token, which is thread-safe.

A subscriber may ask for more detail than the agent logs (`loglevel=debug` on an agent at info):
the root logger is lowered while it listens, and the other handlers (stderr) keep the agent's own
level, so the agent's log does not change. The level is restored when the last such client leaves.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque

import trio

# Consul's level names (hclog); Python has no TRACE, so trace is debug.
LEVELS = {"trace": logging.DEBUG, "debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
          "warning": logging.WARNING, "error": logging.ERROR}
HCLOG_NAMES = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warn", logging.ERROR: "error",
               logging.CRITICAL: "error"}
QUEUE_LINES = 512  # lines a subscriber may fall behind before lines are dropped


def parse_level(text: str) -> int:
    """A Consul log level name (any case) as a logging level; ValueError names the bad one."""
    level = LEVELS.get(text.strip().lower())
    if level is None:
        raise ValueError(f"Unknown log level: {text}")
    return level


def timestamp(created: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created % 1 * 1000):03d}Z"


def format_record(record: logging.LogRecord, as_json: bool) -> str:
    """One log line, as Consul writes it: text `<time> [LEVEL] <module>: <message>`, or hclog's JSON."""
    msg = record.getMessage()
    if record.exc_info and record.exc_info[0] is not None:
        msg += "\n" + logging.Formatter().formatException(record.exc_info)
    level = HCLOG_NAMES.get(record.levelno, record.levelname.lower())
    if as_json:
        return json.dumps({"@level": level, "@message": msg, "@module": record.name,
                           "@timestamp": timestamp(record.created)}) + "\n"
    return f"{timestamp(record.created)} [{level.upper()}] {record.name}: {msg}\n"


class JSONFormatter(logging.Formatter):
    """For the agent's own log with `log_json`: one hclog-style JSON object a line."""

    def format(self, record: logging.LogRecord) -> str:
        return format_record(record, True).rstrip("\n")


class Subscriber:
    def __init__(self, level: int, as_json: bool, token: trio.lowlevel.TrioToken) -> None:
        self.level = level
        self.as_json = as_json
        self.token = token
        self.lines: deque[str] = deque()
        self.dropped = 0
        self.event = trio.Event()

    def push(self, line: str) -> None:  # any thread
        if len(self.lines) >= QUEUE_LINES:
            self.dropped += 1
        else:
            self.lines.append(line)
        try:
            self.token.run_sync_soon(self.event.set)
        except trio.RunFinishedError:
            pass

    async def next_chunk(self) -> str:
        """Wait for lines and take them all (with a note of any dropped)."""
        while not self.lines and not self.dropped:
            await self.event.wait()
            self.event = trio.Event()
        out = []
        if self.dropped:
            out.append(format_record(logging.LogRecord(
                "murmur.monitor", logging.WARNING, "", 0, "monitor: dropped %d log lines (client too slow)",
                (self.dropped,), None), self.as_json))
            self.dropped = 0
        while self.lines:
            out.append(self.lines.popleft())
        return "".join(out)


class LogHub(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.subscribers: list[Subscriber] = []
        self.base_level: int | None = None  # the root level before any subscriber lowered it

    def emit(self, record: logging.LogRecord) -> None:
        subs = self.subscribers
        if not subs:
            return
        try:
            for sub in list(subs):
                if record.levelno >= sub.level:
                    sub.push(format_record(record, sub.as_json))
        except Exception:
            self.handleError(record)

    def install(self) -> None:
        root = logging.getLogger()
        if self not in root.handlers:
            root.addHandler(self)

    def uninstall(self) -> None:
        logging.getLogger().removeHandler(self)
        self.subscribers.clear()
        self._set_root_level()

    def subscribe(self, level: int, as_json: bool) -> Subscriber:
        sub = Subscriber(level, as_json, trio.lowlevel.current_trio_token())
        self.subscribers.append(sub)
        self._set_root_level()
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        if sub in self.subscribers:
            self.subscribers.remove(sub)
        self._set_root_level()

    def _set_root_level(self) -> None:
        root = logging.getLogger()
        if self.base_level is None:
            self.base_level = root.level
            for h in root.handlers:  # other handlers keep the agent's level when the root is lowered
                if h is not self and h.level == logging.NOTSET:
                    h.setLevel(self.base_level)
        wanted = min([self.base_level, *(s.level for s in self.subscribers)])
        root.setLevel(wanted)
        if not self.subscribers:
            self.base_level = None
