"""Server RPC (first byte 0x01 on the server port): msgpack request and response frames.

Today it carries one call, `apply`: a follower forwards a write to the leader, as Consul
forwards writes. Results travel as tagged values so an ApplyError stays an ApplyError.
"""

from __future__ import annotations

from typing import Any

import msgpack
import trio
from murmur.catalog.commands import ApplyError

from .mux import RPC, FramedStream

RPC_TIMEOUT = 10.0  # seconds for a forwarded call, connect included


class RPCError(Exception):
    """The call failed; `kind` says how: "not_leader", "unknown_outcome", "dropped", "bad_request"."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def encode_result(result: Any) -> dict[str, Any]:
    if isinstance(result, ApplyError):
        return {"ae": result.message}
    if result is None or isinstance(result, (bool, int, str, bytes)):
        return {"r": result}
    return {"r": repr(result)}


def decode_result(body: dict[str, Any]) -> Any:
    if "ae" in body:
        return ApplyError(str(body["ae"]))
    return body.get("r")


async def call_apply(addr: tuple[str, int], data: bytes) -> Any:
    """Forward an encoded command to the leader at `addr`; returns its apply result."""
    try:
        with trio.fail_after(RPC_TIMEOUT):
            stream = await trio.open_tcp_stream(*addr)
            try:
                await stream.send_all(bytes([RPC]))
                framed = FramedStream(stream)
                await framed.write(bytes(msgpack.packb({"op": "apply", "d": data})))
                reply = await framed.read()
            finally:
                await stream.aclose()
    except (OSError, trio.TooSlowError, trio.BrokenResourceError) as exc:
        raise RPCError("unknown_outcome", f"forwarding to the leader at {addr[0]}:{addr[1]} failed: {exc}") from exc
    if reply is None:
        raise RPCError("unknown_outcome", "the leader closed the connection without answering")
    body = msgpack.unpackb(reply, raw=False)
    if not isinstance(body, dict):
        raise RPCError("bad_request", "malformed RPC reply")
    if "err" in body:
        raise RPCError(str(body.get("kind", "error")), str(body["err"]))
    return decode_result(body)
