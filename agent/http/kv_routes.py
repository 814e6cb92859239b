"""`/v1/kv/<key>`: Consul's KV API (sessions, acquire and release come with the sessions issue)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from murmur.catalog import queries
from murmur.catalog.commands import KV, KVOp

from .common import blocking, check_dc, json_read, read_headers
from .server import HTTPError, Request, Response, Router

if TYPE_CHECKING:
    import re

    from ..agent import Agent

MAX_VALUE = 512 * 1024  # Consul's kv_max_value_size: larger values are refused with 413


def _int_arg(req: Request, name: str) -> int | None:
    raw = req.arg(name)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError as exc:
        raise HTTPError(400, f"Invalid {name} {raw!r}: not an unsigned integer") from exc
    if value < 0 or value >= 1 << 64:
        raise HTTPError(400, f"Invalid {name} {raw!r}: out of range")
    return value


def add_routes(router: Router, agent: Agent) -> None:
    async def get(req: Request, m: re.Match[str]) -> Response:
        key = m["key"]
        index = await blocking(agent, req, ("kvs",))
        store = agent.store
        if "keys" in req.query:
            sep = req.arg("separator", "") or ""
            keys = queries.kv_keys(store, key, sep)
            if not keys:
                return Response(404, b"", read_headers(index))
            return json_read(req, keys, index)
        if req.flag("recurse"):
            recs = queries.kv_list(store, key)
        else:
            rec = store.kvs.get(key)
            recs = [rec] if rec is not None else []
        if not recs:
            return Response(404, b"", read_headers(index))  # py-consul needs the index even on a miss
        if "raw" in req.query and not req.flag("recurse"):
            return Response(200, recs[0].value, [("Content-Type", "application/octet-stream"), *read_headers(index)])
        return json_read(req, [queries.kv_json(r) for r in recs], index)

    async def put(req: Request, m: re.Match[str]) -> Response:
        check_dc(agent, req)
        key = m["key"]
        if "acquire" in req.query or "release" in req.query:
            raise HTTPError(400, "sessions (acquire/release) are not supported yet")
        if not key:
            raise HTTPError(400, "Missing key name")
        if len(req.body) > MAX_VALUE:
            raise HTTPError(413, f"Request body too large: the limit is {MAX_VALUE} bytes")
        flags = _int_arg(req, "flags") or 0
        cas = _int_arg(req, "cas")
        cmd = KV(KVOp.CAS if cas is not None else KVOp.SET, key, req.body, flags, cas or 0)
        return Response.json(bool(await agent.writer.apply(cmd)))

    async def delete(req: Request, m: re.Match[str]) -> Response:
        check_dc(agent, req)
        key = m["key"]
        cas = _int_arg(req, "cas")
        if req.flag("recurse"):
            cmd = KV(KVOp.DELETE_TREE, key)
        elif cas is not None:
            cmd = KV(KVOp.DELETE_CAS, key, index=cas)
        else:
            cmd = KV(KVOp.DELETE, key)
        return Response.json(bool(await agent.writer.apply(cmd)))

    router.add("GET", r"/v1/kv/(?P<key>.*)", get)
    router.add("PUT", r"/v1/kv/(?P<key>.*)", put)
    router.add("DELETE", r"/v1/kv/(?P<key>.*)", delete)
