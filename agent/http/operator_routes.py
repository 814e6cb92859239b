"""Raft operator routes (Consul's `/v1/operator/raft/*` writes).

`POST /v1/operator/raft/transfer-leader[?id=ID]`: hand leadership to server ID (its node ID, as
`/v1/operator/raft/configuration` lists it, or its raft ID); without `id`, to the most
up-to-date other voter. `{"Success": true}` once the target leads; 500 when there is no other
voter, the ID is not a voter, or the transfer did not complete (as Consul).

`DELETE /v1/operator/raft/peer?id=ID` or `?address=IP:PORT` (the server port address listed by
the configuration route): remove a server from the Raft configuration, one server at a time;
200 once the change commits, 500 if it is not a peer (as Consul). A server still alive in gossip
is added back by the leader: this is for servers that are gone.

The list route (`GET /v1/operator/raft/configuration`) lives in catalog_routes.py.
"""

from __future__ import annotations

import re
import uuid
from typing import TYPE_CHECKING

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

    router.add("POST", r"/v1/operator/raft/transfer-leader", transfer_leader)
    router.add("DELETE", r"/v1/operator/raft/peer", remove_peer)
