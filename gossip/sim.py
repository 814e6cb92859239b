"""A deterministic simulator that runs the real Membership cores in virtual time.

One seeded random generator drives latency, loss and every member's own choices, so a run is
replayed exactly from (seed, scenario). The network model: UDP datagrams with uniform latency and
independent loss; TCP exchanges that are reliable but suffer the same loss as retransmission
delays (a lost SYN costs the 1 s initial RTO, a lost data segment 200 ms, doubling per retry), so a
fallback ping under loss can miss its deadline as it would on a real network; they fail fast
against a killed member (connection refused), and hang until their deadline across a partition or
against a paused member. A paused member (SIGSTOP) keeps its datagrams queued and answers the backlog when resumed.

Invariants are checked as it runs: an observer never sees a member's incarnation go backwards.
Every member event is recorded with its virtual time, which is what the tests and `murmur sim`
measure detection and convergence from.
"""

from __future__ import annotations

import gc
import heapq
import itertools
import math
import operator
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .config import GossipConfig
from .membership import (
    Address,
    EventKind,
    Member,
    Membership,
    RotationCache,
    SharedTable,
    State,
    StreamRequest,
)
from .userevents import DeliveredEvent, QueryState, UserLayer

BACKLOG_LIMIT = 2000  # datagrams a paused member's socket buffer holds before dropping
RETRY_JOIN_INTERVAL = 30.0  # Consul's retry_interval: a failed join is tried again this much later


class InvariantViolation(AssertionError):
    pass


@dataclass
class NetworkModel:
    latency_min: float = 0.0005  # one-way UDP latency, seconds, uniform in [min, max]
    latency_max: float = 0.002
    loss: float = 0.0  # probability a datagram is lost
    tcp_latency: float = 0.002  # one-way delay of each TCP step
    # Probability that one TCP segment is lost (None: the same as `loss`). Each loss costs a
    # retransmission timeout: syn_rto for the handshake (Linux's initial 1 s), data_rto for data
    # (Linux's 200 ms minimum), doubled on every retry.
    tcp_loss: float | None = None
    syn_rto: float = 1.0
    data_rto: float = 0.2


@dataclass
class SimNode:
    name: str
    address: Address
    m: Membership
    user: UserLayer
    up: bool = True
    paused: bool = False
    backlog: list[tuple[bytes, Address]] = field(default_factory=list)
    scheduled: float = float("inf")
    generation: int = 0
    joins: dict[int, Address] = field(default_factory=dict)  # join stream token -> seed address
    # The highest incarnation this observer has seen of each member, kept only above 1 (every
    # member starts at 1, and most never refute): an entry per member per observer would be the
    # largest table of a 10,000-member run. A restart is a new SimNode, so it starts empty.
    seen_inc: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Record:
    time: float
    observer: str
    kind: EventKind
    subject: str


