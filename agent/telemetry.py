"""Which metrics the agent publishes, and where each comes from (agent/metrics.py renders them).

Pushed as they happen: probe times (gossip core's on_probe), HTTP request times (the router's
observe), DNS answer times (agent/dns/server.py), check run times and results (checks_runner),
Raft commit and FSM apply times (drivers/raft.py). Read when asked: member counts by state,
gossip and Raft counters the cores keep in their stats, catalog sizes, checks by status.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import trio
from murmur.checks.status import STATUSES
from murmur.gossip.membership import Membership, State

from .metrics import GaugeReading, Metrics, describe

if TYPE_CHECKING:
    from .agent import Agent
    from .http.server import Router

PROBE_NODE = describe("consul.memberlist.probeNode", "Time of one gossip probe of a member, answered or not")
MSG_SUSPECT = describe("consul.memberlist.msg.suspect", "Members this agent started suspecting")
MSG_DEAD = describe("consul.memberlist.msg.dead", "Members this agent declared dead")
PROBES_FAILED = describe("murmur.memberlist.probes_failed", "Gossip probes that got no answer at all")
NODE_INSTANCES = describe("consul.memberlist.node.instances", "Gossip members by state")
HEALTH_SCORE = describe("consul.memberlist.health.score", "Lifeguard's awareness score (0 is healthy)")
COMMIT_TIME = describe("consul.raft.commitTime", "Time from proposing a Raft entry to applying it (leader)")
FSM_APPLY = describe("consul.raft.fsm.apply", "Time to apply one Raft entry to the catalog")
RAFT_APPLY = describe("consul.raft.apply", "Raft entries proposed by this server as leader")
STATE_LEADER = describe("consul.raft.state.leader", "Times this server became leader")
STATE_CANDIDATE = describe("consul.raft.state.candidate", "Times this server started an election")
LEADER_CHANGES = describe("murmur.raft.leader_changes", "Times the leader known to this server changed")
READS = describe("murmur.raft.reads", "Linearizable read points this leader gave, by how (lease or read_index)")
LAST_CONTACT = describe("murmur.raft.last_contact", "Milliseconds since this follower last heard from the leader")
IS_LEADER = describe("consul.server.isLeader", "1 on the Raft leader, else 0")
APPLIED_INDEX = describe("consul.raft.applied_index", "Index of the last Raft entry applied")
LAST_INDEX = describe("consul.raft.last_index", "Index of the last Raft entry in the log")
CHECKS = describe("murmur.checks", "This agent's checks by status")
CHECK_RUN = describe("murmur.check.run", "Time of one health-check probe, by check type")
CHECK_RESULTS = describe("murmur.check.results", "Probe results by check type and status")
DNS_QUERY = describe("consul.dns.domain_query", "Time to answer one DNS query")
HTTP = describe("consul.api.http", "Time to answer one HTTP API request, by method and route")
STATE_NODES = describe("consul.state.nodes", "Nodes in the catalog")
STATE_SERVICES = describe("consul.state.services", "Distinct service names in the catalog")
STATE_INSTANCES = describe("consul.state.service_instances", "Service instances in the catalog")

MEMBER_STATES = {State.ALIVE: "alive", State.SUSPECT: "suspect", State.DEAD: "dead", State.LEFT: "left"}


def install(agent: Agent) -> Metrics:
    """Create the agent's metrics and register the sources read at each scrape."""
    metrics = Metrics()
    agent.checks.metrics = metrics

    def gauges() -> Iterator[GaugeReading]:
        ms = agent.membership
        if ms is not None:
            counts = dict.fromkeys(MEMBER_STATES.values(), 0)
            for m in ms.members.values():
                counts[MEMBER_STATES[m.state]] += 1
            for state, n in counts.items():
                yield NODE_INSTANCES, {"network": "lan", "node_state": state}, n
            yield HEALTH_SCORE, {"network": "lan"}, ms.awareness.score
        by_status = dict.fromkeys(STATUSES, 0)
        for c in agent.local.checks.values():
            by_status[c.machine.status] += 1
        for status, n in by_status.items():
            yield CHECKS, {"status": status}, n
        srv = agent.server
        if srv is not None:
            store = agent.store
            yield STATE_NODES, {}, len(store.nodes)
            yield STATE_SERVICES, {}, len({r.spec.name for svcs in store.services.values() for r in svcs.values()})
            yield STATE_INSTANCES, {}, sum(len(svcs) for svcs in store.services.values())
            d = srv.driver
            if d is not None:
                yield IS_LEADER, {}, 1 if d.is_leader else 0
                yield APPLIED_INDEX, {}, d.node.raft.log.applied
                yield LAST_INDEX, {}, d.node.raft.log.last_index()
                contact = 0.0 if d.is_leader or not d.last_contact else trio.current_time() - d.last_contact
                yield LAST_CONTACT, {}, round(contact * 1000.0, 3)

    def counters() -> Iterator[GaugeReading]:
        ms = agent.membership
        if ms is not None:
            yield MSG_SUSPECT, {}, ms.stats["suspects_started"]
            yield MSG_DEAD, {}, ms.stats["deaths_declared"]
            yield PROBES_FAILED, {}, ms.stats["probes_failed"]
        srv = agent.server
        if srv is not None and srv.driver is not None:
            d = srv.driver
            yield RAFT_APPLY, {}, d.stats["proposals"]
            yield STATE_LEADER, {}, d.became["leader"]
            yield STATE_CANDIDATE, {}, d.became["candidate"] + d.became.get("pre_candidate", 0)
            yield LEADER_CHANGES, {}, d.leader_changes
            for how, n in d.node.raft.read_stats.items():
                yield READS, {"kind": how}, n

    metrics.gauges(gauges)
    metrics.counts(counters)
    return metrics


def watch_gossip(metrics: Metrics, membership: Membership) -> None:
    def on_probe(seconds: float, ok: bool) -> None:
        metrics.observe_ms(PROBE_NODE, seconds * 1000.0)

    membership.on_probe = on_probe


def watch_http(metrics: Metrics, router: Router) -> None:
    def observe(method: str, path: str, ms: float) -> None:
        metrics.observe_ms(HTTP, ms, {"method": method, "path": path})

    router.observe = observe
