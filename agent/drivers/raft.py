"""The Raft driver: owns a RawNode and runs its Ready loop on trio.

Everything that touches the node goes through one inbox (network messages, ticks, proposals,
read requests) and one loop that, per round: steps the inbox, then for each Ready persists (on the
storage writer thread: the fsync must not block the event loop), sends, applies, advances. A
follower waits for its write before it acks; a leader does not (etcd-io/raft's async storage
writes): it sends its AppendEntries at once and goes on, and its write, once durable, comes back
through the inbox ("persisted") to count the leader's own copy toward a commit. Writes that queue
up behind a running one go to disk together (the storage writer's group commit: one transaction
and one fsync for everything that came in meanwhile).

Snapshots: once the applied index runs `snapshot_threshold` entries past the last snapshot, the
driver asks the state machine for one (synchronously, so it is exactly the state at the applied
index) and writes it durably in the background (snapshot file, in a worker thread) while the loop
goes on; when the file is durable, the loop deletes the covered entries from the log storage and
only then lets the core drop them. One snapshot is written at a time. A snapshot from the leader arrives in a
Ready: it is written durably and the log reset before the Ready's messages (the ack) go out, and
the state machine is restored from it before the entries after it are applied.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import trio
from murmur.raft.core import ProposalDropped
from murmur.raft.messages import (
    EARLY_SEND,
    ConfChangeType,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    Ready,
    Role,
    Snapshot,
    SnapshotMeta,
)
from murmur.raft.rawnode import RawNode

from ..failpoints import FAILPOINTS

if TYPE_CHECKING:
    from ..metrics import Metrics

log = logging.getLogger("murmur.raft")

_TRACE_DIR = os.environ.get("MURMUR_RAFT_TRACE", "")  # debugging: per-Ready timings to a file there


class _Trace:
    """Per-Ready timings (monotonic ms), appended to <dir>/raft-trace-<pid>.txt in batches."""

    def __init__(self, directory: str) -> None:
        self.path = os.path.join(directory, f"raft-trace-{os.getpid()}.txt")
        self.lines: list[str] = []

    def add(self, *fields: object) -> None:
        self.lines.append(" ".join(str(f) for f in fields))
        if len(self.lines) >= 200:
            with open(self.path, "a") as f:
                f.write("\n".join(self.lines) + "\n")
            self.lines = []


def _plant_double_vote(node: RawNode, m: Message) -> None:
    """The planted bug raft.double_vote (fault-lab tests only): a (pre-)vote request for our
    current term finds a follower or candidate as if it had neither voted nor known a leader in
    it, so it grants a second vote in a term. Two candidates of one term can then both win."""
    if (m.type in (MessageType.VOTE, MessageType.PRE_VOTE) and m.term == node.raft.term and node.raft.vote != m.frm
            and node.raft.role != Role.LEADER):
        node.raft.vote = 0
        node.raft.lead = 0


class _Save:
    """One save handed to the storage writer: `done` is set (on the trio thread) once it returned,
    and `on_done`, if set by then, is called there too."""

    __slots__ = ("done", "error", "queued", "started", "finished", "on_done")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.error: BaseException | None = None
        self.queued = self.started = self.finished = 0.0  # perf_counter marks, for the trace
        self.on_done: Callable[[], None] | None = None

    def finish(self) -> None:
        self.done.set()
        if self.on_done is not None:
            self.on_done()


class StorageWriter:
    """A long-lived thread that runs the durable saves, in order, fed by a queue.

    Handing it a save is synchronous (a queue put, no trio checkpoint), so the leader's own write
    is under way before its AppendEntries go out, and no task runs in between. (trio's to_thread
    first passes a checkpoint, during which the transport's sender tasks ran their loopback sends,
    each of which could hand the CPU to the receiving process for milliseconds on a loaded box,
    all before the write had even started.) The thread reports back with one run_sync_soon.

    Group commit: saves queued while one runs are written together, in order, in one transaction
    and one fsync, when the storage offers `save_many` (the leader does not wait for its own
    write, so several of its Readys may queue up behind one fsync)."""

    def __init__(self, token: trio.lowlevel.TrioToken, storage: object | None = None) -> None:
        self.token = token
        self.storage = storage
        self.queue: queue.SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...], _Save] | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._work, name="raft-storage", daemon=True)
        self.thread.start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> _Save:
        job = _Save()
        job.queued = time.perf_counter()
        self.queue.put((fn, args, job))
        return job

    @staticmethod
    async def wait(job: _Save) -> None:
        """Wait for `job`; its exception (a StorageError) is raised here. Shielded: a write under
        way is never abandoned (the driver stops only once it has returned)."""
        with trio.CancelScope(shield=True):
            await job.done.wait()
        if job.error is not None:
            raise job.error

    def stop(self) -> None:
        self.queue.put(None)

    def _work(self) -> None:
        stopping = False
        while not stopping:
            item = self.queue.get()
            if item is None:
                return
            batch = [item]
            while True:  # whatever queued up meanwhile goes with it
                try:
                    more = self.queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stopping = True
                    break
                batch.append(more)
            now = time.perf_counter()
            for _, _, job in batch:
                job.started = now
            save_many = getattr(self.storage, "save_many", None)
            saves = [args for fn, args, _ in batch if fn == getattr(self.storage, "save", None)]
            try:
                if save_many is not None and len(saves) == len(batch) > 1:
                    save_many(saves)
                else:
                    for fn, args, _ in batch:
                        fn(*args)
            except BaseException as exc:  # handed to the trio side, which raises it
                for _, _, job in batch:
                    job.error = exc
            now = time.perf_counter()
            jobs = [job for _, _, job in batch]
            for job in jobs:
                job.finished = now
            try:
                self.token.run_sync_soon(_finish_all, jobs)
            except trio.RunFinishedError:
                return


class _Report:
    """Posts a leader's finished write back to its driver's inbox (on the trio thread)."""

    __slots__ = ("driver", "item")

    def __init__(self, driver: RaftDriver, job: _Save, rd: Ready, late: list[Message]) -> None:
        self.driver = driver
        self.item = (job, rd, late)

    def __call__(self) -> None:
        self.driver._post("persisted", self.item)


def _finish_all(jobs: list[_Save]) -> None:
    for job in jobs:
        job.finish()


class Storage(Protocol):
    def save(self, hard: HardState | None, entries: list[Entry], reset_to: int = 0) -> None: ...

    def compact(self, index: int) -> None: ...


class SnapshotSink(Protocol):
    def write(self, snap: Snapshot) -> object: ...


class FSM(Protocol):
    def apply(self, index: int, data: bytes) -> Any: ...

    def snapshot(self) -> bytes: ...

    def restore(self, data: bytes) -> None: ...


class Transport(Protocol):
    def send(self, m: Message) -> None: ...


class MemoryStorage:
    """Storage for --dev and tests: keeps the log in memory (lost with the process)."""

    inline = True  # nothing to wait for: save on the event loop, no worker thread

    def __init__(self) -> None:
        self.hard = HardState()
        self.entries: list[Entry] = []
        self.offset = 0  # entries up to here are in a snapshot

    def save(self, hard: HardState | None, entries: list[Entry], reset_to: int = 0) -> None:
        if reset_to:
            self.entries, self.offset = [], reset_to
        if hard is not None:
            self.hard = hard
        if entries:
            del self.entries[entries[0].index - 1 - self.offset:]
            self.entries.extend(entries)

    def compact(self, index: int) -> None:
        del self.entries[:max(0, index - self.offset)]
        self.offset = max(self.offset, index)


class MemorySnapshots:
    """The newest snapshot, in memory (--dev and tests)."""

    inline = True

    def __init__(self) -> None:
        self.latest: Snapshot | None = None

    def write(self, snap: Snapshot) -> None:
        self.latest = snap


class NotLeader(Exception):
    """Writes go to the leader; `leader` is its node id (0: none known)."""

    def __init__(self, leader: int) -> None:
        super().__init__(f"not the leader (leader: {leader or 'unknown'})")
        self.leader = leader


class OutcomeUnknown(Exception):
    """Leadership was lost while the proposal was in flight: it may or may not be applied."""


@dataclass
class _Waiter:
    term: int
    start: float = 0.0  # when it was proposed (trio clock), for consul.raft.commitTime
    done: trio.Event = field(default_factory=trio.Event)
    result: Any = None
    error: BaseException | None = None
    posted: float = field(default_factory=time.perf_counter)

    def finish(self, result: Any = None, error: BaseException | None = None) -> None:
        self.result, self.error = result, error
        self.done.set()


MAX_CATCH_UP = 100  # ticks owed after a pause, at most (10 s at 100 ms ticks)


class RaftDriver:
    def __init__(self, node: RawNode, storage: Storage, fsm: FSM, transport: Transport,
                 tick_interval: float = 0.1, on_apply: Callable[[], None] | None = None,
                 snapshots: SnapshotSink | None = None, snapshot_threshold: int = 0,
                 trailing_logs: int = 0, on_voters: Callable[[list[int]], None] | None = None) -> None:
        self.node = node
        self.storage = storage
        self.snapshots = snapshots
        self.snapshot_threshold = snapshot_threshold if snapshots is not None else 0
        self.trailing_logs = trailing_logs  # entries kept behind each snapshot (Consul's trailing logs)
        self.fsm = fsm
        self.transport = transport
        self.tick_interval = tick_interval
        self.on_apply = on_apply
        self.inbox: list[tuple[str, Any]] = []
        self.kick = trio.Event()
        self.waiters: dict[int, _Waiter] = {}
        self.read_waiters: dict[bytes, tuple[trio.Event, list[int]]] = {}
        self.applied_event = trio.Event()
        self.leader_changed = trio.Event()
        self._read_seq = 0
        # Lease reads count ticks from the monotonic clock: a driver that merely sleeps between
        # ticks delivers one tick after a pause (SIGSTOP, a VM freeze) and would think its lease
        # still runs. Only then; without a lease, ticks stay one per wake-up as before.
        self.clock_ticks = node.raft.config.lease_tick > 0
        self._tick_origin: float | None = None
        self._ticks_done = 0
        self.stats = {"writes": 0, "entries_written": 0, "applied": 0, "proposals": 0, "snapshots_taken": 0,
                      "snapshots_installed": 0}
        self.last_contact = 0.0
        self.leader_changes = 0  # times the known leader changed (murmur.raft.leader_changes)
        self.became = {"leader": 0, "candidate": 0, "pre_candidate": 0, "follower": 0}  # consul.raft.state.*
        self.metrics: Metrics | None = None  # set by the agent (agent/metrics.py)
        self._lead = 0
        # A hard state whose only change is the commit index waits for the next synced write
        # (etcd's MustSync): the commit index is recovered from the leader after a crash anyway.
        self.pending_hard: HardState | None = None
        self.snapshot_in_flight = False
        self._nursery: trio.Nursery | None = None
        # Told the voter set whenever it changes (a conf entry appended, truncated or installed).
        self.on_voters = on_voters
        self._known_voters = sorted(node.raft.voters)
        self._trace = _Trace(_TRACE_DIR) if _TRACE_DIR else None
        self.writer: StorageWriter | None = None  # started by serve() unless the storage is inline
        self._last_async: _Save | None = None  # the newest save a leader started without waiting

    # ---- inputs (any task) ----------------------------------------------------------------------
    def _post(self, kind: str, item: Any) -> None:
        self.inbox.append((kind, item))
        self.kick.set()

    def receive(self, m: Message) -> None:
        self._post("msg", m)

    def snapshot_status(self, to: int, failed: bool) -> None:
        """The transport finished (or gave up) sending a snapshot to `to`."""
        self._post("snapstatus", (to, failed))

    @property
    def leader(self) -> int:
        return self.node.raft.lead

    @property
    def is_leader(self) -> bool:
        return self.node.raft.role == Role.LEADER

    async def propose(self, data: bytes) -> Any:
        """Replicate `data`; return the state machine's result once it is applied here.
        Raises NotLeader, ProposalDropped, or OutcomeUnknown."""
        if not self.is_leader:
            raise NotLeader(self.leader)
        waiter = _Waiter(self.node.raft.term)
        self._post("prop", (data, waiter))
        if FAILPOINTS.bugs and FAILPOINTS.bug("raft.ack_before_fsync") and _is_kv_set(data):
            return True  # planted bug (fault-lab tests): acknowledged before it is durable anywhere
        await waiter.done.wait()
        if waiter.error is not None:
            raise waiter.error
        return waiter.result

    async def read_index(self, lease: bool = False) -> int:
        """A linearizable read point: returns once this node has applied at least that index.
        `lease=True` lets a leader holding a lease answer without a heartbeat round (when lease
        reads are on in its RaftConfig; the `default` read mode)."""
        self._read_seq += 1
        ctx = self._read_seq.to_bytes(8, "big")
        event = trio.Event()
        box: list[int] = []
        self.read_waiters[ctx] = (event, box)
        self._post("read", (ctx, lease))
        try:
            await event.wait()
        finally:
            self.read_waiters.pop(ctx, None)
        if not box or box[0] < 0:
            raise NotLeader(self.leader)
        while self.node.raft.log.applied < box[0]:
            event = self.applied_event
            await event.wait()
        return int(box[0])

    async def propose_conf_change(self, kind: ConfChangeType, node_id: int) -> int:
        """Add or remove one voter; returns the entry's index once it is committed and applied
        here. Raises NotLeader, ProposalDropped (a change is pending, a transfer under way),
        ValueError (already / not a voter) or OutcomeUnknown."""
        if not self.is_leader:
            raise NotLeader(self.leader)
        waiter = _Waiter(self.node.raft.term)
        self._post("conf", (kind, node_id, waiter))
        await waiter.done.wait()
        if waiter.error is not None:
            raise waiter.error
        return int(waiter.result)

    async def transfer_leader(self, target: int, timeout: float) -> None:
        """Hand leadership to voter `target` and wait until it leads (as this node sees it).
        Raises NotLeader (we do not lead), ValueError (not another voter), or trio.TooSlowError
        (the transfer did not complete in `timeout`; the core abandons it after an election
        timeout and this node goes on leading)."""
        if not self.is_leader:
            raise NotLeader(self.leader)
        box: list[BaseException | None] = []
        done = trio.Event()
        self._post("transfer", (target, box, done))
        await done.wait()
        if box and box[0] is not None:
            raise box[0]
        with trio.fail_after(timeout):
            while self.leader != target:
                event = self.leader_changed
                await event.wait()

    # ---- the loop -------------------------------------------------------------------------------
    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        if not getattr(self.storage, "inline", False):
            self.writer = StorageWriter(trio.lowlevel.current_trio_token(), self.storage)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._ticker)
                task_status.started()
                await self._loop()
        finally:
            if self.writer is not None:
                self.writer.stop()
                self.writer = None

    async def _ticker(self) -> None:
        while True:
            await trio.sleep(self.tick_interval)
            self._post("tick", None)

    def _ticks_due(self) -> int:
        """Ticks owed by the monotonic clock since the last count (at least one per "tick" post
        when counting by clock is off). After a long pause at most MAX_CATCH_UP are owed: enough
        for any lease and election timeout to run out, not a burst of heartbeats per second lost."""
        if not self.clock_ticks:
            return 1
        now = trio.current_time()
        if self._tick_origin is None:
            self._tick_origin = now
        due = int((now - self._tick_origin) / self.tick_interval) - self._ticks_done
        if due > MAX_CATCH_UP:
            self._ticks_done += due - MAX_CATCH_UP
            due = MAX_CATCH_UP
        self._ticks_done += max(0, due)
        return max(0, due)

    async def _loop(self) -> None:
        while True:
            await self.kick.wait()
            self.kick = trio.Event()
            inbox, self.inbox = self.inbox, []
            props = []
            for kind, item in inbox:
                if kind == "prop":
                    props.append(item)
                elif kind == "compact":
                    await self._compact(item)
                else:
                    self._handle(kind, item)
            if props:
                self._propose(props)
            while self.node.has_ready():
                await self._process(self.node.ready())

    def _handle(self, kind: str, item: Any) -> None:
        node = self.node
        if kind == "msg":
            if item.frm == node.raft.lead:
                self.last_contact = trio.current_time()
            if FAILPOINTS.bugs and FAILPOINTS.bug("raft.double_vote"):
                _plant_double_vote(node, item)
            node.step(item)
        elif kind == "tick":
            for _ in range(self._ticks_due()):
                node.tick()
        elif kind == "conf":
            cc_kind, cc_node, waiter = item
            try:
                index = node.propose_conf_change(cc_kind, cc_node)
            except ProposalDropped as exc:
                waiter.finish(error=NotLeader(node.raft.lead) if not self.is_leader else exc)
            except ValueError as exc:
                waiter.finish(error=exc)
            else:
                waiter.term = node.raft.term
                self.waiters[index] = waiter
        elif kind == "transfer":
            target, box, done = item
            try:
                node.transfer_leader(target)
                box.append(None)
            except ProposalDropped:
                box.append(NotLeader(node.raft.lead))
            except ValueError as exc:
                box.append(exc)
            done.set()
        elif kind == "snapstatus":
            node.report_snapshot(item[0], item[1])
        elif kind == "persisted":
            self._persisted(*item)
        elif kind == "read":
            ctx, lease = item
            if lease and self.clock_ticks:  # first the ticks a pause owes: the lease may be over
                for _ in range(self._ticks_due()):
                    node.tick()
            try:
                node.read_index(ctx, lease=lease)
            except ProposalDropped:
                waiter_r = self.read_waiters.get(ctx)
                if waiter_r is not None:
                    waiter_r[1].append(-1)
                    waiter_r[0].set()

    def _propose(self, props: list[tuple[bytes, _Waiter]]) -> None:
        """Everything proposed since the last round becomes one append: one AppendEntries per
        follower and one durable write for the lot."""
        node = self.node
        try:
            node.propose_many([data for data, _ in props])
        except ProposalDropped as exc:
            for _, waiter in props:
                waiter.finish(error=NotLeader(node.raft.lead) if not self.is_leader else exc)
            return
        self.stats["proposals"] += len(props)
        last = node.raft.log.last_index()
        now = trio.current_time()
        for offset, (_, waiter) in enumerate(props):
            waiter.term = node.raft.term
            waiter.start = now
            self.waiters[last - len(props) + 1 + offset] = waiter

    async def _process(self, rd: Ready) -> None:
        t0 = time.perf_counter()
        raft = self.node.raft
        leading = raft.role == Role.LEADER
        if rd.hard_state is not None:
            self.pending_hard = rd.hard_state
        if rd.snapshot is not None:
            # A leader's snapshot: durable before the log is reset and before we ack it.
            await self._run(self.snapshots, self._write_snapshot, rd.snapshot)
        job: _Save | None = None
        if rd.must_sync:
            FAILPOINTS.hit("raft-before-append")
            hard, self.pending_hard = self.pending_hard, None
            reset_to = rd.snapshot.meta.index if rd.snapshot is not None else 0
            job = self._start_save(hard, rd.entries, reset_to)
        for m in rd.messages:  # the leader replicates while it writes its own copy (thesis §10.2.1)
            if leading and m.type in EARLY_SEND:
                self.transport.send(m)
        # A leader does not wait for its own write (etcd's async storage writes): it goes on
        # stepping acks and proposals meanwhile, and the core counts its copy toward a commit only
        # once the write is reported durable (the "persisted" inbox item). A follower or candidate
        # waits: its ack or vote promises what it wrote. The storage writer runs saves in order,
        # so a follower's wait also covers any write it started while it led.
        durable = job is None or self.writer is None or not leading or rd.snapshot is not None
        t_saved = t0
        if job is not None and durable:
            await StorageWriter.wait(job)
            t_saved = time.perf_counter()
            self._saved(rd)
        elif durable and not leading and self._last_async is not None and not self._last_async.done.is_set():
            # A former leader's write still running: what we send now (an ack of entries we
            # already had, say) may rest on it. The writer runs saves in order: wait for it.
            await StorageWriter.wait(self._last_async)
        if not durable and job is not None:
            self._last_async = job
        if durable:
            for m in rd.messages:  # the rest only once the state they promise is durable
                if not (leading and m.type in EARLY_SEND):
                    self.transport.send(m)
        elif job is not None:
            late = [m for m in rd.messages if m.type not in EARLY_SEND]
            job.on_done = _Report(self, job, rd, late)
        if rd.snapshot is not None:
            self._install(rd.snapshot)
        if rd.committed_entries:
            FAILPOINTS.hit("raft-before-apply")
            for e in rd.committed_entries:
                self._apply(e)
            FAILPOINTS.hit("raft-after-apply")
        for rs in rd.read_states:
            w = self.read_waiters.get(rs.context)
            if w is not None:
                w[1].append(rs.index)
                w[0].set()
        was_leader = self.is_leader
        self.node.advance(rd, durable=durable)
        if rd.soft_state is not None:
            role = rd.soft_state.role.name.lower()
            if role in self.became:
                self.became[role] += 1
            if rd.soft_state.lead != self._lead:
                self._lead = rd.soft_state.lead
                self.leader_changes += 1
            # One line per role or leader change; the fault lab's Raft-invariant checker reads
            # them (tests/lab/checkers.py raft_invariants): keep the format.
            log.info("raft: %s, leader %s, term %d, commit %d, last %d", rd.soft_state.role.name.lower(),
                     rd.soft_state.lead or "unknown", self.node.raft.term, self.node.raft.log.committed,
                     self.node.raft.log.last_index())
            if self.on_voters is not None:
                self.on_voters(sorted(self.node.raft.voters))  # (the peers to reach may change with the leader)
            self.leader_changed.set()
            self.leader_changed = trio.Event()
            if not self.is_leader:
                self._fail_waiters(was_leader)
        voters = sorted(self.node.raft.voters)
        if voters != self._known_voters:
            log.info("raft: voters now %s", voters)
            self._known_voters = voters
            if self.on_voters is not None:
                self.on_voters(voters)
        if rd.committed_entries or rd.snapshot is not None:
            self.applied_event.set()
            self.applied_event = trio.Event()
            if self.on_apply is not None:
                self.on_apply()
        if self._trace is not None:
            t1 = time.perf_counter()
            kinds = ",".join(sorted({m.type.name for m in rd.messages})) or "-"
            # time, role, entries, committed, message kinds, synced, save in its thread, save awaited,
            # whole Ready, queue -> thread start, thread end -> trio resumed (ms)
            marks = (job.started - job.queued, job.finished - job.started, job.queued, t_saved - job.finished
                     ) if job is not None and durable and job.started else (0.0, 0.0, t0, 0.0)
            self._trace.add(f"{t0 * 1000:.3f}", "L" if leading else "F", len(rd.entries), len(rd.committed_entries),
                            kinds, int(rd.must_sync), f"{marks[1] * 1000:.3f}", f"{(t_saved - t0) * 1000:.3f}",
                            f"{(t1 - t0) * 1000:.3f}", f"{marks[0] * 1000:.3f}", f"{marks[3] * 1000:.3f}")
        log_ = self.node.raft.log
        if (self.snapshot_threshold and not self.snapshot_in_flight and self._nursery is not None
                and log_.applied - log_.snapshot.meta.index >= self.snapshot_threshold):
            snap = self._make_snapshot()
            if snap is not None:
                self.snapshot_in_flight = True
                self._nursery.start_soon(self._write_in_background, snap)

    def _saved(self, rd: Ready) -> None:
        self.stats["writes"] += 1
        self.stats["entries_written"] += len(rd.entries)
        FAILPOINTS.hit("raft-after-fsync")

    def _persisted(self, job: _Save, rd: Ready, late: list[Message]) -> None:
        """A leader's write (started without waiting) is durable: count our own copy (which may
        commit entries), then send what had to wait for it. A write error stops the driver."""
        if job.error is not None:
            raise job.error
        self._saved(rd)
        # (for the trace: were this write's entries committed already, on the followers' copies?)
        ahead = int(bool(rd.entries) and self.node.raft.log.committed >= rd.entries[-1].index)
        self.node.persisted(rd)
        for m in late:
            self.transport.send(m)
        if self._trace is not None:
            # P, entries, save in its thread, queued -> reported here (ms), committed before this
            self._trace.add("P", len(rd.entries), f"{(job.finished - job.started) * 1000:.3f}",
                            f"{(time.perf_counter() - job.queued) * 1000:.3f}", ahead)

    @staticmethod
    async def _run(owner: object, fn: Callable[..., Any], *args: Any) -> Any:
        """Storage work: in a worker thread (an fsync must not stall the event loop), or inline
        for in-memory storage."""
        if getattr(owner, "inline", False):
            return fn(*args)
        return await trio.to_thread.run_sync(fn, *args)

    def _start_save(self, hard: HardState | None, entries: list[Entry], reset_to: int) -> _Save:
        """Hand a save to the storage writer (or do it here, for in-memory storage)."""
        if self.writer is None:
            job = _Save()
            self.storage.save(hard, entries, reset_to)
            job.done.set()
            return job
        return self.writer.submit(self.storage.save, hard, entries, reset_to)

    def _write_snapshot(self, snap: Snapshot) -> None:
        if self.snapshots is None:
            raise RuntimeError("a snapshot arrived, but this driver has nowhere to keep it")
        self.snapshots.write(snap)

    def _install(self, snap: Snapshot) -> None:
        """Restore the state machine from a leader's snapshot (already durable)."""
        self.fsm.restore(snap.data)
        self.stats["snapshots_installed"] += 1
        log.info("raft: installed a snapshot from the leader at index %d, term %d", snap.meta.index,
                 snap.meta.term)
        for index in [i for i in self.waiters if i <= snap.meta.index]:
            self.waiters.pop(index).finish(error=OutcomeUnknown(
                "the log was replaced by the leader's snapshot; the write may or may not be applied"))

    def _make_snapshot(self) -> Snapshot | None:
        """The state machine's state at the applied index (None: nothing new since the last)."""
        raft = self.node.raft
        index = raft.log.applied
        term = raft.log.term(index)
        if self.snapshots is None or index <= raft.log.snapshot.meta.index or term is None:
            return None
        if index > raft.log.stabled:
            return None  # a leader applied entries its own write has not made durable yet: later
        return Snapshot(SnapshotMeta(index, term, tuple(sorted(raft.voters_at(index)))), self.fsm.snapshot())

    async def _write_in_background(self, snap: Snapshot) -> None:
        """A write error propagates and stops the driver (and the agent): never retried silently."""
        await self._run(self.snapshots, self._write_snapshot, snap)
        self._post("compact", snap)

    async def _compact(self, snap: Snapshot) -> None:
        """Our own snapshot is durable: drop what it covers from storage, then from the core. A
        leader's newer snapshot may have replaced the log meanwhile; then there is nothing to drop."""
        index = snap.meta.index
        self.node.compact(index, snap.data, self.trailing_logs)
        await self._run(self.storage, self.storage.compact, self.node.raft.log.offset)
        self.snapshot_in_flight = False
        self.stats["snapshots_taken"] += 1
        log.info("raft: snapshot at index %d (%d bytes); log compacted", index, len(snap.data))

    async def take_snapshot(self) -> int:
        """Snapshot now and wait until it is durable and the log compacted (tests, operators).
        Returns the snapshot's index (0: nothing new to snapshot, or one is being written)."""
        if self.snapshot_in_flight:
            return 0
        snap = self._make_snapshot()
        if snap is None:
            return 0
        self.snapshot_in_flight = True
        try:
            await self._run(self.snapshots, self._write_snapshot, snap)
        except BaseException:
            self.snapshot_in_flight = False
            raise
        await self._compact(snap)
        return snap.meta.index

    def _apply(self, e: Entry) -> None:
        result: Any = None
        if e.type == EntryType.NORMAL:
            if self.metrics is None:
                result = self.fsm.apply(e.index, e.data)
            else:
                t0 = time.perf_counter()
                result = self.fsm.apply(e.index, e.data)
                self.metrics.observe_ms("consul.raft.fsm.apply", (time.perf_counter() - t0) * 1000.0)
        elif e.type == EntryType.CONF_CHANGE:
            result = e.index
        self.stats["applied"] += 1
        waiter = self.waiters.pop(e.index, None)
        if waiter is not None and self._trace is not None:
            self._trace.add("W", e.index, f"{(time.perf_counter() - waiter.posted) * 1000:.3f}")
        if waiter is not None:
            if self.metrics is not None and waiter.start:
                self.metrics.observe_ms("consul.raft.commitTime", (trio.current_time() - waiter.start) * 1000.0)
            if waiter.term == e.term:
                waiter.finish(result)
            else:  # another leader's entry took the slot: ours is gone for good
                waiter.finish(error=ProposalDropped("the proposal was overwritten by a new leader"))

    def _fail_waiters(self, _was_leader: bool) -> None:
        committed = self.node.raft.log.committed
        for index in [i for i in self.waiters if i > committed]:
            self.waiters.pop(index).finish(error=OutcomeUnknown(
                "leadership lost before the write committed; it may or may not be applied"))
        for event, box in self.read_waiters.values():
            box.append(-1)
            event.set()


def _is_kv_set(data: bytes) -> bool:
    """A plain KV SET command (what the planted raft.ack_before_fsync bug acknowledges early)."""
    from murmur.catalog import commands

    try:
        cmd = commands.decode(data)
    except commands.CommandError:
        return False
    return isinstance(cmd, commands.KV) and cmd.op == commands.KVOp.SET
