"""Server RPC (first byte 0x01 on the server port): versioned msgpack request and response frames.

Every request is a map `{"v": VERSION, "op": ..., ...}`; every reply is a map carrying `"v"` and
either the op's result or `{"err": message, "kind": kind}`. Ops:

- `apply`: `{"d": encoded command, "rid": request ID, "hops": n}`. Any server accepts it; a
  follower forwards to the leader once (`hops` stops loops). With `rid` the command is wrapped in
  a REQUEST command so a retry with the same ID is applied once (catalog/commands.py).
- `read`: `{"name": read name, "args": {...}, "mode": "default"|"consistent"|"stale",
  "index": n, "wait": seconds}` (agent/reads.py). The reply carries `data`, `index`, `leader`
  (known) and `contact` (ms since the answering server heard from the leader).
- `operator`: `{"action": "transfer"|..., "args": {...}, "hops": n}`: a Raft operator action
  (agent/operator.py), run on the leader; a follower forwards it once. Reply `{"r": result}`;
  failures have kind "operator".
- `status`: `{}` → `{"voters": [raft ids], "leader": id, "bootstrap": [raft ids]}` (empty
  voters: no Raft configuration yet). A new server asks before bootstrapping: in the bootstrap
  set, it starts with that set; otherwise it joins the running cluster with none.

Error kinds: "not_leader", "no_leader", "unknown_outcome", "bad_request", "bad_version",
"unknown_op". A request with a version we do not speak or an op we do not know gets an error
reply, never a dropped connection; bytes that are not msgpack get "bad_request".
Results travel as tagged values so an ApplyError stays an ApplyError.
"""

from __future__ import annotations

from typing import Any

import msgpack
import trio
from murmur.catalog.commands import ApplyError

from ..tls import open_server_stream
from .mux import RPC, FramedStream

VERSION = 1  # the RPC message version this agent speaks (and the highest it accepts)
MIN_VERSION = 1
RPC_TIMEOUT = 10.0  # seconds for a forwarded call, connect included
RETRYABLE = ("not_leader", "no_leader", "unknown_outcome")


class RPCError(Exception):
    """The call failed; `kind` says how (see the module docstring)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def encode_result(result: Any) -> dict[str, Any]:
    if isinstance(result, ApplyError):
        return {"ae": result.message}
    if result is None or isinstance(result, (bool, int, str, bytes, list)):  # lists: txn and renew results
        return {"r": result}
    return {"r": repr(result)}


def decode_result(body: dict[str, Any]) -> Any:
    if "ae" in body:
        return ApplyError(str(body["ae"]))
    return body.get("r")


def error_reply(kind: str, message: str) -> dict[str, Any]:
    return {"v": VERSION, "err": message, "kind": kind}


async def call(addr: tuple[str, int], request: dict[str, Any], timeout: float = RPC_TIMEOUT) -> dict[str, Any]:
    """One request on a fresh connection to `addr`; the reply map, or RPCError.

    A failure after the request may have been sent is "unknown_outcome" (the caller retries
    writes only with the same request ID)."""
    try:
        with trio.fail_after(timeout):
            stream = await open_server_stream(addr, RPC)
            try:
                framed = FramedStream(stream)
                await framed.write(bytes(msgpack.packb({"v": VERSION, **request})))
                reply = await framed.read()
            finally:
                await stream.aclose()
    except (OSError, trio.TooSlowError, trio.BrokenResourceError) as exc:
        raise RPCError("unknown_outcome", f"RPC to {addr[0]}:{addr[1]} failed: {exc or type(exc).__name__}") from exc
    except Exception as exc:  # FrameError and the like: the server answered nonsense
        raise RPCError("unknown_outcome", f"RPC to {addr[0]}:{addr[1]} failed: {exc!r}") from exc
    if reply is None:
        raise RPCError("unknown_outcome", f"{addr[0]}:{addr[1]} closed the connection without answering")
    try:
        body = msgpack.unpackb(reply, raw=False, strict_map_key=False)
    except Exception as exc:
        raise RPCError("bad_request", "malformed RPC reply") from exc
    if not isinstance(body, dict):
        raise RPCError("bad_request", "malformed RPC reply")
    if "err" in body:
        raise RPCError(str(body.get("kind", "error")), str(body["err"]))
    return body


async def call_apply(addr: tuple[str, int], data: bytes, rid: str = "", hops: int = 0) -> Any:
    """Send an encoded command to the server at `addr` (a follower forwarding to the leader, or a
    client writing); returns its apply result."""
    req: dict[str, Any] = {"op": "apply", "d": data, "hops": hops}
    if rid:
        req["rid"] = rid
    return decode_result(await call(addr, req))
