"""A client agent's way to the servers: writes and reads over server RPC.

Servers are the gossip members of our datacenter tagged `role=consul`, reached at their `port`
tag. A write gets a request ID chosen here (the node ID and a random UUID) and keeps it across retries: when a
server fails to answer (connection refused, timeout, "outcome unknown", not the leader, no
leader) the write is sent again, with the same ID, to the next server, so it is applied at most
once whichever attempt got through (the servers' FSM remembers recent IDs; catalog/store.py).
Reads are idempotent and are simply retried on another server.

Attempts are bounded in count and time (RETRY_BUDGET); the order starts with the server that last
answered, then the others shuffled.
"""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING, Any

import trio
from murmur.catalog import commands
from murmur.gossip.membership import State

from .reads import ReadError, ReadResult
from .rpc.protocol import RETRYABLE, RPC_TIMEOUT, RPCError, call, decode_result
from .writer import ACLRefused, WriteFailed

if TYPE_CHECKING:
    from .agent import Agent

log = logging.getLogger("murmur.remote")

RETRY_BUDGET = 15.0  # seconds a write or read keeps trying servers (covers a leader election)
MAX_ATTEMPTS = 40
BACKOFF = (0.05, 0.1, 0.2, 0.4, 0.5)  # seconds between rounds over all servers


class Remote:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.preferred: tuple[str, int] | None = None
        self.stats = {"rpc_writes": 0, "rpc_reads": 0, "rpc_retries": 0}

    def servers(self) -> list[tuple[str, int]]:
        """Alive servers of our datacenter per gossip, the last one that answered first."""
        ms = self.agent.membership
        out: list[tuple[str, int]] = []
        if ms is not None:
            for m in ms.members.values():
                t = m.tags
                if m.state not in (State.ALIVE, State.SUSPECT) or t.get("role") != "consul" or t.get("dc") != self.agent.cfg.datacenter:
                    continue
                try:
                    out.append((m.addr, int(t["port"])))
                except (KeyError, ValueError):
                    continue
        self.agent.rng.shuffle(out)
        if self.preferred in out:
            out.remove(self.preferred)
            out.insert(0, self.preferred)
        return out

    async def _attempts(self, what: str, one: Any, budget: float = RETRY_BUDGET) -> Any:
        """Call `one(addr)` on servers in turn until it returns; retry only RETRYABLE failures."""
        deadline = trio.current_time() + budget
        last: Exception | None = None
        attempts = 0
        for rnd in range(MAX_ATTEMPTS):
            servers = self.servers()
            if not servers:
                last = last or RPCError("no_leader", "No known servers (none seen in gossip yet)")
                if rnd == 0:
                    break  # no server at all: say so at once (a gossip-only cluster, or not joined yet)
            for addr in servers:
                if attempts >= MAX_ATTEMPTS or trio.current_time() > deadline:
                    break
                attempts += 1
                try:
                    out = await one(addr, max(0.5, min(RPC_TIMEOUT, deadline - trio.current_time())))
                except RPCError as exc:
                    last = exc
                    if exc.kind not in RETRYABLE:
                        raise
                    self.stats["rpc_retries"] += 1
                    log.debug("%s via %s:%d failed (%s): trying another server", what, *addr, exc)
                    if self.preferred == addr:
                        self.preferred = None
                    continue
                self.preferred = addr
                return out
            if attempts >= MAX_ATTEMPTS or trio.current_time() > deadline:
                break
            await trio.sleep(BACKOFF[min(rnd, len(BACKOFF) - 1)])
        assert last is not None
        raise last

    def _token(self, token: str | None) -> dict[str, str]:
        """The `tk` an RPC carries: the given token, else the HTTP request's, else the agent's;
        nothing when ACLs are off here."""
        acl = self.agent.acl
        if not acl.enabled:
            return {}
        return {"tk": token if token is not None else acl.outgoing_token()}

    async def apply(self, cmd: commands.Command, rid: str | None = None, token: str | None = None) -> Any:
        """Write through the servers; the same request ID on every attempt."""
        data = commands.encode(cmd)
        tk = self._token(token)
        # The node ID plus 122 random bits from the OS: unique across clients whatever their seeds.
        rid = rid or f"{self.agent.local.node.id}/{uuid.uuid4().hex}"
        self.stats["rpc_writes"] += 1

        async def one(addr: tuple[str, int], timeout: float) -> Any:
            return decode_result(await call(addr, {"op": "apply", "d": data, "rid": rid, "hops": 0, **tk}, timeout))

        try:
            return await self._attempts("write", one)
        except RPCError as exc:
            if exc.kind in ("no_leader", "not_leader"):
                raise WriteFailed("No cluster leader") from exc
            if exc.kind in ("permission_denied", "acl_not_found"):
                raise ACLRefused(str(exc)) from exc
            if exc.kind == "unknown_outcome":
                raise WriteFailed(f"no server answered; the write may or may not be applied: {exc}") from exc
            raise WriteFailed(str(exc)) from exc

    async def read(self, name: str, args: dict[str, Any], mode: str = "default", index: int = 0,
                   wait: float = 0.0, budget: float = RETRY_BUDGET, token: str | None = None) -> ReadResult:
        """A named read (agent/reads.py) executed by a server (which filters it by our token)."""
        self.stats["rpc_reads"] += 1
        tk = self._token(token)

        async def one(addr: tuple[str, int], timeout: float) -> ReadResult:
            body = await call(addr, {"op": "read", "name": name, "args": args, "mode": mode, "index": index,
                                     "wait": wait, **tk}, timeout + wait * 1.1)
            return ReadResult(body.get("data"), int(body.get("index", 0)), bool(body.get("leader", False)),
                              int(body.get("contact", 0)), bool(body.get("f", False)))

        try:
            return await self._attempts(f"read {name}", one, budget)  # type: ignore[no-any-return]
        except RPCError as exc:
            kind = "no_leader" if exc.kind in RETRYABLE else exc.kind
            raise ReadError(kind, "No cluster leader" if kind == "no_leader" else str(exc)) from exc


class ClientWriter:
    """The Writer of a client agent: every catalog or KV write goes to the servers."""

    def __init__(self, remote: Remote) -> None:
        self.remote = remote

    async def apply(self, cmd: commands.Command) -> Any:
        return await self.remote.apply(cmd)
