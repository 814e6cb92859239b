"""SWIM + Lifeguard in the deterministic simulator: the real Membership cores, GossipConfig.lan()
unchanged, virtual time. Every assertion names its seed, and Simulation(n, seed=...) replays it.

What is checked, and the bound each time:
- no live member is ever declared dead at 0% loss, nor at 20% uniform loss (with suspicions and
  refutations happening, or the lossy run would prove nothing);
- a killed member is declared dead by every other member within a bound derived from the timers;
- a partition heals back into one view within one reconnect interval plus gossip time;
- SIGSTOP-like pauses: a short one is tolerated, a long one is a death and then a quick return;
- incarnations never go backwards (the simulator checks after every step of every member, and
  tests/unit/test_gossip_simulator.py shows that checker failing on a regression).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
import random
import statistics

import pytest
from murmur.gossip.config import GossipConfig
from murmur.gossip.membership import EventKind, State
from murmur.gossip.sim import NetworkModel, Record, Simulation

LAN = GossipConfig.lan()
PI = LAN.probe_interval


def settled(n: int, seed: int, net: NetworkModel | None = None, config: GossipConfig = LAN) -> Simulation:
    """A cluster of n that has joined and converged (0.5 s of staggered joins, then up to two
    push-pull periods for the rare member that missed every copy of someone's alive)."""
    s = Simulation(n, config, seed=seed, net=net)
    s.run_until(20.0)
    s.run_while(lambda: not s.converged(), LAN.push_pull_interval * 2, step=1.0)
    assert s.converged(), f"seed {seed}: {n} members did not converge after joining"
    return s


def totals(s: Simulation) -> collections.Counter[str]:
    out: collections.Counter[str] = collections.Counter()
    for node in s.nodes.values():
        out.update(node.m.stats)
    return out


def failures(s: Simulation, after: float = 0.0) -> list[str]:
    return [f"t={r.time:.2f} {r.observer} declared {r.subject} dead"
            for r in s.records if r.kind == EventKind.FAILED and r.time >= after]


# ---- no false deaths -----------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_no_live_member_is_declared_dead_without_loss(seed: int) -> None:
    s = Simulation(50, LAN, seed=seed)
    s.run_until(180.0)
    assert failures(s) == [], f"seed {seed}"
    assert totals(s)["suspects_started"] == 0, f"seed {seed}: suspicions on a perfect network"
    assert s.converged(), f"seed {seed}"


def test_no_live_member_is_declared_dead_at_20_percent_loss() -> None:
    """100 members, 10 simulated minutes, every datagram (and TCP segment) lost with p = 0.2.
    Probes fail often enough that members are suspected all the time; Lifeguard and refutation must
    keep every one of them alive. (Without the repairs for members that miss a refutation, see
    Membership._answer_stale, this seed had 6 false deaths.)"""
    seed = 1
    s = Simulation(100, LAN, seed=seed, net=NetworkModel(loss=0.2))
    s.run_until(600.0)
    stats = totals(s)
    assert failures(s) == [], f"seed {seed}: false deaths at 20% loss"
    # Positive control: the run did put the protocol under pressure.
    assert 0.19 < s.packets_lost / s.packets < 0.21, f"seed {seed}"
    assert stats["suspects_started"] > 1000, f"seed {seed}: {stats}"
    assert stats["refutes"] > 100, f"seed {seed}: {stats}"
    assert stats["indirect_probes"] > 1000 and stats["nacks_sent"] > 0, f"seed {seed}: {stats}"
    assert s.converged(), f"seed {seed}: views differ at the end"


# ---- detection of a killed member ----------------------------------------------------------------
DETECTION_RUNS = {20: range(100)}  # cluster size -> seeds (N=50 costs ~1 s a seed; see the issue note)


def detection_time(n: int, seed: int, config: GossipConfig = LAN, skew: float = 0.0) -> float:
    """Seconds from kill -9 of a random member until the last other member declared it dead.
    `skew`: each member's wall clock is off by up to this many seconds (the probe rotation's tick)."""
    s = settled(n, seed, config=config)
    if skew:
        rng = random.Random(seed)
        for node in s.nodes.values():
            node.m.wall_offset = rng.uniform(-skew, skew)
    victim = Simulation.name_of(s.rng.randrange(n))
    s.kill(victim)
    killed = s.now
    waiting = set(s.live_names()) - {victim}
    seen: dict[str, float] = {}

    def on_record(r: Record) -> None:
        if r.kind == EventKind.FAILED and r.subject == victim:
            seen.setdefault(r.observer, r.time - killed)

    s.on_record = on_record
    s.run_while(lambda: not waiting <= seen.keys(), LAN.suspicion_max(n) + 10 * PI, step=0.25)
    assert waiting <= seen.keys(), f"seed {seed}: {victim} never declared dead by {sorted(waiting - seen.keys())}"
    assert all(f.endswith(f"{victim} dead") for f in failures(s)), f"seed {seed}: {failures(s)[:3]}"
    return max(seen.values())


@functools.cache
def detection_times(n: int, config: GossipConfig = LAN) -> dict[int, float]:
    return {seed: detection_time(n, seed, config) for seed in DETECTION_RUNS[n]}


def quantile(xs: list[float], q: float) -> float:
    return sorted(xs)[math.ceil(q * len(xs)) - 1]


@pytest.mark.parametrize("n", sorted(DETECTION_RUNS))
def test_killed_member_is_declared_dead_by_everyone_in_bounded_time(n: int) -> None:
    """Hard bound, every seed: suspicion_max + 2 probe intervals. The timeout starts at max and only
    shrinks; the first probe of the victim and the probe itself take about two intervals.

    Typical bound, 95% of seeds: suspicion_min + 4 probe intervals + 1 s, loose enough to hold
    for memberlist's independent shuffles too (their wait for the first probe of the victim is about
    exponential, 95th percentile ln 20 = 3 intervals). Then one interval of probing (direct timeout,
    indirect probes), the minimum suspicion timeout (confirmations arrive within a second or two),
    and under a second of gossip for the verdict. The tighter bound is the next test's."""
    times = detection_times(n)
    hard = LAN.suspicion_max(n) + 2 * PI
    late = {seed: round(t, 2) for seed, t in times.items() if t > hard}
    assert not late, f"seeds past the hard bound of {hard:.1f} s: {late}"
    typical = LAN.suspicion_min(n) + 4 * PI + 1.0
    over = {seed: round(t, 2) for seed, t in times.items() if t > typical}
    assert len(over) <= 0.05 * len(times), f"seeds past {typical:.1f} s: {over}"
    values = list(times.values())
    print(f"\ndetection N={n}, {len(values)} seeds: median {statistics.median(values):.2f} s, "
          f"p95 {quantile(values, 0.95):.2f} s, max {max(values):.2f} s; bounds {typical:.1f} / {hard:.1f} s")
    # The timers set the median: under one probe interval of waiting, one of probing, the minimum
    # suspicion timeout. memberlist measured p50 7.40 s (N=20) and 9.03 s (N=50) (performance anchors).
    expected = LAN.suspicion_min(n) + 2 * PI
    assert expected - 1.0 < statistics.median(values) < expected + 1.0


@pytest.mark.parametrize("n", sorted(DETECTION_RUNS))
def test_killed_member_is_declared_dead_within_the_issues_tighter_bound(n: int) -> None:
    """The issue's bound, 95% of seeds: suspicion_min + 2 PI + 1 s. The probe rotation (every live
    member probed once per wall-clock tick) keeps the wait for the first probe of the victim under
    one interval, then one interval of probing, the minimum suspicion and under a second of gossip."""
    times = detection_times(n)
    bound = LAN.suspicion_min(n) + 2 * PI + 1.0
    over = {seed: round(t, 2) for seed, t in times.items() if t > bound}
    assert len(over) <= 0.05 * len(times), f"seeds past {bound:.1f} s: {over}"


@pytest.mark.parametrize("n", sorted(DETECTION_RUNS))
def test_control_independent_shuffles_miss_the_tighter_bound(n: int) -> None:
    """Control for the test above: with memberlist's independent shuffle per member the wait for
    the first probe is about exponential (mean one interval), and about 1 kill in 6 is seen late.
    If this ever passes the bound, the test above no longer shows what the rotation buys."""
    times = detection_times(n, dataclasses.replace(LAN, probe_rotation=False))
    bound = LAN.suspicion_min(n) + 2 * PI + 1.0
    over = [seed for seed, t in times.items() if t > bound]
    assert len(over) > 0.05 * len(times)


# ---- partitions ----------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(5))
def test_healed_partition_converges_to_one_view(seed: int) -> None:
    """Two halves of 10 cannot talk for 90 s, long enough for each to declare the other dead
    (suspicion_max(20) = 31 s). After the heal, every member's next reconnect tick (at most
    reconnect_interval away; with 10 failed and 9 other live members the chance to try is 1) opens
    a push-pull across; each side learns it was declared dead, refutes, and gossip carries the
    refutations to everyone within a few seconds: one view within reconnect_interval + 5 s."""
    s = settled(20, seed)
    names = s.live_names()
    left, right = names[:10], names[10:]
    s.partition([left, right])
    start = s.now
    s.run_until(start + 90.0)
    for a, b in ((left, right), (right, left)):
        wrong = [(o, x) for o in a for x in b if s.nodes[o].m.members[x].state != State.DEAD]
        assert not wrong, f"seed {seed}: not declared dead across the partition: {wrong[:5]}"
        wrong = [(o, x) for o in a for x in a if s.nodes[o].m.members[x].state != State.ALIVE]
        assert not wrong, f"seed {seed}: a partition side lost its own members: {wrong[:5]}"
    s.heal()
    healed = s.now
    bound = LAN.reconnect_interval + 5.0
    s.run_while(lambda: not s.converged(), bound, step=0.25)
    assert s.converged(), f"seed {seed}: still split {bound:.0f} s after the heal"
    s.run_until(s.now + 60.0)
    assert s.converged(), f"seed {seed}: the merged view fell apart again"
    print(f"seed {seed}: one view {s.now - 60.0 - healed:.1f} s after the heal")


def test_soak_2027_false_dead__an_isolated_members_push_pull_does_not_confirm_its_own_suspicions() -> None:
    """Found by the 1-hour soak (seed 2027): s2, cut off for 8 s, suspected c3 (Lifeguard: no
    confirmations, so the 18 s maximum). Just after the heal its first push-pulls carried that
    suspicion; each peer took it as a suspicion of its own (memberlist names itself as the
    accuser there) and gossiped it, so s2 counted them as independent confirmations, its timer
    fell to the 3 s minimum, long past, and it declared c3 dead before c3 could refute. A verdict
    read in a peer's table is now unattributed and never confirms. Over 8 members on memberlist's
    local preset, one member isolated for 6-9 s (twice the suspicion minimum and more), 160 runs:
    no live member is declared dead after the heal (before the fix, 30 of the first 120 runs had one)."""
    local = GossipConfig.local()
    wrong = []
    for seed in range(40):
        for hold in (6.0, 7.0, 8.0, 9.0):
            s = Simulation(8, local, seed=seed, converged=True)
            s.run_until(20.0)
            names = s.live_names()
            cut = names[seed % len(names)]
            s.partition([[cut], [n for n in names if n != cut]])
            s.run_until(20.0 + hold)
            healed = s.now
            s.heal()
            s.run_until(healed + 40.0)
            # (the others' verdict on the cut-off member may land just after the heal: its timers
            # ran while it was cut off, and that verdict is the partition's)
            wrong += [(seed, hold, r.observer, r.subject, round(r.time - healed, 2)) for r in s.records
                      if r.kind == EventKind.FAILED and r.time >= healed
                      and not (r.subject == cut and r.time < healed + 1.0)]
    assert not wrong, f"live members declared dead after the heal: {wrong[:8]}"


# ---- pauses (SIGSTOP / SIGCONT) ------------------------------------------------------------------
PAUSE_N = 20


@pytest.mark.parametrize("seed", range(6))
def test_short_pause_is_tolerated(seed: int) -> None:
    s = settled(PAUSE_N, seed)
    victim = Simulation.name_of(seed % PAUSE_N)
    start = s.now
    s.pause(victim)
    s.run_until(start + 0.5 * LAN.suspicion_min(PAUSE_N))
    s.resume(victim)
    s.run_until(start + LAN.suspicion_max(PAUSE_N) + 30.0)
    assert failures(s) == [], f"seed {seed}: a pause of half the minimum suspicion timeout killed someone"
    assert s.converged(), f"seed {seed}"


@pytest.mark.parametrize("seed", range(6))
def test_long_pause_is_a_death_then_a_quick_return(seed: int) -> None:
    s = settled(PAUSE_N, seed)
    victim = Simulation.name_of(seed % PAUSE_N)
    others = [n for n in s.live_names() if n != victim]
    start = s.now
    s.pause(victim)
    s.run_until(start + 2 * LAN.suspicion_max(PAUSE_N))
    alive = [o for o in others if s.nodes[o].m.members[victim].state != State.DEAD]
    assert not alive, f"seed {seed}: still not dead after 2x suspicion_max for {alive}"
    assert {f.split()[1] for f in failures(s)} == set(others), f"seed {seed}"
    assert all(f.endswith(f"{victim} dead") for f in failures(s)), f"seed {seed}: collateral deaths"
    s.resume(victim)
    resumed = s.now
    bound = 2 * PI + 1.0  # its backlog tells it it was declared dead; the refutation is gossiped
    s.run_while(lambda: not s.converged(), bound, step=0.05)
    assert s.converged(), f"seed {seed}: {victim} not back everywhere {bound:.0f} s after resuming"
    back = [s.first_record(EventKind.JOIN, victim, o, after=resumed) for o in others]
    assert all(back), f"seed {seed}"
    assert s.nodes[victim].m.stats["refutes"] >= 1, f"seed {seed}"
    s.run_until(s.now + 60.0)
    assert s.converged() and all(f.endswith(f"{victim} dead") for f in failures(s)), f"seed {seed}"


# ---- at scale (murmur sim) -----------------------------------------------------------------------
def test_a_thousand_members_from_a_converged_start() -> None:
    """1,000 members, 30 simulated seconds, LAN timers: a kill reaches every live member, a join
    too, and nobody else is declared dead (the issue's CI-sized scale run; about 45 s of wall time)."""
    from murmur.gossip.sim import scenario

    r = scenario(1000, 30.0, seed=7, kill_at=5.0, join_at=8.0)
    assert r["false_deaths"] == 0, r
    fail, join = r["failure_spread_s"], r["join_spread_s"]
    assert fail["100%"] is not None and fail["100%"] <= LAN.suspicion_max(1000) + 2 * PI, r
    assert fail["100%"] <= 30.0 - 5.0
    assert join["100%"] is not None and join["100%"] < 5.0, r


@pytest.mark.parametrize("skew", [0.3, 3.0])
def test_rotation_with_skewed_clocks_is_no_worse_than_random(skew: float) -> None:
    """Wall clocks apart by up to `skew` seconds: the turns of the rotation overlap, some ticks
    leave a member unprobed and others probe it twice. Detection must still meet the bound that
    holds for memberlist's random order, with no false deaths."""
    n = 20
    times = [detection_time(n, seed, skew=skew) for seed in range(30)]
    typical = LAN.suspicion_min(n) + 4 * PI + 1.0
    assert sum(t > typical for t in times) <= 0.05 * len(times), sorted(times)
