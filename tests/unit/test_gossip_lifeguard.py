"""Lifeguard's pieces and the timers derived from the config: suspicion timeouts, local health
awareness, presets, and the Lamport clock."""

from __future__ import annotations

import math
import random

import pytest
from murmur.gossip import wire
from murmur.gossip.awareness import Awareness
from murmur.gossip.clock import LamportClock
from murmur.gossip.config import GossipConfig
from murmur.gossip.membership import Membership
from murmur.gossip.suspicion import Suspicion, remaining_timeout


# ---- derived timers ------------------------------------------------------------------------------
@pytest.mark.parametrize("n, want_min", [(1, 4.0), (5, 4.0), (10, 4.0), (20, 4 * math.log10(20)),
                                         (50, 4 * math.log10(50)), (100, 8.0), (1000, 12.0)])
def test_suspicion_min_and_max(n: int, want_min: float) -> None:
    cfg = GossipConfig.lan()
    assert cfg.suspicion_min(n) == pytest.approx(want_min)  # SuspicionMult * max(1, log10 N) * ProbeInterval
    assert cfg.suspicion_max(n) == pytest.approx(6 * want_min)  # SuspicionMaxTimeoutMult * min


def test_suspicion_timers_scale_with_probe_interval_and_mult() -> None:
    wan = GossipConfig.wan()
    assert wan.suspicion_min(100) == pytest.approx(6 * 2 * 5.0)
    assert GossipConfig.local().suspicion_min(10) == pytest.approx(3.0)
    # The anchors' figures: LAN N=20 -> 5.2 s / 31.2 s; N=50 -> 6.8 s / 40.8 s.
    assert round(GossipConfig.lan().suspicion_min(20), 1) == 5.2
    assert round(GossipConfig.lan().suspicion_max(50), 1) == 40.8


@pytest.mark.parametrize("n, want", [(20, 30.0), (32, 30.0), (33, 60.0), (64, 60.0), (65, 90.0), (100, 90.0)])
def test_push_pull_interval_scales_above_32_members(n: int, want: float) -> None:
    assert GossipConfig.lan().push_pull_scaled(n) == want


def test_presets_are_memberlists() -> None:
    lan, wan, local = GossipConfig.lan(), GossipConfig.wan(), GossipConfig.local()
    assert (lan.probe_interval, lan.probe_timeout, lan.indirect_checks, lan.suspicion_mult,
            lan.suspicion_max_timeout_mult, lan.retransmit_mult, lan.gossip_interval, lan.gossip_nodes,
            lan.push_pull_interval, lan.udp_buffer_size, lan.awareness_max_multiplier) == (
        1.0, 0.5, 3, 4, 6, 4, 0.2, 3, 30.0, 1400, 8)
    assert (wan.probe_interval, wan.probe_timeout, wan.suspicion_mult, wan.gossip_nodes) == (5.0, 3.0, 6, 4)
    assert (local.probe_timeout, local.indirect_checks, local.suspicion_mult, local.gossip_interval) == (
        0.2, 1, 3, 0.1)
    for cfg in (lan, wan, local):
        cfg.validate()


@pytest.mark.parametrize("change", [{"probe_interval": 0}, {"probe_timeout": 2.0}, {"suspicion_mult": 0},
                                    {"udp_buffer_size": 100}, {"awareness_max_multiplier": 0}])
def test_validate_names_the_field(change: dict[str, float]) -> None:
    from dataclasses import replace
    with pytest.raises(ValueError, match=next(iter(change))):
        replace(GossipConfig.lan(), **change).validate()


# ---- suspicion -----------------------------------------------------------------------------------
def test_remaining_timeout_formula() -> None:
    lo, hi = 5.2, 31.2
    assert remaining_timeout(0, 2, lo, hi) == hi
    assert remaining_timeout(1, 2, lo, hi) == pytest.approx(hi - (hi - lo) * math.log(2) / math.log(3))
    assert remaining_timeout(2, 2, lo, hi) == pytest.approx(lo)
    assert remaining_timeout(5, 2, lo, hi) == lo  # never below min
    assert remaining_timeout(0, 0, lo, hi) == lo  # nobody expected to confirm: min


def test_suspicion_shrinks_with_independent_confirmations_only() -> None:
    s = Suspicion("accuser", k=2, min_t=5.0, max_t=30.0, start=100.0)
    assert s.deadline == 130.0
    assert not s.confirm("accuser")  # the first accuser does not confirm itself
    assert s.confirm("b")
    first = s.deadline
    assert 105.0 < first < 130.0
    assert not s.confirm("b")  # duplicates do not count
    assert s.deadline == first
    assert s.confirm("c")
    assert s.deadline == 105.0
    assert not s.confirm("d")  # k reached: nothing more to learn
    assert s.n == 2


def test_suspicion_without_expected_confirmations_uses_min() -> None:
    s = Suspicion("accuser", k=0, min_t=5.0, max_t=30.0, start=10.0)
    assert s.deadline == 15.0
    assert not s.confirm("b")


def test_core_uses_k_equal_to_suspicion_mult_minus_two() -> None:
    cfg = GossipConfig.lan()
    m = Membership(cfg, "a", "10.0.0.1", 7946, random.Random(1), 0.0)
    for i in range(19):
        m.receive(wire.packet(wire.Alive(1, f"p{i}", f"10.0.1.{i}", 7946)), ("10.0.1.1", 7946), 0.0)
    m.receive(wire.packet(wire.Suspect(1, "p3", "p1")), ("10.0.1.1", 7946), 1.0)
    s = m.suspicions["p3"]
    assert s.k == cfg.suspicion_mult - 2 == 2
    assert (s.min, s.max) == (pytest.approx(cfg.suspicion_min(20)), pytest.approx(cfg.suspicion_max(20)))
    assert s.deadline == pytest.approx(1.0 + cfg.suspicion_max(20))
    m.receive(wire.packet(wire.Suspect(1, "p3", "p2")), ("10.0.1.1", 7946), 2.0)
    m.receive(wire.packet(wire.Suspect(1, "p3", "p2")), ("10.0.1.1", 7946), 2.0)  # duplicate
    assert s.n == 1
    m.receive(wire.packet(wire.Suspect(1, "p3", "p4")), ("10.0.1.1", 7946), 3.0)
    assert s.deadline == pytest.approx(1.0 + cfg.suspicion_min(20))


