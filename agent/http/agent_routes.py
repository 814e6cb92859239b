"""`/v1/agent/...` routes: the agent's own view, and writes to its local state."""

from __future__ import annotations

import hashlib
import json
import platform
from typing import TYPE_CHECKING, Any

import trio
from murmur import CONSUL_COMPAT_VERSION, __version__
from murmur.catalog import queries
from murmur.catalog.filter import HEALTH_CHECK, NODE_SERVICE
from murmur.checks.definitions import DefinitionError, folded, from_api
from murmur.gossip.membership import Member, State

from ..definitions import parse_service
from .common import filtered, request_filter
from .server import HTTPError, Request, Response, Router

if TYPE_CHECKING:
    import re

    from ..agent import Agent


# Serf's member status codes, as /v1/agent/members reports them.
STATUS_ALIVE, STATUS_LEAVING, STATUS_LEFT, STATUS_FAILED = 1, 2, 3, 4


def member_json(agent: Agent, m: Member) -> dict[str, Any]:
    """One gossip member in Consul's `/v1/agent/members` shape (suspects still count as alive)."""
    if m.name == agent.local.node.name and agent.leaving:
        status = STATUS_LEAVING
    else:
        status = {State.ALIVE: STATUS_ALIVE, State.SUSPECT: STATUS_ALIVE, State.LEFT: STATUS_LEFT,
                  State.DEAD: STATUS_FAILED}[m.state]
    pmin, pmax, pcur, dmin, dmax, dcur = m.vsn
    return {"Name": m.name, "Addr": m.addr, "Port": m.port, "Tags": dict(m.tags), "Status": status,
            "ProtocolMin": pmin, "ProtocolMax": pmax, "ProtocolCur": pcur, "DelegateMin": dmin,
            "DelegateMax": dmax, "DelegateCur": dcur}


def members_json(agent: Agent) -> list[dict[str, Any]]:
    if agent.membership is None:  # gossip disabled (ports.serf_lan = -1): just ourselves
        n = agent.local.node
        me = Member(n.name, n.address, 0, 1, State.ALIVE, 0.0, agent.member_tags())
        return [member_json(agent, me)]
    return [member_json(agent, m) for _, m in sorted(agent.membership.members.items())]


def self_member(agent: Agent) -> dict[str, Any]:
    name = agent.local.node.name
    return next(m for m in members_json(agent) if m["Name"] == name)


def serf_stats(agent: Agent) -> dict[str, str]:
    ms = agent.membership
    if ms is None:
        return {"members": "1", "failed": "0", "left": "0", "health_score": "0"}
    states = [m.state for m in ms.members.values()]
    out = {"members": str(len(states)), "failed": str(states.count(State.DEAD)),
           "left": str(states.count(State.LEFT)), "health_score": str(ms.awareness.score),
           "event_time": str(ms.clock.time), "member_time": str(ms.clock.time)}
    out.update({k: str(v) for k, v in ms.stats.items()})
    if agent.gossip is not None:
        out.update({k: str(v) for k, v in agent.gossip.stats.items()})
        out["encrypted"] = str(agent.gossip.crypto is not None).lower()  # as Consul's serf_lan stats
    ue = agent.user_events
    if ue is not None:
        out.update({"event_time": str(ue.layer.event_clock.time), "query_time": str(ue.layer.query_clock.time),
                    "event_queue": str(len(ue.ring.events))})
        out.update({f"user_{k}": str(v) for k, v in (ue.layer.stats | ue.stats).items()})
    return out


def leader_addr(agent: Agent) -> str:
    """What /v1/status/leader says: the leader's server address, "" when there is none."""
    if agent.server is None:
        return ""  # a client learns the leader from a server: GET /v1/status/leader asks one
    addr = agent.server.leader_address()
    return f"{addr[0]}:{addr[1]}" if addr else ""


