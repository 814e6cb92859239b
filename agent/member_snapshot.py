"""The member snapshot: `data_dir/serf/local.snapshot`, so a restarted agent can rejoin on its own.

Serf's idea, in a format of our own: an append-only text log, one record per line,

    alive <name> <host>:<port>      a member is alive at this address
    not-alive <name>                it failed, left or was reaped
    leave                           this agent left on purpose
    start                           this agent started (clears an earlier `leave`)

Replaying it gives the members alive when the agent stopped; the agent joins them at start, unless
its last act was a graceful leave and `rejoin_after_leave` is off (Consul's rule: a leave is meant
to be permanent). The log is rewritten (temp file, fsync, rename) when it outgrows COMPACT_BYTES.
A damaged line is skipped with a count, never fatal: the snapshot is a hint, the join is checked.
Writes are flushed but not fsynced: losing the last records to a crash costs one stale address.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

log = logging.getLogger("murmur.agent")

COMPACT_BYTES = 128 * 1024  # rewrite past this size: a few hundred joins and failures of churn


@dataclass
class Replayed:
    alive: dict[str, str] = field(default_factory=dict)  # name -> "host:port"
    left: bool = False  # the last act of the agent was a graceful leave
    bad_lines: int = 0


def replay(text: str) -> Replayed:
    """What a snapshot says, line by line (later lines win)."""
    out = Replayed()
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "alive" and len(parts) == 3 and _is_addr(parts[2]):
            out.alive[parts[1]] = parts[2]
        elif parts[0] == "not-alive" and len(parts) == 2:
            out.alive.pop(parts[1], None)
        elif parts == ["leave"]:
            out.left = True
        elif parts == ["start"]:
            out.left = False
        else:
            out.bad_lines += 1
    return out


def _is_addr(text: str) -> bool:
    host, sep, port = text.rpartition(":")
    return bool(host and sep and port.isdigit() and 0 < int(port) < 65536)


def _addr(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class MemberSnapshot:
    def __init__(self, data_dir: str, own_name: str) -> None:
        self.dir = Path(data_dir) / "serf"
        self.path = self.dir / "local.snapshot"
        self.own_name = own_name
        self.alive: dict[str, str] = {}
        self._file: TextIO | None = None
        self.stats = {"bad_lines": 0, "write_errors": 0, "compactions": 0}

    def open(self) -> Replayed:
        """Read what the last run left, then start appending (with a `start` record)."""
        try:
            self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            previous = replay(self.path.read_text(errors="replace"))
        except FileNotFoundError:
            previous = Replayed()
        except OSError as exc:
            log.warning("member snapshot %s unreadable (%s): starting without it", self.path, exc)
            previous = Replayed()
        if previous.bad_lines:
            log.warning("member snapshot %s: skipped %d damaged line(s)", self.path, previous.bad_lines)
        self.stats["bad_lines"] = previous.bad_lines
        previous.alive.pop(self.own_name, None)
        self.alive = dict(previous.alive)
        self._rewrite(["start"])
        return previous

    def member_alive(self, name: str, host: str, port: int) -> None:
        if name == self.own_name:
            return
        addr = _addr(host, port)
        if self.alive.get(name) != addr:
            self.alive[name] = addr
            self._append(f"alive {name} {addr}")

    def member_gone(self, name: str) -> None:
        if self.alive.pop(name, None) is not None:
            self._append(f"not-alive {name}")

    def left(self) -> None:
        self._append("leave")

    def close(self) -> None:
        f = self._file
        self._file = None
        if f is not None:
            try:
                f.close()
            except OSError:
                pass

    # ---- file -----------------------------------------------------------------------------------
    def _append(self, line: str) -> None:
        if self._file is None:
            return
        try:
            self._file.write(line + "\n")
            self._file.flush()
            if self._file.tell() > COMPACT_BYTES:
                self.stats["compactions"] += 1
                self._rewrite([])
        except OSError as exc:
            self.stats["write_errors"] += 1
            log.warning("member snapshot %s: write failed (%s); rejoin after restart may be incomplete",
                        self.path, exc)

    def _rewrite(self, extra: list[str]) -> None:
        """Replace the log with the current alive set (plus `extra`), atomically."""
        self.close()
        lines = [f"alive {name} {addr}" for name, addr in sorted(self.alive.items())] + extra
        tmp = self.path.with_suffix(".tmp")
        try:
            with open(tmp, "w") as f:
                f.write("".join(x + "\n" for x in lines))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            self._file = open(self.path, "a")  # noqa: SIM115 (kept open for appends)
        except OSError as exc:
            self.stats["write_errors"] += 1
            log.warning("member snapshot %s: cannot write (%s); rejoin after restart will not work",
                        self.path, exc)
