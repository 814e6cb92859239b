"""The fault lab itself: its faults cut what they say, and its checkers catch planted bugs.

Each planted-bug test runs the chaos harness on 3 real servers with one deliberately wrong
behaviour switched on in every agent (agent/failpoints.py BUGS) and a fault that exposes it;
the checker must report it. The clean `make chaos` run is the control (same code, no bug, 0).
"""

from __future__ import annotations

import socket

import pytest

from lab.chaos import Options, run
from lab.netns import Lab, entered

pytestmark = [pytest.mark.e2e, pytest.mark.lab]


def _connect(lab: Lab, src: str, dst: str) -> str:
    """'refused' (the path works: nothing listens on port 9) or 'timeout' (frames dropped)."""
    with entered(src), socket.socket() as s:
        s.settimeout(0.4)
        err = s.connect_ex((lab.ip(dst), 9))
    return "refused" if err == 111 else "timeout"


def test_faults_cut_what_they_say() -> None:
    lab = Lab(3).build()
    try:
        h1, h2, h3 = lab.hosts
        assert [_connect(lab, h1, h2), _connect(lab, h2, h3)] == ["refused", "refused"]
        lab.partition(h2)
        assert [_connect(lab, h1, h2), _connect(lab, h3, h2), _connect(lab, h1, h3)] == ["timeout", "timeout", "refused"]
        lab.heal()
        lab.partition(h1, [h2])
        assert [_connect(lab, h1, h2), _connect(lab, h2, h1), _connect(lab, h1, h3), _connect(lab, h3, h2)] == \
            ["timeout", "timeout", "refused", "refused"]
        lab.heal()
        lab.oneway(h1, h3)  # h1 -> h3 dropped: neither side completes a TCP handshake, UDP flows h3 -> h1
        with entered(h1), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as r:
            r.bind((lab.ip(h1), 9999))
            r.settimeout(1)
            with entered(h3), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as w:
                w.sendto(b"x", (lab.ip(h1), 9999))
            assert r.recv(10) == b"x"
        assert _connect(lab, h1, h3) == "timeout"
        lab.heal()
        lab.loss(h2, 50)  # a handshake needs SYN out and RST back: 25% expected to get through
        ok = sum(_connect(lab, h1, h2) == "refused" for _ in range(40))
        assert 2 <= ok <= 25, ok
        lab.heal()
        assert _connect(lab, h1, h2) == "refused"
    finally:
        lab.destroy()
    import subprocess

    assert not [n for n in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
                if n.startswith(lab.prefix)]


def _planted(tmp_path, kind: str, bug: str, **kw):  # type: ignore[no-untyped-def]
    kw = {"servers": 3, "clients": 0, "cycles": 2, "kinds": (kind,), **kw}
    opts = Options(seed=5, out=tmp_path, env={"MURMUR_FAILPOINTS": f"{bug}=on"} if bug else {}, **kw)
    s = run(opts)
    print(s)
    return s


def test_linearizability_checker_catches_reads_served_by_a_cut_off_follower(tmp_path) -> None:  # type: ignore[no-untyped-def]
    s = _planted(tmp_path, "partition_follower", "read.serve_from_follower", keys_per_cycle=1, ack_writers=0)
    assert s.histories_checked >= 2
    assert s.linearizability_violations >= 1, s
    assert s.artifacts and (tmp_path / s.artifacts.rsplit("/", 1)[-1] / "histories.jsonl").exists()


def test_lost_write_checker_catches_acks_before_commit(tmp_path) -> None:  # type: ignore[no-untyped-def]
    s = _planted(tmp_path, "leader_isolation", "raft.ack_before_fsync", ack_writers=3)
    assert s.lost_acknowledged_writes >= 1, s


# 5 servers: with the leader dead and two servers cut from each other, each of the two still
# reaches a majority (itself and the other two).
PAIR = {"servers": 5, "cycles": 3, "keys_per_cycle": 1, "register_clients": 2, "ack_writers": 0, "catalog_workload": False}


def test_raft_invariant_checker_catches_a_second_vote_in_a_term(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # The leader killed and the two others cut from each other: each campaigns, unaware of the
    # other; the double vote of the third server lets both win the same term.
    s = _planted(tmp_path, "leaderless_pair", "raft.double_vote", **PAIR)
    assert s.raft_invariant_violations >= 1, s
    assert any("election safety" in r for r in s.raft_reports), s.raft_reports


def test_without_the_planted_double_vote_the_raft_checker_reports_nothing(tmp_path) -> None:  # type: ignore[no-untyped-def]
    s = _planted(tmp_path, "leaderless_pair", "", **PAIR)
    assert s.cycles == 3 and s.raft_elections >= 4 and s.raft_invariant_violations == 0 and not s.errors, s
    assert len(s.failover_s) == 3 and s.failover_unresolved == 0, s


# The planted gossip and anti-entropy bugs, and their control: the same schedules without the bug
# report neither false deads nor an unconverged catalog.
FALSE_DEAD = {"kinds": ("loss",), "cycles": 3, "keys_per_cycle": 1, "register_clients": 2, "ack_writers": 0,
              "catalog_workload": False}
CATALOG = {"kinds": ("partition_client",), "clients": 1, "cycles": 1, "keys_per_cycle": 1, "register_clients": 2,
           "ack_writers": 0, "catalog_bound": 20.0}


def test_false_dead_checker_catches_ignored_refutations(tmp_path) -> None:  # type: ignore[no-untyped-def]
    s = _planted(tmp_path, "", "gossip.ignore_refute", **FALSE_DEAD)
    assert s.false_dead >= 1, s


def test_catalog_convergence_checker_catches_a_dropped_anti_entropy_push(tmp_path) -> None:  # type: ignore[no-untyped-def]
    s = _planted(tmp_path, "", "ae.drop_push", **{**CATALOG, "catalog_bound": 10.0})  # the control converges in ~5 s
    assert s.catalog_checks == 2 and s.catalog_unconverged >= 1, s


def test_without_the_planted_bugs_neither_checker_reports_anything(tmp_path) -> None:  # type: ignore[no-untyped-def]
    s = _planted(tmp_path, "", "", **{**FALSE_DEAD, **CATALOG, "kinds": ("loss", "partition_client"),
                                          "cycles": 3, "catalog_workload": True})
    assert set(s.faults) == {"loss", "partition_client"} and s.cycles == 3, s
    assert (s.false_dead, s.catalog_unconverged) == (0, 0), s
    assert s.catalog_checks == 4 and s.catalog_changes > 0 and not s.errors, s
