"""Health checks at scale: one `murmur agent --dev` running 1,000 HTTP and 1,000 TCP checks every 10 s.

The targets (one HTTP server answering 200, a few TCP listeners) run in a separate process
(bench/checks_targets.py) so their CPU is not the agent's. Each configuration starts a fresh
agent whose config dir holds the checks (10 per service), waits until every check is passing,
lets one more interval pass, then measures a steady window:

- CPU: the agent's utime+stime delta over the window (/proc/<pid>/stat), as % of one core;
- check runs: the delta of the agent's `murmur.check.results` counters over the window;
- RSS: VmRSS sampled every second during the window (median and max), and VmHWM at the end.

Configurations: `mixed` (the issue's 1,000 HTTP + 1,000 TCP), `tcp` (1,000 TCP only) and `idle`
(no checks), so that CPU per TCP run = (tcp - idle) / TCP runs and CPU per HTTP run =
(mixed - tcp) / HTTP runs. Targets (issue 9): mixed ≤ 15% of one core, RSS ≤ 120 MiB.
No peer system: the figures are against those targets.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench import harness as h

NAME = "checks"
DESCRIPTION = "one agent running 1,000 HTTP + 1,000 TCP checks at 10 s: CPU and RSS (no peer)"

CPU_TARGET_PCT = 15.0
RSS_TARGET_MIB = 120.0
TCP_LISTENERS = 10
START_TIMEOUT = 60.0
ALL_PASSING_TIMEOUT = 180.0
CONFIGS = {"mixed": (1000, 1000), "tcp": (0, 1000), "idle": (0, 0)}  # name -> (HTTP checks, TCP checks)


def checks_config(n_http: int, n_tcp: int, http_port: int, tcp_ports: list[int], interval: str,
                  per_service: int = 10) -> dict[str, Any]:
    """Services of `per_service` checks each: n_http HTTP checks, then n_tcp TCP checks."""
    checks: list[dict[str, Any]] = []
    for i in range(n_http):
        checks.append({"id": f"http-{i}", "name": f"http {i}", "http": f"http://{h.HOST}:{http_port}/health/{i}",
                       "interval": interval, "timeout": "5s"})
    for i in range(n_tcp):
        checks.append({"id": f"tcp-{i}", "name": f"tcp {i}", "tcp": f"{h.HOST}:{tcp_ports[i % len(tcp_ports)]}",
                       "interval": interval, "timeout": "5s"})
    services = []
    for s in range(0, len(checks), per_service):
        services.append({"id": f"svc-{s // per_service}", "name": f"svc-{s // per_service}", "port": 8000 + s,
                         "checks": checks[s:s + per_service]})
    return {"services": services}


def get_json(url: str, timeout: float = 10.0) -> Any:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=timeout) as r:
        return json.loads(r.read())


def check_runs(base: str) -> dict[str, int]:
    """Check runs so far by type, from the agent's `murmur.check.results` counters."""
    out: dict[str, int] = {}
    for c in get_json(base + "/v1/agent/metrics")["Counters"]:
        if c["Name"] == "murmur.check.results":
            kind = c["Labels"].get("type", "?")
            out[kind] = out.get(kind, 0) + int(c["Count"])
    return out


