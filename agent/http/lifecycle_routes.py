"""`/v1/agent/...` routes for operating an agent: maintenance mode (node and service)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from .server import HTTPError, Request, Response, Router

if TYPE_CHECKING:
    import re

    from ..agent import Agent


def enable_arg(req: Request) -> bool:
    """Consul's `enable` query argument: required, a Go boolean."""
    raw = req.arg("enable")
    if raw is None or raw == "":
        raise HTTPError(400, "Missing value for enable")
    val = raw.lower()
    if val in ("1", "t", "true"):
        return True
    if val in ("0", "f", "false"):
        return False
    raise HTTPError(400, f"Invalid value for enable: {raw!r}")


def add_routes(router: Router, agent: Agent) -> None:
    async def node_maintenance(req: Request, m: re.Match[str]) -> Response:
        enable = enable_arg(req)
        agent.maintenance.set_node(enable, req.arg("reason", "") or "", trio.current_time())
        await agent.sync()
        return Response()

    async def service_maintenance(req: Request, m: re.Match[str]) -> Response:
        sid = m["id"]
        enable = enable_arg(req)
        if not agent.maintenance.set_service(sid, enable, req.arg("reason", "") or "", trio.current_time()):
            raise HTTPError(404, f"Unknown service ID {sid!r}")
        await agent.sync()
        return Response()

    router.add("PUT", r"/v1/agent/maintenance", node_maintenance)
    router.add("PUT", r"/v1/agent/service/maintenance/(?P<id>.+)", service_maintenance)
