"""A node whose configuration is behind the leader's (it has not seen the change that added the
leader) and whose term is ahead (it campaigned alone while cut off): the leader's heartbeat must
still get an answer carrying the higher term, or neither side ever moves (found by the Raft
simulation with membership changes in the fault mix)."""

from __future__ import annotations

import random

from murmur.raft.config import RaftConfig
from murmur.raft.messages import HardState, Message, MessageType
from murmur.raft.rawnode import RawNode


def node(term: int) -> RawNode:
    return RawNode(RaftConfig(id=1), (1, 2, 3), random.Random(1), HardState(term=term))


def test_a_lower_term_leader_outside_our_configuration_hears_our_term() -> None:
    n = node(68)
    assert n.step(Message(MessageType.HEARTBEAT, to=1, frm=4, term=15))
    replies = n.ready().messages
    assert [(m.type, m.to, m.term) for m in replies] == [(MessageType.APP_RESP, 4, 68)]


def test_a_same_term_stranger_is_still_dropped() -> None:
    """Positive control for the filter: same term, not in our configuration, not our leader."""
    n = node(15)
    assert not n.step(Message(MessageType.APP_RESP, to=1, frm=4, term=15, index=1))
    assert n.raft.dropped["unknown_peer"] == 1 and not n.ready().messages
    assert not n.step(Message(MessageType.HEARTBEAT, to=1, frm=0, term=3))  # "nobody" is never a sender


def test_a_same_term_leader_outside_our_configuration_is_followed() -> None:
    """A term has one leader: its heartbeat is taken even from outside our configuration."""
    n = node(15)
    assert n.step(Message(MessageType.HEARTBEAT, to=1, frm=4, term=15))
    assert n.raft.lead == 4
    assert [(m.type, m.to) for m in n.ready().messages] == [(MessageType.HEARTBEAT_RESP, 4)]
