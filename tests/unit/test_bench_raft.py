"""bench/raft.py and bench/raft_node.py pieces that need no processes: peer specs, payloads, the
test FSM, statistics, per-phase figures, leader addresses, log scanning, the summary, the targets,
the docs rows, the storage timer and the stable-leader wait against fake agents."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root holds bench/

from bench import harness as h  # noqa: E402
from bench import raft as r  # noqa: E402
from bench import raft_node as rn  # noqa: E402


def test_parse_peers_round_trips() -> None:
    spec = "2=127.0.0.1:5002,1=127.0.0.1:5001,3=127.0.0.1:5003"
    peers = rn.parse_peers(spec)
    assert peers == {1: ("127.0.0.1", 5001), 2: ("127.0.0.1", 5002), 3: ("127.0.0.1", 5003)}
    assert rn.format_peers(peers) == "1=127.0.0.1:5001,2=127.0.0.1:5002,3=127.0.0.1:5003"
    assert rn.parse_peers(rn.format_peers(peers)) == peers
    assert rn.parse_peers(" 1=127.0.0.1:9 , ") == {1: ("127.0.0.1", 9)}


@pytest.mark.parametrize("spec", ["", "1", "1=127.0.0.1", "x=127.0.0.1:1", "1=:5", "0=127.0.0.1:5",
                                  "1=127.0.0.1:0", "1=127.0.0.1:70000", "1=127.0.0.1:5,1=127.0.0.1:6"])
def test_parse_peers_rejects_bad_specs(spec: str) -> None:
    with pytest.raises(ValueError):
        rn.parse_peers(spec)


def test_payload_is_exactly_the_size_and_unique_per_index() -> None:
    a, b = rn.payload(1), rn.payload(2)
    assert len(a) == len(b) == rn.PAYLOAD_SIZE == 256
    assert a != b and a.startswith(b"k000000001=")
    assert len(rn.payload(7, size=32)) == 32
    with pytest.raises(ValueError):
        rn.payload(1, size=4)


def test_kv_fsm_applies_and_returns_the_index() -> None:
    fsm = rn.KVFSM()
    assert fsm.apply(5, b"a=1") == 5
    assert fsm.apply(6, b"a=2=3") == 6
    assert fsm.apply(7, b"novalue") == 7
    assert fsm.data == {b"a": b"2=3", b"novalue": b""}
    assert fsm.last_index == 7


def test_timed_storage_records_every_save_even_failed_ones() -> None:
    class Inner:
        def __init__(self) -> None:
            self.calls: list[tuple[Any, list[Any]]] = []

        def save(self, hard: Any, entries: list[Any]) -> None:
            self.calls.append((hard, entries))
            if hard == "boom":
                raise OSError("fsync failed")

    inner = Inner()
    ts = rn.TimedStorage(inner)
    ts.save(None, [1])
    with pytest.raises(OSError):
        ts.save("boom", [])
    assert inner.calls == [(None, [1]), ("boom", [])]
    assert len(ts.times) == 2 and all(t >= 0 for t in ts.times)


def test_quantiles_ms() -> None:
    assert rn.quantiles_ms([]) == {"p50_ms": None, "p99_ms": None}
    q = rn.quantiles_ms([i / 1000 for i in range(1, 101)])  # 1..100 ms
    assert q["p50_ms"] == pytest.approx(51.0)
    assert q["p99_ms"] == pytest.approx(99.0)


def test_percentile_is_nearest_rank_like_the_peers_scripts() -> None:
    v = list(range(1, 101))
    assert r.percentile(v, 50) == 51  # round(0.5 * 99) = 50 -> v[50]
    assert r.percentile(v, 99) == 99
    assert r.percentile(v, 0) == 1 and r.percentile(v, 100) == 100
    assert r.percentile([], 50) is None
    assert r.percentile([3.0], 99) == 3.0


def test_latency_summary_in_ms() -> None:
    s = r.latency_summary([0.001, 0.002, 0.003])
    assert s == {"p50_ms": pytest.approx(2.0), "p99_ms": pytest.approx(3.0), "max_ms": pytest.approx(3.0)}
    assert r.latency_summary([]) == {"p50_ms": None, "p99_ms": None, "max_ms": None}


def test_phase_metrics_rates_and_cpu_per_commit() -> None:
    lats = [0.010] * 99 + [0.150]
    m = r.phase_metrics(lats, wall_s=2.0, cpu_leader_s=0.3, cpu_followers_s=0.1, errors=2)
    assert m["ops"] == 100 and m["ops_per_s"] == pytest.approx(50.0)
    assert m["cpu_ms_per_op"] == pytest.approx(4.0)
    assert m["leader_cpu_ms_per_op"] == pytest.approx(3.0)
    assert m["follower_cpu_ms_per_op"] == pytest.approx(1.0)
    assert m["cluster_cpu_pct"] == pytest.approx(20.0)
    assert m["slow_commits"] == 1 and m["errors"] == 2
    assert m["p50_ms"] == pytest.approx(10.0) and m["max_ms"] == pytest.approx(150.0)
    empty = r.phase_metrics([], 1.0, 0.1, 0.1)
    assert empty["ops_per_s"] == 0 and empty["cpu_ms_per_op"] is None and empty["p50_ms"] is None


@pytest.mark.parametrize("addr,port", [("127.0.0.1:8300", 8300), ("", None), (None, None), ("127.0.0.1", None),
                                       (":8300", None), ("127.0.0.1:x", None), (42, None)])
def test_leader_port(addr: Any, port: int | None) -> None:
    assert r.leader_port(addr) == port


def test_parse_loadavg() -> None:
    assert r.parse_loadavg("0.52 1.10 2.00 3/456 7890\n") == (0.52, 1.10, 2.00)
    with pytest.raises(ValueError):
        r.parse_loadavg("x y z")


def test_parse_stats_lines_skips_other_and_broken_lines() -> None:
    text = 'raft_node 2 listening\nSTATS {"id": 2, "driver": {"writes": 3}}\nSTATS {broken\nbye\n'
    assert r.parse_stats_lines(text) == [{"id": 2, "driver": {"writes": 3}}]


def test_problem_lines_and_grouping() -> None:
    text = "\n".join([
        "2026-01-01 10:00:00,001 INFO murmur.raft: raft: leader, leader 1, term 2",
        "2026-01-01 10:00:01,001 WARNING murmur.raft.transport: dropped 12 messages",
        "2026-01-01 10:00:02,001 WARNING murmur.raft.transport: dropped 7 messages",
        "2026-01-01 10:00:03,001 ERROR murmur.raft: boom",
        "  + Exception Group Traceback (most recent call last):",
        "  |     raise runner.main_task_outcome.error",
        "  | ExceptionGroup: Exceptions from Trio nursery (1 sub-exception)",
        "        |     q.send_nowait(codec.encode_message(m))",
        "        | trio.BrokenResourceError",
        "OSError: [Errno 98] Address already in use",
        "the word warning or error inside a lowercase sentence is not a level",
    ])
    lines = r.problem_lines(text)
    assert lines[-2:] == ["exception: trio.BrokenResourceError", "exception: OSError: [Errno 98] Address already in use"]
    assert len(lines) == 5
    groups = r.group_lines(lines)
    assert groups[0][0] == 2 and "dropped 12 messages" in groups[0][1]
    assert sum(c for c, _ in groups) == 5
    assert len(r.group_lines(lines, limit=1)) == 1


def test_split_at_a_file_offset() -> None:
    text = "line one\nline two\n"
    assert r.split_at(text, 9) == ("line one\n", "line two\n")
    assert r.split_at(text, 0) == ("", text)
    assert r.split_at(text, 1000) == (text, "")


def test_side_order_is_abba() -> None:
    assert [r.side_order(i) for i in range(4)] == [("ours", "peer"), ("peer", "ours"),
                                                  ("ours", "peer"), ("peer", "ours")]


def _rows() -> list[dict[str, Any]]:
    rows = []
    for rnd, (o1, p1, o16, p16) in enumerate([(80, 700, 800, 2400), (70, 650, 600, 2300), (90, 720, 700, 2500)]):
        rows += [
            {"side": "ours", "case": "c=1", "round": rnd, "ops_per_s": o1, "p50_ms": 12.0 + rnd, "errors": 1,
             "slow_commits": 0},
            {"side": "peer", "case": "c=1", "round": rnd, "ops_per_s": p1, "p50_ms": 0.5, "errors": 0,
             "slow_commits": 2},
            {"side": "ours", "case": "c=16", "round": rnd, "ops_per_s": o16, "p50_ms": 20.0, "errors": 0,
             "slow_commits": 1},
            {"side": "peer", "case": "c=16", "round": rnd, "ops_per_s": p16, "p50_ms": 4.0, "errors": 0,
             "slow_commits": 3},
        ]
    return rows


def test_summarize_medians_sums_and_ratios() -> None:
    s = r.summarize(_rows())
    assert s["c=1"]["ops_per_s"]["ours"] == 80 and s["c=1"]["ops_per_s"]["peer"] == 700
    assert s["c=1"]["ops_per_s"]["ratio"] == pytest.approx(80 / 700)
    assert s["c=1"]["p50_ms"]["ours"] == 13.0
    assert s["c=1"]["errors"]["ours"] == 3.0  # summed over rounds, not a median
    assert s["c=16"]["slow_commits"]["peer"] == 9.0
    assert s["c=16"]["cpu_ms_per_op"]["ours"] is None  # metric absent -> None, no crash


def test_targets_pass_and_fail() -> None:
    s = r.summarize(_rows())
    assert len(r.targets(s, fsync_p50_ms=4.0, conc=16)) == 3
    tput = next(row for row in r.targets(s, 4.0, 16) if row["target"].startswith("throughput"))
    assert tput["value"] == pytest.approx(700 / 2400) and tput["pass"] is False
    p50 = next(row for row in r.targets(s, 4.0, 16) if row["target"].startswith("single"))
    assert p50["value"] == pytest.approx(13.0 / 4.0) and p50["pass"] is True
    scale = next(row for row in r.targets(s, 4.0, 16) if row["target"].startswith("murmur throughput"))
    assert scale["value"] == pytest.approx(700 / 80) and scale["pass"] is True
    none = r.targets({}, None, 16)
    assert all(row["value"] is None and row["pass"] is None for row in none)


def test_failover_summary() -> None:
    s = r.failover_summary([1.2, 1.0, 3.0, 1.4])
    assert s["n"] == 4 and s["p50_s"] == pytest.approx(1.3) and s["p99_s"] == 3.0
    assert s["min_s"] == 1.0 and s["max_s"] == 3.0
    assert r.failover_summary([])["p50_s"] is None


def test_latest_rows_cover_both_phases_the_floor_and_failover() -> None:
    s = r.summarize(_rows())
    rows = r.latest_rows(s, 16, 4.0, {"n": 20.0, "p50_s": 1.3, "p99_s": 3.2}, "2026-01-01")
    cases = [row.case for row in rows]
    assert any("1 proposer: commits/s" in c for c in cases) and any("16 proposers: commits/s" in c for c in cases)
    assert any("fsync floor" in c for c in cases) and any("kill -9" in c for c in cases)
    assert all(row.benchmark == "raft" for row in rows)
    text = h.update_doc("", h.Report("raft", "t", "| x |", {"date": "2026-01-01 00:00 UTC"}, "cmd", rows))
    assert "| raft | 16 proposers: commits/s" in text
    assert r.latest_rows(s, 16, None, {}, "d")[-1].case.startswith("fsync floor")


def test_settings_quick_and_full() -> None:
    def ns(**kw: Any) -> argparse.Namespace:
        base = dict(quick=False, rounds=None, seconds=None, concurrency=16, warmup=200, trials=None,
                    fsync_count=None, murmur="murmur", log_level="info")
        base.update(kw)
        return argparse.Namespace(**base)

    full = r.settings_from(ns())
    assert (full.rounds, full.seconds, full.trials, full.fsync_count) == (5, 10, 20, 2000)
    quick = r.settings_from(ns(quick=True))
    assert (quick.rounds, quick.seconds, quick.trials, quick.fsync_count) == (3, 3, 5, 1000)
    explicit = r.settings_from(ns(quick=True, rounds=1, seconds=0.5, trials=0, fsync_count=50))
    assert (explicit.rounds, explicit.seconds, explicit.trials, explicit.fsync_count) == (1, 0.5, 0, 50)


def test_add_arguments_parse() -> None:
    p = argparse.ArgumentParser()
    r.add_arguments(p)
    a = p.parse_args(["--concurrency", "8", "--trials", "3", "--only", "ours"])
    assert a.concurrency == 8 and a.trials == 3 and a.only == "ours" and a.warmup == r.WARMUP_OPS


def test_fsync_floor_small_and_cleans_up(tmp_path: Path) -> None:
    for mode in ("append", "prealloc"):
        lats = r.fsync_floor(tmp_path, mode, count=3, max_s=5.0)
        assert len(lats) == 3 and all(x > 0 for x in lats)
    assert list(tmp_path.iterdir()) == []


class FakeAgent:
    def __init__(self, answers: list[str], running: bool = True) -> None:
        self.answers = answers
        self._running = running
        self.puts = 0

    def running(self) -> bool:
        return self._running

    def leader(self) -> str:
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]

    def put(self, key: str) -> tuple[bool, str]:
        self.puts += 1
        return True, "200 True"


def test_wait_stable_needs_agreement_and_ignores_stopped_agents() -> None:
    a = FakeAgent(["", "127.0.0.1:1", "127.0.0.1:1"])
    b = FakeAgent(["127.0.0.1:1"])
    down = FakeAgent(["127.0.0.1:9"], running=False)
    check = FakeAgent(["127.0.0.1:1"])
    lead = r.wait_stable([a, b, down], timeout=5.0, polls=2, check_put=check)  # type: ignore[list-item]
    assert lead == "127.0.0.1:1" and check.puts == 1
    split = [FakeAgent(["127.0.0.1:1"]), FakeAgent(["127.0.0.1:2"])]
    assert r.wait_stable(split, timeout=0.3, polls=1) is None  # type: ignore[arg-type]


def test_per_round_pairs_figures_of_the_same_round() -> None:
    rows = _rows()
    for row in rows:
        row["fsync_before_p50_ms"] = 4.0 if row["round"] < 2 else 0.2
    pr = r.per_round(rows, 16)
    assert [x["round"] for x in pr] == [0, 1, 2]
    assert pr[0]["p50_over_fsync"] == pytest.approx(12.0 / 4.0)
    assert pr[2]["p50_over_fsync"] == pytest.approx(14.0 / 0.2)
    assert pr[1]["tput_ratio"] == pytest.approx(600 / 2300) and pr[1]["scaling"] == pytest.approx(600 / 70)
    only_peer = [row for row in rows if row["side"] == "peer"]
    assert r.per_round(only_peer, 16)[0]["tput_ratio"] is None
