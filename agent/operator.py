"""Raft operator actions on a server: leadership transfer and membership changes.

Each action runs on the leader. A follower forwards it once over server RPC (op "operator"), as
Consul forwards operator requests to its leader. Errors are OperatorError; the HTTP layer turns
them into 500s as Consul does.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import trio
from murmur.raft.core import ProposalDropped
from murmur.raft.messages import ConfChangeType

from .drivers.raft import NotLeader, OutcomeUnknown

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


# Seconds a membership change may wait for a pending one to commit (one change at a time).
CHANGE_TIMEOUT = 15.0
RECONCILE_INTERVAL = 1.0
# Seconds the leader does not add back a server an operator removed: gossip may still call it
# alive for a few seconds after it died (the failure detector's delay).
REMOVED_HOLD = 60.0


async def change_membership(server: ServerRuntime, kind: ConfChangeType, target: int) -> int:
    """Add or remove voter `target` (single-server change), waiting (bounded) for a pending change
    to commit first. Returns the index of the committed change."""
    driver = server.driver
    if driver is None:
        raise OperatorError("No cluster leader (raft is not bootstrapped yet)")
    what = {ConfChangeType.ADD_VOTER: "add (or promote)", ConfChangeType.ADD_LEARNER: "add as a non-voter"}.get(
        kind, "remove")
    with trio.move_on_after(CHANGE_TIMEOUT):
        while True:
            try:
                index = await driver.propose_conf_change(kind, target)
            except ProposalDropped as exc:
                if "pending" in str(exc) or "not committed an entry" in str(exc) or "transferred" in str(exc):
                    await trio.sleep(0.1)
                    continue
                raise OperatorError(str(exc)) from exc
            except (NotLeader, OutcomeUnknown) as exc:
                raise OperatorError(str(exc)) from exc
            except ValueError as exc:
                raise OperatorError(str(exc)) from exc
            log.info("operator: %s server %d committed at index %d", what, target, index)
            return index
    raise OperatorError(f"could not {what} server {target}: another change stayed pending for {CHANGE_TIMEOUT:g}s")


async def reconcile_loop(server: ServerRuntime) -> None:
    """The leader's membership upkeep (as Consul's leader reconciles serf members): a server gossip
    shows alive but not in the configuration is added; one that left gracefully is removed. One
    change at a time; errors are logged and retried on the next round."""
    while True:
        await trio.sleep(RECONCILE_INTERVAL)
        driver = server.driver
        if driver is None or not driver.is_leader or server.agent.leaving:
            continue
        raft = driver.node.raft
        await _seed_autopilot(server)
        if raft.conf_pending() or raft.lead_transferee:
            continue
        voters = set(raft.voters)
        members = voters | raft.learners
        try:
            from .autopilot import dead_servers_to_remove

            dead = dead_servers_to_remove(server.agent, trio.current_time())
            if dead:
                log.info("autopilot: server %d failed: removing it (CleanupDeadServers)", dead[0])
                await change_membership(server, ConfChangeType.REMOVE_VOTER, dead[0])
                continue
            left = sorted((server.left_servers() & members) - {server.id})
            if left:
                log.info("reconcile: server %d left: removing it from the raft configuration", left[0])
                await change_membership(server, ConfChangeType.REMOVE_VOTER, left[0])
                continue
            now = trio.current_time()
            from .autopilot import learners_to_promote

            ready = learners_to_promote(server.agent, now)
            if ready:
                log.info("autopilot: non-voter %d is caught up and stable: promoting it to voter", ready[0])
                await change_membership(server, ConfChangeType.ADD_VOTER, ready[0])
                continue
            held = {rid for rid, t in server.removed_at.items() if now - t < REMOVED_HOLD}
            new = sorted(set(server.known_servers()) - members - held)
            if new:
                # As Consul's autopilot: a new server joins as a non-voter and gets the log; it
                # is promoted once it has been healthy for ServerStabilizationTime.
                log.info("reconcile: server %d is alive but not in the configuration: adding it as a non-voter",
                         new[0])
                await change_membership(server, ConfChangeType.ADD_LEARNER, new[0])
        except OperatorError as exc:
            log.warning("reconcile: %s", exc)


async def _seed_autopilot(server: ServerRuntime) -> None:
    """As Consul's leader on taking office: write the agent's `autopilot` block as the replicated
    configuration if there is none yet (CAS 0, so it never overwrites one)."""
    from .writer import WriteFailed

    cmd = server.agent.autopilot.seed_command()
    if cmd is None:
        return
    try:
        if await server.agent.writer.apply(cmd) is True:
            log.info("autopilot: wrote the initial configuration from this server's config")
    except WriteFailed as exc:
        log.debug("autopilot: initial configuration deferred: %s", exc)


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
    if action == "health":
        from .autopilot import server_health

        return server_health(server.agent)
    if action == "remove":
        target = args.get("target")
        if not isinstance(target, int) or isinstance(target, bool):
            raise OperatorError("remove: target must be a raft id")
        assert server.driver is not None
        raft = server.driver.node.raft
        if target not in raft.voters and target not in raft.learners:
            raise OperatorError(f"{target} is not a raft peer")
        if not args.get("leaving"):
            # An operator's removal: hold the server out while gossip may still call it alive. A
            # server's own graceful leave needs no hold: gossip already says it left, and if it
            # restarts and rejoins it is added back at once (as Consul's leader re-adds it).
            server.removed_at[target] = trio.current_time()
        return await change_membership(server, ConfChangeType.REMOVE_VOTER, target)
    raise OperatorError(f"unknown operator action {action!r}")
