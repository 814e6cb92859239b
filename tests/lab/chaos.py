"""The chaos run: real agents in the netns lab, client workloads, a seeded nemesis, checkers.

    cd tests && python -m lab.chaos --seed 7 --cycles 20        (make chaos; needs root)
    cd tests && python -m lab.chaos --soak --hours 1            (make soak HOURS=1)

Each fault cycle applies one fault (see `KINDS`), holds it, heals everything (network faults
removed, paused agents continued, dead agents restarted), then waits for quiescence (every
agent knows the same leader and a consistent read succeeds) and moves the register workload to
fresh keys, so each cycle's registers form their own short histories. At the end the workload
stops, the cluster heals and the checkers run. The last lines are the figures:

    lost_acknowledged_writes: N
    linearizability_violations: N
    histories_checked: N
    checker_timeouts: N
    indeterminate_ops: N
    false_dead: N
    catalog_unconverged: N
    catalog_convergence_p99_s: X

Before those, every run prints the figures the soak reports too (`make chaos` shows them as well):

    raft_invariant_violations: N     (checkers.raft_invariants over every server's agent log)
    raft_log: L lines, E elections, T terms with a leader
    leader_failover_s: p50 X, p99 Y, n N, unresolved U
    false_dead_under_loss: N         (false dead verdicts while 20% loss was on the member or observer)
    false_dead_under_delay: N
    checker_timeouts_pct: X

Leader failover: for each fault that takes the leader away (a kill, pause or isolation of the
leader, a split that leaves it in the minority, a majority or whole-cluster crash that includes
it), the time from the fault's start until a majority of the servers report the same leader at a
term newer than any server's term before the fault; measured by polling every server's
/v1/agent/self every 0.1 s from inside its namespace. A failover still open 90 s after the fault
started counts as unresolved.

The soak (`--soak --hours H`, `make soak HOURS=1`) is this runner driven by wall time instead of
a cycle count: 5 servers and 3 clients, every kind in SOAK_KINDS (KINDS and the `delay` fault),
memberlist's local gossip preset as it is (1 s probe interval: partitions held 6-9 s, at least
twice the suspicion minimum), pauses of 5-15 s, 20% loss and 100-400 ms delay held 10-20 s.

After every heal the catalog workload (registrations and deregistrations at the client agents)
is held still and the runner times how long the catalog takes to hold exactly each client's
local services; a heal after which it does not within `catalog_bound` seconds counts in
`catalog_unconverged`.

On any failure (a checker finding something, or the run itself failing) the seed, the nemesis
timeline, every history and the agent logs and data dirs are kept together under
build/chaos/<run>/; a clean run keeps only build/chaos/last-summary.json.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import signal
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .checkers import (
    Fault,
    catalog_diff,
    check_linearizable,
    false_dead,
    lost_writes,
    raft_invariants,
    verdicts_during,
)
from .cluster import GOSSIP_SOAK, HTTP, ROOT, SUSPICION_MIN, Cluster, LabAgent, NsWorker, in_ns
from .netns import Lab, setns
from .workload import (
    AckWriter,
    CatalogClient,
    MemberWatch,
    RegisterClient,
    catalog_node_services,
    local_catalog_services,
)

# The agents' Raft timing: 100 ms ticks, elections after 10-20 ticks (agent/server.py).
ELECTION_TIMEOUT_MAX = 2.0
# Gossip chaos preset (cluster.GOSSIP): suspicion max = 6 * SUSPICION_MIN = 7.2 s; with
# Lifeguard's awareness stretching probes up to 8x, 20 s covers any verdict a fault explains.
DEAD_WINDOW = 20.0
# Every partition lasts at least twice the preset's suspicion minimum (issue 14).
PARTITION_HOLD = (2 * SUSPICION_MIN, 2 * SUSPICION_MIN + 1.0)

# "partition_follower" (a server that is not the leader, cut off) and "partition_client" (a client
# agent cut off) are also known, for the planted-bug tests; the default schedule picks hosts at
# random instead.
# "member_change": a server (the leader too, at random) leaves gracefully, taking itself out of the
# Raft configuration; it stays out for a partition's hold, then starts again from its data dir and
# the leader must add it back (a non-voter, then a voter once autopilot finds it stable).
# "failpoint": a running server (the leader half the time) is armed to kill itself at the N-th hit
# of one Raft failpoint (RAFT_FAILPOINTS; agent/failpoints.py): it dies at an exact point of the
# write path (after its fsync, before sending; before applying; ...) instead of wherever SIGKILL
# lands.
KINDS = ("partition_host", "partition_pair", "oneway", "split", "loss", "kill", "pause",
         "leader_isolation", "majority_crash", "cluster_crash", "member_change", "failpoint")
RAFT_FAILPOINTS = ("raft-before-append", "raft-after-fsync", "raft-before-apply", "raft-after-apply")
# "delay": 100-400 ms on everything one host sends (gossip datagrams, Raft frames), through the
# agents' lab hook (agent/labdelay.py; this kernel has no netem). Like loss it excuses nothing: a
# slow host is not a dead one, and at the soak's 1 s probe interval memberlist's indirect probes
# and Lifeguard absorb it. It is not in `make chaos`'s KINDS: its 200 ms probe interval is the
# same order as the delay, so there a delayed host would rightly be suspected.
# "leaderless_pair" (kill the leader, cut two of the other servers from each other, and slow
# what the rest send by 0.3-0.5 s; held 3 election timeouts) is for the planted raft.double_vote
# test: the two cut servers campaign in the same term, and the slowed voters answer both before
# either wins (their logs still equal, so the up-to-date check lets the second vote through).
SOAK_KINDS = (*KINDS, "delay")
# Faults after which the leader may be gone: the failover watch runs if the leader is among the
# agents they take away.
LEADER_KINDS = ("partition_host", "split", "kill", "pause", "leader_isolation", "majority_crash", "cluster_crash",
                "leaderless_pair", "member_change", "failpoint")
# Seconds for a server that left and started again to be back in the configuration: one reconcile
# round (1 s) once gossip has it alive; 20x slack for a loaded box.
READD_BOUND = 20.0


@dataclass
class Options:
    seed: int = 1
    servers: int = 5
    clients: int = 2
    cycles: int = 20
    kinds: tuple[str, ...] = KINDS
    register_clients: int = 6  # at most 8 per key (the checker's search is exponential in it)
    keys_per_cycle: int = 4
    ack_writers: int = 2
    env: dict[str, str] = field(default_factory=dict)  # e.g. planted bugs for every agent
    budget: float = 320.0  # seconds: no new cycle starts after this (make chaos must end in 6 min)
    out: Path = ROOT / "build" / "chaos"
    pause_range: tuple[float, float] = (5.0, 6.0)
    # Seconds after a heal for the catalog to hold every client's registrations: a client's
    # anti-entropy retries every 5-7.5 s, quiescence may take ~10 s; 3x slack over the sum.
    catalog_bound: float = 45.0
    catalog_workload: bool = True
    duration: float = 0.0  # seconds of fault cycles (the soak; then `cycles` is only a cap); 0: by cycles
    gossip: dict[str, str] | None = None  # None: the chaos preset (cluster.GOSSIP)
    partition_hold: tuple[float, float] = PARTITION_HOLD  # at least twice the preset's suspicion minimum
    loss_hold: tuple[float, float] = (3.0, 4.0)
    delay_hold: tuple[float, float] = (3.0, 4.0)
    delay_ms: tuple[int, int] = (100, 400)
    dead_window: float = DEAD_WINDOW


def soak_options(seed: int, hours: float, clients: int = 3) -> Options:
    """The soak: wall time, 5 servers, 3 clients, every fault kind, production-like gossip timing.
    Suspicion minimum at 8 members and 1 s probes: 3 * log10(8) ~ 2.7 s, maximum 6x that ~ 16 s;
    the false-dead window grows with it (Lifeguard may stretch probes up to 8x)."""
    secs = hours * 3600
    return Options(seed=seed, servers=5, clients=clients, cycles=1_000_000, duration=secs, budget=secs,
                   kinds=SOAK_KINDS, gossip=GOSSIP_SOAK, partition_hold=(6.0, 9.0), loss_hold=(10.0, 20.0),
                   delay_hold=(10.0, 20.0), pause_range=(5.0, 15.0), dead_window=60.0, catalog_bound=60.0)


@dataclass
class Summary:
    seed: int
    cycles: int = 0
    wall_s: float = 0.0
    faults: dict[str, int] = field(default_factory=dict)
    ops: int = 0
    acked_writes: int = 0
    lost_acknowledged_writes: int = 0
    linearizability_violations: int = 0
    histories_checked: int = 0
    checker_timeouts: int = 0
    indeterminate_ops: int = 0
    false_dead: int = 0
    dead_verdicts: int = 0
    # What explains each false dead verdict: printed with the summary, because CI keeps only the
    # tail of the output and no artifacts.
    explain: list[str] = field(default_factory=list)
    raft_invariant_violations: int = 0
    raft_reports: list[str] = field(default_factory=list)
    raft_lines: int = 0
    raft_elections: int = 0
    raft_terms: int = 0
    false_dead_under_loss: int = 0
    false_dead_under_delay: int = 0
    failover_s: list[float] = field(default_factory=list)
    failover_unresolved: int = 0
    unstable_cycles: int = 0
    quiesce_s_max: float = 0.0
    catalog_checks: int = 0  # heals after which convergence was measured
    catalog_unconverged: int = 0
    catalog_convergence_s: list[float] = field(default_factory=list)
    catalog_changes: int = 0
    errors: list[str] = field(default_factory=list)
    artifacts: str = ""

    @property
    def failed(self) -> bool:
        return bool(self.lost_acknowledged_writes or self.linearizability_violations or self.false_dead
                    or self.catalog_unconverged or self.raft_invariant_violations or self.errors)

    @staticmethod
    def _pct(xs: list[float], q: float) -> float:
        xs = sorted(xs)
        return xs[min(len(xs) - 1, math.ceil(q * len(xs)) - 1)] if xs else 0.0

    @property
    def catalog_convergence_p99_s(self) -> float:
        return self._pct(self.catalog_convergence_s, 0.99)

    @property
    def checker_timeouts_pct(self) -> float:
        return 100.0 * self.checker_timeouts / self.histories_checked if self.histories_checked else 0.0

    def lines(self) -> list[str]:
        return [*self.explain,
                *(f"raft invariant: {r}" for r in self.raft_reports[:5]),
                f"raft_invariant_violations: {self.raft_invariant_violations}",
                f"raft_log: {self.raft_lines} lines, {self.raft_elections} elections, {self.raft_terms} terms with a leader",
                f"leader_failover_s: p50 {self._pct(self.failover_s, 0.5):.1f}, p99 {self._pct(self.failover_s, 0.99):.1f}, "
                f"n {len(self.failover_s)}, unresolved {self.failover_unresolved}",
                f"false_dead_under_loss: {self.false_dead_under_loss}",
                f"false_dead_under_delay: {self.false_dead_under_delay}",
                f"checker_timeouts_pct: {self.checker_timeouts_pct:.2f}",
                f"lost_acknowledged_writes: {self.lost_acknowledged_writes}",
                f"linearizability_violations: {self.linearizability_violations}",
                f"histories_checked: {self.histories_checked}",
                f"checker_timeouts: {self.checker_timeouts}",
                f"indeterminate_ops: {self.indeterminate_ops}",
                f"false_dead: {self.false_dead}",
                f"catalog_unconverged: {self.catalog_unconverged}",
                f"catalog_convergence_p99_s: {self.catalog_convergence_p99_s:.1f}"]


class Nemesis:
    def __init__(self, lab: Lab, cluster: Cluster, rng: random.Random, opts: Options) -> None:
        self.lab, self.cluster, self.rng, self.opts = lab, cluster, rng, opts
        self.log: list[Fault] = []
        self.problems: list[str] = []  # what a fault found wrong besides the checkers (a server not re-added)
        self.watch: FailoverWatch | None = None  # the last fault's, if it took the leader away
        self._before: tuple[str, int] = ("", 0)

    def _watch(self, t0: float, taken: list[LabAgent]) -> None:
        """Start timing a failover if the leader before the fault is among `taken`."""
        lead, term = self._before
        if lead and lead in {a.name for a in taken}:
            self.watch = FailoverWatch(self.cluster, t0, term)

    def _hold(self, lo: float, hi: float) -> None:
        time.sleep(self.rng.uniform(lo, hi))

    def run(self, kind: str) -> Fault:
        c, lab, rng = self.cluster, self.lab, self.rng
        agents, servers = c.agents, c.servers
        t0 = time.monotonic()
        hosts: list[str] = []
        detail, excuses = "", True
        ph = self.opts.partition_hold
        self.watch = None
        if kind in LEADER_KINDS:
            self._before = leader_and_term(c)
            t0 = time.monotonic()
        if kind in ("partition_host", "partition_follower", "partition_client", "leader_isolation"):
            lead = c.leader()
            if kind == "partition_host":
                a = rng.choice(agents)
            elif kind == "partition_client":
                a = rng.choice([x for x in agents if not x.server])
            elif kind == "partition_follower":
                a = rng.choice([s for s in servers if s is not lead])
            else:
                a = lead or rng.choice(servers)
            hosts = [a.name]
            t0 = time.monotonic()
            lab.partition(a.host)
            self._watch(t0, [a])
            # leader isolation lasts at least 3 election timeouts; any partition at least twice
            # the preset's suspicion minimum (1.2 s in chaos, 3 s in the soak)
            self._hold(max(3 * ELECTION_TIMEOUT_MAX + 0.2, ph[0]), max(3 * ELECTION_TIMEOUT_MAX + 0.5, ph[1])) \
                if kind == "leader_isolation" else self._hold(*ph)
        elif kind in ("partition_pair", "oneway"):
            a, b = rng.sample(agents, 2)
            hosts = [a.name, b.name]
            (lab.partition(a.host, [b.host]) if kind == "partition_pair" else lab.oneway(a.host, b.host))
            detail = f"{a.name}->{b.name}" if kind == "oneway" else f"{a.name}|{b.name}"
            self._hold(*ph)
        elif kind == "split":
            order = rng.sample(servers, len(servers))
            minority = order[:(len(servers) - 1) // 2]
            side_a = [*minority, *(x for x in agents if not x.server and rng.random() < 0.5)]
            side_b = [x for x in agents if x not in side_a]
            hosts = [x.name for x in agents]
            detail = f"{[x.name for x in side_a]} | {[x.name for x in side_b]}"
            lab.split([x.host for x in side_a], [x.host for x in side_b])
            self._watch(t0, side_a)
            self._hold(*ph)
        elif kind == "loss":
            a = rng.choice(agents)
            hosts, excuses, detail = [a.name], False, "20% each way"
            lab.loss(a.host, 20)
            self._hold(*self.opts.loss_hold)
        elif kind == "delay":
            a = rng.choice(agents)
            lo, hi = self.opts.delay_ms
            hosts, excuses, detail = [a.name], False, f"{lo}-{hi} ms on what it sends"
            a.delay(lo, hi)
            self._hold(*self.opts.delay_hold)
        elif kind == "kill":
            a = rng.choice(servers)
            hosts = [a.name]
            a.kill9()
            self._watch(t0, [a])
            self._hold(0.5, 1.5)
        elif kind == "pause":
            a = rng.choice(agents)
            hosts = [a.name]
            a.pause()
            self._watch(t0, [a])
            self._hold(*self.opts.pause_range)
        elif kind == "majority_crash":
            victims = rng.sample(servers, len(servers) // 2 + 1)
            hosts = [v.name for v in victims]
            for v in victims:
                v.kill9()
            self._watch(t0, victims)
            self._hold(0.5, 1.5)
        elif kind == "cluster_crash":
            hosts = [a.name for a in agents]
            for a in agents:
                a.kill9()
            self._watch(t0, agents)
            self._hold(0.5, 1.5)
        elif kind == "leaderless_pair":
            lead = c.by_name.get(self._before[0]) or rng.choice(servers)
            a, b = rng.sample([s for s in servers if s is not lead], 2)
            others = [s for s in servers if s not in (lead, a, b)]
            hosts, detail = [x.name for x in servers], f"{lead.name} killed, {a.name}|{b.name}, others slowed"
            for o in others:  # their (pre-)vote answers lag: both cut servers campaign before either wins
                o.delay(300, 500)
            time.sleep(1.2)  # the agents re-read the delay file once a second
            t_kill = time.monotonic()
            lab.partition(a.host, [b.host])
            lead.kill9()
            self._watch(t_kill, [lead])
            self._hold(3 * ELECTION_TIMEOUT_MAX + 0.2, 3 * ELECTION_TIMEOUT_MAX + 0.5)
        elif kind == "member_change":
            a = rng.choice(servers)
            hosts = [a.name]
            left = self._leave(a)
            self._watch(t0, [a])
            out = self._wait_peers(len(servers) - 1, 30.0)
            self._hold(*ph)
            a.start()
            t_start = time.monotonic()
            back = self._wait_peers(len(servers), READD_BOUND)
            detail = (f"left ({'graceful' if left else 'leave failed, killed'}; "
                      f"{'out of' if out else 'STILL IN'} the configuration), "
                      + (f"added back {time.monotonic() - t_start:.1f} s after its restart" if back else
                         f"NOT added back within {READD_BOUND:g} s of its restart"))
            if not back:
                self.problems.append(f"member_change: {a.name} {detail}")
        elif kind == "failpoint":
            lead = c.leader()
            a = lead if lead is not None and rng.random() < 0.5 else rng.choice(servers)
            fp, nth = rng.choice(RAFT_FAILPOINTS), rng.randint(1, 20)
            hosts = [a.name]
            a.arm(f"{fp}=kill@{nth}")
            deadline = time.monotonic() + max(ph[1], 10.0)
            while a.running and time.monotonic() < deadline:
                time.sleep(0.02)
            t_died = time.monotonic()
            a.disarm()
            if a.running:
                time.sleep(0.7)  # it re-reads the file twice a second: disarmed before the heal looks
                detail = f"{fp}=kill@{nth} not reached"
            else:
                detail = f"{fp}=kill@{nth} fired after {t_died - t0:.1f} s"
                self._watch(t_died, [a])
                self._hold(0.5, 1.5)
        else:
            raise ValueError(f"unknown fault kind {kind!r}")
        self.heal()
        f = Fault(kind, t0, time.monotonic(), hosts, excuses, detail)
        self.log.append(f)
        return f

    def _leave(self, a: LabAgent) -> bool:
        """A graceful leave through the agent's HTTP API; it exits once the leave is out. False
        (and the agent killed) if that did not happen in time."""
        import httpx

        try:
            ok = bool(in_ns(a.host, lambda: httpx.put(HTTP + "/v1/agent/leave", timeout=30).status_code, 40) == 200)
            if a.proc is not None:
                a.proc.wait(timeout=30)
        except Exception:  # noqa: BLE001 - reported as a failed leave
            ok = False
        if a.running:
            a.kill9()
            ok = False
        return ok

    def _wait_peers(self, n: int, timeout: float) -> bool:
        """Bounded wait until the leader's Raft configuration holds `n` servers (voters and not)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lead = self.cluster.leader()
            if lead is not None:
                try:
                    r = self.cluster.get(lead, "/v1/operator/raft/configuration", 2.0)
                    if r.status_code == 200 and len(r.json()["Servers"]) == n:
                        return True
                except Exception:  # noqa: BLE001 - keep polling
                    pass
            time.sleep(0.2)
        return False

    def heal(self) -> None:
        self.lab.heal()
        for a in self.cluster.agents:
            a.undelay()
            if a.paused:
                a.resume()
            if not a.running:
                a.start()


