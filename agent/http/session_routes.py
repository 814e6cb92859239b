"""`/v1/session/*`: create, destroy, renew (writes through the write path), info, node, list
(named reads, blocking on the sessions index)."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from murmur.catalog import queries
from murmur.catalog.commands import DEFAULT_LOCK_DELAY, ApplyError, Session, SessionOp
from murmur.catalog.store import session_from_wire
from murmur.checks.definitions import folded

from ..sessions import SessionError, parse_lock_delay, parse_ttl
from .common import check_dc, json_result, named_read
from .server import HTTPError, Request, Response, Router

if TYPE_CHECKING:
    import re

    from ..agent import Agent

SERF_CHECK = "serfHealth"


def _check_ids(value: Any, what: str) -> tuple[str, ...]:
    """A list of check IDs; ServiceChecks entries are {"ID": ..., "Namespace": ...} objects."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise HTTPError(400, f"{what} must be a list")
    out: list[str] = []
    for item in value:
        if isinstance(item, dict):
            item = folded(item).get("id")
        if not isinstance(item, str) or not item:
            raise HTTPError(400, f"{what} entries must be check IDs")
        if item not in out:
            out.append(item)
    return tuple(out)


def parse_create(body: Any, default_node: str, sid: str) -> Session:
    """A create body in Consul's shape (any key casing) into a CREATE command. 400 on bad fields."""
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise HTTPError(400, "Request body must be a JSON object")
    d = folded(body)
    for key in ("name", "node", "behavior"):
        if d.get(key) is not None and not isinstance(d[key], str):
            raise HTTPError(400, f"{key} must be a string")
    behavior = (d.get("behavior") or "release").lower()
    if behavior not in ("release", "delete"):
        raise HTTPError(400, f"Invalid Behavior setting {d.get('behavior')!r}: want release or delete")
    try:
        lock_delay = DEFAULT_LOCK_DELAY if d.get("lockdelay") is None else parse_lock_delay(d["lockdelay"])
        ttl = parse_ttl(d.get("ttl"))
    except SessionError as exc:
        raise HTTPError(400, str(exc)) from exc
    given = [k for k in ("checks", "nodechecks", "servicechecks") if d.get(k) is not None]
    node_checks = _check_ids(d.get("checks"), "Checks") + _check_ids(d.get("nodechecks"), "NodeChecks")
    node_checks = tuple(dict.fromkeys(node_checks))
    service_checks = _check_ids(d.get("servicechecks"), "ServiceChecks")
    if not given:  # Consul's default: the node's serfHealth
        node_checks = (SERF_CHECK,)
    return Session(SessionOp.CREATE, sid, name=d.get("name") or "", node=d.get("node") or default_node,
                   node_checks=node_checks, service_checks=service_checks, lock_delay=lock_delay,
                   behavior=behavior, ttl=ttl)


def add_routes(router: Router, agent: Agent) -> None:
    async def create(req: Request, m: re.Match[str]) -> Response:
        check_dc(agent, req)
        cmd = parse_create(req.json(), agent.local.node.name, str(uuid.uuid4()))
        result = await agent.writer.apply(cmd)
        if isinstance(result, ApplyError):  # a missing node or check: Consul's 500
            raise HTTPError(500, result.message)
        return Response.json({"ID": cmd.id})

    async def destroy(req: Request, m: re.Match[str]) -> Response:
        check_dc(agent, req)
        result = await agent.writer.apply(Session(SessionOp.DESTROY, m["id"]))
        if isinstance(result, ApplyError):
            raise HTTPError(500, result.message)
        return Response.json(True)

    async def renew(req: Request, m: re.Match[str]) -> Response:
        check_dc(agent, req)
        result = await agent.writer.apply(Session(SessionOp.RENEW, m["id"]))
        if not isinstance(result, list):
            raise HTTPError(404, f"Session id '{m['id']}' not found")
        return Response.json([queries.session_json(session_from_wire(result))])

    async def info(req: Request, m: re.Match[str]) -> Response:
        return json_result(req, await named_read(agent, req, "session.info", {"id": m["id"]}))

    async def node(req: Request, m: re.Match[str]) -> Response:
        return json_result(req, await named_read(agent, req, "session.node", {"node": m["node"]}))

    async def listing(req: Request, m: re.Match[str]) -> Response:
        return json_result(req, await named_read(agent, req, "session.list", {}))

    router.add("PUT", r"/v1/session/create", create)
    router.add("PUT", r"/v1/session/destroy/(?P<id>[^/]+)", destroy)
    router.add("PUT", r"/v1/session/renew/(?P<id>[^/]+)", renew)
    router.add("GET", r"/v1/session/info/(?P<id>[^/]+)", info)
    router.add("GET", r"/v1/session/node/(?P<node>[^/]+)", node)
    router.add("GET", r"/v1/session/list", listing)
