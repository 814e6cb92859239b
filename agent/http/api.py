"""The /v1 API: one router with every route module's routes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import (
    acl_routes,
    agent_routes,
    catalog_routes,
    event_routes,
    keyring_routes,
    kv_routes,
    lifecycle_routes,
    operator_routes,
    session_routes,
    snapshot_routes,
    txn_routes,
)
from .server import Request, Response, Router

if TYPE_CHECKING:
    import re

    from ..agent import Agent


def build_router(agent: Agent) -> Router:
    router = Router()

    async def root(req: Request, m: re.Match[str]) -> Response:
        return Response.text("murmur agent\n")

    router.add("GET", r"/", root)
    agent_routes.add_routes(router, agent)
    catalog_routes.add_routes(router, agent)
    kv_routes.add_routes(router, agent)
    session_routes.add_routes(router, agent)
    txn_routes.add_routes(router, agent)
    event_routes.add_routes(router, agent)
    operator_routes.add_routes(router, agent)
    snapshot_routes.add_routes(router, agent)
    lifecycle_routes.add_routes(router, agent)
    keyring_routes.add_routes(router, agent)
    acl_routes.add_routes(router, agent)
    if agent.acl.enabled:
        from .acl_guard import make_guard

        router.guard = make_guard(agent)
    return router
