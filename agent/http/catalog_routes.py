"""`/v1/status`, `/v1/catalog` and `/v1/health` routes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from murmur.catalog import filter as flt
from murmur.catalog import queries
from murmur.catalog.commands import ApplyError, CheckSpec, Deregister, Register
from murmur.checks.definitions import DefinitionError, folded

from ..definitions import parse_service
from .agent_routes import leader_addr
from .common import check_dc, filtered, json_result, named_read, request_filter
from .server import HTTPError, Request, Response, Router

if TYPE_CHECKING:
    import re

    from ..agent import Agent



def no_peer(req: Request, data: Any) -> Any:
    """`?peer=NAME`: murmur has no cluster peerings, so any named peer has no instances (as Consul
    answers for a peer it does not know): the data, or [] for a peer."""
    return [] if req.arg("peer") else data


def add_routes(router: Router, agent: Agent) -> None:
    def check_body_dc(dc: str) -> None:
        """A register/deregister body's Datacenter, like `?dc=`: another one has no path."""
        if dc and dc != agent.cfg.datacenter:
            raise HTTPError(500, f"No path to datacenter {dc!r}")

    async def leader(req: Request, m: re.Match[str]) -> Response:
        if agent.server is not None:
            return Response.json(leader_addr(agent))
        return Response.json((await named_read(agent, req, "status.leader", {})).data)

    async def peers(req: Request, m: re.Match[str]) -> Response:
        return Response.json((await named_read(agent, req, "status.peers", {})).data)

    async def datacenters(req: Request, m: re.Match[str]) -> Response:
        return Response.json([agent.cfg.datacenter])

    # `?filter=` (catalog/filter.py) is compiled before the read, so a bad one is a 400 before any
    # blocking wait, and applied to the answer after it: X-Consul-Index is the read's, unchanged.
    async def services(req: Request, m: re.Match[str]) -> Response:
        # The filter selects instances (Consul's ServiceNode fields) before the names are rolled
        # up, so it runs inside the read, on the server.
        f = request_filter(req, flt.SERVICE_NODE)
        args = {"filter": f.expression} if f is not None else {}
        return json_result(req, await named_read(agent, req, "catalog.services", args))

    async def service(req: Request, m: re.Match[str]) -> Response:
        f = request_filter(req, flt.SERVICE_NODE)
        args = {"name": m["name"], "tags": req.query.get("tag")}
        res = await named_read(agent, req, "catalog.service", args)
        return json_result(req, res, no_peer(req, filtered(f, res.data)))

    async def nodes(req: Request, m: re.Match[str]) -> Response:
        f = request_filter(req, flt.NODE)
        res = await named_read(agent, req, "catalog.nodes", {})
        return json_result(req, res, filtered(f, res.data))

    async def node(req: Request, m: re.Match[str]) -> Response:
        f = request_filter(req, flt.NODE_SERVICE)  # Consul filters the node's Services map
        res = await named_read(agent, req, "catalog.node", {"node": m["node"]})
        data = res.data
        if f is not None and isinstance(data, dict):
            data = {**data, "Services": filtered(f, data.get("Services") or {})}
        return json_result(req, res, data)

    async def connect(req: Request, m: re.Match[str]) -> Response:
        f = request_filter(req, flt.SERVICE_NODE if req.path.startswith("/v1/catalog/") else flt.CHECK_SERVICE_NODE)
        res = await named_read(agent, req, "catalog.connect", {})
        return json_result(req, res, no_peer(req, filtered(f, res.data)))

    async def health_service(req: Request, m: re.Match[str]) -> Response:
        f = request_filter(req, flt.CHECK_SERVICE_NODE)
        args = {"name": m["name"], "tags": req.query.get("tag"), "passing": req.flag("passing")}
        res = await named_read(agent, req, "health.service", args)
        return json_result(req, res, no_peer(req, filtered(f, res.data)))

    async def health_checks(req: Request, m: re.Match[str]) -> Response:
        f = request_filter(req, flt.HEALTH_CHECK)
        res = await named_read(agent, req, "health.checks", {"name": m["name"]})
        return json_result(req, res, filtered(f, res.data))

    async def health_node(req: Request, m: re.Match[str]) -> Response:
        f = request_filter(req, flt.HEALTH_CHECK)
        res = await named_read(agent, req, "health.node", {"node": m["node"]})
        return json_result(req, res, filtered(f, res.data))

    async def health_state(req: Request, m: re.Match[str]) -> Response:
        check_dc(agent, req)
        if m["state"] not in queries.STATES:
            raise HTTPError(400, f"Unknown check state {m['state']!r}; want any, passing, warning or critical")
        f = request_filter(req, flt.HEALTH_CHECK)
        res = await named_read(agent, req, "health.state", {"state": m["state"]})
        return json_result(req, res, filtered(f, res.data))

    async def register(req: Request, m: re.Match[str]) -> Response:
        check_dc(agent, req)
        cmd = parse_catalog_register(req.json())
        check_body_dc(cmd.datacenter)
        result = await agent.writer.apply(cmd)
        if isinstance(result, ApplyError):
            raise HTTPError(400, result.message)
        return Response.json(True)

    async def deregister(req: Request, m: re.Match[str]) -> Response:
        check_dc(agent, req)
        body = req.json()
        if not isinstance(body, dict):
            raise HTTPError(400, "Request body must be a JSON object")
        d = folded(body)
        if not isinstance(d.get("node"), str) or not d["node"]:
            raise HTTPError(400, "Must provide node")
        check_body_dc(str(d.get("datacenter") or ""))
        result = await agent.writer.apply(Deregister(node=d["node"], service_id=str(d.get("serviceid") or ""),
                                                     check_id=str(d.get("checkid") or "")))
        if isinstance(result, ApplyError):
            raise HTTPError(400, result.message)
        return Response.json(True)

    async def raft_configuration(req: Request, m: re.Match[str]) -> Response:
        srv = agent.server
        if srv is None or srv.driver is None:
            raise HTTPError(500, "No cluster leader")
        names = {}
        if agent.membership is not None:
            from ..server import raft_id

            for mem in agent.membership.members.values():
                if "id" in mem.tags:
                    try:
                        names[raft_id(mem.tags["id"])] = (mem.name, mem.tags["id"])
                    except ValueError:
                        continue
        names[srv.id] = (agent.local.node.name, agent.local.node.id)
        servers = []
        learners = sorted(srv.driver.node.raft.learners)  # non-voters: listed with Voter false
        for v in [*srv.voters, *learners]:
            addr = srv.addresses.get(v)
            name, nid = names.get(v, (str(v), str(v)))
            servers.append({"ID": nid, "Node": name, "Address": f"{addr[0]}:{addr[1]}" if addr else "",
                            "Leader": v == srv.driver.leader, "Voter": v not in learners, "ProtocolVersion": "3",
                            "LastIndex": srv.driver.node.raft.log.last_index() if v == srv.id else 0})
        return Response.json({"Servers": servers, "Index": 0}, pretty="pretty" in req.query)

    router.add("GET", r"/v1/operator/raft/configuration", raft_configuration)
    router.add("GET", r"/v1/status/leader", leader)
    router.add("GET", r"/v1/status/peers", peers)
    router.add("GET", r"/v1/catalog/datacenters", datacenters)
    router.add("GET", r"/v1/catalog/services", services)
    router.add("GET", r"/v1/catalog/service/(?P<name>[^/]+)", service)
    router.add("GET", r"/v1/catalog/connect/(?P<name>[^/]+)", connect)
    router.add("GET", r"/v1/catalog/nodes", nodes)
    router.add("GET", r"/v1/catalog/node/(?P<node>[^/]+)", node)
    router.add("PUT", r"/v1/catalog/register", register)
    router.add("PUT", r"/v1/catalog/deregister", deregister)
    router.add("GET", r"/v1/health/service/(?P<name>[^/]+)", health_service)
    router.add("GET", r"/v1/health/connect/(?P<name>[^/]+)", connect)
    router.add("GET", r"/v1/health/ingress/(?P<name>[^/]+)", connect)
    router.add("GET", r"/v1/health/checks/(?P<name>[^/]+)", health_checks)
    router.add("GET", r"/v1/health/node/(?P<node>[^/]+)", health_node)
    router.add("GET", r"/v1/health/state/(?P<state>[^/]+)", health_state)


