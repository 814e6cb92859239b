"""`/v1/kv/<key>`: Consul's KV API, with `?acquire=` / `?release=` for session locks."""

from __future__ import annotations

from typing import TYPE_CHECKING

from murmur.catalog import queries
from murmur.catalog.commands import KV, ApplyError, KVOp
from murmur.catalog.store import KVRecord

from .common import check_dc, json_result, named_read, result_headers
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


async def lock_delay_check(agent: Agent, req: Request, keys: list[str]) -> tuple[int, int]:
    """(ms of lock delay left on any of `keys`, the applied index that answer holds through),
    from this server or, on a client agent, from a server."""
    res = await named_read(agent, req, "session.lock_delay", {"keys": keys})
    remaining, seen = res.data
    return int(remaining), int(seen)


def add_routes(router: Router, agent: Agent) -> None:
    async def get(req: Request, m: re.Match[str]) -> Response:
        key = m["key"]
        keys = "keys" in req.query
        recurse = req.flag("recurse")
        args = {"key": key, "keys": keys, "recurse": recurse, "separator": req.arg("separator", "") or ""}
        res = await named_read(agent, req, "kv.get", args)
        if not res.data:
            return Response(404, b"", result_headers(res))  # py-consul needs the index even on a miss
        if keys:
            return json_result(req, res)
        recs = [KVRecord(str(k), bytes(v), int(f), int(ci), int(mi), int(li), str(sess))
                for k, v, f, ci, mi, li, sess in res.data]
        if "raw" in req.query and not recurse:
            return Response(200, recs[0].value, [("Content-Type", "application/octet-stream"), *result_headers(res)])
        return json_result(req, res, [queries.kv_json(r) for r in recs])

    async def put(req: Request, m: re.Match[str]) -> Response:
        check_dc(agent, req)
        key = m["key"]
        if not key:
            raise HTTPError(400, "Missing key name")
        if len(req.body) > MAX_VALUE:
            raise HTTPError(413, f"Request body too large: the limit is {MAX_VALUE} bytes")
        flags = _int_arg(req, "flags") or 0
        cas = _int_arg(req, "cas")
        acquire, release = req.arg("acquire"), req.arg("release")
        if acquire is not None:  # as Consul: acquire wins over release, and both over cas
            if not acquire:
                raise HTTPError(400, "acquire needs a session ID")
            remaining, seen = await lock_delay_check(agent, req, [key])
            if remaining > 0:  # Consul answers false while a lock delay runs
                return Response.json(False)
            cmd = KV(KVOp.LOCK, key, req.body, flags, session=acquire, seen=seen)
        elif release is not None:
            if not release:
                raise HTTPError(400, "release needs a session ID")
            cmd = KV(KVOp.UNLOCK, key, req.body, flags, session=release)
        else:
            cmd = KV(KVOp.CAS if cas is not None else KVOp.SET, key, req.body, flags, cas or 0)
        result = await agent.writer.apply(cmd)
        if isinstance(result, ApplyError):  # a lock for a session that does not exist: Consul's 500
            raise HTTPError(500, result.message)
        return Response.json(result is True)

    async def delete(req: Request, m: re.Match[str]) -> Response:
        check_dc(agent, req)
        key = m["key"]
        cas = _int_arg(req, "cas")
        if not key and not req.flag("recurse"):
            raise HTTPError(400, "Missing key name")
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
