"""A server agent's replicated core: Raft over the server port, the catalog as its state machine.

Bootstrap follows Consul's bootstrap_expect: a server waits until gossip shows that many servers
of its datacenter, then all of them start Raft with the same voter set (sorted Raft IDs derived
from their node IDs), which is written down so a restart needs no gossip. In --dev the voter set
is this node alone and the log lives in memory: the same code path, nothing on disk.

Writes on a follower are forwarded to the leader over server RPC. Reads that must be
linearizable wait on a ReadIndex (answered by the leader, also for followers) and then read the
local store.
"""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgpack
import trio
from murmur.catalog import commands
from murmur.catalog.store import StateStore
from murmur.raft.config import RaftConfig
from murmur.raft.rawnode import RawNode

from .drivers.raft import MemorySnapshots, MemoryStorage, NotLeader, RaftDriver
from .drivers.raft_transport import TCPTransport
from .protocol import PROTOCOL_MAX, cluster_protocol, required_protocol, too_old
from .rpc.mux import RAFT, RPC, SNAPSHOT, FramedStream, ServerPort
from .rpc.protocol import decode_result
from .storage.raft_log import RaftStorage
from .storage.snapshots import SnapshotStore

if TYPE_CHECKING:
    from .agent import Agent

log = logging.getLogger("murmur.server")

TICK_INTERVAL = 0.1  # seconds per Raft tick: heartbeats every tick, elections after 10-20 ticks
BOOTSTRAP_POLL = 0.25


def raft_id(node_id: str) -> int:
    """A positive 60-bit Raft ID from a node's UUID (stable across restarts and addresses)."""
    return int(uuid.UUID(node_id).hex[:15], 16) or 1


class NoLeader(Exception):
    pass


class CatalogFSM:
    """The catalog store as Raft's state machine; unknown commands stop or skip as the byte says."""

    def __init__(self, store: StateStore, protocol: int = PROTOCOL_MAX) -> None:
        self.store = store
        self.protocol = protocol  # below REQUEST_IDS: refuse REQUEST entries, as an older build would

    def apply(self, index: int, data: bytes) -> Any:
        try:
            if required_protocol(data) > self.protocol:  # what an older build would do
                raise commands.UnknownCommand(data[0])
            return self.store.apply(index, data)
        except commands.UnknownCommand as exc:
            if exc.ignorable:
                self.store.last_index = index
                log.warning("skipping an ignorable command this version does not know (index %d)", index)
                return None
            raise

    def snapshot(self) -> bytes:
        return self.store.snapshot()

    def restore(self, data: bytes) -> None:
        self.store.load(data)


