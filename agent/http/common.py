"""Helpers shared by the route modules: named reads (local on servers, over RPC on clients), index
headers, datacenter checks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from murmur.catalog.filter import Filter, FilterError, Schema, compile_filter
from murmur.checks.durations import parse_duration

from .server import HTTPError, Request, Response

if TYPE_CHECKING:
    from ..agent import Agent

MAX_WAIT = 600.0  # Consul caps a blocking query's wait at 10 minutes
DEFAULT_WAIT = 300.0  # and waits 5 minutes when `wait` is not given


def check_dc(agent: Agent, req: Request) -> None:
    dc = req.arg("dc")
    if dc and dc != agent.cfg.datacenter:
        raise HTTPError(500, f"No path to datacenter {dc!r}")


def request_filter(req: Request, schema: Schema) -> Filter | None:
    """`?filter=` compiled against the shape the endpoint answers with; None when absent or empty.
    A bad expression is a 400 with Consul's wording, raised before any (blocking) read starts."""
    values = req.query.get("filter")
    expr = values[0] if values else None  # the first, as Go's Query().Get
    if not expr:
        return None
    try:
        return compile_filter(expr, schema)
    except FilterError as exc:
        raise HTTPError(400, f"Failed to create boolean expression evaluator: {exc}") from exc


def filtered(flt: Filter | None, data: Any) -> Any:
    """A read's answer with the filter applied to its items (a list's elements, a map's values)."""
    if flt is None or data is None:
        return data
    if isinstance(data, dict):
        return flt.apply_map(data)
    return flt.apply(data)


def read_params(req: Request) -> tuple[str, int, float]:
    """(mode, index, wait) of a read request; bad values are a 400."""
    mode = "stale" if req.flag("stale") else "consistent" if req.flag("consistent") else "default"
    raw_index = req.arg("index")
    if raw_index is None or raw_index == "":
        return mode, 0, 0.0
    try:
        index = int(raw_index)
    except ValueError as exc:
        raise HTTPError(400, f"Invalid index {raw_index!r}") from exc
    wait = DEFAULT_WAIT
    raw_wait = req.arg("wait")
    if raw_wait:
        try:
            wait = parse_duration(raw_wait if not raw_wait.isdigit() else raw_wait + "s")
        except ValueError as exc:
            raise HTTPError(400, f"Invalid wait time {raw_wait!r}: {exc}") from exc
    return mode, index, min(wait, MAX_WAIT)


async def named_read(agent: Agent, req: Request, name: str, args: dict[str, Any]) -> Any:
    """Run a registered read (agent/reads.py): on a server against its own store, on a client
    through a server over RPC. Same read, same code, same answer. Returns a ReadResult."""
    from ..reads import ReadError, execute

    check_dc(agent, req)
    mode, index, wait = read_params(req)
    authz = req.authz if req.authz is not None and not req.authz.management else None
    try:
        if agent.server is not None:
            return await execute(agent, name, args, mode, index, wait, authz=authz)
        token = agent.acl.effective(req.token) if agent.acl.enabled else None
        return await agent.remote.read(name, args, mode, index, wait, token=token)
    except ReadError as exc:
        if exc.kind in ("permission_denied", "acl_not_found"):
            raise HTTPError(403, str(exc)) from exc
        raise HTTPError(400 if exc.kind == "bad_request" else 500, str(exc)) from exc


def result_headers(res: Any) -> list[tuple[str, str]]:
    out = [("X-Consul-Index", str(res.index)), ("X-Consul-KnownLeader", str(bool(res.known_leader)).lower()),
           ("X-Consul-LastContact", str(res.last_contact_ms))]
    if getattr(res, "filtered", False):
        out.append(("X-Consul-Results-Filtered-By-ACLs", "true"))
    return out


_SAME = object()


def json_result(req: Request, res: Any, data: Any = _SAME) -> Response:
    """A read's JSON answer with its index, known-leader and last-contact headers."""
    return Response.json(res.data if data is _SAME else data, 200, result_headers(res),
                         pretty="pretty" in req.query)
