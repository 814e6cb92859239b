"""Raft operator actions on a server: leadership transfer and (later) membership changes.

Each action runs on the leader. A follower forwards it once over server RPC (op "operator"), as
Consul forwards operator requests to its leader. Errors are OperatorError; the HTTP layer turns
them into 500s as Consul does.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import trio

from .drivers.raft import NotLeader

if TYPE_CHECKING:
    from .server import ServerRuntime

log = logging.getLogger("murmur.operator")

# Seconds a transfer may take before we call it failed: the core abandons it after one election
# timeout (10 ticks); the new leader's election needs a round trip or two on top.
TRANSFER_TIMEOUT = 5.0


class OperatorError(Exception):
    pass


def pick_transfer_target(server: ServerRuntime) -> int:
    """The most up-to-date other voter (highest match index in the leader's progress)."""
    assert server.driver is not None
    raft = server.driver.node.raft
    others = [v for v in sorted(raft.voters) if v != server.id]
    if not others:
        raise OperatorError("cannot transfer leadership: there is no other voter")
    return max(others, key=lambda v: (raft.prs[v].match if v in raft.prs else -1, raft.prs[v].recent_active
                                      if v in raft.prs else False))


async def transfer_leader(server: ServerRuntime, target: int | None) -> int:
    """Make `target` (or the best other voter) the leader; returns its raft id."""
    driver = server.driver
    if driver is None:
        raise OperatorError("No cluster leader (raft is not bootstrapped yet)")
    if target is None:
        target = pick_transfer_target(server)
    if target == server.id or target not in driver.node.raft.voters:
        raise OperatorError(f"cannot transfer leadership to {target}: not another voter")
    log.info("operator: transferring leadership to %d", target)
    try:
        await driver.transfer_leader(target, TRANSFER_TIMEOUT)
    except NotLeader as exc:
        raise OperatorError(str(exc)) from exc
    except ValueError as exc:
        raise OperatorError(str(exc)) from exc
    except trio.TooSlowError as exc:
        raise OperatorError(f"leadership transfer to {target} did not complete in {TRANSFER_TIMEOUT:g}s") from exc
    return target


async def run_on_leader(server: ServerRuntime, action: str, args: dict[str, Any], hops: int = 0) -> Any:
    """Run an operator action on the leader: here if we lead, else forwarded once over RPC."""
    from .rpc.protocol import RPCError, call

    driver = server.driver
    if driver is None:
        raise OperatorError("No cluster leader (raft is not bootstrapped yet)")
    if driver.is_leader:
        return await perform(server, action, args)
    addr = server.leader_address()
    if addr is None or hops >= 1:
        raise OperatorError("No cluster leader")
    try:
        reply = await call(addr, {"op": "operator", "action": action, "args": args, "hops": hops + 1})
    except RPCError as exc:
        raise OperatorError(str(exc)) from exc
    return reply.get("r")


async def perform(server: ServerRuntime, action: str, args: dict[str, Any]) -> Any:
    if action == "transfer":
        target = args.get("target")
        if target is not None and (not isinstance(target, int) or isinstance(target, bool)):
            raise OperatorError("transfer: target must be a raft id")
        return await transfer_leader(server, target)
    raise OperatorError(f"unknown operator action {action!r}")
