"""The lab's checkers on hand-made histories (no root needed)."""

from __future__ import annotations

import math

from support.lincheck import GET, PUT, Op

from lab.checkers import Fault, catalog_diff, check_linearizable, false_dead, lost_writes
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


def test_catalog_diff_names_clients_whose_catalog_entries_differ_from_their_registrations() -> None:
    local = {"c1": {"a", "b"}, "c2": {"x"}, "c3": {"y"}, "c4": None}
    catalog = {"c1": {"a", "b"}, "c2": {"x", "old"}, "c3": set(), "c4": {"z"}}
    diff = catalog_diff(local, catalog)
    assert sorted(diff) == ["c2", "c3", "c4"]
    assert "'old'" in diff["c2"] and "'y'" in diff["c3"] and "unreadable" in diff["c4"]
    assert catalog_diff({"c1": {"a"}}, {"c1": {"a"}}) == {}
