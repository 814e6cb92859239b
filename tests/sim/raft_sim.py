"""A deterministic Raft cluster simulator: the real RawNode, a seeded hostile network, crashes.

Discrete events in virtual milliseconds: each node ticks on its own (slightly skewed) clock;
messages take a random latency, so they arrive out of order, and may be lost or duplicated;
a nemesis partitions the network (splits, isolation, one-way cuts, bridges), crashes nodes
and restarts them from what their disk holds. Every Ready is persisted to the node's Disk
before its messages go out and its committed entries are applied, as a driver must.

Most seeds also compact: a node whose applied index runs `snapshot_threshold` (drawn per seed,
5 to 50 entries) past its last snapshot snapshots its state machine, durably, and its log drops
the entries covered but the last few (0, 3 or 10, drawn per seed: trailing logs). A follower that falls behind a leader's first index gets the snapshot (a
SNAP message, lost, duplicated and delayed like any other; the sender hears whether it arrived,
as a real transport reports) and restores its state machine from it. A restart begins from the
disk's snapshot.

Clients run a key-value workload (put/get/cas on a few keys). A put or cas is proposed on the
node a client believes leads; it is acknowledged when that same node (same incarnation) applies
it. A get asks any node for a ReadIndex and is answered from that node's state once it has
applied the index. Every operation is recorded with its call and return times for the
linearizability checker; ones without an answer are "unknown".

Checked while it runs (InvariantChecker): at most one leader per term; log matching (an
(index, term) pair always names the same log prefix); leader append-only; leader completeness
(a new leader of term T holds every entry committed in a term before T); state machine safety
(no two nodes apply different entries at one index, each node applies 1, 2, 3, ... or jumps
forward by restoring a snapshot, whose state must be the one applying the committed entries up
to its index gives, checked by a hash chain over the applied entries).
Checked at the end, after healing everything and letting the cluster converge: every
acknowledged write is in every node's applied stream (AckChecker), the cluster converged at all
(liveness), and the client history is linearizable (support.lincheck).

A failing run raises SimFailure naming its seed; `python tests/sim/raft_sim.py SEED [NODES]`
replays it and prints the fault timeline.
"""

from __future__ import annotations

import bisect
import heapq
import random
import sys
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from murmur.raft.config import RaftConfig
from murmur.raft.core import Raft
from murmur.raft.messages import (
    EARLY_SEND,
    ConfChangeType,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    ReadState,
    Ready,
    Role,
    Snapshot,
)
from murmur.raft.rawnode import ProposalDropped, RawNode

try:
    from support.lincheck import CAS, GET, PUT, Op, check_kv
except ImportError:  # run as a script from the repository root
    sys.path.insert(0, "tests")
    from support.lincheck import CAS, GET, PUT, Op, check_kv


class SimFailure(AssertionError):
    pass


class _UnsafeConfig(RaftConfig):
    """The planted lease bug: a lease as long as the election timeout or longer, which
    RaftConfig.validate refuses."""

    def validate(self) -> None:
        pass


# ---- disks ---------------------------------------------------------------------------------------
class Disk:
    """Stable storage that is honest: what persist() was given survives a crash."""

    def __init__(self) -> None:
        self.hard = HardState()
        self.entries: list[Entry] = []  # from base + 1
        self.base = 0
        self.snapshot: Snapshot | None = None

    def offset(self) -> int:
        return self.base

    def log_after_snapshot(self) -> list[Entry]:
        """What a restart reads: the entries after the snapshot (a loader drops the ones it covers)."""
        s = self.snapshot.meta.index if self.snapshot else 0
        return [e for e in self.entries if e.index > s]

    def persist(self, hard: HardState | None, entries: list[Entry], snapshot: Snapshot | None = None) -> None:
        self._write(hard, entries, snapshot)

    def compact(self, snapshot: Snapshot, upto: int) -> None:
        """The node's own snapshot is durable: the entries up to `upto` go."""
        del self.entries[:max(0, upto - self.base)]
        self.base = max(self.base, upto)
        self.snapshot = snapshot

    def _write(self, hard: HardState | None, entries: list[Entry], snapshot: Snapshot | None = None) -> None:
        if snapshot is not None:  # a leader's snapshot replaces the log
            self.snapshot = snapshot
            self.entries = []
            self.base = snapshot.meta.index
        if hard is not None:
            self.hard = hard
        if entries:
            del self.entries[entries[0].index - 1 - self.offset():]
            self.entries.extend(entries)

    def crash(self) -> None:
        """Power loss: anything not durable is gone."""


class LyingDisk(Disk):
    """A planted bug: acknowledges writes it only buffers (no fsync), as a page cache would,
    writing them out every `every`-th call. A crash loses the buffer: votes and acknowledged
    entries vanish."""

    def __init__(self, every: int = 64) -> None:
        super().__init__()
        self.every = every
        self.buffer: list[tuple[HardState | None, list[Entry], Snapshot | None]] = []

    def persist(self, hard: HardState | None, entries: list[Entry], snapshot: Snapshot | None = None) -> None:
        self.buffer.append((hard, list(entries), snapshot))
        if len(self.buffer) >= self.every:
            self._flush()

    def _flush(self) -> None:
        for h, es, snap in self.buffer:
            self._write(h, es, snap)
        self.buffer.clear()

    def compact(self, snapshot: Snapshot, upto: int) -> None:
        self._flush()  # the snapshot file is written for real (it alone is fsynced)
        super().compact(snapshot, upto)

    def crash(self) -> None:
        self.buffer.clear()


# ---- invariants ------------------------------------------------------------------------------------
def _link(prev: int, e: Entry) -> int:
    return hash((prev, e.term, int(e.type), e.data))


