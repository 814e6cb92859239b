"""A small autopilot: its configuration (Consul's JSON shape, CAS on ModifyIndex) and server health.

The configuration is kept per server in `data_dir/autopilot.json` (in memory with --dev); it is
not replicated: set it on each server (or on the leader, which is the one that acts on it).
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

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


# Seconds a server must have been failed in gossip before CleanupDeadServers removes it: long
# enough that a restart or a short partition never costs a server its seat.
DEAD_SERVER_GRACE = 300.0


class AutopilotError(ValueError):
    pass


class AutopilotConfig:
    def __init__(self, agent: Agent) -> None:
        self.path = Path(agent.cfg.data_dir) / "autopilot.json" if agent.cfg.data_dir and not agent.cfg.dev else None
        self.values = dict(DEFAULTS)
        self.dead_since: dict[int, float] = {}  # raft id -> when (trio time) we first saw it failed
        self.stable_since: dict[int, float] = {}  # learner raft id -> since when (trio time) it is healthy
        self.started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.create_index = 1
        self.modify_index = 1
        if self.path is not None and self.path.exists():
            saved = json.loads(self.path.read_text())
            self.values.update({k: v for k, v in saved.get("config", {}).items() if k in DEFAULTS})
            self.create_index = int(saved.get("create_index", 1))
            self.modify_index = int(saved.get("modify_index", 1))

    def as_json(self) -> dict[str, Any]:
        return {**self.values, "CreateIndex": self.create_index, "ModifyIndex": self.modify_index}

    def update(self, body: Any, cas: int | None) -> bool:
        """Apply a PUT body (keys in any case); with `cas`, only if it matches ModifyIndex."""
        if not isinstance(body, dict):
            raise AutopilotError("Request body must be a JSON object")
        by_lower = {k.lower(): k for k in DEFAULTS}
        new = dict(self.values)
        for k, v in body.items():
            key = by_lower.get(k.lower())
            if key is None:
                continue  # CreateIndex, ModifyIndex and unknown keys are ignored, as Consul's decoder does
            want = _TYPES[key]
            if key in ("MaxTrailingLogs", "MinQuorum") and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
                raise AutopilotError(f"{key} must be a non-negative integer")
            if not isinstance(v, want):
                raise AutopilotError(f"{key} has the wrong type")
            new[key] = v
        if cas is not None and cas != self.modify_index:
            return False
        self.values = new
        self.modify_index += 1
        if self.path is not None:
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"config": self.values, "create_index": self.create_index,
                                       "modify_index": self.modify_index}))
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            tmp.replace(self.path)
        return True


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
