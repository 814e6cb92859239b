"""ACL enforcement for every HTTP route, in one table.

`RULES` maps each route (method and the pattern it was registered with) to what it needs. The
guard runs before the handler: it reads the request's token (X-Consul-Token, Authorization:
Bearer, ?token=), resolves it ("ACL not found" for an unknown one), checks the route's rule
(403 "Permission denied: ..." when it fails) and may return a filter for the response (agent-local
lists, such as /v1/agent/services, lose what the token may not read, and say so in
X-Consul-Results-Filtered-By-ACLs). Catalog, health, KV and session reads are filtered where the
read runs (agent/acl.py `filter_read`), on the server that answers them.

A route missing from the table is refused to all but management tokens (fail closed);
tests/unit/test_acl_http.py checks that every registered route has a rule.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from murmur.catalog.acl import Authorizer
from murmur.checks.definitions import folded

from ..acl import REQUEST_TOKEN, PermissionDenied, TokenNotFound, authorize_command, denied, request_secret
from .server import HTTPError, Request, Response

if TYPE_CHECKING:
    from ..agent import Agent

PostFilter = Callable[[Response], Response]


class Ctx:
    """What a rule sees: the agent, the request, the route's match, the token's rights."""

    def __init__(self, agent: Agent, req: Request, m: re.Match[str], authz: Authorizer, accessor: str) -> None:
        self.agent, self.req, self.m, self.authz, self.accessor = agent, req, m, authz, accessor

    def need(self, kind: str, name: str, level: str) -> None:
        if not self.authz.allowed(kind, name, level):
            raise denied(self.accessor, f"{kind}:{level}", name)

    def need_scalar(self, kind: str, level: str) -> None:
        if not self.authz.scalar(kind, level):
            raise denied(self.accessor, f"{kind}:{level}")

    def need_command(self, cmd: Any) -> None:
        missing = authorize_command(self.authz, cmd, self.agent.store)
        if missing is not None:
            raise PermissionDenied(f"Permission denied: token lacks permission {missing}")

    @property
    def node(self) -> str:
        return self.agent.local.node.name


Rule = Callable[[Ctx], "PostFilter | None"]


# ---- rule builders --------------------------------------------------------------------------------

def open_() -> Rule:
    """Nothing to check here: what the token may see is decided where the read runs."""
    return lambda c: None


def no_acl(c: Ctx) -> None:
    """Routes that never look at a token (as Consul's status endpoints): not even an unknown one
    is refused, so health probes work whatever the agent's default token."""


def scalar(kind: str, level: str) -> Rule:
    def rule(c: Ctx) -> None:
        c.need_scalar(kind, level)
    return rule


def own_node(kind: str, level: str) -> Rule:
    """`agent:read` or `node:write` on this agent's own node."""
    def rule(c: Ctx) -> None:
        c.need(kind, c.node, level)
    return rule


def named(kind: str, group: str, level: str) -> Rule:
    """A resource named by the route (`/v1/event/fire/<name>`)."""
    def rule(c: Ctx) -> None:
        c.need(kind, c.m[group], level)
    return rule


def management(c: Ctx) -> None:
    if not c.authz.management:
        raise denied(c.accessor, "management")


def handled_by_route(c: Ctx) -> None:
    """The /v1/acl routes check acl:read/acl:write themselves (token/self needs only a valid token)."""


def _json_filter(keep: Callable[[Any], bool], shape: str) -> PostFilter:
    """Drop what `keep` refuses from a JSON list (shape "list") or map's values ("map")."""
    def post(resp: Response) -> Response:
        if resp.status != 200 or not resp.body:
            return resp
        try:
            data = json.loads(resp.body)
        except ValueError:
            return resp
        if shape == "map" and isinstance(data, dict):
            kept: Any = {k: v for k, v in data.items() if keep(v)}
        elif shape == "list" and isinstance(data, list):
            kept = [v for v in data if keep(v)]
        else:
            return resp
        if len(kept) == len(data):
            return resp
        out = Response.json(kept, resp.status, [h for h in resp.headers if h[0] != "Content-Type"])
        out.headers.append(("X-Consul-Results-Filtered-By-ACLs", "true"))
        return out
    return post


def filtered(keep: Callable[[Ctx, Any], bool], shape: str) -> Rule:
    def rule(c: Ctx) -> PostFilter | None:
        if c.authz.management:
            return None
        return _json_filter(lambda v: isinstance(v, dict) and keep(c, v), shape)
    return rule


def _check_readable(c: Ctx, chk: dict[str, Any]) -> bool:
    if chk.get("ServiceName"):
        return c.authz.allowed("service", str(chk["ServiceName"]), "read")
    return c.authz.allowed("node", str(chk.get("Node", "")), "read")


def _body(c: Ctx) -> Any:
    try:
        return c.req.json()
    except HTTPError:
        return None  # the handler answers 400


# ---- route rules ----------------------------------------------------------------------------------

def agent_service_read(c: Ctx) -> PostFilter | None:
    spec = c.agent.local.services.get(c.m["id"])
    if spec is not None:
        c.need("service", spec.name, "read")
    return None


def agent_service_register(c: Ctx) -> None:
    body = _body(c)
    if isinstance(body, dict):
        name = folded(body).get("name")
        if isinstance(name, str) and name:
            c.need("service", name, "write")
            return
    c.need("node", c.node, "write")  # a body the handler will refuse; still not for anyone


def agent_service_write(c: Ctx) -> None:
    spec = c.agent.local.services.get(c.m["id"])
    c.need("service", spec.name, "write") if spec is not None else c.need("node", c.node, "write")


def agent_check_register(c: Ctx) -> None:
    body = _body(c)
    sid = folded(body).get("serviceid") if isinstance(body, dict) else None
    spec = c.agent.local.services.get(sid) if isinstance(sid, str) and sid else None
    c.need("service", spec.name, "write") if spec is not None else c.need("node", c.node, "write")


def agent_check_write(c: Ctx) -> None:
    chk = c.agent.local.checks.get(c.m["id"])
    sid = chk.defn.service_id if chk is not None else ""
    spec = c.agent.local.services.get(sid) if sid else None
    c.need("service", spec.name, "write") if spec is not None else c.need("node", c.node, "write")


def catalog_register(c: Ctx) -> None:
    from .catalog_routes import parse_catalog_register

    try:
        cmd = parse_catalog_register(_body(c))
    except HTTPError:
        return  # the handler says what is wrong
    c.need_command(cmd)


def catalog_deregister(c: Ctx) -> None:
    from murmur.catalog.commands import Deregister

    body = _body(c)
    if not isinstance(body, dict):
        return
    d = folded(body)
    if not isinstance(d.get("node"), str):
        return
    c.need_command(Deregister(node=d["node"], service_id=str(d.get("serviceid") or ""),
                              check_id=str(d.get("checkid") or "")))


def kv_get(c: Ctx) -> None:
    if "keys" in c.req.query or c.req.flag("recurse"):
        return None  # filtered where the read runs
    c.need("key", c.m["key"], "read")
    return None


def kv_put(c: Ctx) -> None:
    c.need("key", c.m["key"], "write")


def kv_delete(c: Ctx) -> None:
    if c.req.flag("recurse"):
        if not c.authz.write_prefix("key", c.m["key"]):
            raise denied(c.accessor, "key:write", c.m["key"])
        return
    c.need("key", c.m["key"], "write")


def session_create(c: Ctx) -> None:
    from .session_routes import parse_create

    try:
        cmd = parse_create(_body(c), c.node, "00000000-0000-0000-0000-000000000000")
    except HTTPError:
        return
    c.need("session", cmd.node, "write")


def session_write(c: Ctx) -> None:
    sess = c.agent.store.sessions.get(c.m["id"])  # a client's store has none: the server checks
    if sess is not None:
        c.need("session", sess.node, "write")


def txn(c: Ctx) -> None:
    from murmur.catalog.commands import Txn

    from .txn_routes import parse_ops

    try:
        ops = parse_ops(_body(c))
    except HTTPError:
        return
    c.need_command(Txn(tuple(ops)))


def keyring(c: Ctx) -> None:
    c.need_scalar("keyring", "read" if c.req.method in ("GET", "HEAD") else "write")


def coordinate_update(c: Ctx) -> None:
    body = _body(c)
    node = folded(body).get("node") if isinstance(body, dict) else None
    c.need("node", node if isinstance(node, str) else c.node, "write")


RULES: dict[tuple[str, str], Rule] = {
    ("GET", r"/"): no_acl,
    # agent
    ("GET", r"/v1/agent/self"): own_node("agent", "read"),
    ("GET", r"/v1/agent/members"): filtered(lambda c, v: c.authz.allowed("node", str(v.get("Name", "")), "read"),
                                            "list"),
    ("PUT", r"/v1/agent/join/(?P<addr>.+)"): own_node("agent", "write"),
    ("PUT", r"/v1/agent/leave"): own_node("agent", "write"),
    ("PUT", r"/v1/agent/force-leave/(?P<node>[^/]+)"): scalar("operator", "write"),
    ("GET", r"/v1/agent/services"): filtered(
        lambda c, v: c.authz.allowed("service", str(v.get("Service", "")), "read"), "map"),
    ("GET", r"/v1/agent/service/(?P<id>[^/]+)"): agent_service_read,
    ("GET", r"/v1/agent/checks"): filtered(_check_readable, "map"),
    ("PUT", r"/v1/agent/service/register"): agent_service_register,
    ("PUT", r"/v1/agent/service/deregister/(?P<id>[^/]+)"): agent_service_write,
    ("PUT", r"/v1/agent/check/register"): agent_check_register,
    ("PUT", r"/v1/agent/check/deregister/(?P<id>.+)"): agent_check_write,
    ("PUT", r"/v1/agent/check/(?P<verb>pass|warn|fail)/(?P<id>.+)"): agent_check_write,
    ("PUT", r"/v1/agent/check/update/(?P<id>.+)"): agent_check_write,
    ("PUT", r"/v1/agent/reload"): own_node("agent", "write"),
    ("GET", r"/v1/agent/metrics"): own_node("agent", "read"),
    ("GET", r"/v1/agent/monitor"): own_node("agent", "read"),
    ("PUT", r"/v1/agent/maintenance"): own_node("node", "write"),
    ("PUT", r"/v1/agent/service/maintenance/(?P<id>.+)"): agent_service_write,
    # catalog and health: reads are filtered where they run
    ("GET", r"/v1/operator/raft/configuration"): scalar("operator", "read"),
    ("GET", r"/v1/status/leader"): no_acl,
    ("GET", r"/v1/status/peers"): no_acl,
    ("GET", r"/v1/catalog/datacenters"): no_acl,
    ("GET", r"/v1/catalog/services"): open_(),
    ("GET", r"/v1/catalog/service/(?P<name>[^/]+)"): open_(),
    ("GET", r"/v1/catalog/connect/(?P<name>[^/]+)"): open_(),
    ("GET", r"/v1/catalog/nodes"): open_(),
    ("GET", r"/v1/catalog/node/(?P<node>[^/]+)"): open_(),
    ("PUT", r"/v1/catalog/register"): catalog_register,
    ("PUT", r"/v1/catalog/deregister"): catalog_deregister,
    ("GET", r"/v1/health/service/(?P<name>[^/]+)"): open_(),
    ("GET", r"/v1/health/connect/(?P<name>[^/]+)"): open_(),
    ("GET", r"/v1/health/ingress/(?P<name>[^/]+)"): open_(),
    ("GET", r"/v1/health/checks/(?P<name>[^/]+)"): open_(),
    ("GET", r"/v1/health/node/(?P<node>[^/]+)"): open_(),
    ("GET", r"/v1/health/state/(?P<state>[^/]+)"): open_(),
    # events
    ("PUT", r"/v1/event/fire/(?P<name>.+)"): named("event", "name", "write"),
    ("GET", r"/v1/event/list"): filtered(lambda c, v: c.authz.allowed("event", str(v.get("Name", "")), "read"),
                                         "list"),
    ("POST PUT", r"/v1/internal/query/(?P<name>.+)"): named("event", "name", "write"),
    ("GET POST PUT DELETE", r"/v1/operator/keyring"): keyring,
    # KV, sessions, transactions
    ("GET", r"/v1/kv/(?P<key>.*)"): kv_get,
    ("PUT", r"/v1/kv/(?P<key>.*)"): kv_put,
    ("DELETE", r"/v1/kv/(?P<key>.*)"): kv_delete,
    ("PUT", r"/v1/session/create"): session_create,
    ("PUT", r"/v1/session/destroy/(?P<id>[^/]+)"): session_write,
    ("PUT", r"/v1/session/renew/(?P<id>[^/]+)"): session_write,
    ("GET", r"/v1/session/info/(?P<id>[^/]+)"): open_(),
    ("GET", r"/v1/session/node/(?P<node>[^/]+)"): open_(),
    ("GET", r"/v1/session/list"): open_(),
    ("PUT", r"/v1/txn"): txn,
    # operator
    ("GET", r"/v1/operator/autopilot/configuration"): scalar("operator", "read"),
    ("PUT", r"/v1/operator/autopilot/configuration"): scalar("operator", "write"),
    ("GET", r"/v1/operator/autopilot/health"): scalar("operator", "read"),
    ("GET", r"/v1/operator/usage"): scalar("operator", "read"),
    ("GET", r"/v1/coordinate/datacenters"): no_acl,
    ("GET", r"/v1/coordinate/nodes"): filtered(lambda c, v: c.authz.allowed("node", str(v.get("Node", "")), "read"),
                                               "list"),
    ("GET", r"/v1/coordinate/node/(?P<node>[^/]+)"): named("node", "node", "read"),
    ("PUT", r"/v1/coordinate/update"): coordinate_update,
    ("POST", r"/v1/operator/raft/transfer-leader"): scalar("operator", "write"),
    ("DELETE", r"/v1/operator/raft/peer"): scalar("operator", "write"),
    ("GET", r"/v1/snapshot"): management,
    ("PUT", r"/v1/snapshot"): management,
}
ACL_ROUTE_PREFIXES = ("/v1/acl/", "/v1/agent/token/")


def make_guard(agent: Agent) -> Callable[[Request, str, str, re.Match[str]], Awaitable[PostFilter | None]]:
    async def guard(req: Request, methods: str, pattern: str, m: re.Match[str]) -> PostFilter | None:
        from ..reads import ReadError

        rule = RULES.get((methods, pattern))
        if rule is no_acl:
            return None
        req.token = request_secret(req.headers, req.query)
        try:
            authz, accessor = await agent.acl.require(req.token)
        except TokenNotFound as exc:
            raise HTTPError(403, str(exc)) from exc
        except ReadError as exc:  # a client that cannot reach a server to resolve the token
            raise HTTPError(500, f"ACL token resolution failed: {exc}") from exc
        req.authz = authz
        REQUEST_TOKEN.set(agent.acl.effective(req.token))
        if pattern.startswith(ACL_ROUTE_PREFIXES):
            return None  # the /v1/acl routes check acl:read / acl:write themselves
        try:
            if rule is None:
                management(Ctx(agent, req, m, authz, accessor))
                return None
            return rule(Ctx(agent, req, m, authz, accessor))
        except PermissionDenied as exc:
            agent.acl.stats["denied"] += 1
            raise HTTPError(403, str(exc)) from exc
    return guard
