"""Raft operator routes (Consul's `/v1/operator/raft/*` writes).

`POST /v1/operator/raft/transfer-leader[?id=ID]`: hand leadership to server ID (its node ID, as
`/v1/operator/raft/configuration` lists it, or its raft ID); without `id`, to the most
up-to-date other voter. `{"Success": true}` once the target leads; 500 when there is no other
voter, the ID is not a voter, or the transfer did not complete (as Consul).

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

    router.add("POST", r"/v1/operator/raft/transfer-leader", transfer_leader)
