"""`PUT /v1/txn`: KV operations applied all or nothing, in one Raft entry (Consul's KV verbs).

200 `{"Results": [...], "Errors": null}` when every operation applied; 409 `{"Results": null,
"Errors": [{"OpIndex", "What"}]}` when any failed, and then none applied. Malformed operations
are a 400, more than 64 operations or an oversized value a 413.
"""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING, Any

from murmur.catalog import queries
from murmur.catalog.commands import MAX_TXN_OPS, TXN_VERB_NAMES, ApplyError, Txn, TxnOp, TxnVerb
from murmur.catalog.store import READ_VERBS, KVRecord
from murmur.checks.definitions import folded

from .common import check_dc, named_read, result_headers
from .kv_routes import MAX_VALUE, lock_delay_check
from .server import HTTPError, Request, Response, Router

if TYPE_CHECKING:
    import re

    from ..agent import Agent

_NEEDS_SESSION = (TxnVerb.LOCK, TxnVerb.UNLOCK, TxnVerb.CHECK_SESSION)


def _uint(value: Any, what: str, i: int) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 63:
        raise HTTPError(400, f"operation {i}: {what} must be an unsigned integer")
    return value


def parse_ops(body: Any) -> list[TxnOp]:
    if not isinstance(body, list):
        raise HTTPError(400, "Request body must be a JSON list of operations")
    if len(body) > MAX_TXN_OPS:
        raise HTTPError(413, f"Transaction contains too many operations ({len(body)} > {MAX_TXN_OPS})")
    ops = []
    for i, item in enumerate(body):
        if not isinstance(item, dict):
            raise HTTPError(400, f"operation {i}: must be an object")
        outer = folded(item)
        kv = outer.get("kv")
        if kv is None:
            kinds = ", ".join(sorted(str(k) for k in item)) or "nothing"
            raise HTTPError(400, f"operation {i}: only KV operations are supported (got {kinds})")
        if not isinstance(kv, dict):
            raise HTTPError(400, f"operation {i}: KV must be an object")
        d = folded(kv)
        verb = TXN_VERB_NAMES.get(str(d.get("verb", "")).lower())
        if verb is None:
            raise HTTPError(400, f"operation {i}: unknown KV verb {d.get('verb')!r}")
        key, session = d.get("key", ""), d.get("session") or ""
        if not isinstance(key, str) or not isinstance(session, str):
            raise HTTPError(400, f"operation {i}: Key and Session must be strings")
        if not key and verb not in (TxnVerb.GET_TREE, TxnVerb.DELETE_TREE):
            raise HTTPError(400, f"operation {i}: Missing key name")
        if verb in _NEEDS_SESSION and not session:
            raise HTTPError(400, f"operation {i}: verb {d.get('verb')} needs a Session")
        raw = d.get("value")
        value = b""
        if raw is not None:
            if not isinstance(raw, str):
                raise HTTPError(400, f"operation {i}: Value must be a base64 string")
            try:
                value = base64.b64decode(raw, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise HTTPError(400, f"operation {i}: Value is not valid base64: {exc}") from exc
        if len(value) > MAX_VALUE:
            raise HTTPError(413, f"operation {i}: Value for key {key!r} is too large ({len(value)} > {MAX_VALUE} bytes)")
        ops.append(TxnOp(verb, key, value, _uint(d.get("flags"), "Flags", i), _uint(d.get("index"), "Index", i),
                         session))
    return ops


def _entry(row: list[Any]) -> dict[str, Any]:
    key, value, flags, ci, mi, li, sess = row
    return {"KV": queries.kv_json(KVRecord(str(key), bytes(value or b""), int(flags), int(ci), int(mi), int(li),
                                           str(sess)))}


def _answer(result: Any, headers: list[tuple[str, str]]) -> Response:
    if not isinstance(result, list) or len(result) != 2:
        raise HTTPError(500, f"unexpected transaction result {result!r}")
    kind, rows = result
    if kind == "ok":
        return Response.json({"Results": [_entry(r) for r in rows] or None, "Errors": None}, 200, headers)
    return Response.json({"Results": None, "Errors": [{"OpIndex": i, "What": w} for i, w in rows]}, 409, headers)


def add_routes(router: Router, agent: Agent) -> None:
    async def txn(req: Request, m: re.Match[str]) -> Response:
        check_dc(agent, req)
        ops = parse_ops(req.json())
        headers: list[tuple[str, str]] = []
        if ops and all(o.verb in READ_VERBS for o in ops):  # reads only: no log entry (as Consul)
            res = await named_read(agent, req, "txn.read",
                                   {"ops": [[int(o.verb), o.key, o.index, o.session] for o in ops]})
            return _answer(res.data, result_headers(res))
        lock_keys = [o.key for o in ops if o.verb == TxnVerb.LOCK]
        seen = 0
        if lock_keys:
            remaining, seen = await lock_delay_check(agent, req, lock_keys)
            if remaining > 0:
                errors = [{"OpIndex": i, "What": f"key {o.key!r} is in its lock delay"}
                          for i, o in enumerate(ops) if o.verb == TxnVerb.LOCK]
                return Response.json({"Results": None, "Errors": errors}, 409)
        result = await agent.writer.apply(Txn(tuple(ops), seen))
        if isinstance(result, ApplyError):
            raise HTTPError(500, result.message)
        return _answer(result, headers)

    router.add("PUT", r"/v1/txn", txn)