class InvariantChecker:
    """Raft's safety properties (Figure 3 of the paper), checked event by event.

    Each node's log is mirrored as prefix hashes (hash of everything up to an index), so log
    matching and leader completeness are O(1) per entry: an (index, term) must always map to
    the same prefix hash, and a new leader's prefix hash at the last index committed in an
    earlier term must be the committed one."""

    def __init__(self) -> None:
        self.violations: list[str] = []
        self.leaders: dict[int, int] = {}  # term -> node
        self.prefix_of: dict[tuple[int, int], int] = {}  # (index, term) -> prefix hash
        self.mirror: dict[int, list[int]] = {}  # node -> prefix hash per index (position index-1)
        self.mirror_terms: dict[int, list[int]] = {}
        self.committed_hash: list[int] = []  # per index: prefix hash of the committed entry
        self.commit_term: list[int] = []  # per index: the leader term that committed it
        self.applied: dict[int, tuple[int, int, bytes]] = {}  # index -> (term, type, data)
        self.next_apply: dict[int, int] = {}
        # Hash chain over applied entries: per node the chain so far, globally the chain at each
        # index (the state machine's state there, as far as the order of applies decides it).
        self.chain: dict[int, int] = {}
        self.chain_at: dict[int, int] = {}
        self.snapshots = 0
        self.lead_term: dict[int, int] = {}  # node -> term it was last seen leading

    def fail(self, what: str) -> None:
        if len(self.violations) < 20 and what not in self.violations:
            self.violations.append(what)

    # -- log mirror --
    def restart(self, node: int, entries: list[Entry], snapshot: tuple[int, int] | None = None) -> None:
        """`node` starts from its disk: a snapshot (index, apply chain) and the entries after it."""
        self.mirror[node], self.mirror_terms[node] = [], []
        self.next_apply[node] = 1
        self.chain[node] = 0
        self.lead_term.pop(node, None)
        if snapshot is not None:
            self.restored(node, *snapshot)
        self.persisted(node, entries)

    def restored(self, node: int, index: int, chain: int) -> None:
        """`node` replaced its log and state machine by a snapshot through `index`. A snapshot
        holds committed state only: its log prefix is the committed one, and its state must be
        what applying the committed entries up to `index` gives."""
        self.snapshots += 1
        if index > len(self.committed_hash):
            self.fail(f"node {node} has a snapshot at {index}, beyond anything committed "
                      f"({len(self.committed_hash)})")
            return
        if index < self.next_apply[node] - 1:
            self.fail(f"node {node} restored a snapshot at {index} after applying {self.next_apply[node] - 1}")
        known = self.chain_at.setdefault(index, chain)
        if known != chain:
            self.fail(f"state machine safety: node {node}'s snapshot at {index} differs from the applied state")
        self.mirror[node] = self.committed_hash[:index]
        self.mirror_terms[node] = [0] * index
        self.next_apply[node] = index + 1
        self.chain[node] = chain

    def persisted(self, node: int, entries: list[Entry], leading: int | None = None) -> None:
        """`node` made `entries` durable; `leading` is its term if it leads now."""
        if not entries:
            return
        hashes, terms = self.mirror[node], self.mirror_terms[node]
        first = entries[0].index
        if first > len(hashes) + 1:
            self.fail(f"node {node} persisted {first} after {len(hashes)}: a gap")
            return
        if leading is not None and first <= len(hashes):
            self.fail(f"leader append-only: node {node}, leader of term {leading}, overwrote from index {first}")
        del hashes[first - 1:], terms[first - 1:]
        prev = hashes[-1] if hashes else 0
        for e in entries:
            prev = _link(prev, e)
            hashes.append(prev)
            terms.append(e.term)
            known = self.prefix_of.setdefault((e.index, e.term), prev)
            if known != prev:
                self.fail(f"log matching: node {node} has {e.index}@{e.term} with a different prefix")

    # -- roles and commits --
    def observe(self, node: int, r: Raft) -> None:
        if r.role != Role.LEADER:
            self.lead_term.pop(node, None)
            return
        leader = self.leaders.setdefault(r.term, node)
        if leader != node:
            self.fail(f"election safety: nodes {leader} and {node} both lead term {r.term}")
        if self.lead_term.get(node) != r.term:  # newly elected: leader completeness
            self.lead_term[node] = r.term
            # k: the last index committed in a term before this one (a stale leader can commit
            # after a newer one did, so commit terms need not rise with the index).
            k = next((i + 1 for i in range(len(self.commit_term) - 1, -1, -1)
                      if self.commit_term[i] < r.term), 0)
            hashes = self.mirror[node]
            if k and (len(hashes) < k or hashes[k - 1] != self.committed_hash[k - 1]):
                self.fail(f"leader completeness: node {node} leads term {r.term} without the entries "
                          f"committed up to index {k}")
        committed = r.log.committed
        hashes = self.mirror[node]
        if committed > len(hashes) and len(hashes) < r.log.offset:
            self.fail(f"node {node} compacted its log through {r.log.offset}, but its disk holds "
                      f"only {len(hashes)} entries")
            return
        if committed > len(hashes):
            # A leader whose own write is still running (async writes) commits entries its disk
            # does not hold yet: take them from its log in memory.
            hashes = list(hashes)
            for e in r.log.slice(len(hashes) + 1, committed + 1):
                hashes.append(_link(hashes[-1] if hashes else 0, e))
        for index in range(len(self.committed_hash) + 1, committed + 1):
            self.committed_hash.append(hashes[index - 1])
            self.commit_term.append(r.term)
        if committed and committed <= len(self.committed_hash) and hashes[committed - 1] != \
                self.committed_hash[committed - 1]:
            self.fail(f"node {node} leads term {r.term} with a different entry committed at {committed}")

    # -- the state machine --
    def apply(self, node: int, e: Entry) -> None:
        want = self.next_apply[node]
        if e.index != want:
            self.fail(f"node {node} applied index {e.index}, expected {want}")
        self.next_apply[node] = e.index + 1
        self.chain[node] = hash((self.chain[node], e.index, e.term, int(e.type), e.data))
        if self.chain_at.setdefault(e.index, self.chain[node]) != self.chain[node]:
            self.fail(f"state machine safety: node {node}'s state after {e.index} differs from another's")
        seen = self.applied.setdefault(e.index, (e.term, int(e.type), e.data))
        if seen != (e.term, int(e.type), e.data):
            self.fail(f"state machine safety: node {node} applied {e.index}@{e.term} {e.data!r}, "
                      f"another node applied {e.index}@{seen[0]} {seen[2]!r}")


class AckChecker:
    """No acknowledged write is lost: after healing, each one is in every node's applied stream,
    exactly once."""

    def __init__(self) -> None:
        self.acked: list[str] = []

    def ack(self, op_id: str) -> None:
        self.acked.append(op_id)

    def check(self, streams: dict[int, list[str]]) -> list[str]:
        problems = []
        for node, ids in sorted(streams.items()):
            counts: dict[str, int] = {}
            for i in ids:
                counts[i] = counts.get(i, 0) + 1
            lost = [a for a in self.acked if counts.get(a, 0) == 0]
            twice = [a for a in self.acked if counts.get(a, 0) > 1]
            if lost:
                problems.append(f"lost acknowledged writes on node {node}: {lost[:5]} ({len(lost)} of "
                                f"{len(self.acked)})")
            if twice:
                problems.append(f"acknowledged writes applied twice on node {node}: {twice[:5]}")
        return problems