def leader_and_term(cluster: Cluster) -> tuple[str, int]:
    """(the leader's name, or "" if the live servers do not agree on one; the highest term any
    live server reports), from every server's /v1/agent/self."""
    from concurrent.futures import ThreadPoolExecutor

    def view(s: LabAgent) -> tuple[str, int]:
        if not s.running or s.paused:
            return ("", 0)
        try:
            r = cluster.get(s, "/v1/agent/self", 1.0)
            st = r.json()["Stats"]
            return (st["consul"].get("leader_addr", ""), int(st["raft"].get("term", 0)))
        except Exception:  # noqa: BLE001 - down, starting or cut off
            return ("", 0)

    with ThreadPoolExecutor(len(cluster.servers)) as pool:
        views = list(pool.map(view, cluster.servers))
    addrs = {a for a, _ in views if a}
    lead = ""
    if len(addrs) == 1:
        host = cluster.lab.host_of_ip(addrs.pop().rsplit(":", 1)[0])
        lead = cluster.by_host[host].name if host in cluster.by_host else ""
    return lead, max((t for _, t in views), default=0)


class FailoverWatch:
    """Times one leader failover: from `t0` (the fault's start) until a majority of the servers
    report the same leader at a term above `old_term`; each server polled every 0.1 s by its own
    thread inside its namespace (a paused or dead one only times out itself). Gives up after
    `limit` seconds."""

    def __init__(self, cluster: Cluster, t0: float, old_term: int, limit: float = 90.0) -> None:
        import threading

        self.t0, self.old_term, self.deadline = t0, old_term, t0 + limit
        self.quorum = len(cluster.servers) // 2 + 1
        self.t_done: float | None = None
        self.latest: dict[str, tuple[str, int]] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._poll, args=(s,), daemon=True, name=f"failover-{s.name}")
                        for s in cluster.servers]
        for t in self.threads:
            t.start()

    def _poll(self, s: LabAgent) -> None:
        import httpx

        setns(s.host)
        with httpx.Client(base_url=HTTP, timeout=0.5) as c:
            while not self.stop.is_set() and time.monotonic() < self.deadline:
                view = ("", 0)
                if s.running and not s.paused:
                    try:
                        st = c.get("/v1/agent/self").json()["Stats"]
                        view = (st["consul"].get("leader_addr", ""), int(st["raft"].get("term", 0)))
                    except Exception:  # noqa: BLE001 - down, starting or cut off
                        pass
                now = time.monotonic()
                with self.lock:
                    self.latest[s.name] = view
                    agree = Counter(v for v in self.latest.values() if v[0] and v[1] > self.old_term)
                    if self.t_done is None and agree and max(agree.values()) >= self.quorum:
                        self.t_done = now
                        self.stop.set()
                self.stop.wait(0.1)

    def result(self, wait: float) -> float | None:
        """Seconds from the fault's start to the failover, or None (still open after `wait` more
        seconds, or past the limit)."""
        self.stop.wait(max(0.0, min(wait, self.deadline - time.monotonic())))
        self.stop.set()
        for t in self.threads:
            t.join(2.0)
        return None if self.t_done is None else round(self.t_done - self.t0, 2)


