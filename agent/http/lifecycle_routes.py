"""`/v1/agent/...` routes for operating an agent: maintenance mode (node and service), metrics, the
log stream."""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from .server import HTTPError, Request, Response, Router, Send

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
        try:
            agent.maintenance.set_node(enable, req.arg("reason", "") or "", trio.current_time())
        except OSError as exc:
            raise HTTPError(500, f"cannot record the maintenance state: {exc}") from exc
        await agent.sync_for_request()
        return Response()

    async def service_maintenance(req: Request, m: re.Match[str]) -> Response:
        sid = m["id"]
        enable = enable_arg(req)
        try:
            known = agent.maintenance.set_service(sid, enable, req.arg("reason", "") or "", trio.current_time())
        except OSError as exc:
            raise HTTPError(500, f"cannot record the maintenance state: {exc}") from exc
        if not known:
            raise HTTPError(404, f"Unknown service ID {sid!r}")
        await agent.sync_for_request()
        return Response()

    async def metrics(req: Request, m: re.Match[str]) -> Response:
        fmt = req.arg("format", "") or ""
        if fmt == "prometheus":
            from prometheus_client import CONTENT_TYPE_LATEST

            return Response(200, agent.metrics.as_prometheus(), [("Content-Type", CONTENT_TYPE_LATEST)])
        if fmt:
            raise HTTPError(400, f"Invalid format {fmt!r}: the only format is prometheus (or none, for JSON)")
        return Response.json(agent.metrics.as_json(), pretty="pretty" in req.query)

    async def monitor(req: Request, m: re.Match[str]) -> Response:
        from ..monitor import parse_level

        try:
            level = parse_level(req.arg("loglevel", "") or "info")
        except ValueError as exc:
            raise HTTPError(400, str(exc)) from exc
        as_json = req.flag("logjson")
        hub = agent.log_hub
        hub.install()

        async def produce(send: Send) -> None:
            sub = hub.subscribe(level, as_json)
            try:
                while True:
                    await send((await sub.next_chunk()).encode("utf-8", "replace"))
            finally:
                hub.unsubscribe(sub)

        ctype = "application/json" if as_json else "text/plain; charset=utf-8"
        return Response(200, headers=[("Content-Type", ctype), ("Cache-Control", "no-cache")], stream=produce)

    router.add("GET", r"/v1/agent/metrics", metrics)
    router.add("GET", r"/v1/agent/monitor", monitor)
    router.add("PUT", r"/v1/agent/maintenance", node_maintenance)
    router.add("PUT", r"/v1/agent/service/maintenance/(?P<id>.+)", service_maintenance)
