"""Anti-entropy on a client agent: read this node's catalog entries from a server, diff them with
the local state, write the difference over RPC.

It runs on every local change (registrations, check status changes) and periodically, every
CLIENT_SYNC_INTERVAL scaled up with the cluster size as Consul's aeScale does (x1 up to 128
nodes, then +1 per doubling) plus up to half that again of random jitter, so a large cluster's
clients do not all ask at once. It only ever writes this agent's own node: nodes registered
through /v1/catalog/register (without an agent) are never touched.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

import trio
from murmur.catalog import commands
from murmur.catalog.store import StateStore

from .failpoints import FAILPOINTS
from .reads import ReadError
from .writer import WriteFailed

if TYPE_CHECKING:
    from .agent import Agent

log = logging.getLogger("murmur.agent")

CLIENT_SYNC_INTERVAL = 5.0  # seconds between periodic passes in clusters of up to 128 nodes
SCALE_THRESHOLD = 128


def ae_scale(interval: float, nodes: int) -> float:
    """Consul's aeScale: the interval grows by one multiple per doubling past 128 nodes."""
    if nodes <= SCALE_THRESHOLD:
        return interval
    return interval * (1 + math.ceil(math.log2(nodes) - math.log2(SCALE_THRESHOLD)))


def client_sync_interval(agent: Agent) -> float:
    n = len(agent.membership.members) if agent.membership is not None else 1
    base = ae_scale(CLIENT_SYNC_INTERVAL, n)
    return base + agent.rng.uniform(0, base / 2)


async def client_sync(agent: Agent) -> bool:
    """One pass; False if the servers could not be read or written now (the next pass retries)."""
    done = False
    started = trio.current_time()
    async with agent.sync_lock:
        try:
            res = await agent.remote.read("node.slice", {"node": agent.local.node.name})
            if not isinstance(res.data, bytes):
                raise ReadError("bad_request", "node.slice answered without a snapshot")
            scratch = StateStore.restore(res.data)
            for cmd in agent.local.sync_commands(scratch, trio.current_time()):
                if _planted_drop(agent, cmd):
                    continue
                result = await agent.writer.apply(cmd)
                if isinstance(result, commands.ApplyError):
                    agent.stats["sync_errors"] += 1
                    log.warning("sync: %s", result.message)
            done = True
        except (WriteFailed, ReadError) as exc:
            agent.stats["sync_errors"] += 1
            log.debug("sync deferred: %s", exc)
            return False
        finally:
            if FAILPOINTS.bugs:  # (a pass that took over a second waited on unreachable servers)
                _planted_note(agent, done and trio.current_time() - started < 1.0)
    return True


def _planted_note(agent: Agent, done: bool) -> None:
    if not FAILPOINTS.bug("ae.drop_push"):
        return
    if done:
        agent.stats["planted_ae_synced"] = 1
    elif agent.stats.get("planted_ae_synced"):  # failed or cancelled after an earlier success
        agent.stats["planted_ae_failed"] = 1


def _planted_drop(agent: Agent, cmd: commands.Command) -> bool:
    """Planted bug ae.drop_push (fault-lab tests only, agent/failpoints.py): once a pass has
    failed, been cut short or taken over a second after one succeeded (the servers became
    unreachable), the client drops every later push of its services, as if it believed them
    synced. (Slow passes count because an API change's pass now runs on in the background and
    gets through after a short partition instead of being cancelled with its request.)"""
    if not (FAILPOINTS.bugs and agent.stats.get("planted_ae_failed")):
        return False
    if isinstance(cmd, commands.Register) and cmd.service is not None or \
            isinstance(cmd, commands.Deregister) and cmd.service_id:
        agent.stats["planted_ae_dropped"] = agent.stats.get("planted_ae_dropped", 0) + 1
        return True
    return False