def _schedule(rng: random.Random, kinds: tuple[str, ...], n: int) -> list[str]:
    """Every kind once (shuffled) before any repeats, then random kinds."""
    first = rng.sample(list(kinds), len(kinds))
    return (first + [rng.choice(kinds) for _ in range(max(0, n - len(kinds)))])[:n]


def _read_acks(cluster: Cluster) -> dict[str, str] | None:
    import base64

    import httpx

    from .cluster import HTTP

    for _ in range(10):
        lead = cluster.leader()
        if lead is not None:
            try:
                r = in_ns(lead.host, lambda: httpx.get(HTTP + "/v1/kv/ack/?recurse&consistent", timeout=30), 40)
                if r.status_code == 404:
                    return {}
                if r.status_code == 200:
                    return {e["Key"]: base64.b64decode(e["Value"] or "").decode() for e in r.json()}
            except Exception:  # noqa: BLE001 - retry (bounded)
                pass
        time.sleep(1)
    return None


def run(opts: Options, log: Any = print) -> Summary:
    t_start = time.monotonic()
    rng = random.Random(opts.seed)
    summary = Summary(opts.seed)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    workdir = opts.out / f"{stamp}-seed{opts.seed}"
    workdir.mkdir(parents=True, exist_ok=True)
    lab = Lab(opts.servers + opts.clients)
    cluster: Cluster | None = None
    threads: list[Any] = []
    regs: list[RegisterClient] = []
    acks: list[AckWriter] = []
    watches: list[MemberWatch] = []
    cats: list[CatalogClient] = []
    probe: _CatalogProbe | None = None
    catalog_reports: list[str] = []
    nemesis: Nemesis | None = None
    keys: list[list[str]] = [[f"reg/c0/{j}" for j in range(opts.keys_per_cycle)]]
    details: dict[str, Any] = {}

    def on_term(signum: int, frame: Any) -> None:
        raise SystemExit(143)  # unwinds through the finally below: agents and namespaces go

    old_term = signal.signal(signal.SIGTERM, on_term)
    try:
        lab.build()
        cluster = Cluster(lab, workdir / "agents", opts.servers, opts.clients, opts.env, opts.gossip)
        cluster.start()
        if not cluster.wait_stable(90):
            raise RuntimeError("the cluster did not elect a leader known to every agent within 90 s")
        log(f"chaos: seed {opts.seed}, {opts.servers} servers + {opts.clients} clients up in "
            f"{time.monotonic() - t_start:.1f} s; lab prefix {lab.prefix}")
        agents = cluster.agents
        regs = [RegisterClient(agents[i % len(agents)], i, lambda: keys[0], rng.randrange(2**32))
                for i in range(opts.register_clients)]
        acks = [AckWriter(agents[-1 - i % len(agents)], i) for i in range(opts.ack_writers)]  # clients first
        watches = [MemberWatch(a) for a in agents]
        if opts.catalog_workload:
            cats = [CatalogClient(a, i, rng.randrange(2**32)) for i, a in enumerate(agents) if not a.server]
            probe = _CatalogProbe(cluster, cats)
        threads = [*regs, *acks, *watches, *cats]
        for t in threads:
            t.start()
        nemesis = Nemesis(lab, cluster, rng, opts)
        for i, kind in enumerate(_schedule(rng, opts.kinds, opts.cycles), 1):
            if opts.duration and time.monotonic() - t_start > opts.duration:
                break  # the soak's wall time is up: its normal end
            if time.monotonic() - t_start > opts.budget:
                summary.errors.append(f"time budget {opts.budget:.0f} s spent after {i - 1} cycles")
                break
            time.sleep(rng.uniform(0.2, 0.5))  # some traffic before the fault
            f = nemesis.run(kind)
            for c in cats:
                c.hold.set()  # still while the cluster settles; _catalog_converged lets it go on
            tq = time.monotonic()
            stable = cluster.wait_stable(45)
            q = time.monotonic() - tq
            summary.quiesce_s_max = max(summary.quiesce_s_max, q)
            summary.unstable_cycles += 0 if stable else 1
            summary.cycles = i
            fo = None
            if nemesis.watch is not None:
                fo = nemesis.watch.result(10.0)
                if fo is None:
                    summary.failover_unresolved += 1
                else:
                    summary.failover_s.append(fo)
            conv = _catalog_converged(probe, f.t1, opts.catalog_bound, summary, catalog_reports, f"cycle {i}")
            keys[0] = [f"reg/c{i}/{j}" for j in range(opts.keys_per_cycle)]
            log(f"cycle {i:2d} {kind:<16} {' '.join(f.hosts)[:24]:<24} {f.t1 - f.t0:4.1f} s fault, "
                f"{'quiet' if stable else 'NOT STABLE'} after {q:.1f} s (slowest: {cluster.last_wait})"
                f"{'' if conv is None else f', catalog {conv}'}"
                f"{'' if nemesis.watch is None else ', failover ' + ('OPEN' if fo is None else f'{fo:.1f} s')}"
                f"{f' [{f.detail}]' if kind in ('member_change', 'failpoint') else ''}"
                f"  t={time.monotonic() - t_start:.0f} s")
        time.sleep(1.0)
        for t in threads:
            t.join(TIMEOUT_JOIN)
        nemesis.heal()
        t_heal = time.monotonic()
        if not cluster.wait_stable(60):
            summary.errors.append("the cluster was not stable 60 s after the final heal")
        _catalog_converged(probe, t_heal, opts.catalog_bound, summary, catalog_reports, "final")
        summary.catalog_changes = sum(c.changes for c in cats)
        got = _read_acks(cluster)
        acked = {k: v for a in acks for k, v in a.acked.items()}
        summary.acked_writes = len(acked)
        lost: list[str] = []
        if got is None:
            summary.errors.append("the final consistent read of the acknowledged writes failed")
        else:
            lost = lost_writes(acked, got)
        summary.lost_acknowledged_writes = len(lost)
        ops = [op for r in regs for op in r.ops]
        summary.ops = len(ops)
        lin = check_linearizable(ops)
        summary.linearizability_violations = lin.violations
        summary.histories_checked = lin.histories
        summary.checker_timeouts = lin.timeouts
        summary.indeterminate_ops = lin.indeterminate + sum(a.unknown for a in acks)
        verdicts = [v for w in watches for v in w.verdicts]
        summary.dead_verdicts = len(verdicts)
        wrong = false_dead(verdicts, nemesis.log, opts.dead_window)
        summary.false_dead = len(wrong)
        summary.false_dead_under_loss = verdicts_during(wrong, nemesis.log, "loss", opts.dead_window)
        summary.false_dead_under_delay = verdicts_during(wrong, nemesis.log, "delay", opts.dead_window)
        raft = _raft_check(cluster)
        summary.raft_invariant_violations = len(raft.violations)
        summary.raft_reports = raft.violations[:20]
        summary.raft_lines, summary.raft_elections, summary.raft_terms = raft.lines, raft.elections, raft.terms
        summary.explain = _explain_false_dead(wrong, nemesis.log, cluster.agents, t_start)
        summary.faults = dict(Counter(f.kind for f in nemesis.log))
        summary.errors += nemesis.problems
        for t in threads:
            if t.error is not None:
                summary.errors.append(f"{t.thread.name}: {t.error!r}")
        details = {"lost": lost[:200], "lincheck": lin.reports[:50], "false_dead": [asdict(v) for v in wrong],
                   "catalog": catalog_reports[:50], "raft": raft.violations[:200], "failover_s": summary.failover_s}
    except BaseException as exc:
        summary.errors.append(f"run failed: {exc!r}")
        if not isinstance(exc, Exception):
            raise
    finally:
        for t in threads:
            t.join(TIMEOUT_JOIN)
        if probe is not None:
            probe.close()
        if cluster is not None:
            cluster.stop()
        lab.destroy()
        signal.signal(signal.SIGTERM, old_term)
        summary.wall_s = round(time.monotonic() - t_start, 1)
        _save(opts, summary, workdir, nemesis, regs, acks, watches, details)
    return summary


