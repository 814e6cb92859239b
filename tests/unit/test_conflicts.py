"""Settling a claim on our node name: the answer each member gives, and the majority rule."""

from __future__ import annotations

import random

from murmur.agent import conflicts
from murmur.gossip.config import GossipConfig
from murmur.gossip.membership import EventKind, MemberEvent, Membership
from murmur.gossip.userevents import IncomingQuery


def test_a_member_answers_with_the_address_it_knows_or_nothing() -> None:
    m = Membership(GossipConfig.lan(), "a", "10.0.0.1", 7946, random.Random(1), 0.0)
    handler = conflicts.conflict_query_handler(m)

    def ask(name: str) -> bytes | None:
        return handler(IncomingQuery(1, 1, conflicts.CONFLICT_QUERY, name.encode(), "x", "10.0.0.9", 1, 0, 9.0))

    assert ask("a") == b"10.0.0.1:7946"
    assert ask("nobody") == b""


def test_a_strict_majority_of_informed_answers_keeps_the_name() -> None:
    ours, theirs = b"10.0.0.1:7946", b"10.0.0.2:7946"
    assert conflicts.tally([ours, ours, theirs], ours).keep
    assert not conflicts.tally([ours, theirs, theirs], ours).keep
    assert not conflicts.tally([ours, theirs], ours).keep  # a tie is no majority (Serf's rule)
    assert conflicts.tally([ours, b"", b""], ours).keep  # members that do not know the name abstain
    assert conflicts.tally([], ours).keep  # no answers: nothing to go on, keep running
    v = conflicts.tally([theirs, b"", ours, theirs], ours)
    assert (v.matches, v.answers) == (1, 3)


def test_the_log_line_names_the_fix() -> None:
    ev = MemberEvent(EventKind.CONFLICT, "web-2", "10.0.0.7", 8301, {"id": "ID-1"}, 1)
    clone = conflicts.describe(ev, "web-1", "ID-1", [])
    assert "clone" in clone and "node-id" in clone
    same_name = conflicts.describe(MemberEvent(EventKind.CONFLICT, "web-1", "10.0.0.7", 8301, {}, 1),
                                   "web-1", "ID-1", [])
    assert "node name 'web-1'" in same_name and "10.0.0.7:8301" in same_name