def statuses(base: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in get_json(base + "/v1/agent/checks").values():
        out[c["Status"]] = out.get(c["Status"], 0) + 1
    return out


def proc_status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def measure_config(pg: h.ProcessGroup, tmp: Path, name: str, n_http: int, n_tcp: int, http_port: int,
                   tcp_ports: list[int], interval: float, window: float, binary: str,
                   env: dict[str, str] | None = None) -> dict[str, Any]:
    cfg_dir = tmp / f"config-{name}"
    cfg_dir.mkdir()
    (cfg_dir / "checks.json").write_text(json.dumps(checks_config(n_http, n_tcp, http_port, tcp_ports,
                                                                  f"{interval:g}s")))
    http, dns, serf, server = h.free_ports(4)
    log = tmp / f"agent-{name}.log"
    argv = [binary, "agent", "--dev", "--node", f"bench-{name}", "--bind", h.HOST, "--client", h.HOST,
            "--http-port", str(http), "--dns-port", str(dns), "--serf-port", str(serf), "--server-port", str(server),
            "--config-dir", str(cfg_dir), "--log-level", "info"]
    base = f"http://{h.HOST}:{http}"
    res: dict[str, Any] = {"config": name, "http_checks": n_http, "tcp_checks": n_tcp}
    proc = pg.start(argv, log_path=log, cwd=tmp, env={**os.environ, **(env or {})})
    try:
        def leader() -> bool:
            if proc.poll() is not None:
                return True
            try:
                return bool(get_json(base + "/v1/status/leader", 1.0))
            except OSError:
                return False

        t_start = time.monotonic()
        if not h.wait_until(leader, START_TIMEOUT, 0.25) or proc.poll() is not None:
            res["error"] = f"agent did not start (exit {proc.poll()}); log tail:\n{h.tail(log)}"
            return res
        total = n_http + n_tcp

        def all_passing() -> bool:
            try:
                return statuses(base).get("passing", 0) == total
            except OSError:
                return False

        if total and not h.wait_until(all_passing, ALL_PASSING_TIMEOUT, 1.0):
            res["error"] = f"not all {total} checks passing after {ALL_PASSING_TIMEOUT:g} s: {statuses(base)}"
            return res
        res["all_passing_s"] = time.monotonic() - t_start
        time.sleep(interval + 1.0)  # every check has run again since: steady state
        if env and env.get("MURMUR_SAMPLE"):
            Path(env["MURMUR_SAMPLE"] + ".reset").touch()  # the profile covers the window only
        runs0, cpu0, t0 = check_runs(base), h.cpu_times(proc.pid), time.monotonic()
        rss: list[int] = []
        deadline = t0 + window
        for _ in range(int(window) + 10):
            now = time.monotonic()
            if now >= deadline:
                break
            rss.append(proc_status_kib(proc.pid, "VmRSS"))
            time.sleep(min(1.0, deadline - now))
        cpu1, t1, runs1 = h.cpu_times(proc.pid), time.monotonic(), check_runs(base)
        wall = t1 - t0
        user, system = cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]
        end = statuses(base)
        res.update(wall_s=wall, cpu_s=user + system, user_s=user, system_s=system,
                   cpu_pct=100.0 * (user + system) / wall,
                   http_runs=runs1.get("http", 0) - runs0.get("http", 0),
                   tcp_runs=runs1.get("tcp", 0) - runs0.get("tcp", 0),
                   rss_median_mib=statistics.median(rss) / 1024 if rss else None,
                   rss_max_mib=max(rss) / 1024 if rss else None,
                   hwm_mib=proc_status_kib(proc.pid, "VmHWM") / 1024, end_statuses=end,
                   load=h.loadavg())
        if total and end.get("passing", 0) != total:
            res["error"] = f"checks not all passing at the end of the window: {end}"
        return res
    finally:
        pg.stop(proc)


