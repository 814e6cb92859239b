"""The server side of server RPC: decode a request, dispatch on its op, always answer.

Nothing a peer sends can stop the server: undecodable frames, wrong types, unknown versions and
unknown ops all become error replies; a command that does not decode is refused before it
reaches the Raft log (a bad entry there would stop every server that applies it).
"""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING, Any

import msgpack
from murmur.catalog import commands

from ..protocol import REQUEST_IDS, required_protocol, too_old
from .mux import FramedStream
from .protocol import MIN_VERSION, VERSION, RPCError, call_apply, decode_result, encode_result, error_reply

if TYPE_CHECKING:
    from ..server import ServerRuntime

log = logging.getLogger("murmur.rpc")

MAX_HOPS = 1  # a write is forwarded at most once (client -> follower -> leader)


async def serve_connection(server: ServerRuntime, framed: FramedStream, peer: tuple[str, int]) -> None:
    while True:
        payload = await framed.read()
        if payload is None:
            return
        if _is_read(payload):
            reply = await _answer_unless_gone(server, framed, payload)
        else:  # a write runs to its end: its outcome must not depend on the caller staying
            reply = await handle_payload(server, payload)
        if reply is None:
            return  # the caller hung up while we waited (a cancelled blocking read)
        await framed.write(bytes(msgpack.packb(reply)))


def _is_read(payload: bytes) -> bool:
    try:
        req = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except Exception:
        return False
    return isinstance(req, dict) and req.get("op") == "read"


async def _answer_unless_gone(server: ServerRuntime, framed: FramedStream, payload: bytes) -> dict[str, Any] | None:
    """Answer one request, but stop waiting if the peer closes the connection meanwhile (a client
    whose HTTP caller went away cancels its blocking read, and we need not hold it for `wait`).
    Bytes that arrive meanwhile (a pipelined request) are kept for the next read."""
    import trio

    reply: dict[str, Any] | None = None

    async def answer() -> None:
        nonlocal reply
        reply = await handle_payload(server, payload)
        nursery.cancel_scope.cancel()

    async def watch() -> None:
        try:
            chunk = await framed.stream.receive_some(65536)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            chunk = b""
        if chunk:
            framed.buf += chunk
            await trio.sleep_forever()
        nursery.cancel_scope.cancel()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(answer)
        nursery.start_soon(watch)
    return reply


async def handle_payload(server: ServerRuntime, payload: bytes) -> dict[str, Any]:
    try:
        try:
            req = msgpack.unpackb(payload, raw=False, strict_map_key=False)
        except Exception as exc:  # msgpack raises several unrelated exception types
            raise RPCError("bad_request", f"undecodable request: {type(exc).__name__}") from exc
        if not isinstance(req, dict):
            raise RPCError("bad_request", "a request must be a map")
        version = req.get("v", 1)  # requests before versioning were version 1
        if not isinstance(version, int) or not MIN_VERSION <= version <= VERSION:
            raise RPCError("bad_version", f"RPC version {version!r} not supported (this server speaks "
                                          f"{MIN_VERSION}..{VERSION})")
        op = req.get("op")
        if op == "apply":
            return await _apply(server, req)
        if op == "read":
            return await _read(server, req)
        if op == "operator":
            return await _operator(server, req)
        if op == "status":
            driver = server.driver
            return {"v": VERSION, "voters": sorted(driver.node.raft.voters) if driver else [],
                    "leader": driver.leader if driver else 0, "bootstrap": server.bootstrap_voters}
        raise RPCError("unknown_op", f"unknown RPC op {op!r}")
    except RPCError as exc:
        return error_reply(exc.kind, str(exc))
    except Exception as exc:  # a bug must not take the listener down; say what happened
        log.exception("RPC request failed")
        return error_reply("bad_request", f"request failed: {type(exc).__name__}")


