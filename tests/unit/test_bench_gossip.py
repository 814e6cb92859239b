"""bench/gossip.py pieces that need no processes: member-list parsing, serf RPC framing, statistics,
victim choice, log scanning, the summary and the docs rows, and the poller against a fake backend."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import msgpack
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root holds bench/

from bench import gossip as g  # noqa: E402
from bench import harness as h  # noqa: E402

# /v1/agent/members from a murmur agent (trimmed to the fields that matter)
MURMUR_MEMBERS = [
    {"Name": "n00", "Addr": "127.0.0.1", "Port": 40001, "Status": 1},
    {"Name": "n01", "Addr": "127.0.0.1", "Port": 40002, "Status": 4},
    {"Name": "n02", "Addr": "127.0.0.1", "Port": 40003, "Status": 3},
    {"Name": "n03", "Addr": "127.0.0.1", "Port": 40004, "Status": 2},
    {"Name": "n04", "Addr": "127.0.0.1", "Port": 40005, "Status": 9},
]


def test_murmur_view_maps_consul_status_codes() -> None:
    v = g.murmur_view(MURMUR_MEMBERS)
    assert v == {"n00": "alive", "n01": "failed", "n02": "left", "n03": "leaving", "n04": "status-9"}
    assert g.count_status(v) == 1
    assert g.count_status(v, "failed") == 1


def test_murmur_view_rejects_non_list() -> None:
    with pytest.raises(ValueError):
        g.murmur_view({"Members": []})


def test_serf_view() -> None:
    body = {"Members": [{"Name": "a", "Status": "alive", "Port": 1}, {"Name": "b", "Status": "failed"}]}
    assert g.serf_view(body) == {"a": "alive", "b": "failed"}
    with pytest.raises(ValueError):
        g.serf_view([])


def test_health_scores() -> None:
    assert g.murmur_health({"Stats": {"serf_lan": {"health_score": "3", "members": "9"}}}) == 3
    assert g.serf_health({"serf": {"health_score": "0", "failed": "1"}, "agent": {"name": "n01"}}) == 0
    assert g.health_summary([0, 2, 3, 0]) == (2, 3)
    assert g.health_summary([]) == (0, 0)
    with pytest.raises(KeyError):
        g.murmur_health({"Stats": {}})


def test_serf_request_framing() -> None:
    u = msgpack.Unpacker(raw=False)
    u.feed(g.serf_request("join", 7, {"Existing": ["127.0.0.1:1"], "Replay": False}))
    assert list(u) == [{"Command": "join", "Seq": 7}, {"Existing": ["127.0.0.1:1"], "Replay": False}]
    u.feed(g.serf_request("members", 8))
    assert list(u) == [{"Command": "members", "Seq": 8}]


def test_check_serf_header() -> None:
    g.check_serf_header({"Seq": 3, "Error": ""}, 3)
    with pytest.raises(ConnectionError):
        g.check_serf_header({"Seq": 2, "Error": ""}, 3)
    with pytest.raises(RuntimeError, match="no such"):
        g.check_serf_header({"Seq": 3, "Error": "no such command"}, 3)


def test_percentile_and_spread() -> None:
    vals = [float(x) for x in range(1, 11)]
    assert g.percentile(vals, 50) in (5.0, 6.0)
    assert g.percentile(vals, 90) == 9.0
    assert g.percentile(vals, 100) == 10.0
    assert g.percentile([], 90) is None
    assert g.spread([3.0, 1.0, 2.0]) == (1.0, 2.0, 3.0)
    assert g.spread([]) is None


def test_victims_deterministic_distinct_never_seed() -> None:
    a = g.victims(20, 3, seed=1, rnd=0)
    assert a == g.victims(20, 3, seed=1, rnd=0)
    assert len(set(a)) == 3 and 0 not in a and all(1 <= i < 20 for i in a)
    assert g.victims(20, 3, seed=1, rnd=1) != a or g.victims(20, 3, seed=1, rnd=2) != a
    assert len(g.victims(4, 10, seed=1, rnd=0)) == 2  # always leaves agent 0 and one other


def test_wrong_listings_only_running_agents() -> None:
    view = {"a": "alive", "b": "failed", "c": "left", "d": "failed"}
    assert g.wrong_listings(view, {"a", "b", "c"}) == [("b", "failed"), ("c", "left")]
    assert g.wrong_listings(view, {"a"}) == []


def test_proc_parsers() -> None:
    assert g.parse_loadavg("0.82 1.40 1.35 2/83 14058\n") == (0.82, 1.40, 1.35)
    status = "Name:\tpython\nVmPeak:\t  40000 kB\nVmRSS:\t   37444 kB\nRssAnon:\t 20000 kB\n"
    assert g.parse_vmrss_kib(status) == 37444
    assert g.parse_vmrss_kib("Name:\tzombie\n") is None


MURMUR_LOG = """2026-11-24 22:40:01,123 [WARNING] murmur.gossip: send to 127.0.0.1:40003 failed: [Errno 111]
2026-11-24 22:40:02,456 [WARNING] murmur.gossip: send to 127.0.0.1:40007 failed: [Errno 111]
2026-11-24 22:40:03,000 [INFO] murmur.agent: fine
Traceback (most recent call last):
"""
SERF_LOG = """    2026/11/24 22:47:20 [WARN] serf: Shutdown without a Leave
    2026/11/24 22:47:21 [ERR] memberlist: Failed to send ping: write udp
    2026/11/24 22:47:21 [INFO] serf: EventMemberJoin: n01 127.0.0.1
