"""Autopilot's decisions about non-voters, on a fake agent: promote a learner only after it has
been healthy for ServerStabilizationTime without a break; clean up a dead learner without the
voter quorum rules."""

from __future__ import annotations

import uuid
from types import SimpleNamespace
from typing import Any

from murmur.agent.autopilot import DEAD_SERVER_GRACE, DEFAULTS, dead_servers_to_remove, learners_to_promote
from murmur.agent.server import raft_id
from murmur.gossip.membership import State
from murmur.raft.progress import Progress

IDS = [str(uuid.UUID(int=(k + 1) << 100)) for k in range(4)]
RID = [raft_id(i) for i in IDS]
assert len(set(RID)) == 4


def fake(learner_match: int, learner_silent_ticks: int = 0, learner_state: State = State.ALIVE,
         stabilization: str = "10s") -> Any:
    prs = {}
    for rid in RID:
        pr = Progress(1, 8)
        pr.match = 100
        prs[rid] = pr
    prs[RID[3]].match = learner_match
    prs[RID[3]].inactive_ticks = learner_silent_ticks
    raft = SimpleNamespace(voters={RID[0], RID[1], RID[2]}, learners={RID[3]}, prs=prs,
                           log=SimpleNamespace(last_index=lambda: 100))
    members = {f"s{k}": SimpleNamespace(name=f"s{k}", state=learner_state if k == 3 else State.ALIVE,
                                        tags={"role": "consul", "id": IDS[k]}) for k in range(4)}
    autopilot = SimpleNamespace(values={**DEFAULTS, "ServerStabilizationTime": stabilization},
                                stable_since={}, dead_since={})
    server = SimpleNamespace(id=RID[0], driver=SimpleNamespace(is_leader=True, node=SimpleNamespace(raft=raft)))
    return SimpleNamespace(server=server, autopilot=autopilot, membership=SimpleNamespace(members=members))


def test_a_caught_up_learner_is_promoted_after_the_stabilization_time() -> None:
    agent = fake(learner_match=95)
    assert learners_to_promote(agent, 0.0) == []  # healthy from now on
    assert learners_to_promote(agent, 9.9) == []
    assert learners_to_promote(agent, 10.0) == [RID[3]]


def test_a_break_in_health_restarts_the_clock() -> None:
    agent = fake(learner_match=95)
    learners_to_promote(agent, 0.0)
    agent.server.driver.node.raft.prs[RID[3]].match = 100 - 251  # over MaxTrailingLogs (250) behind
    assert learners_to_promote(agent, 5.0) == []
    agent.server.driver.node.raft.prs[RID[3]].match = 100
    assert learners_to_promote(agent, 6.0) == []
    assert learners_to_promote(agent, 15.9) == [] and learners_to_promote(agent, 16.0) == [RID[3]]


def test_silent_or_failed_learners_are_not_promoted() -> None:
    assert learners_to_promote(fake(100, learner_silent_ticks=50), 0.0) == []
    agent = fake(100, learner_silent_ticks=50)
    learners_to_promote(agent, 0.0)
    assert learners_to_promote(agent, 100.0) == []
    agent = fake(100, learner_state=State.DEAD)
    learners_to_promote(agent, 0.0)
    assert learners_to_promote(agent, 100.0) == []
    agent = fake(100, stabilization="0s")  # positive control
    assert learners_to_promote(agent, 0.0) == [RID[3]]


def test_a_dead_learner_is_cleaned_up() -> None:
    agent = fake(100, learner_state=State.DEAD)
    assert dead_servers_to_remove(agent, 0.0) == []
    assert dead_servers_to_remove(agent, DEAD_SERVER_GRACE) == [RID[3]]
    alive = fake(100)
    dead_servers_to_remove(alive, 0.0)
    assert dead_servers_to_remove(alive, DEAD_SERVER_GRACE) == []  # positive control