def describe(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"{r['config']}: ERROR {r['error']}"
    return (f"{r['config']:6s} {r['http_checks']:5d} HTTP + {r['tcp_checks']:5d} TCP: CPU {r['cpu_pct']:5.1f}% of a core "
            f"(user {r['user_s']:.2f} s, sys {r['system_s']:.2f} s over {r['wall_s']:.0f} s), runs http "
            f"{r['http_runs']} tcp {r['tcp_runs']}, RSS median {r['rss_median_mib']:.1f} MiB max "
            f"{r['rss_max_mib']:.1f} HWM {r['hwm_mib']:.1f}, all passing after {r.get('all_passing_s', 0):.0f} s, "
            f"load {r['load']}")


def derive(by: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """CPU ms per TCP run (tcp - idle) and per HTTP run (mixed - tcp)."""
    out: dict[str, float | None] = {"tcp_ms_per_run": None, "http_ms_per_run": None}
    idle, tcp, mixed = by.get("idle"), by.get("tcp"), by.get("mixed")
    if tcp and idle and tcp.get("tcp_runs"):
        out["tcp_ms_per_run"] = 1000.0 * (tcp["cpu_s"] / tcp["wall_s"] - idle["cpu_s"] / idle["wall_s"]) \
            * tcp["wall_s"] / tcp["tcp_runs"]
    if mixed and tcp and mixed.get("http_runs"):
        out["http_ms_per_run"] = 1000.0 * (mixed["cpu_s"] / mixed["wall_s"] - tcp["cpu_s"] / tcp["wall_s"]) \
            * mixed["wall_s"] / mixed["http_runs"]
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--murmur", default=os.environ.get("MURMUR_BIN", str(h.REPO_ROOT / ".venv" / "bin" / "murmur")),
                   help="murmur executable (default: the repo's .venv/bin/murmur; env MURMUR_BIN)")
    p.add_argument("--window", type=float, default=None, help="steady window in seconds (default 60; --quick 20)")
    p.add_argument("--interval", type=float, default=10.0, help="check interval in seconds (default 10)")
    p.add_argument("--configs", default=",".join(CONFIGS), help="comma separated subset of " + ",".join(CONFIGS))
    p.add_argument("--profile", default="",
                   help="write a sampling profile of the mixed agent's steady window here (MURMUR_SAMPLE, "
                        "agent/sampler.py; never recorded)")


def run(args: argparse.Namespace) -> int:
    window = args.window if args.window is not None else (20.0 if args.quick else 60.0)
    names = [c for c in str(args.configs).split(",") if c]
    bad = [c for c in names if c not in CONFIGS]
    if bad or not names:
        print(f"unknown configs {bad}; choose from {list(CONFIGS)}")
        return 2
    if not (os.path.exists(args.murmur) or shutil.which(args.murmur)):
        print(f"murmur binary not found: {args.murmur}")
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="murmur-bench-checks-"))
    results: dict[str, dict[str, Any]] = {}
    try:
        with h.ProcessGroup() as pg:
            ports = h.free_ports(1 + TCP_LISTENERS)
            http_port, tcp_ports = ports[0], ports[1:]
            budget = len(names) * (START_TIMEOUT + ALL_PASSING_TIMEOUT + window + 60) + 60
            targets = pg.start([sys.executable, "-m", "bench.checks_targets", "--http-port", str(http_port),
                                "--tcp-ports", ",".join(map(str, tcp_ports)), "--seconds", f"{budget:.0f}"],
                               log_path=tmp / "targets.log", cwd=h.REPO_ROOT)
            if not h.wait_until(lambda: "READY" in (tmp / "targets.log").read_text() or targets.poll() is not None,
                                20, 0.1) or targets.poll() is not None:
                print("targets did not start:\n" + h.tail(tmp / "targets.log"))
                return 1
            tcpu0 = h.cpu_seconds(targets.pid)
            for name in names:
                n_http, n_tcp = CONFIGS[name]
                env = {"MURMUR_SAMPLE": args.profile} if args.profile and name == "mixed" else None
                r = measure_config(pg, tmp, name, n_http, n_tcp, http_port, tcp_ports, args.interval, window,
                                   args.murmur, env)
                results[name] = r
                print(describe(r), flush=True)
            targets_cpu = h.cpu_seconds(targets.pid) - tcpu0
        return report(args, window, results, targets_cpu)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def report(args: argparse.Namespace, window: float, results: dict[str, dict[str, Any]], targets_cpu: float) -> int:
    from bench.dns import murmur_version

    derived = derive(results)
    errors = {n: r["error"] for n, r in results.items() if "error" in r}
    rows = ["| configuration | CPU % of a core | user s | sys s | HTTP runs | TCP runs | RSS median MiB | "
            "RSS max MiB | VmHWM MiB |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in results.items():
        if "error" in r:
            rows.append(f"| {name} | error | | | | | | | |")
            continue
        rows.append(f"| {name} ({r['http_checks']} HTTP + {r['tcp_checks']} TCP) | {r['cpu_pct']:.1f} | "
                    f"{r['user_s']:.2f} | {r['system_s']:.2f} | {r['http_runs']} | {r['tcp_runs']} | "
                    f"{r['rss_median_mib']:.1f} | {r['rss_max_mib']:.1f} | {r['hwm_mib']:.1f} |")
    mixed = results.get("mixed", {})
    met = []
    if "cpu_pct" in mixed:
        met.append(f"| CPU, in total (mixed) | {mixed['cpu_pct']:.1f}% | ≤ {CPU_TARGET_PCT:g}% | "
                   f"{'yes' if mixed['cpu_pct'] <= CPU_TARGET_PCT else '**no**'} |")
        rss = max(mixed["hwm_mib"], mixed["rss_max_mib"])
        met.append(f"| RSS (mixed, VmHWM) | {rss:.1f} MiB | ≤ {RSS_TARGET_MIB:g} MiB | "
                   f"{'yes' if rss <= RSS_TARGET_MIB else '**no**'} |")
    for key, label in (("http_ms_per_run", "CPU per HTTP check run"), ("tcp_ms_per_run", "CPU per TCP check run")):
        if derived[key] is not None:
            met.append(f"| {label} | {derived[key]:.3f} ms | report | — |")
    table = "\n".join(rows) + ("\n\n| measure | figure | target | met |\n|---|---:|---:|---|\n" + "\n".join(met)
                               if met else "")
    print()
    print(table)
    version = murmur_version(args.murmur)
    result = {"bench": NAME, "window_s": window, "interval_s": args.interval, "version": version,
              "results": results, "derived": derived, "targets_cpu_s": targets_cpu, "errors": errors}
    if args.no_record or args.profile or errors or "mixed" not in results:
        print("(not recorded: " + ("--no-record" if args.no_record else "--profile" if args.profile
                                    else "errors" if errors else "no mixed configuration") + ")")
    else:
        info = h.machine_info("none (targets: issue 9)")
        date = info["date"].split(" ")[0]
        latest = [h.LatestRow(NAME, "1,000 HTTP + 1,000 TCP checks / 10 s: CPU % of a core",
                              f"{mixed['cpu_pct']:.1f}", f"target ≤ {CPU_TARGET_PCT:g}", "—",
                              h.fmt(derived["http_ms_per_run"], "{:.3f}") + " ms/HTTP run",
                              h.fmt(derived["tcp_ms_per_run"], "{:.3f}") + " ms/TCP run", date),
                  h.LatestRow(NAME, "same: RSS MiB (VmHWM)", f"{mixed['hwm_mib']:.1f}",
                              f"target ≤ {RSS_TARGET_MIB:g}", "—", "", "", date)]
        notes = [f"murmur: {version}",
                 f"one `murmur agent --dev` (log level info) per configuration, checks from a config dir (10 per "
                 f"service), interval {args.interval:g} s, timeout 5 s; targets in a separate process (asyncio: one "
                 f"HTTP server answering 200 + {TCP_LISTENERS} TCP listeners), its CPU over the whole run "
                 f"{targets_cpu:.1f} s; window of {window:g} s starting one interval after every check was passing",
                 "CPU = agent utime+stime delta over the window (/proc/<pid>/stat) / wall time; runs = delta of "
                 "`murmur.check.results`; CPU per TCP run = (tcp - idle) / TCP runs, per HTTP run = "
                 "(mixed - tcp) / HTTP runs; RSS sampled every second (VmRSS), VmHWM at the end",
                 "load average at the end of each window: " + ", ".join(
                     f"{n} {r['load'][0]:.1f}" for n, r in results.items() if r.get("load"))]
        title = f"checks: one agent, 1,000 HTTP + 1,000 TCP checks at {args.interval:g} s, {window:g} s window"
        path = h.append_report(h.Report(NAME, title, table, info, h.command_line(), latest, notes),
                               Path(args.doc) if args.doc else h.DOC_PATH)
        print(f"appended to {path}")
    print("RESULT " + json.dumps(result, default=str))
    return 1 if errors else 0
