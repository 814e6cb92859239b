"""A small autopilot: its configuration (Consul's JSON shape, CAS on ModifyIndex) and server health.

The configuration is replicated, as Consul's is: `PUT /v1/operator/autopilot/configuration` goes
through the Raft log (an `Autopilot` catalog command) and every server reads it from its store, so
a new leader acts on the same configuration as the old one. Until the first leader has written it,
the agent's `autopilot` config block is the configuration (its seed); that leader writes its seed
with CAS 0, which never overwrites one already there.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from murmur.catalog.commands import Autopilot

if TYPE_CHECKING:
    from .agent import Agent

DEFAULTS: dict[str, Any] = {
    "CleanupDeadServers": True,
    "LastContactThreshold": "200ms",
    "MaxTrailingLogs": 250,
    "MinQuorum": 0,
    "ServerStabilizationTime": "10s",
    "RedundancyZoneTag": "",
    "DisableUpgradeMigration": False,
    "UpgradeVersionTag": "",
}
_TYPES: dict[str, type | tuple[type, ...]] = {"CleanupDeadServers": bool, "LastContactThreshold": str,
                                              "MaxTrailingLogs": int, "MinQuorum": int,
                                              "ServerStabilizationTime": str, "RedundancyZoneTag": str,
                                              "DisableUpgradeMigration": bool, "UpgradeVersionTag": str}
# The agent config block's keys (agent/config.py AutopilotSeed), by Consul's API names.
_SEED_KEYS = {"CleanupDeadServers": "cleanup_dead_servers", "LastContactThreshold": "last_contact_threshold",
              "MaxTrailingLogs": "max_trailing_logs", "MinQuorum": "min_quorum",
              "ServerStabilizationTime": "server_stabilization_time", "RedundancyZoneTag": "redundancy_zone_tag",
              "DisableUpgradeMigration": "disable_upgrade_migration", "UpgradeVersionTag": "upgrade_version_tag"}


# Seconds a server must have been failed in gossip before CleanupDeadServers removes it: long
# enough that a restart or a short partition never costs a server its seat.
DEAD_SERVER_GRACE = 300.0


class AutopilotError(ValueError):
    pass


class AutopilotConfig:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        block = agent.cfg.autopilot
        self.seed = {**DEFAULTS, **{k: getattr(block, attr) for k, attr in _SEED_KEYS.items()}}
        self.dead_since: dict[int, float] = {}  # raft id -> when (trio time) we first saw it failed
        self.stable_since: dict[int, float] = {}  # learner raft id -> since when (trio time) it is healthy
        self.started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    @property
    def values(self) -> dict[str, Any]:
        """What autopilot acts on now: the replicated configuration, else the seed."""
        stored = self.agent.store.autopilot
        if stored is None:
            return dict(self.seed)
        return {**DEFAULTS, **{k: v for k, v in stored.items() if k in DEFAULTS}}

    def as_json(self) -> dict[str, Any]:
        created, modified = self.agent.store.autopilot_index
        return {**self.values, "CreateIndex": created, "ModifyIndex": modified}

    def seed_command(self) -> Autopilot | None:
        """The write a leader makes when no configuration is replicated yet (else None)."""
        if self.agent.store.autopilot is not None:
            return None
        return Autopilot(tuple(sorted(self.seed.items())), cas=0)

    def update_command(self, body: Any, cas: int | None) -> Autopilot:
        """The write for a PUT body (keys in any case, merged over the current configuration);
        with `cas`, applied only if it matches ModifyIndex. AutopilotError names a bad value."""
        if not isinstance(body, dict):
            raise AutopilotError("Request body must be a JSON object")
        by_lower = {k.lower(): k for k in DEFAULTS}
        new = self.values
        for k, v in body.items():
            key = by_lower.get(k.lower())
            if key is None:
                continue  # CreateIndex, ModifyIndex and unknown keys are ignored, as Consul's decoder does
            want = _TYPES[key]
            if key in ("MaxTrailingLogs", "MinQuorum") and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
                raise AutopilotError(f"{key} must be a non-negative integer")
            if not isinstance(v, want):
                raise AutopilotError(f"{key} has the wrong type")
            if key in ("LastContactThreshold", "ServerStabilizationTime"):
                try:
                    parse_ms(str(v))
                except ValueError as exc:
                    raise AutopilotError(f"{key}: {exc}") from exc
            new[key] = v
        if cas is not None and cas < 0:
            raise AutopilotError("cas must be an index (0 or more)")
        return Autopilot(tuple(sorted(new.items())), -1 if cas is None else cas)


def parse_ms(text: str) -> float:
    """"200ms" / "10s" / "1m" to seconds (Consul durations, the common forms)."""
    from murmur.checks.durations import parse_duration

    return float(parse_duration(text))


def server_health(agent: Agent) -> dict[str, Any]:
    """Consul's OperatorHealthReply, computed on the leader from its view of each voter."""
    from murmur import __version__

    from .server import TICK_INTERVAL, raft_id

    srv = agent.server
    assert srv is not None and srv.driver is not None
    raft = srv.driver.node.raft
    cfg = agent.autopilot.values
    threshold = parse_ms(str(cfg["LastContactThreshold"]))
    max_trailing = int(cfg["MaxTrailingLogs"])
    members: dict[int, tuple[str, str, str, str]] = {}  # raft id -> name, node id, serf status, version
    if agent.membership is not None:
        for m in agent.membership.members.values():
            if m.tags.get("role") != "consul" or "id" not in m.tags:
                continue
            try:
                members[raft_id(m.tags["id"])] = (m.name, m.tags["id"], m.state.name.lower(),
                                                  m.tags.get("build", "").split(":")[0] or __version__)
            except ValueError:
                continue
    members[srv.id] = (agent.local.node.name, agent.local.node.id, "alive", __version__)
    last = raft.log.last_index()
    servers = []
    for v in sorted(raft.voters | raft.learners):
        name, nid, serf, version = members.get(v, (str(v), str(v), "none", ""))
        addr = srv.addresses.get(v)
        if v == srv.id:
            contact, index = 0.0, last
        else:
            pr = raft.prs.get(v)
            contact = pr.inactive_ticks * TICK_INTERVAL if pr else float("inf")
            index = pr.match if pr else 0
        healthy = serf == "alive" and contact <= max(threshold, TICK_INTERVAL * 2) and last - index <= max_trailing
        servers.append({"ID": nid, "Name": name, "Address": f"{addr[0]}:{addr[1]}" if addr else "",
                        "SerfStatus": serf, "Version": version, "Leader": v == srv.id,
                        "LastContact": "0s" if v == srv.id else (f"{contact * 1000:.0f}ms" if contact != float("inf")
                                                                   else "-1ns"),
                        "LastTerm": raft.term, "LastIndex": index, "Healthy": healthy, "Voter": v in raft.voters,
                        "StableSince": agent.autopilot.started})
    n_healthy = sum(1 for s in servers if s["Healthy"] and s["Voter"])
    quorum = len(raft.voters) // 2 + 1
    return {"Healthy": n_healthy == len(servers), "FailureTolerance": max(0, n_healthy - quorum),
            "Servers": servers}