def _raft_check(cluster: Cluster) -> Any:
    """checkers.raft_invariants over every server's agent log (read as it stands)."""
    from collections.abc import Iterable
    from contextlib import ExitStack

    with ExitStack() as stack:
        logs: dict[str, Iterable[str]] = {}
        for s in cluster.servers:
            try:
                logs[s.name] = stack.enter_context(open(s.log_path, errors="replace"))
            except OSError:
                logs[s.name] = iter(())
        return raft_invariants(logs)


_TRAIL = ("suspecting", "refuting", "verdict deferred", "member failed", "member join", "member update", "loop stalled")


def _explain_false_dead(wrong: list[Any], faults: list[Fault], agents: list[LabAgent], t_start: float,
                        most: int = 3) -> list[str]:
    """For the first `most` false verdicts: when, who, the faults around it, and the gossip trail
    (suspicions, refutations, member events) of every agent's log from 8 s before to 1 s after."""
    import datetime

    out: list[str] = []
    mono_to_wall = time.time() - time.monotonic()
    for v in wrong[:most]:
        out.append(f"false dead: t={v.t - t_start:.1f} s  {v.observer} saw {v.member} fail")
        for f in faults:
            if f.t0 <= v.t + 1 and f.t1 >= v.t - 30:
                out.append(f"  fault {f.kind} {' '.join(f.hosts)} {f.detail} t={f.t0 - t_start:.1f}..{f.t1 - t_start:.1f} s"
                           f"{'' if f.excuses else ' (excuses nothing)'}")
        lo = datetime.datetime.fromtimestamp(v.t + mono_to_wall - 8).strftime("%Y-%m-%d %H:%M:%S")
        hi = datetime.datetime.fromtimestamp(v.t + mono_to_wall + 1).strftime("%Y-%m-%d %H:%M:%S")
        for a in agents:
            try:
                text = a.log_path.read_text(errors="replace")
            except OSError:
                continue
            for line in text.splitlines():
                if lo <= line[:19] <= hi and any(w in line for w in _TRAIL) and (v.member in line or a.name in (v.member, v.observer)):
                    out.append(f"  {a.name}: {line[11:200]}")
    return out[:80]