class Simulation:
    def __init__(self, n: int, config: GossipConfig | None = None, seed: int = 0,
                 net: NetworkModel | None = None, join: bool = True, converged: bool = False) -> None:
        self.config = config or GossipConfig.lan()
        self.seed = seed
        self.rng = random.Random(seed)
        self.net = net or NetworkModel()
        self.now = 0.0
        self.heap: list[tuple[float, int, str, tuple[Any, ...]]] = []
        self._seq = 0
        self.nodes: dict[str, SimNode] = {}
        self.by_addr: dict[Address, SimNode] = {}
        self.records: list[Record] = []
        self.group: dict[str, int] = {}  # partition group per member; all 0 when whole
        self.packets = 0
        self.packets_lost = 0
        self.on_record: Callable[[Record], None] | None = None
        self.progress: Callable[[float], None] | None = None
        self.user_events: list[tuple[str, DeliveredEvent]] = []  # (observer, event), in delivery order
        self.rotation_cache = RotationCache()  # one rotation order per live set, not one per core
        for i in range(n):
            self.add_node(self.name_of(i), join=join and not converged and i > 0,
                          at=self.rng.uniform(0, 0.5) if join and not converged else 0.0)
        if converged:  # every member starts knowing every other one alive: no join phase to wait out
            # One record per member, shared by every core until one changes it (Member.shared).
            table = SharedTable([Member(nd.name, nd.address[0], nd.address[1], 1, State.ALIVE, self.now, {},
                                        nd.m.me.vsn, shared=True) for nd in self.nodes.values()])
            # memberlist staggers a member's first push-pull by up to one interval and then pushes
            # every pushPullScale(interval, N) (300 s at 10,000 members): in a cluster that has
            # been up for a while, each member is at a uniform point of that scaled period.
            period = self.config.push_pull_scaled(n)
            for nd in self.nodes.values():
                nd.m.touched = None  # fresh records at incarnation 1: nothing for the checker to see
                nd.m.preload_shared(table)
                if self.config.push_pull_interval > 0:
                    nd.m.next_push_pull = self.now + nd.m.rng.uniform(0, period)
                nd.m.touched = set()
                nd.m.broadcasts = type(nd.m.broadcasts)(max_size=nd.m.broadcasts.max_size)
                self._schedule(nd)

    @staticmethod
    def name_of(i: int) -> str:
        return f"node-{i:04d}"

    # ---- scenario controls ----------------------------------------------------------------------
    def add_node(self, name: str, join: bool = True, at: float | None = None, seed_node: str | None = None) -> SimNode:
        """Start a member (or restart a killed one with fresh state) and join it through `seed_node`."""
        i = len(self.by_addr)
        old = self.nodes.get(name)
        address = old.address if old else (f"127.{(i // 250) % 250}.{i % 250 + 1}.1", 7946)
        m = Membership(self.config, name, address[0], address[1], random.Random(self.rng.random()), self.now)
        m.rotation_cache = self.rotation_cache
        m.touched = {name}  # the core reports every record it changes; _check reads them
        node = SimNode(name, address, m, UserLayer(m), generation=(old.generation + 1 if old else 0))
        self.nodes[name] = node
        self.by_addr[address] = node
        self.group.setdefault(name, 0)
        if join:
            target = seed_node or next(iter(self.nodes))
            if target != name:
                t = self.now if at is None else at
                self._push(t, "join", (name, node.generation, self.nodes[target].address))
        self._schedule(node)
        return node

    def kill(self, name: str) -> None:
        """kill -9: the member stops; datagrams to it vanish, TCP to it is refused."""
        self.nodes[name].up = False

    def pause(self, name: str) -> None:
        """SIGSTOP: the member stops running but its sockets keep buffering."""
        self.nodes[name].paused = True

    def resume(self, name: str) -> None:
        node = self.nodes[name]
        node.paused = False
        backlog, node.backlog = node.backlog, []
        for data, src in backlog:
            node.m.receive(data, src, self.now)
        self._after_input(node)

    def partition(self, groups: Iterable[Iterable[str]]) -> None:
        """Split the members into groups that cannot reach each other."""
        for gid, names in enumerate(groups, 1):
            for name in names:
                self.group[name] = gid

    def heal(self) -> None:
        for name in self.group:
            self.group[name] = 0

    def leave(self, name: str) -> None:
        node = self.nodes[name]
        node.m.leave(self.now)
        self._after_input(node)

    def fire_event(self, origin: str, name: str, payload: bytes = b"", coalesce: bool = False) -> None:
        """A user event fired at `origin` now; deliveries are recorded in `user_events`."""
        node = self.nodes[origin]
        node.user.fire(name, payload, self.now, coalesce)
        self._after_input(node)

    def query(self, origin: str, name: str, payload: bytes = b"", **params: Any) -> QueryState:
        """A query sent from `origin` now (params as UserLayer.query); answers collect in the state."""
        node = self.nodes[origin]
        state = node.user.query(name, payload, self.now, **params)
        self._after_input(node)
        return state

    # ---- queries --------------------------------------------------------------------------------
    def live_names(self) -> list[str]:
        return sorted(n for n, node in self.nodes.items() if node.up)

    def view(self, observer: str) -> dict[str, State]:
        return {name: m.state for name, m in self.nodes[observer].m.members.items()}

    def converged(self, names: list[str] | None = None) -> bool:
        """Every listed (default: every up) member sees exactly the listed ones alive or suspect."""
        names = names if names is not None else self.live_names()
        want = set(names)
        for obs in names:
            live = {n for n, m in self.nodes[obs].m.members.items() if m.state in (State.ALIVE, State.SUSPECT)}
            if live != want:
                return False
        return True

    def first_record(self, kind: EventKind, subject: str, observer: str | None = None,
                     after: float = 0.0) -> Record | None:
        for r in self.records:
            if r.kind == kind and r.subject == subject and r.time >= after and (observer is None or r.observer == observer):
                return r
        return None

    # ---- the event loop -------------------------------------------------------------------------
    def _push(self, t: float, kind: str, args: tuple[Any, ...]) -> None:
        self._seq += 1
        heapq.heappush(self.heap, (t, self._seq, kind, args))

    def _schedule(self, node: SimNode) -> None:
        t = node.m.next_deadline()
        if t < node.scheduled:
            node.scheduled = t
            self._push(t, "timer", (node.name, node.generation, t))

    def run_until(self, t_end: float) -> None:
        heap = self.heap
        while heap and heap[0][0] <= t_end:
            t, _, kind, args = heapq.heappop(heap)
            self.now = max(self.now, t)
            getattr(self, "_do_" + kind)(*args)
        self.now = max(self.now, t_end)
        self.check_all()

    def run_while(self, cond: Callable[[], bool], limit: float, step: float = 0.1) -> float:
        """Advance in `step`s while cond() holds, up to `limit` seconds from now; returns the time."""
        end = self.now + limit
        while cond() and self.now < end:
            self.run_until(min(end, self.now + step))
        return self.now

    def _do_progress(self) -> None:
        if self.progress is not None:
            self.progress(self.now)

    def _live(self, name: str, generation: int) -> SimNode | None:
        node = self.nodes.get(name)
        if node is None or node.generation != generation or not node.up:
            return None
        return node

    def _do_timer(self, name: str, generation: int, t: float) -> None:
        node = self._live(name, generation)
        if node is None or node.scheduled != t:
            return  # superseded
        node.scheduled = float("inf")
        if node.paused:
            self._push(self.now + 0.05, "timer", (name, generation, self.now + 0.05))
            node.scheduled = self.now + 0.05
            return
        node.m.handle_timer(self.now)
        self._after_input(node)

    def _do_join(self, name: str, generation: int, addr: Address) -> None:
        node = self._live(name, generation)
        if node is not None:
            for token in node.m.join([addr], self.now):
                node.joins[token] = addr
            self._after_input(node)

    def _do_packet(self, dst: Address, data: bytes, src: Address) -> None:
        node = self.by_addr.get(dst)
        if node is None or not node.up:
            return
        if node.paused:
            if len(node.backlog) < BACKLOG_LIMIT:
                node.backlog.append((data, src))
            return
        node.m.receive(data, src, self.now)
        self._after_input(node)

    def _reachable(self, a: SimNode, b: SimNode) -> bool:
        return self.group.get(a.name, 0) == self.group.get(b.name, 0)

    def _after_input(self, node: SimNode) -> None:
        node.user.pump(self.now)
        for delivered in node.user.events():
            self.user_events.append((node.name, delivered))
        for dst, data in node.m.packets_to_send():
            self.packets += 1
            target = self.by_addr.get(dst)
            if target is None or not self._reachable(node, target) or self.rng.random() < self.net.loss:
                self.packets_lost += 1
                continue
            delay = self.rng.uniform(self.net.latency_min, self.net.latency_max)
            self._push(self.now + delay, "packet", (dst, data, node.address))
        for req in node.m.streams_to_open():
            self._start_stream(node, req)
        for ev in node.m.events():
            rec = Record(self.now, node.name, ev.kind, ev.name)
            self.records.append(rec)
            if self.on_record is not None:
                self.on_record(rec)
        self._check(node)
        self._schedule(node)

    def _tcp_leg(self, legs: int, rto: float) -> float:
        """Time for `legs` segments that must all arrive, retransmitted after `rto` (doubling)."""
        p = self.net.loss if self.net.tcp_loss is None else self.net.tcp_loss
        t = 0.0
        while p > 0 and any(self.rng.random() < p for _ in range(legs)):
            t += rto
            rto *= 2
        return t

    def _start_stream(self, node: SimNode, req: StreamRequest) -> None:
        target = self.by_addr.get(req.addr)
        lat = self.net.tcp_latency
        if target is None or not target.up:
            self._push(self.now + lat, "stream_done", (node.name, node.generation, req.token, None))
        elif not self._reachable(node, target):
            self._push(req.deadline, "stream_done", (node.name, node.generation, req.token, None))
        else:
            # SYN and SYN-ACK must both arrive, then the request segment.
            delay = lat + self._tcp_leg(2, self.net.syn_rto) + self._tcp_leg(1, self.net.data_rto)
            self._push(self.now + delay, "stream_serve", (node.name, node.generation, req, target.name, target.generation))

    def _do_stream_serve(self, src: str, src_gen: int, req: StreamRequest, dst: str, dst_gen: int) -> None:
        target = self._live(dst, dst_gen)
        if target is None:
            self._push(self.now, "stream_done", (src, src_gen, req.token, None))
            return
        if target.paused or self.now >= req.deadline:
            if self.now >= req.deadline:  # (>=: at the deadline itself the retry below would spin)
                self._push(self.now, "stream_done", (src, src_gen, req.token, None))
            else:  # connect succeeds (the kernel accepts), the answer waits for the process
                self._push(min(req.deadline, self.now + 0.05), "stream_serve", (src, src_gen, req, dst, dst_gen))
            return
        payload = req.payload[4:]  # strip the frame length
        reply = target.m.handle_stream(payload, self.nodes[src].address, self.now)
        self._after_input(target)
        arrive = self.now + self.net.tcp_latency + self._tcp_leg(1, self.net.data_rto)
        if arrive > req.deadline:  # the caller gave up before the answer came
            self._push(req.deadline, "stream_done", (src, src_gen, req.token, None))
        else:
            self._push(arrive, "stream_done", (src, src_gen, req.token, reply[4:] if reply else None))

    def _do_stream_done(self, name: str, generation: int, token: int, payload: bytes | None) -> None:
        node = self._live(name, generation)
        if node is None:
            return
        if node.paused:
            self._push(self.now + 0.05, "stream_done", (name, generation, token, payload))
            return
        ok = node.m.stream_result(token, payload, self.now)
        addr = node.joins.pop(token, None)
        if addr is not None and not ok:  # as the agent's retry_join does
            self._push(self.now + RETRY_JOIN_INTERVAL, "join", (name, generation, addr))
        self._after_input(node)

    def _check(self, node: SimNode) -> None:
        """No observer ever sees a member's incarnation go backwards (seen_inc remembers the highest
        seen; a restarted member is a new SimNode with an empty one). Runs after every step of
        every member, on the records the step changed: the core names each record it changes,
        inserts or replaces in `touched` (Membership._own, _set_state, _install, a new member, its
        own refutations), so a step costs what it touched, not the size of the table."""
        touched = node.m.touched
        if not touched:
            return
        members, seen = node.m.members, node.seen_inc
        for name in touched:
            m = members.get(name)
            if m is not None:
                self._check_one(node, name, m.incarnation, seen)
        touched.clear()

    def _check_one(self, node: SimNode, name: str, inc: int, seen: dict[str, int]) -> None:
        before = seen.get(name, 0)
        if inc < before:
            raise InvariantViolation(
                f"seed {self.seed}: {node.name} saw {name}'s incarnation go back {before} -> {inc} "
                f"at t={self.now:.3f}")
        if inc > 1:
            seen[name] = inc

    def check_all(self) -> None:
        """The same check over every record of every member, at the end of every run_until: a
        backstop for a change the core did not report in `touched` (or one made from outside,
        as tests/unit/test_gossip_simulator.py does). Only incarnations above 1 need a look
        (every member starts at 1 and nothing is below it), so a converged table of shared
        records costs one C-level pass."""
        for node in self.nodes.values():
            self._check(node)
            members, seen = node.m.members, node.seen_inc
            incs = [m.incarnation for m in members.values()]
            if len(seen) == 0 and max(incs, default=1) <= 1:
                continue
            names = list(members)
            for i in itertools.compress(range(len(incs)), map(operator.ne, incs, itertools.repeat(1))):
                self._check_one(node, names[i], incs[i], seen)
            for name, before in seen.items():  # an entry above 1 whose record now says 1 (or less)
                m = members.get(name)
                if m is not None and m.incarnation < before:
                    self._check_one(node, name, m.incarnation, seen)