async def _apply(server: ServerRuntime, req: dict[str, Any], trusted: bool = False) -> dict[str, Any]:
    """`trusted`: a call from this process (forward_write on the leader), not from the wire."""
    from murmur.raft.core import ProposalDropped

    from ..drivers.raft import NotLeader, OutcomeUnknown

    data, rid, hops = req.get("d"), req.get("rid", ""), req.get("hops", 0)
    if not isinstance(data, bytes) or not isinstance(rid, str) or not isinstance(hops, int) or hops < 0:
        raise RPCError("bad_request", "apply needs d (bytes), rid (str), hops (int >= 0)")
    need, cluster = required_protocol(data), server.cluster_protocol()
    if need > cluster:
        raise RPCError("bad_request", too_old(need, cluster))
    # Every write that comes over the wire is checked against the token it carries (`tk`; none:
    # anonymous), whoever sent it: a client (hops 0), or a server forwarding a client's write or
    # its own (hops >= 1, with the token it was made under). Trusting forwarded writes would let
    # anyone who can reach port 8300 skip ACLs by claiming hops >= 1.
    authz = None if trusted else await _rpc_authorizer(server, req)
    try:
        cmd = commands.decode(data)  # refuse what would stop the servers if it reached the log
        if authz is not None:
            from ..acl import authorize_command

            missing = authorize_command(authz, cmd, server.agent.store)
            if missing is not None:
                raise RPCError("permission_denied", f"Permission denied: lacks permission {missing}")
        # Request IDs only once every server can apply the wrapper (agent/protocol.py).
        entry = commands.wrap_request(rid, data) if rid and server.cluster_protocol() >= REQUEST_IDS else data
    except commands.CommandError as exc:
        raise RPCError("bad_request", f"bad command: {exc}") from exc
    driver = server.driver
    if driver is None:
        raise RPCError("no_leader", "No cluster leader (raft is not bootstrapped yet)")
    if not driver.is_leader:
        if hops >= MAX_HOPS:
            raise RPCError("not_leader", "not the leader")
        addr = server.leader_address()
        if addr is None:
            raise RPCError("no_leader", "No cluster leader")
        tk = req.get("tk")  # (checked above to be a string when ACLs are on)
        result = await call_apply(addr, data, rid, hops + 1, tk if isinstance(tk, str) else None)  # errors pass through
        return {"v": VERSION, **encode_result(result)}
    try:
        result = await driver.propose(entry)
    except (NotLeader, ProposalDropped) as exc:
        raise RPCError("not_leader", str(exc)) from exc
    except OutcomeUnknown as exc:
        raise RPCError("unknown_outcome", str(exc)) from exc
    return {"v": VERSION, **encode_result(result)}


async def _operator(server: ServerRuntime, req: dict[str, Any]) -> dict[str, Any]:
    """Raft operator actions (agent/operator.py), run on the leader; forwarded at most once."""
    from ..operator import OperatorError, run_on_leader

    action, args, hops = req.get("action"), req.get("args", {}), req.get("hops", 0)
    if not isinstance(action, str) or not isinstance(args, dict) or not isinstance(hops, int) or hops < 0:
        raise RPCError("bad_request", "operator needs action (str), args (map), hops (int >= 0)")
    try:
        result = await run_on_leader(server, action, args, hops)
    except OperatorError as exc:
        raise RPCError("operator", str(exc)) from exc
    return {"v": VERSION, "r": result}


async def _read(server: ServerRuntime, req: dict[str, Any]) -> dict[str, Any]:
    from ..reads import ReadError, execute

    name, args, mode = req.get("name"), req.get("args", {}), req.get("mode", "default")
    index, wait = req.get("index", 0), req.get("wait", 0)
    if not isinstance(name, str) or not isinstance(mode, str) or not isinstance(index, int) \
            or not isinstance(wait, (int, float)) or isinstance(wait, bool) or wait < 0:
        raise RPCError("bad_request", "read needs name (str), mode (str), index (int), wait (seconds)")
    authz = await _rpc_authorizer(server, req)
    try:
        res = await execute(server.agent, name, args, mode, index, float(wait),
                            authz=None if authz is not None and authz.management else authz)
    except ReadError as exc:
        raise RPCError(exc.kind, str(exc)) from exc
    reply = {"v": VERSION, "data": res.data, "index": res.index, "leader": res.known_leader,
             "contact": res.last_contact_ms}
    if res.filtered:
        reply["f"] = True
    return reply


async def _rpc_authorizer(server: ServerRuntime, req: dict[str, Any]) -> Any:
    """The authorizer of the token an RPC carries (`tk`; none: the anonymous token), or None when
    ACLs are off. An unknown token is refused ("ACL not found")."""
    acl = server.agent.acl
    if not acl.enabled:
        return None
    tk = req.get("tk", "")
    if not isinstance(tk, str):
        raise RPCError("bad_request", "tk must be a string")
    authz, _ = acl.local(tk)
    if authz is None:
        raise RPCError("acl_not_found", "ACL not found")
    return authz


FORWARD_ATTEMPTS = 5
FORWARD_BACKOFF = 0.2  # seconds, doubled per attempt (covers an election at our Raft timings)


async def forward_write(server: ServerRuntime, data: bytes) -> Any:
    """A follower's own write (its HTTP API, anti-entropy): forwarded to the leader under a
    request ID chosen here, retried with the same ID while the outcome is unknown or the leader
    is changing, so a retry never applies it twice. Raises RPCError when attempts run out."""
    import trio

    from .protocol import RETRYABLE

    rid = uuid.uuid4().hex
    acl = server.agent.acl
    tk = acl.outgoing_token() if acl.enabled else None  # the HTTP request's token, else the agent's
    last: RPCError | None = None
    for attempt in range(FORWARD_ATTEMPTS):
        driver = server.driver
        try:
            if driver is not None and driver.is_leader:
                return decode_result(await _apply(server, {"d": data, "rid": rid, "hops": MAX_HOPS}, trusted=True))
            addr = server.leader_address()
            if addr is None:
                raise RPCError("no_leader", "No cluster leader")
            return await call_apply(addr, data, rid, MAX_HOPS, tk)
        except RPCError as exc:
            if exc.kind not in RETRYABLE:
                raise
            last = exc
        await trio.sleep(FORWARD_BACKOFF * (2 ** attempt))
    assert last is not None
    raise last
