"""The lab's checkers on hand-made histories (no root needed)."""

from __future__ import annotations

import math

from support.lincheck import GET, PUT, Op

from lab.checkers import (
    Fault,
    RaftLine,
    catalog_diff,
    check_linearizable,
    false_dead,
    lost_writes,
    parse_raft_lines,
    raft_invariants,
    verdicts_during,
)
from lab.workload import DeadVerdict


def test_stale_read_after_an_acknowledged_write_is_a_violation_and_unknown_writes_may_apply() -> None:
    ok = [Op(1, PUT, "a", "x", None, 0, 1), Op(2, PUT, "a", "y", None, 2, math.inf), Op(3, GET, "a", None, "y", 5, 6)]
    bad = [Op(1, PUT, "b", "x", None, 0, 1), Op(2, PUT, "b", "y", None, 2, 3), Op(3, GET, "b", None, "x", 5, 6)]
    r = check_linearizable(ok + bad)
    assert (r.histories, r.violations, r.timeouts, r.indeterminate) == (2, 1, 0, 1)
    assert "'b'" in r.reports[0]


def test_lost_writes_names_missing_and_changed_keys() -> None:
    assert lost_writes({"k1": "a", "k2": "b", "k3": "c"}, {"k1": "a", "k2": "other"}) == ["k2", "k3"]


def test_a_dead_verdict_is_false_unless_a_fault_on_the_member_or_observer_explains_it() -> None:
    faults = [Fault("kill", 10, 12, ["s1"]), Fault("loss", 30, 35, ["s2"], excuses=False),
              Fault("partition_host", 50, 53, ["c1"])]
    verdicts = [DeadVerdict(13, "s3", "s1"),  # killed just before: excused
                DeadVerdict(33, "s3", "s2"),  # only loss on s2: false
                DeadVerdict(54, "c1", "s4"),  # the observer was cut off: excused
                DeadVerdict(100, "s3", "s1")]  # long after the kill: false
    assert false_dead(verdicts, faults, window=20) == [verdicts[1], verdicts[3]]


def test_verdicts_during_counts_false_verdicts_under_one_kind_of_fault() -> None:
    faults = [Fault("loss", 30, 35, ["s2"], excuses=False), Fault("delay", 60, 70, ["c1"], excuses=False)]
    verdicts = [DeadVerdict(33, "s3", "s2"), DeadVerdict(40, "s2", "s4"), DeadVerdict(65, "s1", "c1"),
                DeadVerdict(29, "s3", "s2"), DeadVerdict(100, "s3", "s2")]
    assert verdicts_during(verdicts, faults, "loss", window=20) == 2  # member, then observer, under loss
    assert verdicts_during(verdicts, faults, "delay", window=20) == 1
    assert verdicts_during(verdicts, faults, "loss", window=1) == 1


def test_catalog_diff_names_clients_whose_catalog_entries_differ_from_their_registrations() -> None:
    local = {"c1": {"a", "b"}, "c2": {"x"}, "c3": {"y"}, "c4": None}
    catalog = {"c1": {"a", "b"}, "c2": {"x", "old"}, "c3": set(), "c4": {"z"}}
    diff = catalog_diff(local, catalog)
    assert sorted(diff) == ["c2", "c3", "c4"]
    assert "'old'" in diff["c2"] and "'y'" in diff["c3"] and "unreadable" in diff["c4"]
    assert catalog_diff({"c1": {"a"}}, {"c1": {"a"}}) == {}


def _log(*facts: str) -> list[str]:
    return [f"2026-01-01 10:00:0{i % 10},000 INFO murmur.raft: raft: {f}" for i, f in enumerate(facts)]


def test_raft_invariants_pass_a_clean_history_with_a_restart() -> None:
    logs = {"s1": _log("starting at term 1, vote 0, commit 0, last 0", "candidate, leader unknown, term 2, commit 0, last 0",
                       "leader, leader 1, term 2, commit 0, last 1", "follower, leader 2, term 3, commit 9, last 9",
                       "starting at term 3, vote 2, commit 9, last 9", "follower, leader 2, term 3, commit 12, last 12"),
            "s2": _log("starting at term 1, vote 0, commit 0, last 0", "follower, leader 1, term 2, commit 0, last 1",
                       "leader, leader 2, term 3, commit 9, last 10")}
    r = raft_invariants(logs)
    assert (r.lines, r.terms, r.elections, r.violations) == (9, 2, 2, [])


def test_raft_invariants_catch_two_leaders_in_a_term_even_seen_only_by_followers() -> None:
    r = raft_invariants({"s1": _log("leader, leader 1, term 4, commit 3, last 4"),
                         "s2": _log("leader, leader 2, term 4, commit 3, last 4"),
                         "s3": _log("follower, leader 1, term 5, commit 3, last 4"),
                         "s4": _log("follower, leader 3, term 5, commit 3, last 4")})
    assert len(r.violations) == 2 and all("election safety" in v for v in r.violations), r
    assert "term 4 has 2 leaders: 1 (s1:1), 2 (s2:1)" in r.violations[0]


def test_raft_invariants_catch_a_term_lost_on_restart_and_a_commit_going_back() -> None:
    r = raft_invariants({"s1": _log("follower, leader 2, term 6, commit 5, last 5", "starting at term 5, vote 2, commit 5, last 5",
                                    "follower, leader 2, term 6, commit 7, last 7", "follower, leader 2, term 6, commit 6, last 7")})
    assert len(r.violations) == 2, r
    assert "term went down on s1: 6 (line 1, follower) -> 5 (line 2, start)" in r.violations[0]
    assert "commit index went down on s1 within one life: 7 (line 3) -> 6 (line 4)" in r.violations[1]


def test_raft_invariants_catch_a_leader_missing_entries_committed_in_an_earlier_term() -> None:
    ok = {"s1": _log("follower, leader 2, term 3, commit 20, last 20"), "s2": _log("leader, leader 2, term 4, commit 20, last 21")}
    assert raft_invariants(ok).violations == []
    # A leader of term 4 with a log shorter than what term 3 committed; a commit logged at term 4
    # itself (or later) does not bind a leader of term 4.
    bad = {"s1": _log("follower, leader 2, term 3, commit 20, last 20", "follower, leader 3, term 4, commit 30, last 30"),
           "s3": _log("leader, leader 3, term 4, commit 10, last 15")}
    r = raft_invariants(bad)
    assert len(r.violations) == 1 and "leader completeness: s3 led term 4 with last index 15" in r.violations[0], r
    assert "index 20 was committed at an earlier term (s1:1)" in r.violations[0]


def test_raft_log_lines_are_the_ones_the_agent_writes() -> None:
    import inspect

    from murmur.agent import server
    from murmur.agent.drivers import raft as driver

    assert '"raft: %s, leader %s, term %d, commit %d, last %d"' in inspect.getsource(driver)
    assert '"raft: starting at term %d, vote %d, commit %d, last %d"' in inspect.getsource(server)
    assert parse_raft_lines("s", ["x INFO murmur.raft: raft: pre_candidate, leader unknown, term 3, commit 1, last 2"]) == \
        [RaftLine("s", 1, "pre_candidate", 0, 3, 1, 2)]
