"""What RawNode does with input it must not trust: messages from the network that no correct peer
sends are counted and dropped, never raised; local-only requests on the wrong node raise
ProposalDropped (the driver's signal to redirect or retry)."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from murmur.raft.core import ProposalDropped
from murmur.raft.messages import Entry, EntryType, Message, MessageType, Role, Snapshot, SnapshotMeta
from support.raftscript import Env

MT = MessageType


def cluster(setup: tuple[str, ...] = ()) -> Env:
    """Three nodes, 1 leading term 1 with 1@1 (no-op) and 2@1 "x" committed everywhere."""
    env = Env()
    for line in ("add-nodes 3", "campaign 1", "stabilize", "propose 1 x", "stabilize", *setup):
        env.run(line)
    return env


def snapshot(env: Env, i: int) -> tuple[object, ...]:
    r = env.nodes[i].raft
    return (r.term, r.vote, r.lead, r.role, r.log.committed, tuple(r.log.entries), len(r.msgs))


# A message a correct follower (2) could send to the leader (1), and one the leader could send to
# a follower; each bad case below is one of them with one field broken.
GOOD_TO_LEADER = Message(MT.HEARTBEAT_RESP, to=1, frm=2, term=1)
GOOD_TO_FOLLOWER = Message(MT.APP, to=2, frm=1, term=1, log_term=1, index=2, commit=2,
                           entries=(Entry(1, 3, EntryType.NORMAL, b"y"),))

BAD: dict[str, tuple[Message, str]] = {
    "local HUP": (dataclasses.replace(GOOD_TO_FOLLOWER, type=MT.HUP, entries=()), "local_from_network"),
    "local BEAT": (dataclasses.replace(GOOD_TO_FOLLOWER, type=MT.BEAT, entries=()), "local_from_network"),
    "PROP from the network": (dataclasses.replace(GOOD_TO_LEADER, type=MT.PROP, to=1), "local_from_network"),
    "unknown sender": (dataclasses.replace(GOOD_TO_FOLLOWER, frm=9), "unknown_peer"),
    "from itself": (dataclasses.replace(GOOD_TO_FOLLOWER, frm=2), "unknown_peer"),
    "addressed to another node": (dataclasses.replace(GOOD_TO_FOLLOWER, to=3), "malformed"),
    "negative term": (dataclasses.replace(GOOD_TO_FOLLOWER, term=-1), "malformed"),
    "negative index": (dataclasses.replace(GOOD_TO_FOLLOWER, index=-5, entries=()), "malformed"),
    "string term": (dataclasses.replace(GOOD_TO_FOLLOWER, term="1"), "malformed"),  # type: ignore[arg-type]
    "bool commit": (dataclasses.replace(GOOD_TO_FOLLOWER, commit=True), "malformed"),
    "unknown type": (dataclasses.replace(GOOD_TO_FOLLOWER, type=99), "malformed"),  # type: ignore[arg-type]
    "entries out of sequence": (dataclasses.replace(GOOD_TO_FOLLOWER, entries=(Entry(1, 5),)), "malformed"),
    "entry term above the message's": (dataclasses.replace(GOOD_TO_FOLLOWER, entries=(Entry(7, 3),)),
                                       "malformed"),
    "entry terms going down": (dataclasses.replace(GOOD_TO_FOLLOWER, log_term=1,
                                                   entries=(Entry(1, 3), Entry(0, 4))), "malformed"),
    "log_term above the term": (dataclasses.replace(GOOD_TO_FOLLOWER, log_term=4, entries=()), "malformed"),
    "entries on a vote": (Message(MT.VOTE, to=2, frm=3, term=2, entries=(Entry(1, 3),)), "malformed"),
    "context not bytes": (dataclasses.replace(GOOD_TO_FOLLOWER, context="ctx"), "malformed"),  # type: ignore[arg-type]
    "entry data not bytes": (dataclasses.replace(GOOD_TO_FOLLOWER, entries=(Entry(1, 3, EntryType.NORMAL,
                                                                                 "y"),)),  # type: ignore[arg-type]
                             "malformed"),
    "SNAP_STATUS from the network": (Message(MT.SNAP_STATUS, to=2, frm=1, term=1), "local_from_network"),
    "a snapshot message without a snapshot": (Message(MT.SNAP, to=2, frm=1, term=1), "malformed"),
    "a snapshot newer than its message": (Message(MT.SNAP, to=2, frm=1, term=1, snapshot=Snapshot(
        SnapshotMeta(9, 4, (1, 2, 3)), b"s")), "malformed"),
    "a snapshot without voters": (Message(MT.SNAP, to=2, frm=1, term=1, snapshot=Snapshot(
        SnapshotMeta(9, 1, ()), b"s")), "malformed"),
    "a snapshot at index 0": (Message(MT.SNAP, to=2, frm=1, term=1, snapshot=Snapshot(
        SnapshotMeta(0, 1, (1, 2, 3)), b"s")), "malformed"),
    "a snapshot with a negative voter": (Message(MT.SNAP, to=2, frm=1, term=1, snapshot=Snapshot(
        SnapshotMeta(9, 1, (1, -2)), b"s")), "malformed"),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_message_is_counted_and_dropped(case: str) -> None:
    msg, counter = BAD[case]
    env = cluster()
    target = msg.to if msg.to in env.nodes and msg.to != 3 else 2
    if case == "PROP from the network":
        target = 1
    node = env.nodes[target]
    before = snapshot(env, target)
    assert node.step(msg) is False
    assert node.raft.dropped[counter] == 1
    assert snapshot(env, target) == before
    # Positive control: the well-formed original is taken.
    good = GOOD_TO_LEADER if target == 1 else GOOD_TO_FOLLOWER
    assert node.step(good) is True
    assert sum(node.raft.dropped.values()) == 1


def test_ack_beyond_the_leaders_log_is_dropped() -> None:
    env = cluster()
    leader = env.nodes[1]
    pr = leader.raft.prs[2]
    match = pr.match
    assert leader.step(Message(MT.APP_RESP, to=1, frm=2, term=1, index=99)) is True
    assert leader.raft.dropped["malformed"] == 1
    assert (pr.match, leader.raft.log.committed) == (match, 2)
    # Positive control: an ack of what it has is taken.
    leader.step(Message(MT.APP_RESP, to=1, frm=2, term=1, index=2))
    assert leader.raft.dropped["malformed"] == 1


@pytest.mark.parametrize("setup,node,role", [
    ((), 2, Role.FOLLOWER),
    (("isolate 3", "tick-election 3"), 3, Role.PRE_CANDIDATE),
    (("isolate 1", "tick-election 1", "heal"), 1, Role.FOLLOWER),  # stepped down, knows no leader
])
def test_proposals_off_the_leader_raise(setup: tuple[str, ...], node: int, role: Role) -> None:
    env = cluster(setup)
    n = env.nodes[node]
    assert n.raft.role == role
    last, sent = n.raft.log.last_index(), len(n.raft.msgs)
    with pytest.raises(ProposalDropped):
        n.propose(b"nope")
    assert (n.raft.log.last_index(), len(n.raft.msgs)) == (last, sent)
    # Positive control: the leader of the same cluster, before the setup, takes it.
    leader = cluster().nodes[1]
    leader.propose(b"yes")
    assert leader.raft.log.entries[-1].data == b"yes"


def test_candidate_refuses_proposals_and_reads() -> None:
    env = Env()
    env.run("add-nodes 3 pre_vote=false")
    env.run("campaign 1")
    n = env.nodes[1]
    assert n.raft.role == Role.CANDIDATE
    with pytest.raises(ProposalDropped):
        n.propose(b"a")
    with pytest.raises(ProposalDropped):
        n.read_index(b"r")


# ---- fuzz: whatever well-formed or broken message arrives, step() returns and the log holds -------
ints = st.integers(min_value=-1, max_value=6)
entries = st.lists(st.builds(Entry, term=ints, index=ints, type=st.sampled_from(list(EntryType)),
                             data=st.binary(max_size=3)), max_size=3).map(tuple)
messages = st.builds(
    Message, type=st.sampled_from(list(MessageType)), to=st.integers(0, 4), frm=st.integers(0, 4), term=ints,
    log_term=ints, index=ints, entries=entries, commit=ints, reject=st.booleans(), reject_hint=ints,
    context=st.one_of(st.binary(max_size=8), st.integers(0, 3).map(lambda k: k.to_bytes(8, "big"))))

SETUPS = {
    "leader-and-followers": (),
    "candidate": ("isolate 3", "tick-election 3", "tick-election 3"),
    "pending-reads": ("read-index 1 r", "read-index 2 s", "process-ready 1 2"),
}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(setup=st.sampled_from(sorted(SETUPS)), msgs=st.lists(messages, min_size=1, max_size=12))
def test_step_never_raises(setup: str, msgs: list[Message]) -> None:
    env = cluster(SETUPS[setup])
    for m in msgs:
        for i, node in env.nodes.items():
            node.step(dataclasses.replace(m, to=i) if m.to == 0 else m)
            r = node.raft
            assert r.log.applied <= r.log.committed <= r.log.last_index()
            while node.has_ready():  # the driver's side must keep working too
                rd = node.ready()
                env.disks[i].persist(rd.hard_state, rd.entries)
                node.advance(rd)