def parse_catalog_register(body: Any) -> Register:
    """`PUT /v1/catalog/register` body (Consul's RegisterRequest, any key casing)."""
    if not isinstance(body, dict):
        raise HTTPError(400, "Request body must be a JSON object")
    d = folded(body)
    node, address = d.get("node"), d.get("address")
    if not isinstance(node, str) or not node:
        raise HTTPError(400, "Must provide node")
    if not isinstance(address, str) or not address:
        raise HTTPError(400, "Must provide address")
    try:
        service = parse_service(_catalog_service(d["service"])).spec if d.get("service") else None
    except DefinitionError as exc:
        raise HTTPError(400, f"Service: {exc}") from exc
    raw_checks = ([d["check"]] if d.get("check") else []) + list(d.get("checks") or [])
    checks = []
    for c in raw_checks:
        if not isinstance(c, dict):
            raise HTTPError(400, "Check must be a JSON object")
        cd = folded(c)
        cid = str(cd.get("checkid") or cd.get("name") or "")
        if not cid:
            raise HTTPError(400, "Check needs a CheckID or Name")
        status = str(cd.get("status") or "critical")
        if status not in ("passing", "warning", "critical"):
            raise HTTPError(400, f"Invalid check status {status!r}")
        sid = str(cd.get("serviceid") or "")
        checks.append(CheckSpec(check_id=cid, name=str(cd.get("name") or cid), status=status,
                                notes=str(cd.get("notes") or ""), output=str(cd.get("output") or ""),
                                service_id=sid))
    meta = d.get("nodemeta") or {}
    tagged = d.get("taggedaddresses") or {}
    if not isinstance(meta, dict) or not isinstance(tagged, dict):
        raise HTTPError(400, "NodeMeta and TaggedAddresses must be objects")
    for what, m in (("NodeMeta", meta), ("TaggedAddresses", tagged)):
        # Consul decodes both into map[string]string: a number, bool or object value is a 400, not
        # a string we would make up for it.
        bad = next((k for k, v in m.items() if not isinstance(v, str)), None)
        if bad is not None:
            raise HTTPError(400, f"Request decode failed: {what}[{bad!r}] must be a string, "
                                 f"not {type(m[bad]).__name__}")
    return Register(node=node, address=address, node_id=str(d.get("id") or ""),
                    datacenter=str(d.get("datacenter") or ""),
                    tagged_addresses=tuple(sorted((str(k), str(v)) for k, v in tagged.items())),
                    node_meta=tuple(sorted((str(k), str(v)) for k, v in meta.items())),
                    service=service, checks=tuple(checks), skip_node_update=bool(d.get("skipnodeupdate")))


def _catalog_service(obj: Any) -> Any:
    """The catalog's NodeService names the service `Service`, where an agent service definition says
    `Name` (py-consul sends `{"service": "s1"}`); accept either, in any casing."""
    if not isinstance(obj, dict):
        return obj
    d = folded(obj)
    if "name" in d or not isinstance(d.get("service"), str):
        return obj
    return {**{k: v for k, v in obj.items() if k.lower() != "service"}, "Name": d["service"]}
