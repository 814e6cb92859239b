from __future__ import annotations

from murmur.raft.messages import Role
from support.raftnet import Net


def test_three_nodes_elect_and_replicate() -> None:
    net = Net(3)
    net.campaign(1)
    assert net.leader() == 1
    net.propose(1, b"x")
    net.propose(1, b"y")
    net.tick(1)  # heartbeat carries the commit index to followers
    for i in net.ids:
        assert net.data(i) == [b"x", b"y"], i
    assert net.node(2).raft.role == Role.FOLLOWER
