"""gossip/broadcast.py and the retransmit limit: what rides on outgoing packets, and how often."""

from __future__ import annotations

import math

import pytest
from murmur.gossip.broadcast import BroadcastQueue
from murmur.gossip.config import GossipConfig


@pytest.mark.parametrize("n, want", [(1, 4), (9, 4), (10, 8), (20, 8), (99, 8), (100, 12), (1000, 16)])
def test_retransmit_limit_is_mult_times_ceil_log10_n_plus_1(n: int, want: int) -> None:
    cfg = GossipConfig.lan()
    assert cfg.retransmit_limit(n) == want == cfg.retransmit_mult * math.ceil(math.log10(n + 1))
    assert GossipConfig.local().retransmit_limit(n) == 2 * math.ceil(math.log10(n + 1))


def drain(q: BroadcastQueue, limit: int, budget: int = 10_000) -> list[bytes]:
    """Everything sent until the queue is empty, one get() per packet."""
    sent: list[bytes] = []
    for _ in range(1000):
        if not q.drain_pending():
            return sent
        sent += q.get(budget, 3, limit)
    raise AssertionError("queue never drained")


def test_each_update_is_sent_exactly_the_limit_then_dropped() -> None:
    q = BroadcastQueue()
    q.queue("a", b"alive-a")
    q.queue("b", b"alive-b")
    sent = drain(q, limit=3)
    assert sorted(sent) == [b"alive-a"] * 3 + [b"alive-b"] * 3
    assert len(q) == 0 and not q.drain_pending()


def test_newer_update_about_a_member_supersedes_the_older() -> None:
    q = BroadcastQueue()
    q.queue("b", b"suspect-b-1")
    assert q.get(10_000, 3, 5) == [b"suspect-b-1"]  # sent once already
    q.queue("b", b"alive-b-2")  # the refutation replaces the suspicion, with a fresh count
    q.queue("c", b"alive-c")
    assert len(q) == 2 and q.has("b") and not q.has("x")
    sent = drain(q, limit=5)
    assert b"suspect-b-1" not in sent
    assert sent.count(b"alive-b-2") == 5


def test_anonymous_items_never_supersede_each_other() -> None:
    q = BroadcastQueue()
    q.queue("", b"user-1")
    q.queue("", b"user-2")
    assert sorted(drain(q, limit=2)) == [b"user-1", b"user-1", b"user-2", b"user-2"]


def test_least_sent_first_and_newest_first_among_equals() -> None:
    q = BroadcastQueue()
    q.queue("old", b"old")
    assert q.get(10_000, 3, 10) == [b"old"]
    q.queue("new1", b"new1")
    q.queue("new2", b"new2")
    # Budget for one message per packet: never-sent items first, the newest of them first.
    one = len(b"new1") + 3
    assert q.get(one, 3, 10) == [b"new2"]
    assert q.get(one, 3, 10) == [b"new1"]
    assert q.get(one, 3, 10) == [b"new2"]  # all three sent once now: newest first again
    assert q.get(one, 3, 10) == [b"new1"]
    assert q.get(one, 3, 10) == [b"old"]


def test_budget_is_respected_and_small_items_fill_the_gaps() -> None:
    q = BroadcastQueue()
    q.queue("big", b"x" * 100)
    q.queue("small", b"y" * 10)
    out = q.get(50, 3, 10)
    assert out == [b"y" * 10]  # the big one does not fit, the small one still goes
    assert q.has("big")
    out = q.get(200, 3, 10)
    assert sum(len(m) + 3 for m in out) <= 200


def test_messages_that_can_never_fit_are_dropped_not_kept_forever() -> None:
    """Queued forever, such a message would also keep a graceful leave waiting for the drain."""
    q = BroadcastQueue(max_size=100)
    q.queue("huge", b"z" * 101)
    q.queue("ok", b"z" * 100)
    assert q.dropped_oversize == 1
    assert not q.has("huge") and q.has("ok")