def _spread(times: list[float], total: int, fractions: tuple[float, ...]) -> dict[str, float | None]:
    """Seconds until each fraction of `total` observers had seen the news (None: never reached)."""
    times = sorted(times)
    out: dict[str, float | None] = {}
    for f in fractions:
        need = max(1, math.ceil(f * total))
        out[f"{f * 100:g}%"] = round(times[need - 1], 3) if len(times) >= need else None
    return out


def scenario(n: int, seconds: float, seed: int = 0, loss: float = 0.0, config: GossipConfig | None = None,
             converged: bool = True, kill_at: float = 10.0, join_at: float = 20.0,
             progress: Callable[[float], None] | None = None) -> dict[str, Any]:
    """`murmur sim`: a cluster of n runs `seconds` of virtual time; one member is killed at
    `kill_at` and a new one joins at `join_at`. Reports how fast each piece of news reached the
    live members (50%, 99%, 99.99%, 100%), and the suspicions, refutations and false deaths.
    `progress` is called with the simulated time once per simulated second (long runs)."""
    sim = Simulation(n, config, seed=seed, net=NetworkModel(loss=loss), converged=converged)
    # The converged tables are most of the heap (10^8 references at 10,000 members) and live for the
    # whole run: keep the cyclic collector's full passes from walking them over and over.
    gc.freeze()
    try:
        return _run_scenario(sim, n, seconds, seed, loss, kill_at, join_at, progress)
    finally:
        gc.unfreeze()