def learners_to_promote(agent: Agent, now: float) -> list[int]:
    """Non-voters the leader may promote now (Consul's autopilot): each has been healthy (alive in
    gossip where gossip knows it, heard from within LastContactThreshold, at most MaxTrailingLogs
    behind the leader's log) without a break for ServerStabilizationTime."""
    from murmur.gossip.membership import State

    from .server import TICK_INTERVAL, raft_id

    srv = agent.server
    if srv is None or srv.driver is None or not srv.driver.is_leader:
        return []
    raft = srv.driver.node.raft
    cfg = agent.autopilot.values
    threshold = max(parse_ms(str(cfg["LastContactThreshold"])), TICK_INTERVAL * 2)
    stabilization = parse_ms(str(cfg["ServerStabilizationTime"]))
    max_trailing = int(cfg["MaxTrailingLogs"])
    failed: set[int] = set()
    if agent.membership is not None:
        for m in agent.membership.members.values():
            if m.state != State.ALIVE and m.tags.get("role") == "consul" and "id" in m.tags:
                try:
                    failed.add(raft_id(m.tags["id"]))
                except ValueError:
                    continue
    seen = agent.autopilot.stable_since
    for rid in list(seen):
        if rid not in raft.learners:
            del seen[rid]
    last = raft.log.last_index()
    out = []
    for rid in sorted(raft.learners):
        pr = raft.prs.get(rid)
        healthy = (pr is not None and rid not in failed and pr.inactive_ticks * TICK_INTERVAL <= threshold
                   and last - pr.match <= max_trailing)
        if not healthy:
            seen.pop(rid, None)
            continue
        if now - seen.setdefault(rid, now) >= stabilization:
            out.append(rid)
    return out


def dead_servers_to_remove(agent: Agent, now: float) -> list[int]:
    """CleanupDeadServers: a server gossip has shown failed for DEAD_SERVER_GRACE seconds: a
    non-voter at once, a voter if the rest keep a quorum of the current configuration and at
    least MinQuorum voters."""
    from murmur.gossip.membership import State

    from .server import raft_id

    srv = agent.server
    if srv is None or srv.driver is None or not agent.autopilot.values["CleanupDeadServers"] \
            or agent.membership is None:
        return []
    voters = set(srv.driver.node.raft.voters)
    dead = set()
    for m in agent.membership.members.values():
        if m.state == State.DEAD and m.tags.get("role") == "consul" and "id" in m.tags:
            try:
                dead.add(raft_id(m.tags["id"]))
            except ValueError:
                continue
    learners = set(srv.driver.node.raft.learners)
    dead &= (voters | learners) - {srv.id}
    seen = agent.autopilot.dead_since
    for rid in list(seen):
        if rid not in dead:
            del seen[rid]
    for rid in dead:
        seen.setdefault(rid, now)
    dead = {rid for rid in dead if now - seen[rid] >= DEAD_SERVER_GRACE}
    if dead & learners:
        return sorted(dead & learners)[:1]  # a non-voter: the quorum does not change
    min_quorum = int(agent.autopilot.values["MinQuorum"])
    if not dead or len(voters) - 1 < max(min_quorum, 1):
        return []
    alive = len(voters) - len(set(seen) & voters)
    if alive < len(voters) // 2 + 1:
        return []  # a quorum is not there to commit the change anyway
    return sorted(dead)[:1]
