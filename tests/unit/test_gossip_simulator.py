"""gossip/sim.py itself: the invariant checker can fail, runs replay from their seed, and the
network model does what the simulation tests rely on (loss applies to TCP too, joins retry)."""

from __future__ import annotations

import pytest
from murmur.gossip.config import GossipConfig
from murmur.gossip.membership import EventKind, State
from murmur.gossip.sim import InvariantViolation, NetworkModel, Simulation


def test_the_incarnation_checker_fails_on_a_regression() -> None:
    """A checker that has never failed proves nothing: feed it an incarnation going backwards.
    (Changed from outside the core, this is caught by the sweep at the end of run_until.)"""
    s = Simulation(3, seed=11)
    s.run_until(5.0)
    observer = s.nodes["node-0000"]
    subject = observer.m.members["node-0001"]
    subject.incarnation = 7  # moving forward is fine ...
    s.run_until(6.0)
    subject.incarnation = 3  # ... going back is what the checker exists to catch
    with pytest.raises(InvariantViolation) as err:
        s.run_until(7.0)
    msg = str(err.value)
    assert "seed 11" in msg and "node-0000" in msg and "node-0001" in msg and "7 -> 3" in msg


def test_the_incremental_checker_catches_a_core_regression_mid_run() -> None:
    """The per-step check looks only at the records the core reports changing (Membership.touched).
    A core that moves an incarnation back through its own code path (here a patched timer handler
    that copies the record and lowers it) is caught at that step, with the end-of-run sweep off."""
    s = Simulation(4, seed=11)
    s.run_until(5.0)
    s.check_all = lambda: None  # type: ignore[method-assign]  # the incremental path alone
    subject = s.nodes["node-0001"]
    subject.m.update_tags({"role": "x"}, s.now)  # incarnation 1 -> 2, gossiped to everyone
    s._after_input(subject)
    observer = s.nodes["node-0000"].m
    real_timer = observer.handle_timer
    broke: list[float] = []

    def buggy_timer(now: float) -> None:
        real_timer(now)
        m = observer.members["node-0001"]
        if not broke and m.incarnation == 2 and now > 6.0:  # seen at 2 by an earlier step
            observer._own(m).incarnation = 1
            broke.append(now)

    observer.handle_timer = buggy_timer  # type: ignore[method-assign]
    with pytest.raises(InvariantViolation) as err:
        s.run_until(30.0)
    assert broke and f"t={broke[0]:.3f}" in str(err.value), (broke, str(err.value))
    assert "node-0000" in str(err.value) and "2 -> 1" in str(err.value)


def test_the_checker_allows_a_restarted_member_to_start_over() -> None:
    s = Simulation(3, seed=5)
    s.run_until(5.0)
    s.kill("node-0002")
    s.run_until(40.0)
    s.add_node("node-0002", seed_node="node-0000")  # fresh state: its own view starts at 1 again
    s.run_until(80.0)
    assert s.converged()


def test_a_run_replays_exactly_from_its_seed() -> None:
    def run(seed: int) -> list[tuple[float, str, EventKind, str]]:
        s = Simulation(8, seed=seed, net=NetworkModel(loss=0.1))
        s.run_until(10.0)
        s.kill("node-0003")
        s.run_until(40.0)
        return [(r.time, r.observer, r.kind, r.subject) for r in s.records]

    assert run(3) == run(3)
    assert run(3) != run(4)


def test_loss_applies_to_tcp_too() -> None:
    """Fallback pings and push-pulls over TCP pay for lost segments with retransmission timeouts,
    so at high loss some of them miss their deadline, as on a real network."""
    lossless = Simulation(2, seed=1, join=False)
    assert lossless._tcp_leg(2, 1.0) == 0.0
    lossy = Simulation(2, seed=1, join=False, net=NetworkModel(loss=0.5))
    delays = [lossy._tcp_leg(2, 1.0) for _ in range(2000)]
    late = sum(d > 0 for d in delays) / len(delays)
    assert 0.70 < late < 0.80  # 1 - 0.5**2 of handshakes lose a segment and wait the 1 s RTO
    assert {0.0, 1.0, 3.0} <= set(delays)  # 1 s, then 2 s more: exponential backoff
    assert Simulation(2, seed=1, join=False, net=NetworkModel(loss=0.5, tcp_loss=0.0))._tcp_leg(2, 1.0) == 0.0


def test_a_failed_join_is_retried_like_retry_join() -> None:
    s = Simulation(2, seed=2, join=False)
    s.partition([["node-0000"], ["node-0001"]])
    s.add_node("node-0002", seed_node="node-0000", at=0.0)
    s.group["node-0002"] = 2  # on the far side: the first join hangs until its TCP deadline
    s.run_until(15.0)
    assert set(s.nodes["node-0002"].m.members) == {"node-0002"}
    s.heal()
    s.run_until(50.0)  # the retry, RETRY_JOIN_INTERVAL after the failure
    assert "node-0000" in s.nodes["node-0002"].m.members
    assert s.nodes["node-0002"].m.members["node-0000"].state == State.ALIVE


def test_paused_stream_at_its_exact_deadline_does_not_spin() -> None:
    """A stream served at exactly its deadline against a paused member used to re-queue itself at
    the same instant forever."""
    s = Simulation(4, GossipConfig.lan(), seed=0)
    s.run_until(20.0)
    serve = s._do_stream_serve
    calls = 0

    def counted(*args: object) -> None:
        nonlocal calls
        calls += 1
        assert calls < 10_000, "a stream to a paused member keeps re-queueing itself"
        serve(*args)  # type: ignore[arg-type]

    s._do_stream_serve = counted  # type: ignore[method-assign]
    s.pause("node-0001")
    s.run_until(25.0)  # returns: probes of the paused member time out, their TCP fallback too
    s.resume("node-0001")
    s.run_until(30.0)
    assert s.converged()


def test_shared_rotation_cache_gives_each_core_what_it_would_compute_alone() -> None:
    """The simulator's cores share live lists and rotation orders (membership.RotationCache), edited
    as members die, join and partitions heal: every core's list must still equal its own table's
    live members, and cores that agree must hold one list between them, not a copy each."""
    from murmur.gossip.membership import LIVE, rotation_order

    s = Simulation(30, seed=4, net=NetworkModel(loss=0.1), converged=True)
    checked = 0
    shared_after_kill = 0
    for t in range(5, 150, 5):
        s.run_until(float(t))
        for nd in s.nodes.values():
            if nd.up and nd.m._live_names is not None:
                live = sorted(n for n, m in nd.m.members.items() if m.state in LIVE)
                assert nd.m._live_names == live, (t, nd.name)
                if nd.m._rotation_key is not None and nd.m._rotation_key[1] == len(live):
                    assert nd.m._rotation == rotation_order(nd.m._rotation_key[0], live), (t, nd.name)
                checked += 1
        if t == 20:
            s.kill("node-0003")
        if t == 45:  # everyone has declared it dead, each editing the same list the same way
            shared_after_kill = len({id(nd.m._live_names) for nd in s.nodes.values() if nd.up})
        if t == 50:
            s.add_node("node-0003", seed_node="node-0000")
        if t == 60:
            s.partition([s.live_names()[:15], s.live_names()[15:]])
        if t == 100:
            s.heal()
    assert checked > 500
    assert shared_after_kill == 1  # 29 cores, one list