class _CatalogProbe:
    """Reads for the catalog-convergence checker: one thread (with one HTTP client) per lab host,
    kept for the run, so a poll costs a few local requests, not thread and client start-ups."""

    def __init__(self, cluster: Cluster, cats: list[CatalogClient]) -> None:
        self.cluster, self.cats = cluster, cats
        self.workers: dict[str, NsWorker] = {}
        self.clients: dict[str, Any] = {}

    def _call(self, host: str, fn: Any, timeout: float = 10.0) -> Any:
        import httpx

        from .cluster import HTTP

        if host not in self.workers:
            self.workers[host] = NsWorker(host)
        if host not in self.clients:
            self.clients[host] = self.workers[host].call(lambda: httpx.Client(base_url=HTTP, timeout=2.0))
        client = self.clients[host]
        return self.workers[host].call(lambda: fn(client), timeout)

    def diff(self, lead: LabAgent | None) -> dict[str, str]:
        """catalog_diff of every catalog client: its local services vs the leader's catalog."""
        mine = {c.agent.name: (self._call(c.agent.host, local_catalog_services)
                               if c.agent.running and not c.agent.paused else None) for c in self.cats}
        if lead is None:
            return catalog_diff(mine, {})
        return catalog_diff(mine, self._call(lead.host, lambda cl: {n: catalog_node_services(cl, n) for n in mine}, 20))

    def close(self) -> None:
        for host, c in self.clients.items():
            try:
                self.workers[host].call(c.close, 5)
            except Exception:  # noqa: BLE001 - best effort at the end of a run
                pass
        for w in self.workers.values():
            w.close()


