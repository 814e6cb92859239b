"""The leader's view of each follower's log (etcd-io/raft's Progress), for flow control.

PROBE: we do not know where the follower's log ends; send one AppendEntries at a time and back
off on rejection. REPLICATE: it is in sync; stream entries optimistically, up to
max_inflight_msgs unacknowledged messages. SNAPSHOT: it needs a snapshot; send nothing else.
"""

from __future__ import annotations

from collections import deque
from enum import IntEnum


class ProgressState(IntEnum):
    PROBE = 0
    REPLICATE = 1
    SNAPSHOT = 2


class Progress:
    def __init__(self, next_index: int, max_inflight: int) -> None:
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.inflights: deque[int] = deque()
        self.max_inflight = max_inflight
        # Check-quorum: leader ticks since this follower last answered, and whether that is less
        # than an election timeout (a fresh leader gives every follower a full timeout).
        self.inactive_ticks = 0
        self.recent_active = True
        self.pending_snapshot = 0

    def __repr__(self) -> str:
        return f"Progress(match={self.match}, next={self.next}, state={self.state.name})"

    def heard_from(self) -> None:
        self.inactive_ticks = 0
        self.recent_active = True

    def become_probe(self) -> None:
        if self.state == ProgressState.SNAPSHOT:
            self.next = max(self.match + 1, self.pending_snapshot + 1)
            self.pending_snapshot = 0
        else:
            self.next = self.match + 1
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.inflights.clear()

    def become_replicate(self) -> None:
        self.state = ProgressState.REPLICATE
        self.next = self.match + 1
        self.inflights.clear()

    def become_snapshot(self, index: int) -> None:
        self.state = ProgressState.SNAPSHOT
        self.pending_snapshot = index
        self.inflights.clear()

    def maybe_update(self, index: int) -> bool:
        """An ack up to `index`. True if it moved `match`."""
        updated = index > self.match
        if updated:
            self.match = index
            self.probe_sent = False
        self.next = max(self.next, index + 1)
        while self.inflights and self.inflights[0] <= index:
            self.inflights.popleft()
        return updated

    def maybe_decrease(self, rejected: int, hint: int) -> bool:
        """A rejection of the append at `rejected`; `hint` is the follower's last index.
        False if the rejection is stale (about a message we already moved past)."""
        if self.state == ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, hint + 1), 1)
        self.probe_sent = False
        return True

    def is_paused(self) -> bool:
        if self.state == ProgressState.PROBE:
            return self.probe_sent
        if self.state == ProgressState.REPLICATE:
            return len(self.inflights) >= self.max_inflight
        return True

    def sent(self, last: int) -> None:
        """An append ending at `last` went out."""
        if self.state == ProgressState.REPLICATE:
            if last > 0:
                self.next = last + 1
                self.inflights.append(last)
        elif self.state == ProgressState.PROBE:
            self.probe_sent = True