def _run_scenario(sim: Simulation, n: int, seconds: float, seed: int, loss: float, kill_at: float, join_at: float,
                  progress: Callable[[float], None] | None) -> dict[str, Any]:
    if progress is not None:
        sim.progress = progress
        for t in range(1, math.ceil(seconds) + 1):  # inert events: they change no member's state
            sim._push(float(t), "progress", ())
    victim = Simulation.name_of(sim.rng.randrange(n))
    newcomer = Simulation.name_of(n)
    sim.run_until(kill_at)
    sim.kill(victim)
    sim.run_until(max(kill_at, join_at))
    sim.add_node(newcomer, join=True, at=sim.now, seed_node=Simulation.name_of(0 if victim != Simulation.name_of(0) else 1))
    sim.run_until(seconds)
    observers = [x for x in sim.live_names() if x not in (victim, newcomer)]
    fail_t = {r.observer: r.time - kill_at for r in sim.records
              if r.kind == EventKind.FAILED and r.subject == victim and r.observer in observers}
    join_t = {r.observer: r.time - join_at for r in sim.records
              if r.kind == EventKind.JOIN and r.subject == newcomer and r.observer in observers and r.time >= join_at}
    false_deaths = sum(1 for r in sim.records if r.kind == EventKind.FAILED and r.subject != victim)
    stats = [nd.m.stats for nd in sim.nodes.values() if nd.up]
    fractions = (0.5, 0.99, 0.9999, 1.0)
    return {
        "nodes": n, "seconds": seconds, "seed": seed, "loss": loss, "victim": victim,
        "failure_spread_s": _spread(list(fail_t.values()), len(observers), fractions),
        "join_spread_s": _spread(list(join_t.values()), len(observers), fractions),
        "suspicions": sum(st.get("suspects_started", 0) for st in stats),
        "refutations": sum(st.get("refutes", 0) for st in stats),
        "false_deaths": false_deaths, "packets": sim.packets, "packets_lost": sim.packets_lost,
        "curves": {"failure": spread_curve(list(fail_t.values()), len(observers)),
                   "join": spread_curve(list(join_t.values()), len(observers))},
    }


def spread_curve(times: list[float], total: int) -> list[tuple[float, float]]:
    """(seconds after the news, fraction of the live members that know it), one step per member."""
    return [(round(t, 3), (i + 1) / total) for i, t in enumerate(sorted(times))] if total else []