def _catalog_converged(probe: _CatalogProbe | None, t_heal: float, bound: float, summary: Summary,
                       reports: list[str], label: str) -> str | None:
    """Hold the catalog workload still, poll until the catalog holds exactly each client's local
    services (or `bound` seconds after the heal at `t_heal` pass), then let it go on. Records the
    convergence time, or an unconverged heal; returns a short note for the cycle's log line."""
    if probe is None or not probe.cats:
        return None
    for c in probe.cats:
        c.quiesce(5.0)
    try:
        diff: dict[str, str] = {}
        lead = probe.cluster.leader()
        for _ in range(10_000):
            try:
                diff = probe.diff(lead)
            except Exception as exc:  # noqa: BLE001 - a read failed: look for the leader again
                diff, lead = {"-": f"read failed: {exc!r}"}, probe.cluster.leader()
            now = time.monotonic()
            if not diff:
                summary.catalog_checks += 1
                summary.catalog_convergence_s.append(round(now - t_heal, 2))
                return f"converged {now - t_heal:.1f} s after the heal"
            if now - t_heal > bound:
                break
            time.sleep(0.2)
            if any("unreadable catalog" in d for d in diff.values()):
                lead = probe.cluster.leader()
        summary.catalog_checks += 1
        summary.catalog_unconverged += 1
        reports.append(f"{label}: not converged {bound:.0f} s after the heal: {diff}")
        return f"NOT CONVERGED: {diff}"[:160]
    finally:
        for c in probe.cats:
            c.resume()