def server_stats(agent: Agent) -> dict[str, dict[str, str]]:
    """Stats.consul and Stats.raft of /v1/agent/self (leader_addr equals /v1/status/leader)."""
    consul = {"leader_addr": leader_addr(agent), "server": str(agent.cfg.server).lower(), "known_datacenters": "1"}
    srv = agent.server
    if srv is None:  # a client: what it knows of the servers, and its RPC counters
        consul = {"server": "false", "known_datacenters": "1", "known_servers": str(len(agent.remote.servers())),
                  **{k: str(v) for k, v in agent.remote.stats.items()}}
        return {"consul": consul, "raft": {"state": "none"}}
    if srv.driver is None:
        consul.update(leader="false", bootstrap="false")
        return {"consul": consul, "raft": {"state": "none"}}
    st = srv.driver.node.status()
    consul.update(leader=str(srv.driver.is_leader).lower(), bootstrap=str(len(srv.voters) == 1).lower())
    raft = {"state": str(st["role"]).title(), "term": str(st["term"]), "commit_index": str(st["commit"]),
            "applied_index": str(st["applied"]), "last_log_index": str(st["last_index"]),
            "num_peers": str(len(srv.voters) - 1),
            "last_snapshot_index": str(srv.driver.node.raft.log.snapshot.meta.index),
            "last_snapshot_term": str(srv.driver.node.raft.log.snapshot.meta.term),
            "first_log_index": str(srv.driver.node.raft.log.offset + 1),
            **{k: str(v) for k, v in srv.driver.stats.items()},
            **{k: str(v) for k, v in srv.transport.stats.items() if k.startswith("snapshot")}}
    return {"consul": consul, "raft": raft}


def gossip_debug_config(agent: Agent) -> dict[str, Any]:
    """The effective LAN gossip timers under Consul's DebugConfig names (durations as Go strings),
    so a benchmark or an operator can check two clusters run the same timings."""
    g = agent.gossip_config

    def dur(seconds: float) -> str:
        return f"{seconds * 1000:g}ms"

    return {"GossipLANProbeInterval": dur(g.probe_interval), "GossipLANProbeTimeout": dur(g.probe_timeout),
            "GossipLANSuspicionMult": g.suspicion_mult, "GossipLANSuspicionMaxTimeoutMult": g.suspicion_max_timeout_mult,
            "GossipLANGossipInterval": dur(g.gossip_interval), "GossipLANGossipNodes": g.gossip_nodes,
            "GossipLANRetransmitMult": g.retransmit_mult, "GossipLANIndirectChecks": g.indirect_checks,
            "GossipLANPushPullInterval": dur(g.push_pull_interval),
            "GossipLANAwarenessMaxMultiplier": g.awareness_max_multiplier}


