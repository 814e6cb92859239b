"""The benchmark harness pieces that need no processes: statistics, dnsperf parsing, answer checks,
the A/B order, the workload files and the docs/benchmarks.md updater."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import dns.message
import dns.rcode
import dns.rrset
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root holds bench/

from bench import dns as bdns  # noqa: E402
from bench import harness as h  # noqa: E402

# dnsperf 2.10.0 against dnsmasq 2.90 on this box (the query file also held one unknown name).
DNSPERF_SAMPLE = """DNS Performance Testing Tool
Version 2.10.0

[Status] Command line: dnsperf -s 127.0.0.1 -p 34039 -d /tmp/tmp.LmSqxJe80X/q -l 2 -q 16 -c 1 -T 1
[Status] Sending queries (to 127.0.0.1:34039)
[Status] Started at: Tue Nov 24 22:18:22 2026
[Status] Stopping after 2.000000 seconds
[Status] Testing complete (time limit)

Statistics:

  Queries sent:         112945
  Queries completed:    112945 (100.00%)
  Queries lost:         0 (0.00%)

  Response codes:       NOERROR 94121 (83.33%), REFUSED 18824 (16.67%)
  Average packet size:  request 37, response 50
  Run time (s):         2.001511
  Queries per second:   56429.867235

  Average Latency (s):  0.000232 (min 0.000020, max 0.001587)
  Latency StdDev (s):   0.000133