TIMEOUT_JOIN = 5.0


def _save(opts: Options, summary: Summary, workdir: Path, nemesis: Nemesis | None, regs: list[RegisterClient],
          acks: list[AckWriter], watches: list[MemberWatch], details: dict[str, Any]) -> None:
    opts.out.mkdir(parents=True, exist_ok=True)
    doc = {**asdict(summary), "options": {**asdict(opts), "out": str(opts.out)}}
    if not summary.failed:
        shutil.rmtree(workdir, ignore_errors=True)
        (opts.out / "last-summary.json").write_text(json.dumps(doc, indent=1, default=str))
        return
    summary.artifacts = str(workdir)
    doc["artifacts"] = str(workdir)
    (workdir / "seed").write_text(f"{opts.seed}\n")
    (workdir / "summary.json").write_text(json.dumps(doc, indent=1, default=str))
    (workdir / "details.json").write_text(json.dumps(details, indent=1, default=str))
    if nemesis is not None:
        (workdir / "nemesis.json").write_text(json.dumps([asdict(f) for f in nemesis.log], indent=1))
    with open(workdir / "histories.jsonl", "w") as fh:
        for r in regs:
            for op in r.ops:
                fh.write(json.dumps({"client": op.client, "host": r.agent.name, "kind": op.kind, "key": op.key,
                                     "value": op.value, "output": op.output, "call": op.call,
                                     "ret": None if op.ret == math.inf else op.ret}) + "\n")
    (workdir / "acked.json").write_text(json.dumps({f"w{a.wid}": a.acked for a in acks}))
    (workdir / "catalog_convergence.json").write_text(json.dumps(summary.catalog_convergence_s))
    (workdir / "dead_verdicts.json").write_text(json.dumps([asdict(v) for w in watches for v in w.verdicts]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--cycles", type=int, default=20)
    p.add_argument("--servers", type=int, default=5)
    p.add_argument("--clients", type=int, default=2)
    p.add_argument("--budget", type=float, default=320.0)
    p.add_argument("--kinds", default=",".join(KINDS))
    p.add_argument("--min-histories", type=int, default=50)
    p.add_argument("--soak", action="store_true", help="the long run: wall time, 5 servers, 3 clients, every kind")
    p.add_argument("--hours", type=float, default=1.0, help="with --soak: how long the fault cycles go on")
    a = p.parse_args(argv)
    seed = a.seed if a.seed is not None else random.SystemRandom().randrange(1, 10**6)
    if a.soak:
        opts = soak_options(seed, a.hours)
    else:
        opts = Options(seed=seed, servers=a.servers, clients=a.clients, cycles=a.cycles, budget=a.budget,
                       kinds=tuple(k for k in a.kinds.split(",") if k))
    s = run(opts)
    print(f"cycles: {s.cycles}  faults: {s.faults}  wall: {s.wall_s} s  ops: {s.ops}  acked_writes: {s.acked_writes}"
          f"  dead_verdicts: {s.dead_verdicts}  unstable_cycles: {s.unstable_cycles}  quiesce_max: {s.quiesce_s_max:.1f} s"
          f"  catalog: {s.catalog_changes} changes, {s.catalog_checks} heals checked, "
          f"max {max(s.catalog_convergence_s, default=0):.1f} s")
    for e in s.errors:
        print(f"error: {e}")
    if s.artifacts:
        print(f"artifacts (seed {s.seed}): {s.artifacts}")
    if a.soak:  # the bar: checker timeouts at most 1% of the histories
        ok = not s.failed and s.histories_checked >= a.min_histories and s.checker_timeouts_pct <= 1.0
    else:
        ok = not s.failed and s.histories_checked >= a.min_histories and s.cycles >= a.cycles
    print("\n".join(s.lines()))
    sys.stdout.flush()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