def add_routes(router: Router, agent: Agent) -> None:
    def allow_scripts() -> bool:  # script checks over HTTP need enable_script_checks
        return bool(agent.cfg.enable_script_checks)

    async def self_(req: Request, m: re.Match[str]) -> Response:
        n = agent.local.node
        data = {
            "Config": {"Datacenter": agent.cfg.datacenter, "NodeName": n.name, "NodeID": n.id,
                       "Server": agent.cfg.server, "Revision": "murmur", "Version": CONSUL_COMPAT_VERSION,
                       "PrimaryDatacenter": agent.cfg.datacenter, "BuildDate": "", "murmur": __version__},
            "DebugConfig": {"Datacenter": agent.cfg.datacenter, "NodeName": n.name, "DNSDomain": agent.cfg.domain,
                            "HTTPPort": agent.http_port, "DNSPort": agent.dns_port, "DevMode": agent.cfg.dev,
                            **gossip_debug_config(agent)},
            "Coord": None,
            "Member": self_member(agent),
            "Stats": {
                **server_stats(agent),
                "serf_lan": serf_stats(agent),
                "agent": {"services": str(len(agent.local.services)), "checks": str(len(agent.local.checks)),
                          "check_monitors": "0", "check_ttls": "0"},
                "runtime": {"os": platform.system().lower(), "arch": platform.machine(),
                            "version": platform.python_version()},
                "build": {"version": CONSUL_COMPAT_VERSION, "prerelease": "", "revision": "murmur"},
                "dns": {k: str(v) for k, v in agent.stats.items()},
            },
            "Meta": dict(agent.local.node.meta),
            "xDS": None,
        }
        return Response.json(data, pretty="pretty" in req.query)

    async def members(req: Request, m: re.Match[str]) -> Response:
        if req.flag("wan"):
            return Response.json([], pretty="pretty" in req.query)  # no WAN pool yet
        return Response.json(members_json(agent), pretty="pretty" in req.query)

    async def join(req: Request, m: re.Match[str]) -> Response:
        if agent.gossip is None:
            raise HTTPError(500, "gossip is disabled on this agent (ports.serf_lan = -1)")
        if req.flag("wan"):
            raise HTTPError(500, "WAN gossip is not supported yet")
        ok, errors = await agent.gossip.join([m["addr"]], 8301)
        if not ok:
            raise HTTPError(500, f"Failed to join {m['addr']}: {'; '.join(errors)}")
        return Response()

    async def leave(req: Request, m: re.Match[str]) -> Response:
        await agent.leave()
        agent.exit_soon()
        return Response()

    async def force_leave(req: Request, m: re.Match[str]) -> Response:
        ms = agent.membership
        name = m["node"]
        if ms is None or name not in ms.members:
            raise HTTPError(500, f"agent: No node found with name '{name}'")
        now = trio.current_time()
        if req.flag("prune"):
            ms.force_leave(name, now)
            done = ms.prune(name)
        else:
            done = ms.force_leave(name, now) or ms.members[name].state == State.LEFT
        if not done:
            raise HTTPError(500, f"node '{name}' is alive; force-leave only removes failed members")
        assert agent.gossip is not None
        agent.gossip.flush()
        return Response()

    async def services(req: Request, m: re.Match[str]) -> Response:
        f = request_filter(req, NODE_SERVICE)
        data = {sid: queries.agent_service_json(None, spec, agent.cfg.datacenter)
                for sid, spec in sorted(agent.local.services.items())}
        return Response.json(filtered(f, data), pretty="pretty" in req.query)

    async def service(req: Request, m: re.Match[str]) -> Response:
        spec = agent.local.services.get(m["id"])
        if spec is None:
            raise HTTPError(404, f"unknown service ID: {m['id']}")
        data = queries.agent_service_json(None, spec, agent.cfg.datacenter)
        digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
        data["ContentHash"] = digest
        return Response.json(data, headers=[("X-Consul-ContentHash", digest)], pretty="pretty" in req.query)

    async def checks(req: Request, m: re.Match[str]) -> Response:
        f = request_filter(req, HEALTH_CHECK)
        n = agent.local.node.name
        out = {}
        for cid in sorted(agent.local.checks):
            chk = agent.local.checks[cid]
            svc = agent.local.services.get(chk.defn.service_id)
            spec = chk.spec()
            out[cid] = {"Node": n, "CheckID": cid, "Name": spec.name, "Status": spec.status, "Notes": spec.notes,
                        "Output": spec.output, "ServiceID": spec.service_id, "ServiceName": svc.name if svc else "",
                        "ServiceTags": list(svc.tags) if svc else [], "Type": spec.type,
                        "Interval": spec.interval, "Timeout": spec.timeout, "ExposedPort": 0,
                        "Definition": {}, "CreateIndex": 0, "ModifyIndex": 0}
        return Response.json(filtered(f, out), pretty="pretty" in req.query)

    async def register_service(req: Request, m: re.Match[str]) -> Response:
        body = req.json()
        try:
            sdef = parse_service(body, allow_scripts=allow_scripts())
            agent.add_service(sdef, "api", replace_existing_checks=req.flag("replace-existing-checks"))
        except DefinitionError as exc:
            raise HTTPError(400, f"Invalid service definition: {exc}") from exc
        agent.persist("services", sdef.spec.id, body)
        await agent.sync_for_request()
        return Response()

    async def deregister_service(req: Request, m: re.Match[str]) -> Response:
        if not agent.remove_service(m["id"]):
            raise HTTPError(404, f"Unknown service ID {m['id']!r}")
        await agent.sync_for_request()
        return Response()

    async def register_check(req: Request, m: re.Match[str]) -> Response:
        body = req.json()
        try:
            defn = from_api(body, allow_scripts=allow_scripts())
        except DefinitionError as exc:
            raise HTTPError(400, f"Invalid check: {exc}") from exc
        if defn.service_id and defn.service_id not in agent.local.services:
            # Consul (1.11+) answers 404 here; py-consul's check.register() then returns False.
            raise HTTPError(404, f"ServiceID \"{defn.service_id}\" does not exist")
        try:
            agent.add_check(defn, "api")
        except DefinitionError as exc:
            raise HTTPError(400, f"Invalid check: {exc}") from exc
        agent.persist("checks", defn.id, body)
        await agent.sync_for_request()
        return Response()

    async def deregister_check(req: Request, m: re.Match[str]) -> Response:
        if not agent.remove_check(m["id"]):
            raise HTTPError(404, f"Unknown check ID {m['id']!r}")
        await agent.sync_for_request()
        return Response()

    async def set_check(cid: str, status: str, output: str) -> Response:
        if not agent.update_check(cid, status, output):
            raise HTTPError(404, f"Unknown check ID {cid!r}")
        await agent.sync_for_request()
        return Response()

    async def ttl_update(req: Request, m: re.Match[str]) -> Response:
        status = {"pass": "passing", "warn": "warning", "fail": "critical"}[m["verb"]]
        return await set_check(m["id"], status, req.arg("note", "") or "")

    async def check_update(req: Request, m: re.Match[str]) -> Response:
        body = req.json()
        if not isinstance(body, dict):
            raise HTTPError(400, "Request body must be a JSON object with Status and Output")
        d = folded(body)
        status = d.get("status")
        if status not in ("passing", "warning", "critical"):
            raise HTTPError(400, f"Invalid check status: {status!r}")
        output = d.get("output") or ""
        if not isinstance(output, str):
            raise HTTPError(400, "Output must be a string")
        return await set_check(m["id"], status, output)

    async def reload(req: Request, m: re.Match[str]) -> Response:
        try:
            await agent.reload()
        except Exception as exc:
            raise HTTPError(500, f"Failed reloading config: {exc}") from exc
        return Response()

    router.add("GET", r"/v1/agent/self", self_)
    router.add("GET", r"/v1/agent/members", members)
    router.add("PUT", r"/v1/agent/join/(?P<addr>.+)", join)
    router.add("PUT", r"/v1/agent/leave", leave)
    router.add("PUT", r"/v1/agent/force-leave/(?P<node>[^/]+)", force_leave)
    router.add("GET", r"/v1/agent/services", services)
    router.add("GET", r"/v1/agent/service/(?P<id>[^/]+)", service)
    router.add("GET", r"/v1/agent/checks", checks)
    router.add("PUT", r"/v1/agent/service/register", register_service)
    router.add("PUT", r"/v1/agent/service/deregister/(?P<id>[^/]+)", deregister_service)
    router.add("PUT", r"/v1/agent/check/register", register_check)
    router.add("PUT", r"/v1/agent/check/deregister/(?P<id>.+)", deregister_check)
    router.add("PUT", r"/v1/agent/check/(?P<verb>pass|warn|fail)/(?P<id>.+)", ttl_update)
    router.add("PUT", r"/v1/agent/check/update/(?P<id>.+)", check_update)
    router.add("PUT", r"/v1/agent/reload", reload)
