"""Raft operator routes (Consul's `/v1/operator/raft/*` writes).

`POST /v1/operator/raft/transfer-leader[?id=ID]`: hand leadership to server ID (its node ID, as
`/v1/operator/raft/configuration` lists it, or its raft ID); without `id`, to the most
up-to-date other voter. `{"Success": true}` once the target leads; 500 when there is no other
voter, the ID is not a voter, or the transfer did not complete (as Consul).

`DELETE /v1/operator/raft/peer?id=ID` or `?address=IP:PORT` (the server port address listed by
the configuration route): remove a server from the Raft configuration, one server at a time;
200 once the change commits, 500 if it is not a peer (as Consul). A server still alive in gossip
is added back by the leader: this is for servers that are gone.

`GET`/`PUT /v1/operator/autopilot/configuration[?cas=N]`: Consul's autopilot configuration,
replicated through Raft (agent/autopilot.py); PUT answers `true`, or `false` when `cas` does not
match ModifyIndex.
`GET /v1/operator/autopilot/health`: OperatorHealthReply from the leader; 429 when unhealthy.
`GET /v1/operator/usage`: counts from the local catalog (`{"Usage": {dc: {...}}, "Index"}`).
`/v1/coordinate/*`: Consul's shapes; every node has the origin coordinate until Vivaldi lands.

The list route (`GET /v1/operator/raft/configuration`) lives in catalog_routes.py.
"""

from __future__ import annotations

import re
import uuid
from typing import TYPE_CHECKING

from murmur.catalog.commands import ApplyError

from ..autopilot import AutopilotError
from ..operator import OperatorError, run_on_leader
from .server import HTTPError, Request, Response, Router

if TYPE_CHECKING:
    from ..agent import Agent
    from ..server import ServerRuntime


def _server(agent: Agent) -> ServerRuntime:
    srv = agent.server
    if srv is None or srv.driver is None:
        raise HTTPError(500, "No cluster leader")
    return srv


def resolve_id(text: str) -> int:
    """A server's raft ID from its node ID (a UUID) or from the raft ID itself."""
    from ..server import raft_id

    text = text.strip()
    if text.isdigit():
        return int(text)
    try:
        return raft_id(str(uuid.UUID(text)))
    except ValueError as exc:
        raise HTTPError(400, f"Invalid server id {text!r}: want a node ID") from exc