# ---- the simulation --------------------------------------------------------------------------------
@dataclass
class SimParams:
    nodes: int = 3
    duration: float = 6_000.0  # ms of faults and client traffic, then heal and converge
    settle: float = 6_000.0  # ms allowed to converge after healing
    tick: float = 10.0  # ms per Raft tick (election 10 ticks, heartbeat 1-2 ticks)
    clients: int = 4
    keys: int = 3
    op_timeout: float = 600.0
    faults: bool = True
    disk: Callable[[], Disk] = Disk
    stale_reads: bool = False  # planted bug: serve gets from local state, without ReadIndex
    drop_apply_every: int = 0  # planted bug: node 1's driver skips every n-th committed entry
    check_invariants: bool = True  # False: leave a planted bug to the end-of-run checkers
    transfers: bool = False  # the nemesis also asks the leader to hand leadership to another node
    # Compact after this many applied entries; -1: drawn per seed (a quarter of the seeds never
    # compact), 0: never.
    snapshot_threshold: int = -1
    trailing_logs: int = -1  # entries kept behind a snapshot; -1: drawn per seed
    skip_restore: bool = False  # planted bug: a leader's snapshot replaces the log, not the state machine
    # A scripted nemesis instead of the random one: "isolate-leader" cuts the current leader off
    # from everyone, "pause-leader" stops it (SIGSTOP: no ticks, messages queue up, then all of
    # them at once and one tick on resume), for longer than an election timeout, again and again.
    # Clients send half their reads to the node under fault, so stale answers would show.
    scenario: str = ""
    # Membership changes in the fault mix: `spares` more servers exist, outside the cluster at
    # first; the nemesis asks the leader to add one (it starts empty, or from its old disk if it
    # was in before; half join as learners, promoted by a later "add") or to remove a voter (the
    # leader too) or a learner. A server whose removal is committed
    # shuts down, as a Consul server that leaves does. The end-of-run checks take the final
    # configuration's voters as the cluster.
    membership: bool = False
    # Lease reads (RaftConfig.lease_tick; 0: off). check_quorum is then on in every seed. A lease
    # of election_tick or more is the planted bug (the config refuses it; the simulation lets it
    # through). `drift`: each node's clock runs at 1 +- drift of the nominal tick.
    lease_tick: int = 0
    drift: float = 0.05
    # Planted bugs for lease reads: `lease_without_check_quorum` leaves check_quorum off (the
    # followers then vote regardless of the leader's lease, and it never steps down);
    # `frozen_lease_clock` is a driver that, like a plain sleep loop, delivers one tick after a
    # pause, so the lease has not run out when the stopped leader reads its socket buffers.
    # Without it, a resumed node first catches up the ticks it missed (a monotonic clock).
    lease_without_check_quorum: bool = False
    frozen_lease_clock: bool = False
    spares: int = 2
    spare_bootstraps_alone: bool = False  # planted bug: a joining server bootstraps itself (twice)
    # Asynchronous storage writes, as the agent's driver does them: a leader sends its
    # AppendEntries at once and goes on while its own write takes a random time (now and then a
    # long one: a slow disk), in order; it counts its own copy toward commits only once the write
    # is done (RawNode.persisted). A crash loses the writes still running. A follower or
    # candidate waits for its writes, as before.
    async_writes: bool = False
    # Planted bug for async writes: the leader reports its write durable as soon as it starts it.
    early_self_ack: bool = False


@dataclass
class Client:
    id: int
    guess: int
    seq: int = 0
    busy: bool = False


@dataclass
class Pending:
    op_id: str
    client: int
    node: int
    incarnation: int
    kind: str
    key: str
    value: Any
    call: float
    done: bool = False


@dataclass
class SimNode:
    id: int
    disk: Disk
    raw: RawNode | None = None
    incarnation: int = 0
    kv: dict[str, str] = field(default_factory=dict)
    applied_ids: list[str] = field(default_factory=list)
    waiting_reads: list[tuple[int, str]] = field(default_factory=list)  # (index, op_id)
    skew: float = 1.0
    applies: int = 0
    applied_index: int = 0  # what the driver has handed to the state machine
    chain: int = 0  # hash chain over what the state machine applied (InvariantChecker's, mirrored)
    paused: bool = False  # SIGSTOPped: whatever reaches it waits in `backlog` until it resumes
    paused_at: float = 0.0
    backlog: list[tuple[Callable[..., None], tuple[Any, ...]]] = field(default_factory=list)
    # A leader's writes still running (async_writes), in order: (write id, Ready, term it led,
    # messages that wait for the write); `write_free` is when the disk is done with the last.
    writes: list[tuple[int, Ready, int, list[Message]]] = field(default_factory=list)
    write_free: float = 0.0