"""


def test_median_ignores_missing_values() -> None:
    assert h.median([3, 1, 2]) == 2
    assert h.median([4, 1, 2, 3]) == 2.5
    assert h.median([None, 5.0, None]) == 5.0
    assert h.median([0.0, 0.0, 9.0]) == 0.0  # a run scored 0 counts
    assert h.median([]) is None
    assert h.median([None]) is None


def test_ratio() -> None:
    assert h.ratio(50.0, 200.0) == pytest.approx(0.25)
    assert h.ratio(0.0, 200.0) == 0.0
    assert h.ratio(5.0, 0.0) is None
    assert h.ratio(None, 1.0) is None
    assert h.ratio(1.0, None) is None


def test_parse_dnsperf_sample() -> None:
    p = bdns.parse_dnsperf(DNSPERF_SAMPLE)
    assert p["sent"] == 112945
    assert p["completed"] == 112945
    assert p["lost"] == 0
    assert p["run_time_s"] == pytest.approx(2.001511)
    assert p["dnsperf_qps"] == pytest.approx(56429.867235)
    assert p["mean_latency_s"] == pytest.approx(0.000232)
    assert p["rcodes"] == {"NOERROR": 94121, "REFUSED": 18824}
    noerror, qps = bdns.noerror_throughput(p)
    assert noerror == 94121
    assert qps == pytest.approx(94121 / 2.001511)  # only NOERROR counts, not dnsperf's own qps
    assert qps < p["dnsperf_qps"]


def test_parse_dnsperf_without_statistics() -> None:
    p = bdns.parse_dnsperf("Error: socket: connection refused\n")
    assert p["completed"] is None and p["rcodes"] == {}
    assert bdns.noerror_throughput(p) == (0, 0.0)
    # no NOERROR at all: a server answering SERVFAIL everywhere has throughput 0
    p = bdns.parse_dnsperf("  Queries completed:    10 (100.00%)\n  Response codes:       SERVFAIL 10 (100.00%)\n"
                           "  Run time (s):         1.0\n")
    assert bdns.noerror_throughput(p) == (0, 0.0)
    assert bdns.noerror_throughput({"rcodes": {"NOERROR": 10}}, wall_s=2.0) == (10, 5.0)


def _answer(name: str, *addrs: str, rcode: int = dns.rcode.NOERROR) -> dns.message.Message:
    q = dns.message.make_query(name, "A")
    r = dns.message.make_response(q)
    r.set_rcode(rcode)
    if addrs:
        r.answer.append(dns.rrset.from_text(name + ".", 0, "IN", "A", *addrs))
    return r


def test_answer_problem_accepts_only_the_exact_record() -> None:
    name, want = bdns.fqdn(3), bdns.address(3)
    assert bdns.answer_problem(name, want, _answer(name, want)) is None
    assert "127.9.9.9" in (bdns.answer_problem(name, want, _answer(name, "127.9.9.9")) or "")
    assert bdns.answer_problem(name, want, _answer(name, want, "127.0.0.9")) is not None  # extra record
    assert bdns.answer_problem(name, want, _answer(name)) is not None  # empty NOERROR
    assert "NXDOMAIN" in (bdns.answer_problem(name, want, _answer(name, rcode=dns.rcode.NXDOMAIN)) or "")
    assert bdns.answer_problem(name, want, _answer(bdns.fqdn(4), want)) is not None  # other owner name


def test_workload_files_agree() -> None:
    n = 300
    hosts = [ln.split() for ln in bdns.hosts_text(n).splitlines()]
    assert len(hosts) == n and len({a for a, _ in hosts}) == n
    assert all(a.startswith("127.0.") for a, _ in hosts)
    assert hosts[0] == ["127.0.1.1", "svc0.service.murmur"]
    queries = bdns.query_text(n).splitlines()
    assert sorted(queries) == sorted(f"{name} A" for _, name in hosts)
    # The churn case: one name at its alternate address, every other line unchanged.
    changed = [ln.split() for ln in bdns.hosts_text(n, {7: bdns.alt_address(7)}).splitlines()]
    assert changed[7] == ["127.1.1.8", "svc7.service.murmur"] and changed[:7] + changed[8:] == hosts[:7] + hosts[8:]
    assert len({bdns.alt_address(i) for i in range(n)} | {a for a, _ in hosts}) == 2 * n


def test_sample_indices() -> None:
    a = bdns.sample_indices(100, 2, 16)
    assert a == bdns.sample_indices(100, 2, 16)
    assert len(a) == 10 == len(set(a)) and a[0] == 0 and all(0 <= i < 100 for i in a)
    assert a != bdns.sample_indices(100, 3, 16)
    assert bdns.sample_indices(1, 0, 16) == [0]
    assert sorted(bdns.sample_indices(5, 0, 16)) == [0, 1, 2, 3, 4]


def test_run_alternating_order_and_summary() -> None:
    calls: list[tuple[str, int, int]] = []

    def one(side: str, case: int, rnd: int) -> dict[str, float]:
        calls.append((side, case, rnd))
        return {"qps": 100.0 * (rnd + 1) if side == "ours" else 400.0, "cpu_us": 8.0 if side == "ours" else 2.0}

    res = h.run_alternating(one, [16, 100], 3)
    assert calls[:4] == [("ours", 16, 0), ("peer", 16, 0), ("ours", 100, 0), ("peer", 100, 0)]
    assert len(calls) == 12 and [c[0] for c in calls] == ["ours", "peer"] * 6
    s = h.summarize(res, ["qps", "cpu_us"])
    assert s[16]["qps"] == {"ours": 200.0, "peer": 400.0, "ratio": 0.5}
    assert s[100]["cpu_us"]["ratio"] == 4.0
    table = h.format_table(s, [h.Metric("qps", "answers/s"), h.Metric("cpu_us", "CPU µs/answer", "{:.1f}")],
                           case_label=lambda q: f"q={q}", ours_name="murmur", peer_name="dnsmasq")
    assert "| q=16 | answers/s | 200 | 400 | 0.500 |" in table
    assert "| q=100 | CPU µs/answer | 8.0 | 2.0 | 4.000 |" in table


def test_run_alternating_time_budget() -> None:
    res = h.run_alternating(lambda s, c, r: {"x": 1}, [1], 1000, max_seconds=0.0)
    assert len(res) <= 1


def test_rounds_and_seconds() -> None:
    assert h.rounds_and_seconds(False) == (5, 10)
    assert h.rounds_and_seconds(True) == (3, 3)
    assert h.rounds_and_seconds(True, rounds=7, seconds=1.5) == (7, 1.5)


def test_proc_stat_cpu_with_odd_comm() -> None:
    # comm may contain spaces and ')'; utime/stime are fields 14/15 of the line
    line = "1234 (a b) c) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 40 0 0 20 0 3 0 77 0 0\n"
    assert h.parse_proc_stat_cpu(line) == 290
    assert h.parse_proc_stat_times(line) == (250, 40)


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = h.free_ports(3)
    assert len(set(ports)) == 3
    for p in ports:
        for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
            s = socket.socket(socket.AF_INET, kind)
            try:
                s.bind(("127.0.0.1", p))
            finally:
                s.close()


def _report(bench: str, ours: str, date: str) -> h.Report:
    row = h.LatestRow(bench, "q=16 NOERROR answers/s", ours, "100", "0.5", "9.0", "3.0", date)
    info = {"date": date + " 10:00 UTC", "machine": "x86_64", "nproc": "2", "cpu": "Test CPU",
            "python": "3.11.7", "peer": "dnsmasq 2.90"}
    return h.Report(bench, f"{bench} run {ours}", "| t |\n|---|", info, "python -m bench " + bench, [row],
                    ["a note"])


def test_update_doc_replaces_latest_rows_and_appends_history() -> None:
    text = h.update_doc("", _report("dns", "50", "2026-01-01"))
    assert h.LATEST_BEGIN in text and h.HISTORY_MARK in text
    text = h.update_doc(text, _report("serf", "7", "2026-01-02"))
    text = h.update_doc(text, _report("dns", "60", "2026-01-03"))
    latest = text.split(h.LATEST_BEGIN)[1].split(h.LATEST_END)[0]
    assert "| dns | q=16 NOERROR answers/s | 60 |" in latest
    assert "| 50 |" not in latest  # the older dns row was replaced
    assert "| serf |" in latest
    assert latest.index("| dns |") < latest.index("| serf |")
    history = text.split(h.HISTORY_MARK)[1]
    assert history.index("dns run 50") < history.index("serf run 7") < history.index("dns run 60")
    for want in ("nproc 2", "CPU Test CPU", "python 3.11.7", "dnsmasq 2.90", "`python -m bench dns`", "- a note"):
        assert want in history


def test_update_doc_keeps_hand_written_text(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\nHand-written method.\n\n" + h.LATEST_BEGIN + "\n" + h.LATEST_HEADER + "\n"
                   + h.LATEST_END + "\n\n## History\n\n" + h.HISTORY_MARK + "\n")
    h.append_report(_report("dns", "50", "2026-01-01"), doc)
    text = doc.read_text()
    assert text.startswith("# Benchmarks\n\nHand-written method.\n")
    assert text.count(h.LATEST_BEGIN) == 1 and text.count(h.HISTORY_MARK) == 1
    assert text.rstrip().endswith("| t |\n|---|")


def test_the_repo_doc_has_the_markers() -> None:
    text = h.DOC_PATH.read_text()
    assert h.LATEST_BEGIN in text and h.LATEST_END in text and h.HISTORY_MARK in text


def test_cpu_model() -> None:
    assert h.cpu_model("processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t: x\n") == "AMD EPYC 7B13"
    assert h.cpu_model("processor\t: 0\n") == "unknown"


def test_cpu_seconds_of_ourselves() -> None:
    own = h.cpu_seconds(os.getpid())
    assert own > 0
    assert h.cpu_seconds_tree(os.getpid()) >= own  # read after: CPU time only grows
    assert os.getpid() in h.descendants(os.getppid())