def test_small_clusters_expect_no_confirmations() -> None:
    """With n - 2 < k nobody else can confirm, so the minimum timeout applies at once."""
    cfg = GossipConfig.lan()
    m = Membership(cfg, "a", "10.0.0.1", 7946, random.Random(1), 0.0)
    for i in range(2):
        m.receive(wire.packet(wire.Alive(1, f"p{i}", f"10.0.1.{i}", 7946)), ("10.0.1.1", 7946), 0.0)
    m.receive(wire.packet(wire.Suspect(1, "p0", "p1")), ("10.0.1.1", 7946), 1.0)
    assert m.suspicions["p0"].k == 0
    assert m.suspicions["p0"].deadline == pytest.approx(1.0 + cfg.suspicion_min(3))


# ---- awareness -----------------------------------------------------------------------------------
def test_awareness_scales_and_clamps() -> None:
    a = Awareness(8)
    assert a.scale(1.0) == 1.0
    a.apply_delta(3)
    assert a.score == 3 and a.scale(0.5) == 2.0
    a.apply_delta(100)
    assert a.score == 7 and a.scale(1.0) == 8.0  # at most max - 1: the interval backs off to 8x
    a.apply_delta(-100)
    assert a.score == 0 and a.scale(1.0) == 1.0  # never below 0


def test_awareness_scales_the_core_probe_interval_and_timeout() -> None:
    cfg = GossipConfig.lan()
    m = Membership(cfg, "a", "10.0.0.1", 7946, random.Random(1), 0.0)
    m.receive(wire.packet(wire.Alive(1, "b", "10.0.1.1", 7946)), ("10.0.1.1", 7946), 0.0)
    m.awareness.apply_delta(2)
    t = m.next_probe
    m.handle_timer(t)
    assert m.probe is not None
    assert m.probe.direct_deadline == pytest.approx(t + 3 * cfg.probe_timeout)
    assert m.probe.end == pytest.approx(t + 3 * cfg.probe_interval)
    # The probe ticker keeps the base interval (memberlist's): a healthy member is back to one probe a
    # second at once. Ticks that fall while the slowed-down probe still runs are skipped.
    assert m.next_probe == pytest.approx(t + cfg.probe_interval)
    probe = m.probe
    m.handle_timer(t + cfg.probe_interval)
    assert m.probe is probe and m.next_probe == pytest.approx(t + 2 * cfg.probe_interval)


def test_a_quick_ack_means_the_next_probe_at_the_next_base_tick_whatever_the_score() -> None:
    cfg = GossipConfig.lan()
    m = Membership(cfg, "a", "10.0.0.1", 7946, random.Random(1), 0.0)
    m.receive(wire.packet(wire.Alive(1, "b", "10.0.1.1", 7946)), ("10.0.1.1", 7946), 0.0)
    m.awareness.apply_delta(3)
    t = m.next_probe
    m.handle_timer(t)
    assert m.probe is not None
    m.receive(wire.packet(wire.Ack(m.probe.seq)), ("10.0.1.1", 7946), t + 0.01)
    assert m.probe is None and m.awareness.score == 2  # the ack concludes it; a success lowers the score
    m.handle_timer(t + cfg.probe_interval)
    assert m.probe is not None  # one base interval after the last start, not four


# ---- Lamport clock -------------------------------------------------------------------------------
def test_lamport_clock_witness() -> None:
    c = LamportClock()
    assert c.increment() == 1
    c.witness(10)
    assert c.time == 11  # moves past what it saw
    c.witness(3)
    assert c.time == 11  # never back
    c.witness(11)
    assert c.time == 12
    assert c.increment() == 13


def test_a_member_declared_dead_tells_every_live_member_of_its_refutation() -> None:
    """After a long pause nobody probes or gossips to a dead member any more: its refutation goes
    straight to the members it knows (gossip alone leaves ~1 in 8 of a small cluster uninformed)."""
    cfg = GossipConfig.local()
    m = Membership(cfg, "a", "10.0.0.1", 7946, random.Random(1), 0.0)
    peers = [(f"p{i}", f"10.0.2.{i}") for i in range(5)]
    for name, addr in peers:
        m.receive(wire.packet(wire.Alive(1, name, addr, 7946)), (addr, 7946), 0.0)
    m.packets_to_send()
    m.receive(wire.packet(wire.Suspect(1, "a", "p0")), ("10.0.2.0", 7946), 1.0)  # positive control
    told = {addr for addr, data in m.packets_to_send()
            if any(isinstance(x, wire.Alive) and x.node == "a" for x in wire.decode_packet(data)[0])}
    assert m.me.incarnation == 2 and len(told) < len(peers)  # a suspicion is refuted by gossip only
    m.receive(wire.packet(wire.Dead(2, "a", "p1")), ("10.0.2.1", 7946), 2.0)
    told = {addr for addr, data in m.packets_to_send()
            if any(isinstance(x, wire.Alive) and x.node == "a" and x.incarnation == 3
                   for x in wire.decode_packet(data)[0])}
    assert m.me.incarnation == 3 and told == {(addr, 7946) for _, addr in peers}