class Simulation:
    def __init__(self, seed: int, params: SimParams | None = None) -> None:
        self.seed = seed
        self.p = p = params or SimParams()
        self.rng = random.Random(seed)
        rng = self.rng
        self.now = 0.0
        self.queue: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self.seq = 0
        self.ids = list(range(1, p.nodes + 1 + (p.spares if p.membership else 0)))
        # Who each server was bootstrapped with: the first `nodes` know each other; a spare knows
        # nobody and waits for a leader to send it the log (the configuration comes with it).
        self.bootstrap = {i: tuple(range(1, p.nodes + 1)) if i <= p.nodes else
                          (i,) if p.spare_bootstraps_alone else () for i in self.ids}
        self.servers = set(range(1, p.nodes + 1))  # started, and not shut down after a removal
        self.joining: set[int] = set()  # started, waiting for the leader to add them
        # The network, drawn per seed.
        self.loss = rng.choice([0.0, 0.01, 0.05, 0.15]) if p.faults else 0.0
        self.dup = rng.choice([0.0, 0.02, 0.1]) if p.faults else 0.0
        self.max_latency = rng.choice([2.0, 8.0, 25.0])
        # Half the seeds keep each link in order (as a TCP stream does; duplicates aside), half
        # let every message overtake any other.
        self.fifo = rng.random() < 0.5
        self.link_clock: dict[tuple[int, int], float] = {}
        self.cut: set[tuple[int, int]] = set()  # (from, to) pairs that drop messages
        self.raft_cfg = dict(election_tick=10, heartbeat_tick=rng.choice([1, 2]),
                             pre_vote=rng.random() < 0.75, check_quorum=rng.random() < 0.75,
                             max_inflight_msgs=rng.choice([1, 4, 256]),
                             max_size_per_msg=rng.choice([64, 1 << 20]))
        self.nodes = {i: SimNode(i, p.disk(), skew=1 + rng.uniform(-p.drift, p.drift)) for i in self.ids}
        if p.lease_tick:
            self.raft_cfg.update(lease_tick=p.lease_tick, check_quorum=not p.lease_without_check_quorum)
        # Lease measurements per isolation of the leader: how long after the cut it still answered
        # reads (it can only be on its lease), and how long until another node led.
        self.fault_start = 0.0
        self.episode: dict[str, float] = {}
        self.lease_windows: list[float] = []  # ms from the cut to the isolated leader's last answer
        self.takeovers: list[float] = []  # ms from the cut to a new leader
        self.margins: list[float] = []  # per episode with both: takeover - window
        # Drawn from its own stream, so seeds keep their network and Raft settings.
        snap_rng = random.Random(f"snap{seed}")
        self.snapshot_threshold = p.snapshot_threshold if p.snapshot_threshold >= 0 else \
            snap_rng.choice([0, 5, 20, 50])
        # Entries kept behind each snapshot (Consul's trailing logs), drawn per seed.
        self.trailing = p.trailing_logs if p.trailing_logs >= 0 else snap_rng.choice([0, 0, 3, 10])
        # Snapshot contents by key (a snapshot's data is its key): kv, applied op ids, apply chain.
        self.snap_store: dict[bytes, tuple[dict[str, str], list[str], int]] = {}
        self.inv = InvariantChecker()
        self.acks = AckChecker()
        self.clients = [Client(c, rng.choice(self.ids)) for c in range(p.clients)]
        self.pending: dict[str, Pending] = {}
        self.history: list[Op] = []
        self.timeline: deque[str] = deque(maxlen=60)
        self.stats = {"msgs": 0, "acked": 0, "unknown": 0, "reads": 0, "crashes": 0, "elections": 0,
                      "compactions": 0, "snapshots_sent": 0, "snapshots_restored": 0,
                      "faulted_leaders": 0, "reads_at_victim": 0, "reads_served_by_victim": 0,
                      "conf_changes": 0, "retired": 0, "learners_added": 0, "promotions": 0}
        self.accepting = True
        for i in sorted(self.servers):
            self._start(i)
        for c in self.clients:
            self._at(rng.uniform(0, 50), self._client_next, c)
        self.victim = 0  # the node under the scripted fault now (0: none)
        if p.scenario:
            if p.scenario not in ("isolate-leader", "pause-leader"):
                raise ValueError(f"unknown scenario {p.scenario!r}")
            self._at(rng.uniform(200, 800), self._scripted)
        elif p.faults:
            self._at(rng.uniform(200, 800), self._nemesis)

    # -- plumbing --
    def _at(self, delay: float, fn: Callable[..., None], *args: Any) -> None:
        self.seq += 1
        heapq.heappush(self.queue, (self.now + delay, self.seq, fn, args))

    def note(self, what: str) -> None:
        self.timeline.append(f"{self.now:9.1f} ms  {what}")

    def run_until(self, t: float) -> None:
        while self.queue and self.queue[0][0] <= t:
            when, _, fn, args = heapq.heappop(self.queue)
            self.now = when
            fn(*args)
        self.now = t

    # -- nodes --
    def _start(self, i: int) -> None:
        n = self.nodes[i]
        n.incarnation += 1
        unsafe = self.p.lease_tick >= 10 or self.p.lease_without_check_quorum
        cfg = (_UnsafeConfig if unsafe else RaftConfig)(id=i, **self.raft_cfg)  # type: ignore[arg-type]
        n.raw = RawNode(cfg, self.bootstrap[i], random.Random(self.rng.random()), n.disk.hard, n.disk.log_after_snapshot(),
                        snapshot=n.disk.snapshot)
        n.kv, n.applied_ids, n.waiting_reads, n.applies, n.applied_index, n.chain = {}, [], [], 0, 0, 0
        snap = n.disk.snapshot
        if snap is not None:
            self._restore(n, snap)
        self.inv.restart(i, n.disk.log_after_snapshot(), (snap.meta.index, n.chain) if snap else None)
        self._at(self.p.tick * n.skew * self.rng.random(), self._tick, i, n.incarnation)

    def pause(self, i: int) -> None:
        self.nodes[i].paused = True
        self.nodes[i].paused_at = self.now
        self.note(f"pause {i}")

    def resume(self, i: int) -> None:
        n = self.nodes[i]
        if not n.paused:
            return
        n.paused = False
        self.note(f"resume {i}")
        if self.p.lease_tick and not self.p.frozen_lease_clock and n.raw is not None:
            # The driver's clock is monotonic: the ticks missed while stopped happen first.
            missed = int((self.now - n.paused_at) / (self.p.tick * n.skew))
            for _ in range(missed):
                n.raw.tick()
            self._process(n)
        backlog, n.backlog = n.backlog, []
        # Each connection's buffer is read in order, but the process picks among its sockets in
        # no set order: a random merge of the sources (each peer, the clients), the timer last.
        queues: dict[object, deque[tuple[Callable[..., None], tuple[Any, ...]]]] = {}
        for fn, args in backlog:
            if fn != self._tick:
                source = args[0].frm if fn in (self._deliver, self._snap_status) else "client"
                queues.setdefault(source, deque()).append((fn, args))
        while queues:
            source = self.rng.choice(list(queues))
            fn, args = queues[source].popleft()
            if not queues[source]:
                del queues[source]
            fn(*args)
        for fn, args in backlog:
            if fn == self._tick:
                fn(*args)

    def crash(self, i: int) -> None:
        n = self.nodes[i]
        n.paused, n.backlog = False, []
        if n.raw is None:
            return
        n.raw = None
        n.writes = []  # still running: never reached the disk
        n.disk.crash()
        self.stats["crashes"] += 1
        self.note(f"crash {i}")

    def restart(self, i: int) -> None:
        if self.nodes[i].raw is None and i in self.servers:
            self._start(i)
            self.note(f"restart {i}")

    def _tick(self, i: int, incarnation: int) -> None:
        n = self.nodes[i]
        if n.raw is None or n.incarnation != incarnation:
            return
        if n.paused:  # a stopped process's timer fires once when it resumes (as trio.sleep does)
            if not any(fn == self._tick for fn, _ in n.backlog):
                n.backlog.append((self._tick, (i, incarnation)))
            return
        n.raw.tick()
        self._process(n)
        self._at(self.p.tick * n.skew, self._tick, i, incarnation)

    def _write_later(self, n: SimNode, rd: Ready) -> None:
        """A leader's write, started: its AppendEntries go now, the rest once it is done."""
        raw = n.raw
        assert raw is not None
        self.seq += 1
        wid = self.seq
        n.writes.append((wid, rd, raw.raft.term, [m for m in rd.messages if m.type not in EARLY_SEND]))
        for m in rd.messages:
            if m.type in EARLY_SEND:
                self._send(m)
        delay = 0.0
        if rd.must_sync:
            delay = self.rng.uniform(0.1, 4.0) if self.rng.random() < 0.9 else self.rng.uniform(20, 150)
        n.write_free = max(n.write_free, self.now) + delay
        self._at(n.write_free - self.now, self._write_done, n.id, n.incarnation, wid)
        if self.p.early_self_ack:
            raw.persisted(rd)  # the planted bug: counts its copy before it is on disk

    def _write_done(self, i: int, incarnation: int, wid: int) -> None:
        n = self.nodes[i]
        if n.raw is None or n.incarnation != incarnation:
            return
        if n.paused:  # the write is done, but the stopped process hears of it when it resumes
            n.backlog.append((self._write_done, (i, incarnation, wid)))
            return
        self._finish_writes(n, wid)
        self._process(n)

    def _finish_writes(self, n: SimNode, upto: int | None = None) -> None:
        """The node's running writes up to `upto` (all: None) are durable: report them, in order."""
        raw = n.raw
        assert raw is not None
        while n.writes and (upto is None or n.writes[0][0] <= upto):
            _, rd, term, late = n.writes.pop(0)
            n.disk.persist(rd.hard_state, rd.entries, rd.snapshot)
            self.inv.persisted(n.id, rd.entries, term)
            if not self.p.early_self_ack:
                raw.persisted(rd)
            for m in late:
                self._send(m)

    def _process(self, n: SimNode) -> None:
        raw = n.raw
        assert raw is not None
        while raw.has_ready():
            if n.writes and raw.raft.role != Role.LEADER:
                self._finish_writes(n)  # one storage queue: a follower's write waits for the leader's
            rd = raw.ready()
            # (A Ready with nothing to sync queues behind running writes too: its hard state's
            # commit index must not reach the disk before the entries it covers.)
            if (self.p.async_writes and raw.raft.role == Role.LEADER and (rd.must_sync or n.writes)
                    and rd.snapshot is None):
                self._write_later(n, rd)
                self.stats["async_writes"] = self.stats.get("async_writes", 0) + 1
                self._after_write(n, rd, durable=False)
                continue
            n.disk.persist(rd.hard_state, rd.entries, rd.snapshot)  # durable (or so it says) before sending
            if rd.snapshot is not None:
                if self.p.skip_restore:
                    n.applied_index = rd.snapshot.meta.index
                else:
                    self._restore(n, rd.snapshot)
                self.inv.restored(n.id, rd.snapshot.meta.index, n.chain)
                self.stats["snapshots_restored"] += 1
                self.note(f"{n.id} restores a snapshot at {rd.snapshot.meta.index}")
            self.inv.persisted(n.id, rd.entries, raw.raft.term if raw.raft.role == Role.LEADER else None)
            for m in rd.messages:
                self._send(m)
            self._after_write(n, rd, durable=True)
        self.inv.observe(n.id, raw.raft)
        if raw.is_leader and raw.raft.log.committed > raw.raft.log.stabled:  # the followers' copies did it
            self.stats["commits_ahead_of_leader_disk"] = self.stats.get("commits_ahead_of_leader_disk", 0) + 1
        if raw.is_leader and self.p.membership:
            self._retire_removed(raw)
            if n.raw is None:
                return  # the leader removed itself and shut down
        log = raw.raft.log
        if (self.snapshot_threshold and log.applied - log.snapshot.meta.index >= self.snapshot_threshold
                and log.applied <= log.stabled):  # (a leader's own write may still be running)
            self._compact(n, log.applied)

    def _after_write(self, n: SimNode, rd: Ready, durable: bool) -> None:
        """Apply, serve reads, note a new leader, advance: whether or not the write is done."""
        raw = n.raw
        assert raw is not None
        if True:  # (kept indented as it was inside _process)
            for e in rd.committed_entries:
                self._apply(n, e)
            for rs in rd.read_states:
                self._read_state(n, rs)
            if rd.soft_state is not None and rd.soft_state.role == Role.LEADER:
                if self.victim and n.id != self.victim and "takeover" not in self.episode:
                    self.episode["takeover"] = self.now - self.fault_start
                self.stats["elections"] += 1
                self.note(f"{n.id} leads term {raw.raft.term}")
            raw.advance(rd, durable=durable)

    def _compact(self, n: SimNode, index: int) -> None:
        """The application snapshots its state through `index` (all it applied), the disk keeps
        it, and only then does the log let go of the entries."""
        raw = n.raw
        assert raw is not None and index == n.applied_index
        key = f"{n.id}.{n.incarnation}.{index}".encode()
        self.snap_store[key] = (dict(n.kv), list(n.applied_ids), n.chain)
        term = raw.raft.log.term(index)
        assert term is not None
        raw.compact(index, key, self.trailing)
        assert raw.raft.log.snapshot.data == key
        n.disk.compact(raw.raft.log.snapshot, raw.raft.log.offset)
        self.stats["compactions"] += 1

    def _restore(self, n: SimNode, snap: Snapshot) -> None:
        kv, ids, chain = self.snap_store[snap.data]
        n.kv, n.applied_ids, n.chain = dict(kv), list(ids), chain
        n.applied_index = snap.meta.index
        self._serve_reads(n)

    # -- network --
    def _send(self, m: Message) -> None:
        copies = 1 + (self.rng.random() < self.dup)
        report = m.type == MessageType.SNAP  # the sender hears how a snapshot transfer went
        if report:
            self.stats["snapshots_sent"] += 1
        for copy in range(copies):
            if (m.frm, m.to) in self.cut or self.rng.random() < self.loss:
                if report and copy == copies - 1:
                    self._at(self.rng.uniform(0.2, self.max_latency), self._snap_status, m,
                             self.nodes[m.frm].incarnation, True)
                continue
            delay = self.rng.uniform(0.2, self.max_latency)
            if self.fifo and copy == 0:
                link = (m.frm, m.to)
                delay = max(delay, self.link_clock.get(link, 0.0) - self.now)
                self.link_clock[link] = self.now + delay
            self._at(delay, self._deliver, m, self.nodes[m.frm].incarnation if report else 0)
            report = False

    def _deliver(self, m: Message, reporter: int = 0) -> None:
        n = self.nodes[m.to]
        if n.paused and n.raw is not None:
            n.backlog.append((self._deliver, (m, reporter)))  # sits in the socket buffer
            return
        if n.raw is None or (m.frm, m.to) in self.cut:
            if reporter:
                self._snap_status(m, reporter, True)
            return
        self.stats["msgs"] += 1
        n.raw.step(m)
        self._process(n)
        if reporter:
            self._snap_status(m, reporter, False)

    def _snap_status(self, m: Message, incarnation: int, failed: bool) -> None:
        sender = self.nodes[m.frm]
        if sender.raw is None or sender.incarnation != incarnation:
            return
        if sender.paused:
            sender.backlog.append((self._snap_status, (m, incarnation, failed)))
            return
        sender.raw.report_snapshot(m.to, failed)
        self._process(sender)

    # -- the state machine and client answers --
    def _apply(self, n: SimNode, e: Entry) -> None:
        n.applies += 1
        n.applied_index = e.index
        if self.p.drop_apply_every and n.id == 1 and n.applies % self.p.drop_apply_every == 0:
            return  # the planted driver bug: this entry is never applied
        self.inv.apply(n.id, e)
        n.chain = hash((n.chain, e.index, e.term, int(e.type), e.data))  # the state machine's own record
        if e.type != EntryType.NORMAL or not e.data:
            return
        op_id, kind, key, a, b = e.data.decode().split("|")
        n.applied_ids.append(op_id)
        out: Any = None
        if kind == PUT:
            n.kv[key] = a
        elif kind == CAS:
            out = n.kv.get(key) == (None if a == "~" else a)
            if out:
                n.kv[key] = b
        pend = self.pending.get(op_id)
        if pend is not None and pend.node == n.id and pend.incarnation == n.incarnation and not pend.done:
            self._complete(pend, out)
        self._serve_reads(n)

    def _read_state(self, n: SimNode, rs: ReadState) -> None:
        op_id = rs.context.decode()
        pend = self.pending.get(op_id)
        if pend is None or pend.node != n.id or pend.incarnation != n.incarnation or pend.done:
            return
        bisect.insort(n.waiting_reads, (rs.index, op_id))
        self._serve_reads(n)

    def _serve_reads(self, n: SimNode) -> None:
        while n.waiting_reads and n.waiting_reads[0][0] <= n.applied_index:
            _, op_id = n.waiting_reads.pop(0)
            pend = self.pending[op_id]
            if not pend.done:
                self.stats["reads"] += 1
                if n.id == self.victim:
                    self.stats["reads_served_by_victim"] += 1
                    if self.cut and self.p.scenario == "isolate-leader":
                        self.episode["window"] = self.now - self.fault_start
                self._complete(pend, n.kv.get(pend.key))

    def _complete(self, pend: Pending, out: Any) -> None:
        pend.done = True
        self.history.append(Op(pend.client, pend.kind, pend.key, pend.value, out, pend.call, self.now))
        if pend.kind != GET:
            self.acks.ack(pend.op_id)
            self.stats["acked"] += 1
        client = self.clients[pend.client]
        client.busy = False
        self._at(self.rng.uniform(0, 30), self._client_next, client)

    def _timeout(self, op_id: str) -> None:
        pend = self.pending[op_id]
        if pend.done:
            return
        pend.done = True
        if pend.kind != GET:  # a write that may or may not have happened
            self.history.append(Op(pend.client, pend.kind, pend.key, pend.value, None, pend.call))
            self.stats["unknown"] += 1
        client = self.clients[pend.client]
        client.busy = False
        client.guess = self.rng.choice(self.ids)
        self._at(self.rng.uniform(0, 30), self._client_next, client)

    # -- clients --
    def _client_next(self, c: Client) -> None:
        if c.busy or not self.accepting:
            return
        rng = self.rng
        kind = rng.choice([PUT, PUT, GET, GET, CAS])
        key = f"k{rng.randrange(self.p.keys)}"
        c.seq += 1
        op_id = f"c{c.id}.{c.seq}"
        value: Any = None
        if kind == PUT:
            value = op_id
            data = f"{op_id}|put|{key}|{op_id}|"
        elif kind == CAS:
            # Expect what this client last saw somewhere, or absent: a mix of hits and misses.
            seen = [op.output for op in self.history[-20:] if op.kind == GET and op.key == key]
            expected = rng.choice(seen) if seen and rng.random() < 0.8 else None
            value = (expected, op_id)
            data = f"{op_id}|cas|{key}|{'~' if expected is None else expected}|{op_id}"
        node_id = c.guess if kind != GET or rng.random() < 0.5 else rng.choice(self.ids)
        if kind == GET and self.victim and rng.random() < 0.5:
            node_id = self.victim
            self.stats["reads_at_victim"] += 1
        n = self.nodes[node_id]
        if n.raw is None:
            c.guess = rng.choice(self.ids)
            self._at(rng.uniform(5, 30), self._client_next, c)
            return
        if n.paused:  # the request waits in the stopped process's socket buffer
            c.busy = True
            self.pending[op_id] = Pending(op_id, c.id, node_id, n.incarnation, kind, key, value, self.now)
            self._at(self.p.op_timeout, self._timeout, op_id)
            n.backlog.append((self._submit_late, (c, op_id, kind, data if kind != GET else "")))
            return
        try:
            if kind == GET and self.p.stale_reads:
                self.history.append(Op(c.id, GET, key, None, n.kv.get(key), self.now, self.now))
                self._at(rng.uniform(0, 30), self._client_next, c)
                return
            if kind == GET:
                n.raw.read_index(op_id.encode())
            else:
                n.raw.propose(data.encode())
        except ProposalDropped:
            lead = n.raw.raft.lead
            c.guess = lead if lead else rng.choice(self.ids)
            self._process(n)
            self._at(rng.uniform(5, 30), self._client_next, c)
            return
        c.busy = True
        self.pending[op_id] = Pending(op_id, c.id, node_id, n.incarnation, kind, key, value, self.now)
        self._at(self.p.op_timeout, self._timeout, op_id)
        self._process(n)

    def _submit_late(self, c: Client, op_id: str, kind: str, data: str) -> None:
        """A request that reached a paused node: it is read when the node resumes."""
        pend = self.pending[op_id]
        n = self.nodes[pend.node]
        if pend.done or n.raw is None or n.incarnation != pend.incarnation:
            return
        try:
            if kind == GET:
                n.raw.read_index(op_id.encode())
            else:
                n.raw.propose(data.encode())
        except ProposalDropped:
            return  # the client times out
        self._process(n)

    # -- the scripted nemesis --
    def _scripted(self) -> None:
        """Find the leader, cut it off or stop it for 1.5 to 12 election timeouts, heal, wait."""
        if not self.accepting:
            return
        rng = self.rng
        leader = next((i for i in self.ids if self.nodes[i].raw is not None and self.nodes[i].raw.is_leader
                       and not self.nodes[i].paused), None)  # type: ignore[union-attr]
        if leader is None:
            self._at(50, self._scripted)
            return
        self.victim = leader
        self.stats["faulted_leaders"] += 1
        self.fault_start, self.episode = self.now, {}
        if self.p.scenario == "isolate-leader":
            self.cut = self._cut_groups([[leader], [i for i in self.ids if i != leader]])
            self.note(f"isolate leader {leader}")
        else:
            self.pause(leader)
        hold = rng.uniform(150, 1200)
        self._at(hold, self._scripted_heal, leader)

    def _scripted_heal(self, leader: int) -> None:
        ep = self.episode
        if "window" in ep:
            self.lease_windows.append(ep["window"])
        if "takeover" in ep:
            self.takeovers.append(ep["takeover"])
            if "window" in ep:
                self.margins.append(ep["takeover"] - ep["window"])
        if self.p.scenario == "isolate-leader":
            self.cut.clear()
            self.note("heal")
        else:
            self.resume(leader)
        # Reads keep going to the old leader for a while after it is back: it must not answer
        # from its old term.
        self._at(self.rng.uniform(50, 300), self._scripted_clear)

    def _scripted_clear(self) -> None:
        self.victim = 0
        self._at(self.rng.uniform(100, 600), self._scripted)

    # -- the nemesis --
    def _nemesis(self) -> None:
        if not self.accepting:
            return
        rng = self.rng
        live = [i for i in self.ids if self.nodes[i].raw is not None]
        down = [i for i in self.ids if self.nodes[i].raw is None and i in self.servers]
        leader = next((i for i in live if self.nodes[i].raw.is_leader), None)  # type: ignore[union-attr]
        action = rng.choice(["heal", "heal", "isolate", "isolate-leader", "split", "oneway", "bridge",
                             "crash", "crash-leader", "restart", "restart", "crash-all", "bounce",
                             "bounce-leader"] + (["transfer", "transfer", "transfer"] if self.p.transfers else [])
                            + (["add", "add", "add", "remove", "remove", "remove"] if self.p.membership else []))
        if action in ("add", "remove"):
            if leader is not None:
                self._change_membership(action, leader)
        elif action == "transfer":
            if leader is not None:
                target = rng.choice([i for i in self.ids if i != leader and i in self.servers] or [leader])
                raw = self.nodes[leader].raw
                assert raw is not None
                try:
                    raw.transfer_leader(target)
                    self.stats["transfers"] = self.stats.get("transfers", 0) + 1
                    self.note(f"transfer leadership {leader} -> {target}")
                except (ProposalDropped, ValueError):
                    pass
                self._process(self.nodes[leader])
        elif action == "heal":
            self.cut.clear()
            self.note("heal")
        elif action in ("isolate", "isolate-leader"):
            victim = leader if action == "isolate-leader" and leader else rng.choice(self.ids)
            self.cut = self._cut_groups([[victim], [i for i in self.ids if i != victim]])
            self.note(f"isolate {victim}")
        elif action == "split":
            ids = self.ids[:]
            rng.shuffle(ids)
            k = rng.randrange(1, len(ids))
            self.cut = self._cut_groups([ids[:k], ids[k:]])
            self.note(f"split {sorted(ids[:k])} | {sorted(ids[k:])}")
        elif action == "oneway":
            a, b = rng.sample(self.ids, 2)
            self.cut.add((a, b))
            self.note(f"one-way cut {a} -> {b}")
        elif action == "bridge":
            # Two halves that only the bridge node hears both of: no other link crosses.
            ids = self.ids[:]
            rng.shuffle(ids)
            bridge, rest = ids[0], ids[1:]
            half = len(rest) // 2
            self.cut = self._cut_groups([rest[:half], rest[half:]])
            self.note(f"bridge {bridge} between {sorted(rest[:half])} and {sorted(rest[half:])}")
        elif action == "crash" and live:
            self.crash(rng.choice(live))
        elif action == "crash-leader" and leader:
            self.crash(leader)
        elif action == "restart" and down:
            self.restart(rng.choice(down))
        elif action in ("bounce", "bounce-leader"):  # kill -9 and an immediate restart
            pick = leader if action == "bounce-leader" and leader else rng.choice(live) if live else None
            if pick is not None:
                self.crash(pick)
                self._at(rng.uniform(1, 40), self.restart, pick)
        elif action == "crash-all":  # power loss of the whole cluster; it comes back together
            for i in live:
                self.crash(i)
            for i in sorted(self.servers):
                self._at(rng.uniform(20, 300), self.restart, i)
        self._at(rng.uniform(20, 300) if rng.random() < 0.3 else rng.uniform(100, 1200), self._nemesis)

    def _change_membership(self, action: str, leader: int) -> None:
        rng = self.rng
        raw = self.nodes[leader].raw
        assert raw is not None
        voters = raw.raft.voters
        if action == "add" and raw.raft.learners and rng.random() < 0.7:
            # Autopilot's part: promote a learner (caught up or not: the core must cope).
            self._change_membership_of(leader, ConfChangeType.ADD_VOTER, rng.choice(sorted(raw.raft.learners)))
            return
        if action == "add":
            outside = [i for i in self.ids if i not in voters and i not in raw.raft.learners]
            if not outside:
                return
            node = rng.choice(outside)
            if node not in self.servers:
                # A server starts (empty, or from its disk); the leader hears of it (gossip) a
                # little later and adds it then.
                self.servers.add(node)
                self.joining.add(node)
                self.note(f"start {node} to join")
                self._start(node)
                self._at(rng.uniform(0, 600), self._join, node, 10)
                return
            kind = ConfChangeType.ADD_VOTER
        else:
            node = rng.choice(sorted(voters | raw.raft.learners))  # (the last voter: refused)
            kind = ConfChangeType.REMOVE_VOTER
        self._change_membership_of(leader, kind, node)

    def _change_membership_of(self, leader: int, kind: ConfChangeType, node: int) -> bool:
        raw = self.nodes[leader].raw
        assert raw is not None
        try:
            index = raw.propose_conf_change(kind, node)
        except (ProposalDropped, ValueError) as e:
            self.note(f"{kind.name} {node} refused: {e}")
            return False
        self.stats["conf_changes"] += 1
        if kind == ConfChangeType.ADD_LEARNER:
            self.stats["learners_added"] += 1
        elif kind == ConfChangeType.ADD_VOTER and node in raw.raft.voters and \
                node in raw.raft.conf_at(index - 1)[1]:
            self.stats["promotions"] += 1
        self.note(f"{leader} proposes {kind.name} {node} at {index}")
        self._process(self.nodes[leader])
        return True

    def _join(self, node: int, tries: int) -> None:
        """The leader adds a server that started to join; it retries a refused change (another
        one pending, no leader) a few times, then the server gives up and stops."""
        if node not in self.joining:
            return
        leader = next((i for i in self.ids if self.nodes[i].raw is not None and self.nodes[i].raw.is_leader  # type: ignore[union-attr]
                       and not self.nodes[i].paused), None)
        # Half the joins come in as learners (non-voters), to be promoted by a later "add".
        kind = ConfChangeType.ADD_LEARNER if self.rng.random() < 0.5 else ConfChangeType.ADD_VOTER
        if leader is not None and self.accepting and self._change_membership_of(leader, kind, node):
            self.joining.discard(node)
        elif tries > 0 and self.accepting:
            self._at(200, self._join, node, tries - 1)
        else:
            self.joining.discard(node)
            self.note(f"{node} gives up joining")

    def _retire_removed(self, leader: RawNode) -> None:
        """Servers outside the leader's committed configuration shut down (they left)."""
        r = leader.raft
        if not self.p.membership or r.conf_pending():
            return
        for i in sorted(self.servers - r.voters - r.learners - self.joining):
            self.servers.discard(i)
            self.stats["retired"] += 1
            self.note(f"{i} is out of the configuration (committed): it shuts down")
            if self.nodes[i].raw is not None:
                self.crash(i)

    def _cut_groups(self, groups: Iterable[list[int]]) -> set[tuple[int, int]]:
        group_of = {i: g for g, members in enumerate(groups) for i in members}
        return {(a, b) for a in self.ids for b in self.ids
                if a != b and a in group_of and b in group_of and group_of[a] != group_of[b]}

    # -- the run --
    def members(self) -> list[int]:
        """The cluster to check at the end: the voters of the (one) live leader; without one,
        every server."""
        leaders = [n.raw for n in self.nodes.values() if n.raw is not None and n.raw.is_leader]
        if len(leaders) == 1 and leaders[0].raft.voters and not leaders[0].raft.conf_pending():
            return sorted(leaders[0].raft.voters | leaders[0].raft.learners)
        return sorted(self.servers)

    def converged(self) -> bool:
        raws = [self.nodes[i].raw for i in self.members()]
        if any(r is None for r in raws):
            return False
        leaders = [r for r in raws if r is not None and r.is_leader]
        if len(leaders) != 1:
            return False
        last = leaders[0].raft.log.last_index()
        return all(r is not None and r.raft.log.applied == last and r.raft.log.last_index() == last
                   and not r.has_ready() for r in raws)

    def run(self) -> Simulation:
        """Faults and traffic, then heal everything, stop the clients and converge; raises
        SimFailure on any violation."""
        self.run_until(self.p.duration)
        self.accepting = False
        self.cut.clear()
        self.loss = self.dup = 0.0
        self.victim = 0
        for i in self.ids:
            self.resume(i)
            self.restart(i)
        self.note("heal all, restart all, stop clients")
        deadline = self.now + self.p.settle
        while self.now < deadline and not self.converged():
            self.run_until(self.now + 50)
            for i in self.members():  # a voter the leader still counts on comes back
                if self.nodes[i].raw is None:
                    self.servers.add(i)
                    self.restart(i)
        for pend in self.pending.values():  # still unanswered: writes may or may not have happened
            if not pend.done and pend.kind != GET:
                self.history.append(Op(pend.client, pend.kind, pend.key, pend.value, None, pend.call))
        for n in self.nodes.values():
            if n.raw is not None:
                self.stats["lease_reads"] = self.stats.get("lease_reads", 0) + n.raw.raft.read_stats["lease"]
        problems = list(self.inv.violations) if self.p.check_invariants else []
        if not self.converged():
            problems.append(f"no convergence within {self.p.settle:g} ms after healing")
        problems += self.acks.check({i: self.nodes[i].applied_ids for i in self.members()})
        if not problems:
            result = check_kv(self.history, max_steps=5_000_000)
            if result.ok is False:
                problems.append(result.explain())
            elif result.ok is None:
                problems.append(f"linearizability undecided: {result.explain()}")
        if problems:
            raise SimFailure(self.report(problems))
        return self

    def report(self, problems: list[str]) -> str:
        head = (f"raft sim seed={self.seed} nodes={self.p.nodes}: replay with "
                f"`python tests/sim/raft_sim.py {self.seed} {self.p.nodes}`\n"
                f"network: loss={self.loss} dup={self.dup} latency<={self.max_latency}ms fifo={self.fifo} "
                f"raft={self.raft_cfg} snapshot_threshold={self.snapshot_threshold} trailing={self.trailing}")
        return "\n".join([head, *problems, "last events:", *self.timeline])


def main(argv: list[str]) -> None:
    seed = int(argv[1]) if len(argv) > 1 else 0
    nodes = int(argv[2]) if len(argv) > 2 else 3
    sim = Simulation(seed, SimParams(nodes=nodes))
    try:
        sim.run()
    except SimFailure as e:
        print(e)
        raise SystemExit(1) from None
    print(f"seed {seed}: ok {sim.stats}, {len(sim.history)} ops")
    print("\n".join(sim.timeline))


if __name__ == "__main__":
    main(sys.argv)
