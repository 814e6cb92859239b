"""A server left out of its latest configuration before that configuration commits may still
campaign (with a pre-vote), counting votes in that configuration. Found by the membership
simulation (seed 1066): the leader of {1, 3} removed itself while 3 was down and crashed; on
restart its log was the longest but it no longer counted itself a voter, and 3 could not win
without its vote, so nobody ever led again."""

from __future__ import annotations

from murmur.raft.messages import ConfChangeType, MessageType, Role
from support.raftnet import Net


def settle(net: Net, rounds: int = 200) -> int | None:
    for _ in range(rounds):
        net.tick_all()
        lead = net.leader()
        if lead is not None and not net.node(lead).raft.conf_pending():
            return lead
    return net.leader()


def removing_leader_crashes_before_commit() -> Net:
    net = Net(3, seed=7, pre_vote=True, check_quorum=False)
    net.campaign(1)
    assert net.leader() == 1
    net.propose(1, b"a")
    net.node(1).propose_conf_change(ConfChangeType.REMOVE_VOTER, 2)
    net.deliver(net._drain(1))
    net.tick(1)
    assert sorted(net.node(1).raft.voters) == [1, 3] and not net.node(1).raft.conf_pending()
    net.crash(2)
    net.crash(3)
    net.node(1).propose_conf_change(ConfChangeType.REMOVE_VOTER, 1)  # {3}: cannot commit, 3 is down
    net.deliver(net._drain(1))
    assert sorted(net.node(1).raft.voters) == [3] and net.node(1).raft.conf_pending()
    net.crash(1)
    net.start(1)
    net.start(3)
    return net


def test_a_leader_that_removed_itself_and_crashed_still_lets_the_cluster_elect() -> None:
    net = removing_leader_crashes_before_commit()
    assert net.node(1).raft.removed_pending() and not net.node(1).raft.promotable()
    assert net.node(3).raft.log.last_index() < net.node(1).raft.log.last_index()
    lead = settle(net)
    assert lead is not None, "no leader after the restart"
    # The removal committed: 1 led only long enough to commit it (or 3 leads with 1's log).
    assert sorted(net.node(3).raft.voters) == [3]
    assert b"a" in net.data(3)


def test_without_campaigning_the_removed_server_the_cluster_stalls() -> None:
    """The contrast that makes the test above mean something: with removed_pending() off (the
    old rule), the same history never elects a leader."""
    net = removing_leader_crashes_before_commit()
    net.node(1).raft.removed_pending = lambda: False  # type: ignore[method-assign]
    assert settle(net) is None


def test_a_server_removed_behind_its_back_does_not_disrupt_the_cluster() -> None:
    """It got the entry removing it but never its commit; its log is behind the others', so its
    pre-vote is refused: no term moves, the leader stays."""
    net = Net(3, seed=3, pre_vote=True, check_quorum=False)
    net.campaign(1)
    net.propose(1, b"a")
    net.node(1).propose_conf_change(ConfChangeType.REMOVE_VOTER, 3)
    # 3 gets the entry removing it; then it hears nothing more (the leader stops sending to it once
    # the removal commits, and here drops out of its reach a moment earlier).
    msgs = net._drain(1)
    net.deliver([m for m in msgs if m.to == 3])
    net.isolate(3)
    net.deliver([m for m in msgs if m.to != 3])
    net.propose(1, b"b")
    assert sorted(net.node(1).raft.voters) == [1, 2] and not net.node(1).raft.conf_pending()
    assert net.node(3).raft.removed_pending()  # it would campaign
    net.heal()
    term = net.node(1).raft.term
    for _ in range(100):
        net.tick_all()
    assert net.leader() == 1 and net.node(1).raft.term == term and net.node(2).raft.term == term
    assert net.node(1).raft.role == Role.LEADER
    pre_votes = [m for m in net.log if m.frm == 3 and m.type == MessageType.PRE_VOTE]
    assert pre_votes, "3 never campaigned: this test would not show a disruption"
    assert all(m.type != MessageType.VOTE for m in net.log if m.frm == 3)
