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
from .mux import RPC, FramedStream, FrameError

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


class ConnPool:
    """Idle server connections kept for reuse (Consul keeps pooled connections to servers too):
    a client agent's reads and writes skip a TCP connect, and with TLS a handshake, per call.
    A connection goes back only after a clean request/reply; one idle longer than IDLE_TTL is
    closed when next met. Keyed by trio run as well, since a stream belongs to its run."""

    MAX_IDLE = 4  # per server: enough for a client's steady traffic, few descriptors held
    IDLE_TTL = 30.0  # seconds: well under any idle timeout on the path

    def __init__(self) -> None:
        self.idle: dict[tuple[object, tuple[str, int]], list[tuple[float, FramedStream]]] = {}
        self.stats = {"opened": 0, "reused": 0}

    def take(self, addr: tuple[str, int]) -> FramedStream | None:
        conns = self.idle.get((trio.lowlevel.current_trio_token(), addr))
        now = trio.current_time()
        while conns:
            since, framed = conns.pop()
            if now - since < self.IDLE_TTL:
                self.stats["reused"] += 1
                return framed
            _close_quietly(framed)
        return None

    def give(self, addr: tuple[str, int], framed: FramedStream) -> None:
        conns = self.idle.setdefault((trio.lowlevel.current_trio_token(), addr), [])
        if len(conns) >= self.MAX_IDLE:
            _close_quietly(framed)
            return
        conns.append((trio.current_time(), framed))

    def clear(self) -> None:
        for conns in self.idle.values():
            for _, framed in conns:
                _close_quietly(framed)
        self.idle.clear()


def _close_quietly(framed: FramedStream) -> None:
    """Close without awaiting (an idle connection has nothing to flush)."""
    sock = getattr(framed.stream, "socket", None)
    if sock is not None:
        sock.close()
    else:  # TLS or another wrapper: let the transport go with the object
        transport = getattr(framed.stream, "transport_stream", None)
        inner = getattr(transport, "socket", None)
        if inner is not None:
            inner.close()


POOL = ConnPool()


async def _exchange(framed: FramedStream, body: bytes) -> bytes | None:
    await framed.write(body)
    return await framed.read()


async def call(addr: tuple[str, int], request: dict[str, Any], timeout: float = RPC_TIMEOUT) -> dict[str, Any]:
    """One request to `addr` on a pooled connection (or a fresh one); the reply map, or RPCError.

    A pooled connection the server has closed meanwhile (it restarted, say) fails before any
    reply: a read or a write under a request ID is then sent once more on a fresh connection,
    anything else is "unknown_outcome" as a failure after sending always is (the caller retries
    writes only with the same request ID)."""
    body = bytes(msgpack.packb({"v": VERSION, **request}))
    retry_safe = request.get("op") in ("read", "status") or bool(request.get("rid"))
    reply: bytes | None = None
    try:
        with trio.fail_after(timeout):
            framed = POOL.take(addr)
            if framed is not None:
                try:
                    reply = await _exchange(framed, body)
                except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, FrameError):
                    reply = None
                except BaseException:  # cancelled (a caller gone) or a timeout: not reusable
                    _close_quietly(framed)
                    raise
                if reply is None:
                    _close_quietly(framed)
                    if not retry_safe:
                        raise RPCError("unknown_outcome",
                                       f"{addr[0]}:{addr[1]} closed a pooled connection without answering")
                    framed = None
            if framed is None:
                stream = await open_server_stream(addr, RPC)
                POOL.stats["opened"] += 1
                framed = FramedStream(stream)
                try:
                    reply = await _exchange(framed, body)
                except BaseException:
                    with trio.CancelScope(shield=True):
                        await stream.aclose()
                    raise
                if reply is None:
                    with trio.CancelScope(shield=True):
                        await stream.aclose()
            if reply is not None:
                POOL.give(addr, framed)
    except RPCError:
        raise
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


async def call_apply(addr: tuple[str, int], data: bytes, rid: str = "", hops: int = 0, tk: str | None = None) -> Any:
    """Send an encoded command to the server at `addr` (a follower forwarding to the leader, or a
    client writing); returns its apply result. `tk`: the token it is written under (ACLs)."""
    req: dict[str, Any] = {"op": "apply", "d": data, "hops": hops}
    if rid:
        req["rid"] = rid
    if tk is not None:
        req["tk"] = tk
    return decode_result(await call(addr, req))