class ServerRuntime:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.id = raft_id(agent.local.node.id)
        self.port = ServerPort()
        self.transport = TCPTransport(self._deliver, self._snapshot_status)
        self.driver: RaftDriver | None = None
        self.storage: RaftStorage | MemoryStorage | None = None
        self.voters: list[int] = []
        self.bootstrap_voters: list[int] = []  # the configuration this server started the cluster with
        self._protocol_cache: tuple[tuple[int, int, int], int] | None = None  # (membership key, cluster protocol)
        self.removed_at: dict[int, float] = {}  # raft id -> when an operator removed it (trio time)
        self.addresses: dict[int, tuple[str, int]] = {}  # raft id -> server port address
        self.ready = trio.Event()
        self.nursery: trio.Nursery | None = None

    # ---- wiring ---------------------------------------------------------------------------------
    def _deliver(self, m: Any) -> None:
        if self.driver is not None:
            self.driver.receive(m)

    def _snapshot_status(self, to: int, failed: bool) -> None:
        if self.driver is not None:
            self.driver.snapshot_status(to, failed)

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        cfg = self.agent.cfg
        host = cfg.bind_addr
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            await nursery.start(self.transport.serve)
            self.port.register(RAFT, self.transport.handle_incoming)
            self.port.register(SNAPSHOT, self.transport.handle_snapshot)
            self.port.register(RPC, self._handle_rpc)
            bound = await nursery.start(self.port.serve, host, cfg.ports.server)
            self.addresses[self.id] = (self.agent.local.node.address, bound)
            task_status.started(bound)
            if cfg.dev:
                self.storage = MemoryStorage()
                await self._start_raft([self.id], self.storage)
            else:
                path = Path(cfg.data_dir) / "raft"
                path.mkdir(parents=True, exist_ok=True)
                storage = RaftStorage(path / "raft.db")
                self.storage = storage
                boot = get_storage_meta(storage, "bootstrap_voters")
                if boot is None:  # a data dir from before membership changes: no change was ever made
                    boot = storage_voters(storage) or None
                    if boot is not None:
                        set_storage_meta(storage, "bootstrap_voters", boot)
                if boot is None:
                    boot = await self._await_bootstrap()
                    set_storage_meta(storage, "bootstrap_voters", boot)
                    if boot:
                        set_storage_voters(storage, boot)
                await self._start_raft(list(boot), storage, SnapshotStore(path / "snapshots"))
            await trio.sleep_forever()

    async def _await_bootstrap(self) -> list[int]:
        """The bootstrap voter set; empty when the servers we see already run a Raft cluster: then
        we join it, waiting for its leader to add us (as Consul's leader adds new servers)."""
        expect = self.agent.cfg.bootstrap_expect
        if expect <= 0:
            log.warning("no bootstrap_expect and no existing raft state: waiting for a manual bootstrap")
        log.info("waiting for %d servers to bootstrap the raft cluster", expect)
        while True:
            servers = self.known_servers()
            existing = await self._existing_config(servers) if len(servers) > 1 else None
            if existing is not None and self.id in existing:
                log.info("bootstrapping raft with the voters another server started with: %s", existing)
                return existing  # (it bootstrapped a moment before us, with us in the set)
            if existing is not None:
                log.info("the servers we see already run a raft cluster: joining it (the leader adds us)")
                return []
            if expect > 0 and len(servers) >= expect:
                voters = sorted(servers)[:expect] if len(servers) == expect else sorted(servers)
                log.info("bootstrapping raft with %d voters: %s", len(voters), voters)
                return voters
            await trio.sleep(BOOTSTRAP_POLL)

    async def _existing_config(self, servers: dict[int, tuple[str, int]]) -> list[int] | None:
        """The bootstrap voters of a Raft cluster another server we see already runs (None: none
        runs yet). Someone else's changed configuration that includes us means the leader added
        us already: we still join with no configuration and learn it from the log."""
        from .rpc.protocol import RPCError, call

        for rid, addr in servers.items():
            if rid == self.id:
                continue
            try:
                reply = await call(addr, {"op": "status"}, timeout=2.0)
            except RPCError:
                continue
            voters, boot = reply.get("voters"), reply.get("bootstrap")
            if isinstance(voters, list) and voters:
                if isinstance(boot, list) and all(isinstance(v, int) for v in boot):
                    return sorted(boot)
                return []
        return None

    def _gossip_servers(self, state: Any) -> Iterator[tuple[int, Any]]:
        """(raft id, member) of the servers of our datacenter that gossip shows in `state`."""
        ms = self.agent.membership
        if ms is None:
            return
        for m in ms.members.values():
            tags = m.tags
            if m.state != state or tags.get("role") != "consul" or tags.get("dc") != self.agent.cfg.datacenter:
                continue
            try:
                yield raft_id(tags["id"]), m
            except (KeyError, ValueError):
                continue

    def cluster_protocol(self) -> int:
        """The newest protocol every server of our datacenter speaks (agent/protocol.py): gossip's
        alive and failed servers count, left ones do not."""
        from murmur.gossip.membership import State

        ms = self.agent.membership
        key = (id(ms), ms.table_version if ms is not None else -1, self.agent.cfg.protocol)
        if self._protocol_cache is not None and self._protocol_cache[0] == key:
            return self._protocol_cache[1]  # every write asks: scan the members only when they change
        servers = [m.tags for st in (State.ALIVE, State.SUSPECT, State.DEAD) for _, m in self._gossip_servers(st)]
        value = cluster_protocol(self.agent.cfg.protocol, servers)
        self._protocol_cache = (key, value)
        return value

    def left_servers(self) -> set[int]:
        """Raft ids of servers of our datacenter that gossip says left gracefully."""
        from murmur.gossip.membership import State

        return {rid for rid, _ in self._gossip_servers(State.LEFT)}

    def known_servers(self) -> dict[int, tuple[str, int]]:
        """Alive servers of our datacenter seen by gossip: raft id -> server port address."""
        from murmur.gossip.membership import State

        out = {self.id: self.addresses[self.id]}
        for rid, m in self._gossip_servers(State.ALIVE):
            try:
                out[rid] = (m.addr, int(m.tags["port"]))
            except (KeyError, ValueError):
                continue
        return out

    def update_peers(self) -> None:
        """Point the transport at every voter's current address (from gossip), and remember the
        addresses in the data dir so a restarted server reaches its peers before gossip has."""
        changed = False
        for rid, addr in self.known_servers().items():
            if self.addresses.get(rid) != addr:
                self.addresses[rid] = addr
                changed = True
        # Voters, and the leader we follow: a server that is joining (no voters of its own yet)
        # answers the leader; the leader reaches servers it just added.
        wanted = set(self.voters)
        if self.driver is not None:
            wanted |= set(self.driver.node.raft.prs) | {self.driver.leader}
        for rid in sorted(wanted):
            if rid and rid != self.id and rid in self.addresses:
                self.transport.set_peer(rid, self.addresses[rid])
        if changed and isinstance(self.storage, RaftStorage):
            set_storage_meta(self.storage, "peers", {str(k): list(v) for k, v in self.addresses.items()})

    async def _start_raft(self, voters: list[int], storage: RaftStorage | MemoryStorage,
                          snapshots: SnapshotStore | MemorySnapshots | None = None) -> None:
        snapshots = snapshots or MemorySnapshots()
        snap = snapshots.load() if isinstance(snapshots, SnapshotStore) else None
        hard, entries = (storage.load(snap.meta if snap else None) if isinstance(storage, RaftStorage)
                         else (None, []))
        if snap is not None:
            # The state machine starts from the snapshot; the log replays what follows it.
            self.agent.store.load(snap.data)
            log.info("raft: restored the catalog from the snapshot at index %d, term %d (%d entries after it)",
                     snap.meta.index, snap.meta.term, len(entries))
        self.voters = voters
        if isinstance(storage, RaftStorage):
            known = get_storage_meta(storage, "peers") or {}
            for rid, addr in known.items():
                self.addresses.setdefault(int(rid), (str(addr[0]), int(addr[1])))
        lease = RaftConfig.election_tick // 2 if self.agent.cfg.raft_lease_reads else 0
        node = RawNode(RaftConfig(id=self.id, lease_tick=lease), voters, random.Random(self.agent.rng.random()), hard, entries,
                       snapshot=snap)
        self.driver = RaftDriver(node, storage, CatalogFSM(self.agent.store, self.agent.cfg.protocol), self.transport, TICK_INTERVAL,
                                 on_apply=self.agent.feed.notify, snapshots=snapshots,
                                 snapshot_threshold=self.agent.cfg.raft_snapshot_threshold,
                                 trailing_logs=self.agent.cfg.raft_trailing_logs,
                                 on_voters=self._voters_changed)
        self.driver.metrics = self.agent.metrics
        # The state this life starts from (the fault lab's Raft-invariant checker reads it: terms
        # are persisted, so a restart never goes back in term).
        log.info("raft: starting at term %d, vote %d, commit %d, last %d", node.raft.term, node.raft.vote,
                 node.raft.log.committed, node.raft.log.last_index())
        self.voters = sorted(node.raft.voters)
        self.bootstrap_voters = sorted(voters)
        self.update_peers()
        assert self.nursery is not None
        await self.nursery.start(self.driver.serve)
        self.nursery.start_soon(self._peer_refresher)
        if not self.agent.cfg.dev:
            from .operator import reconcile_loop

            self.nursery.start_soon(reconcile_loop, self)
        if sorted(node.raft.voters) == [self.id]:
            self.driver.node.campaign()  # a single voter need not wait out an election timeout
            self.driver.kick.set()
        self.ready.set()

    def _voters_changed(self, voters: list[int]) -> None:
        """A configuration change reached our log: the voter list, its copy in the data dir (for
        operators; the log and snapshots are the truth), and the transport's peers follow."""
        self.voters = voters
        if isinstance(self.storage, RaftStorage):
            set_storage_voters(self.storage, voters)
        self.update_peers()

    async def _peer_refresher(self) -> None:
        while True:
            self.update_peers()
            await trio.sleep(1.0)

    # ---- leader and writes ----------------------------------------------------------------------
    def leader_address(self) -> tuple[str, int] | None:
        if self.driver is None or not self.driver.leader:
            return None
        return self.addresses.get(self.driver.leader)

    async def apply(self, cmd: commands.Command) -> Any:
        """Replicate a command and return its result, from any server (followers forward)."""
        data = commands.encode(cmd)
        if self.driver is None:
            raise NoLeader("No cluster leader (raft is not bootstrapped yet)")
        cluster = self.cluster_protocol()
        # (a cluster at the newest protocol can apply anything: skip the command's decode)
        need = required_protocol(data) if cluster < PROTOCOL_MAX else cluster
        if need > cluster:
            from .writer import WriteFailed

            raise WriteFailed(too_old(need, cluster))
        if self.driver.is_leader and not self.driver.node.raft.lead_transferee:
            return await self.driver.propose(data)
        # (During a leadership transfer the leader refuses proposals: go the forwarding way,
        # which retries under a request ID until the new leader takes it.)
        from .rpc.endpoint import forward_write

        return await forward_write(self, data)  # under a request ID, retried with it

    async def read_barrier(self, lease: bool = False) -> None:
        """Wait until a linearizable read of the local store is safe (ReadIndex; `lease`: the
        leader may answer from its lease when raft_lease_reads is on)."""
        if self.driver is None:
            raise NoLeader("No cluster leader (raft is not bootstrapped yet)")
        try:
            await self.driver.read_index(lease=lease)
        except NotLeader as exc:
            raise NoLeader("No cluster leader") from exc

    async def _handle_rpc(self, framed: FramedStream, peer: tuple[str, int]) -> None:
        """Server RPC: apply (followers forward to the leader) and named reads; see rpc/endpoint.py."""
        from .rpc.endpoint import serve_connection

        await serve_connection(self, framed, peer)


def get_storage_meta(storage: RaftStorage, key: str) -> Any:
    row = storage.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return msgpack.unpackb(row[0], raw=False, strict_map_key=False) if row else None


def set_storage_meta(storage: RaftStorage, key: str, value: Any) -> None:
    with storage.lock:  # a save may be running in a worker thread on the same connection
        storage.db.execute("BEGIN IMMEDIATE")
        storage.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, bytes(msgpack.packb(value))))
        storage.db.execute("COMMIT")


def storage_voters(storage: RaftStorage) -> list[int]:
    return list(get_storage_meta(storage, "voters") or [])


def set_storage_voters(storage: RaftStorage, voters: list[int]) -> None:
    set_storage_meta(storage, "voters", voters)


__all__ = ["NoLeader", "ServerRuntime", "decode_result", "raft_id"]
