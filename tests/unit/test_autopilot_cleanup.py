"""CleanupDeadServers (agent/autopilot.py dead_servers_to_remove) on a scripted clock and member table."""

from __future__ import annotations

import uuid
from types import SimpleNamespace
from typing import Any

from murmur.agent.autopilot import DEAD_SERVER_GRACE, DEFAULTS, dead_servers_to_remove
from murmur.agent.server import raft_id
from murmur.gossip.membership import Member, State

IDS = [str(uuid.UUID(int=(i + 1) << 100)) for i in range(5)]


def cluster(n: int, dead: set[int], **config: Any) -> SimpleNamespace:
    """An agent stand-in: server 0 leads a voter set of `n`; gossip shows `dead` as failed."""
    members = {f"s{i}": Member(f"s{i}", "127.0.0.1", 8301 + i, 1, State.DEAD if i in dead else State.ALIVE, 0.0,
                               tags={"role": "consul", "id": IDS[i]}) for i in range(n)}
    members["client"] = Member("client", "127.0.0.1", 9000, 1, State.DEAD, 0.0, tags={"role": "node"})
    raft = SimpleNamespace(voters={raft_id(IDS[i]) for i in range(n)}, learners=set())
    srv = SimpleNamespace(id=raft_id(IDS[0]), driver=SimpleNamespace(node=SimpleNamespace(raft=raft)))
    autopilot = SimpleNamespace(values={**DEFAULTS, **config}, dead_since={})
    return SimpleNamespace(server=srv, membership=SimpleNamespace(members=members), autopilot=autopilot)


def test_a_server_dead_past_the_grace_is_removed_and_not_before() -> None:
    agent = cluster(3, {2})
    assert dead_servers_to_remove(agent, 100.0) == []  # first seen failed now
    assert dead_servers_to_remove(agent, 100.0 + DEAD_SERVER_GRACE - 1) == []
    assert dead_servers_to_remove(agent, 100.0 + DEAD_SERVER_GRACE) == [raft_id(IDS[2])]


def test_a_server_that_comes_back_starts_its_grace_again() -> None:
    agent = cluster(3, {2})
    dead_servers_to_remove(agent, 0.0)
    agent.membership.members["s2"].state = State.ALIVE
    assert dead_servers_to_remove(agent, DEAD_SERVER_GRACE / 2) == []
    agent.membership.members["s2"].state = State.DEAD
    assert dead_servers_to_remove(agent, DEAD_SERVER_GRACE) == []  # the clock restarted at the return
    assert dead_servers_to_remove(agent, 2 * DEAD_SERVER_GRACE - 1) == []
    assert dead_servers_to_remove(agent, 2 * DEAD_SERVER_GRACE) == [raft_id(IDS[2])]


def test_nothing_is_removed_when_it_is_off_or_would_cost_the_quorum_or_min_quorum() -> None:
    off = cluster(3, {2}, CleanupDeadServers=False)
    dead_servers_to_remove(off, 0.0)
    assert dead_servers_to_remove(off, 2 * DEAD_SERVER_GRACE) == []
    no_quorum = cluster(3, {1, 2})  # 1 of 3 alive: a removal could not commit
    dead_servers_to_remove(no_quorum, 0.0)
    assert dead_servers_to_remove(no_quorum, 2 * DEAD_SERVER_GRACE) == []
    min_q = cluster(3, {2}, MinQuorum=3)
    dead_servers_to_remove(min_q, 0.0)
    assert dead_servers_to_remove(min_q, 2 * DEAD_SERVER_GRACE) == []
    five = cluster(5, {3, 4})  # one at a time, even when two are due
    dead_servers_to_remove(five, 0.0)
    assert dead_servers_to_remove(five, 2 * DEAD_SERVER_GRACE) == [min(raft_id(IDS[3]), raft_id(IDS[4]))]


def test_the_leader_never_removes_itself() -> None:
    agent = cluster(3, {0})
    dead_servers_to_remove(agent, 0.0)
    assert dead_servers_to_remove(agent, 2 * DEAD_SERVER_GRACE) == []


def test_a_dead_non_voter_goes_after_the_grace_whatever_the_quorum() -> None:
    agent = cluster(3, {1, 2})
    learner = raft_id(IDS[2])
    agent.server.driver.node.raft.voters.discard(learner)
    agent.server.driver.node.raft.learners.add(learner)
    dead_servers_to_remove(agent, 0.0)
    assert dead_servers_to_remove(agent, DEAD_SERVER_GRACE - 1) == []
    assert dead_servers_to_remove(agent, DEAD_SERVER_GRACE) == [learner]  # though 1 of 2 voters is dead
