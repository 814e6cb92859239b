"""Failpoints: named places where a test can make the agent die, enabled by MURMUR_FAILPOINTS.

    MURMUR_FAILPOINTS="raft-after-fsync=kill@3,raft-before-apply=kill"

`kill` sends SIGKILL to ourselves at the first hit; `kill@N` at the N-th. Nothing is armed unless
the variable is set, and a check costs one dict lookup.

Planted bugs (`BUGS`, action `on`) switch a deliberately wrong behaviour on, so the fault lab can
prove its checkers catch it (tests/lab): `MURMUR_FAILPOINTS="read.serve_from_follower=on"`.
Never set them outside those tests.

The fault lab's `failpoint` fault arms a running agent (the Raft leader, say) without a restart:
with MURMUR_LAB_FAILPOINTS_FILE set, `watch_file` re-reads that file twice a second and arms the
kill failpoints it names (same syntax; planted bugs are refused there). Unset, nothing polls.
"""

from __future__ import annotations

import logging
import os
import signal

log = logging.getLogger("murmur.failpoints")

# The failpoints this build has; the registry refuses names outside it (a typo must not pass silently).
KNOWN = frozenset({
    "raft-before-append",  # entries and hard state handed to storage, not yet written
    "raft-after-fsync",  # written and fsynced, messages not yet sent
    "raft-before-apply",  # committed entries about to be applied to the state machine
    "raft-after-apply",  # applied, the client not yet answered
    "raft-before-snapshot-write",  # a snapshot is about to be written to its temporary file
    "raft-after-snapshot-write",  # the temporary file is written and fsynced, not yet renamed
    "raft-after-snapshot-rename",  # renamed into place, the directory not yet fsynced
    "raft-after-snapshot-dirsync",  # durable; the log not yet compacted
})

# Planted bugs: behaviour switches for the fault lab's checker self-tests.
BUGS = frozenset({
    "read.serve_from_follower",  # default-mode reads skip the ReadIndex on a follower (stale reads)
    "raft.ack_before_fsync",  # a KV write is acknowledged once proposed, before it is committed
    "gossip.ignore_refute",  # alive messages refuting a suspicion or death we hold are dropped (false deads)
    "ae.drop_push",  # after a failed anti-entropy pass, a client never pushes its services again
    "raft.double_vote",  # a server grants a second vote in a term it already voted (or follows a leader) in
})


def parse_kills(spec: str) -> dict[str, int]:
    """`name=kill[@N],...` -> {name: N}; ValueError names what is wrong."""
    armed: dict[str, int] = {}
    for item in filter(None, (p.strip() for p in spec.split(","))):
        name, _, action = item.partition("=")
        if name not in KNOWN:
            raise ValueError(f"MURMUR_FAILPOINTS: unknown failpoint {name!r}; "
                             f"known: {', '.join(sorted(KNOWN | BUGS))}")
        kind, _, nth = action.partition("@")
        if kind != "kill" or (nth and not (nth.isdigit() and int(nth) >= 1)):
            raise ValueError(f"MURMUR_FAILPOINTS: {name}: unknown action {action!r} (want kill or kill@N)")
        armed[name] = int(nth) if nth else 1
    return armed


class Failpoints:
    def __init__(self, spec: str = "") -> None:
        self.armed: dict[str, int] = {}
        self.hits: dict[str, int] = {}
        self.bugs: frozenset[str] = frozenset()
        kills: list[str] = []
        for item in filter(None, (p.strip() for p in spec.split(","))):
            name, _, action = item.partition("=")
            if name in BUGS:
                if action != "on":
                    raise ValueError(f"MURMUR_FAILPOINTS: {name}: a planted bug takes the action 'on'")
                self.bugs |= {name}
                log.warning("planted bug %s is ON: this agent is deliberately wrong (fault-lab tests only)", name)
                continue
            kills.append(item)
        self.armed = parse_kills(",".join(kills))

    def arm(self, spec: str) -> None:
        """Replace the armed kill failpoints (hit counts start again); ValueError if `spec` is bad."""
        armed = parse_kills(spec)
        self.hits = {}
        self.armed = armed
        if armed:
            log.warning("failpoints armed: %s", ", ".join(f"{k}=kill@{n}" for k, n in sorted(armed.items())))

    def bug(self, name: str) -> bool:
        """Is the planted bug `name` switched on? (False unless MURMUR_FAILPOINTS names it.)"""
        return bool(self.bugs) and name in self.bugs

    def hit(self, name: str) -> None:
        if not self.armed:
            return
        at = self.armed.get(name)
        if at is None:
            return
        n = self.hits[name] = self.hits.get(name, 0) + 1
        if n >= at:
            log.warning("failpoint %s: killing the process (hit %d)", name, n)
            os.kill(os.getpid(), signal.SIGKILL)


FAILPOINTS = Failpoints(os.environ.get("MURMUR_FAILPOINTS", ""))
LAB_FILE = os.environ.get("MURMUR_LAB_FAILPOINTS_FILE", "")


async def watch_file(path: str, failpoints: Failpoints = FAILPOINTS, interval: float = 0.5) -> None:
    """Arm what `path` names whenever its text changes (the lab's failpoint fault). A bad spec is
    logged and ignored: a typo in a lab file must not take the agent down some other way."""
    import trio

    seen: str | None = None
    while True:
        try:  # a few bytes, lab-only: read inline rather than in a worker thread
            with open(path) as f:
                text = f.read().strip()
        except OSError:
            text = ""
        if text != seen:
            seen = text
            try:
                failpoints.arm(text)
            except ValueError as exc:
                log.warning("%s: %s", path, exc)
        await trio.sleep(interval)