"""


def test_problem_lines_and_grouping() -> None:
    m = g.problem_lines(MURMUR_LOG)
    assert len(m) == 3 and m[-1].startswith("Traceback")
    s = g.problem_lines(SERF_LOG)
    assert len(s) == 2 and "[ERR]" in s[1]
    assert g.problem_key(m[0]) == g.problem_key(m[1])  # same message, other time and address
    groups = g.group_problems([("n1", ln) for ln in m] + [("n2", ln) for ln in s])
    assert groups[0][0] == 2 and groups[0][1] == "n1"
    assert sum(c for c, _, _ in groups) == 5


def _run(side: str, rnd: int, **kw: Any) -> dict[str, Any]:
    r: dict[str, Any] = {"side": side, "case": 20, "round": rnd, "false_failures": 0, "detect_timeouts": 0,
                         "log_problems": 0}
    r.update(kw)
    return r


def test_summarize_runs_pools_trials_and_sums_counts() -> None:
    results = [
        _run("ours", 0, converge_all_s=0.6, detect_all_s=[7.0, 8.0], detect_first_s=[6.9, 7.8],
             idle_cpu_pct=0.5, false_failures=1, sweep_ms=[30.0]),
        _run("peer", 0, converge_all_s=0.3, detect_all_s=[7.0, 7.2], detect_first_s=[6.8, 7.0],
             idle_cpu_pct=0.2, sweep_ms=[5.0]),
        _run("ours", 1, converge_all_s=0.8, detect_all_s=[9.0], detect_first_s=[8.9], idle_cpu_pct=0.7,
             false_failures=2, sweep_ms=[40.0]),
        _run("peer", 1, converge_all_s=0.5, detect_all_s=[7.4], detect_first_s=[7.1], idle_cpu_pct=0.2,
             sweep_ms=[6.0]),
        _run("ours", 2, error="did not start", converge_all_s=99.0),
    ]
    s = g.summarize_runs(results)[20]
    assert s["converge_all_s"]["ours"] == pytest.approx(0.7)  # median over rounds; the failed run ignored
    assert s["converge_all_s"]["ratio"] == pytest.approx(0.7 / 0.4)
    assert s["detect_all_s"]["ours"] == 8.0  # pooled over the 3 trials
    assert s["detect_all_s"]["peer"] == 7.2
    assert s["detect_all_p90_s"]["ours"] == 9.0
    assert s["false_failures"]["ours"] == 3.0 and s["false_failures"]["ratio"] is None
    assert s["sweep_ms"]["ours"] == 35.0
    assert s["join_all_s"]["ours"] is None


def test_latest_rows_and_doc_update() -> None:
    results = [_run("ours", 0, converge_all_s=0.6, detect_all_s=[7.5], detect_first_s=[7.2],
                    idle_cpu_pct=0.5, rss_mib=37.0),
               _run("peer", 0, converge_all_s=0.4, detect_all_s=[7.4], detect_first_s=[7.1],
                    idle_cpu_pct=0.2, rss_mib=14.6)]
    rows = g.latest_rows(g.summarize_runs(results), 20, "2026-11-24")
    cases = [r.case for r in rows]
    assert any("cold convergence" in c for c in cases) and any("idle CPU" in c for c in cases)
    idle = next(r for r in rows if "idle CPU" in r.case)
    assert idle.ours == "0.500" and idle.cpu_ours == "5,000" and idle.ratio == "2.500"
    rep = h.Report(g.NAME, "gossip test", "| t |", {"date": "2026-11-24 00:00 UTC"}, "python -m bench gossip", rows)
    text = h.update_doc("", rep)
    assert text.count("| gossip | N=20") == len(rows)
    again = h.update_doc(text, rep)  # latest rows of this benchmark are replaced, not duplicated
    latest = again.split(h.LATEST_BEGIN)[1].split(h.LATEST_END)[0]
    assert latest.count("| gossip |") == len(rows)


def _args(**kw: Any) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--seconds", type=float, default=None)
    g.add_arguments(p)
    flag = {"n": "-n"}
    argv = [x for k, v in kw.items()
            for x in ([f"--{k}"] if v is True else [flag.get(k, f"--{k}"), str(v)])]
    return p.parse_args(argv)


def test_settings_defaults() -> None:
    s, rounds = g.settings_from(_args())
    assert (s.n, s.trials, s.idle, rounds, s.poll) == (20, 3, 30.0, 4, 0.1)
    s, rounds = g.settings_from(_args(quick=True))
    assert (s.n, s.trials, s.idle, rounds) == (10, 2, 10.0, 2)
    s, rounds = g.settings_from(_args(quick=True, n=7, seconds=5, rounds=1))
    assert (s.n, s.idle, rounds) == (7, 5.0, 1)


# ---- the poller against a fake backend (no processes, no sockets) --------------------------------


class _Proc:
    def __init__(self, pid: int) -> None:
        self.pid, self.returncode = pid, None

    def poll(self) -> int | None:
        return self.returncode


class _FakeBackend(g.Backend):
    """Agent 'a' sees 'b' alive from its 3rd answer on; 'b' sees 'a' alive at once but lists 'c' failed."""

    label = "fake"

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}

    def connect(self, a: g.Agent) -> bool:
        a.client = object()
        return True

    def members(self, a: g.Agent) -> dict[str, str]:
        k = self.calls[a.name] = self.calls.get(a.name, 0) + 1
        if a.name == "a":
            return {"a": "alive", "b": "alive" if k >= 3 else "none", "c": "alive"}
        return {"a": "alive", "b": "alive", "c": "failed"}

    def close(self, a: g.Agent) -> None:
        a.client = None


def _cluster() -> tuple[g.Cluster, _FakeBackend]:
    be = _FakeBackend()
    cl = g.Cluster(be, poll=0.001)
    for i, n in enumerate("abc"):
        cl.agents[n] = g.Agent(n, _Proc(10 + i), Path("/nonexistent"), {}, 0.0, client=object())  # type: ignore[arg-type]
    return cl, be


def test_poll_until_times_each_observer_and_notes_false_failures() -> None:
    cl, be = _cluster()
    done = cl.poll_until(["a", "b"], lambda v: v.get("b") == "alive", timeout=5.0, t0=0.0, phase="t")
    assert set(done) == {"a", "b"}
    assert be.calls["a"] == 3 and be.calls["b"] == 1  # an observer that is done is not asked again
    assert len(cl.sweeps_ms) == 3
    assert {(e["observer"], e["member"], e["status"]) for e in cl.false_failures} == {("b", "c", "failed")}


def test_poll_until_is_bounded() -> None:
    cl, _ = _cluster()
    done = cl.poll_until(["a"], lambda v: False, timeout=0.05, t0=0.0, phase="t")
    assert done == {}
    assert len(cl.sweeps_ms) <= int(0.05 / 0.001) + 20


def test_killed_agent_is_not_a_false_failure() -> None:
    cl, _ = _cluster()
    cl.agents["c"].killed = True
    cl.check_all("end")
    assert cl.false_failures == []


def test_timer_tables_are_compared_and_a_difference_is_reported(capsys) -> None:
    from bench import gossip as g

    ours = g.timer_table({"GossipLAN" + k: v for k, v in g.MEMBERLIST_LAN_TIMERS.items()})
    same = [{"side": "ours", "timers": ours}, {"side": "peer", "timers": dict(g.MEMBERLIST_LAN_TIMERS)}]
    assert g.print_timers(same, ("ours", "peer")) is True
    assert "equal on both sides" in capsys.readouterr().out
    other = dict(ours, ProbeInterval="200ms")
    differ = [{"side": "ours", "timers": other}, {"side": "peer", "timers": dict(g.MEMBERLIST_LAN_TIMERS)}]
    assert g.print_timers(differ, ("ours", "peer")) is False
    assert "NOT EQUAL" in capsys.readouterr().out
