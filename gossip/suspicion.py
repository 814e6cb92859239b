"""Lifeguard's dynamic suspicion timeout.

A suspicion starts at `max` and shrinks toward `min` as independent members confirm it:
    timeout(n) = max - (max - min) * log(n + 1) / log(k + 1),  never below min,
for n confirmations out of k expected. One slow observer alone waits the long timeout; several
agreeing observers reach a verdict almost as fast as plain SWIM.
"""

from __future__ import annotations

import math

# Times a suspicion's deadline moves by `min` because the suspect talked to us (Suspicion.extend).
MAX_EXTENSIONS = 2
# The sender of a suspicion nobody vouches for: a dead or suspect verdict read in a peer's
# push-pull table. It starts a suspicion but never counts as a confirmation.
UNATTRIBUTED = ""


def remaining_timeout(n: int, k: int, min_t: float, max_t: float) -> float:
    if k < 1:
        return min_t
    frac = math.log(n + 1) / math.log(k + 1)
    return max(min_t, max_t - (max_t - min_t) * frac)


class Suspicion:
    """One suspected member: who has confirmed, and when the suspicion becomes a death.

    Halfway through the minimum timeout a suspicion still held is re-asked once: its message is
    gossiped again, so that members who already heard the refutation answer it (a member that
    missed every copy of a refutation would otherwise turn a live member dead; see
    Membership._answer_stale). Refuted suspicions are gone by then, so this costs nothing in the
    common case."""

    def __init__(self, from_node: str, k: int, min_t: float, max_t: float, start: float,
                 message: bytes = b"") -> None:
        self.k = k
        self.min = min_t
        self.max = max_t
        self.start = start
        self.confirmations: set[str] = {from_node}  # the first accuser does not count toward n
        self.n = 0
        self.deadline = start + (min_t if k < 1 else max_t)
        self.message = message  # the suspect message as first heard, re-gossiped at reask_at
        self.reask_at = start + min_t / 2
        self.heard = -math.inf  # when a datagram from the suspect last reached us
        self.checked = start  # evidence of life counts only if it came after this
        self.extensions = 0

    def heard_since_checked(self) -> bool:
        return self.heard >= self.checked

    def extend(self, now: float) -> bool:
        """At the deadline, a suspect that talked to us since we began suspecting it (or since
        the last extension) is given `min` more, at most MAX_EXTENSIONS times: evidence of life
        beats a timer, but a member that can send and not receive is still declared in the end."""
        if self.extensions >= MAX_EXTENSIONS:
            return False
        self.extensions += 1
        self.checked = now
        self.deadline = now + self.min
        return True

    def confirm(self, from_node: str) -> bool:
        """Count an independent confirmation; True if it was new (then re-broadcast it)."""
        if self.n >= self.k or from_node in self.confirmations or from_node == UNATTRIBUTED:
            return False
        self.confirmations.add(from_node)
        self.n += 1
        deadline = self.start + remaining_timeout(self.n, self.k, self.min, self.max)
        self.deadline = max(deadline, self.deadline) if self.extensions else deadline
        return True