def add_routes(router: Router, agent: Agent) -> None:
    async def transfer_leader(req: Request, m: re.Match[str]) -> Response:
        srv = _server(agent)
        raw = req.arg("id")
        target = resolve_id(raw) if raw else None
        try:
            await run_on_leader(srv, "transfer", {"target": target})
        except OperatorError as exc:
            raise HTTPError(500, str(exc)) from exc
        return Response.json({"Success": True})

    async def remove_peer(req: Request, m: re.Match[str]) -> Response:
        srv = _server(agent)
        raw_id, raw_addr = req.arg("id"), req.arg("address")
        if raw_id:
            target = resolve_id(raw_id)
        elif raw_addr:
            found = [rid for rid, (host, port) in srv.addresses.items() if f"{host}:{port}" == raw_addr.strip()]
            if not found:
                raise HTTPError(500, f"address {raw_addr!r} was not found in the Raft configuration")
            target = found[0]
        else:
            raise HTTPError(400, "Must specify either ?id with the server's ID or ?address with IP:port of peer to remove")
        if target not in srv.voters:
            raise HTTPError(500, f"id {raw_id or raw_addr!r} was not found in the Raft configuration")
        try:
            await run_on_leader(srv, "remove", {"target": target})
        except OperatorError as exc:
            raise HTTPError(500, str(exc)) from exc
        return Response(200)

    async def autopilot_get(req: Request, m: re.Match[str]) -> Response:
        _server(agent)
        return Response.json(agent.autopilot.as_json())

    async def autopilot_put(req: Request, m: re.Match[str]) -> Response:
        _server(agent)
        raw = req.arg("cas")
        try:
            cas = int(raw) if raw is not None else None
        except ValueError as exc:
            raise HTTPError(400, f"Invalid cas {raw!r}") from exc
        try:
            cmd = agent.autopilot.update_command(req.json(), cas)
        except AutopilotError as exc:
            raise HTTPError(400, f"Error parsing autopilot config: {exc}") from exc
        result = await agent.writer.apply(cmd)  # through the leader and the Raft log, as Consul's
        if isinstance(result, ApplyError):
            raise HTTPError(500, result.message)
        return Response.json(result is True)

    async def autopilot_health(req: Request, m: re.Match[str]) -> Response:
        srv = _server(agent)
        try:
            reply = await run_on_leader(srv, "health", {})
        except OperatorError as exc:
            raise HTTPError(500, str(exc)) from exc
        return Response.json(reply, status=200 if reply.get("Healthy") else 429)

    async def usage(req: Request, m: re.Match[str]) -> Response:
        store = agent.store
        instances = [r for svcs in store.services.values() for r in svcs.values()]
        names = {r.spec.name for r in instances}
        dc = agent.cfg.datacenter
        counts = {"Nodes": len(store.nodes), "Services": len(names), "ServiceInstances": len(instances),
                  "ConnectServiceInstances": {"connect-native": 0, "connect-proxy": 0, "ingress-gateway": 0,
                                              "mesh-gateway": 0, "terminating-gateway": 0, "api-gateway": 0},
                  "BillableServiceInstances": len([r for r in instances if r.spec.name != "consul"])}
        return Response.json({"Usage": {dc: counts}, "Index": store.last_index},
                             headers=[("X-Consul-Index", str(max(store.last_index, 1)))])

    def origin() -> dict[str, object]:
        return {"Vec": [0.0] * 8, "Error": 1.5, "Adjustment": 0.0, "Height": 1e-05}

    def node_coords(names: list[str]) -> list[dict[str, object]]:
        return [{"Node": n, "Segment": "", "Coord": origin()} for n in names]

    async def coord_datacenters(req: Request, m: re.Match[str]) -> Response:
        servers = sorted(n for n, rec in agent.store.nodes.items()
                         if any(r.spec.name == "consul" for r in agent.store.services.get(n, {}).values()))
        return Response.json([{"Datacenter": agent.cfg.datacenter, "AreaID": "wan",
                               "Coordinates": [{"Node": f"{n}.{agent.cfg.datacenter}", "Coord": origin()}
                                               for n in servers]}])

    async def coord_nodes(req: Request, m: re.Match[str]) -> Response:
        return Response.json(node_coords(sorted(agent.store.nodes)),
                             headers=[("X-Consul-Index", str(max(agent.store.last_index, 1)))])

    async def coord_node(req: Request, m: re.Match[str]) -> Response:
        if m["node"] not in agent.store.nodes:
            return Response(404)
        return Response.json(node_coords([m["node"]]))

    async def coord_update(req: Request, m: re.Match[str]) -> Response:
        body = req.json()
        if not isinstance(body, dict) or not body.get("Node"):
            raise HTTPError(400, "Must provide Node and Coord")
        return Response.json(True)  # (accepted and dropped until Vivaldi)

    router.add("GET", r"/v1/operator/autopilot/configuration", autopilot_get)
    router.add("PUT", r"/v1/operator/autopilot/configuration", autopilot_put)
    router.add("GET", r"/v1/operator/autopilot/health", autopilot_health)
    router.add("GET", r"/v1/operator/usage", usage)
    router.add("GET", r"/v1/coordinate/datacenters", coord_datacenters)
    router.add("GET", r"/v1/coordinate/nodes", coord_nodes)
    router.add("GET", r"/v1/coordinate/node/(?P<node>[^/]+)", coord_node)
    router.add("PUT", r"/v1/coordinate/update", coord_update)
    router.add("POST", r"/v1/operator/raft/transfer-leader", transfer_leader)
    router.add("DELETE", r"/v1/operator/raft/peer", remove_peer)
