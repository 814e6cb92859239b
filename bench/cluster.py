"""KV over HTTP on a 3-server cluster: murmur vs etcd, same httpx client code, same run.

- murmur: 3 real `murmur agent --server --bootstrap-expect 3` processes (not --dev), data dirs on
  disk (Raft log in sqlite WAL synchronous=FULL: fsync on every commit), gossip preset "local".
  Writes `PUT /v1/kv/bench/k<i>` (256-byte body) to the leader's HTTP port; reads
  `GET /v1/kv/bench/k0000001?consistent` (ReadIndex on the leader).
- etcd (Debian `etcd-server`): 3 members, own temp data dirs (fsync on, etcd's default), driven
  over its HTTP/JSON gateway as shared/peers/bench_etcd.py does: `POST /v3/kv/put` with the same
  key and value (base64, as the gateway wants) and `POST /v3/kv/range` (linearizable by default).
- Same client for both: `httpx.Client` keep-alive, one request at a time per client, the request
  bytes built before the clock starts; a write counts only when the server says so (murmur:
  200 and `true`; etcd: 200).
- Phases: `put-1` (1 client), `put-16` (16 clients = 8 threads in each of 2 processes),
  `get-lin-1` (1 client). Each bounded by --seconds and an op count. Both clusters stay up for
  the whole run; each round runs every phase on both sides back to back (ABBA order by round).
- Per phase: ops/s, latency p50/p99 (nearest rank), server CPU ms per op = utime+stime delta of
  the 3 server processes (all threads, /proc) / ops, and the clients' own CPU ms per op.

Targets (issue 8): write p50 <= 2x etcd; 16-client throughput >= 0.7x etcd; server CPU per write
(16-client phase) <= 3x etcd; linearizable read p50 <= 1.5x etcd.
"""

from __future__ import annotations

import argparse
import base64
import datetime as _dt
import json
import multiprocessing as mp
import os
import resource
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import harness as h
from bench.harness import loadavg, percentile

NAME = "cluster"
DESCRIPTION = "KV over HTTP on 3 servers: murmur vs etcd (write/read latency, 16-client throughput, CPU/write)"

SIDES = ("ours", "peer")
LABELS = {"ours": "murmur", "peer": "etcd"}
CONC_DEFAULT = 16
CLIENT_PROCS = 2
VALUE_SIZE = 256
READ_KEY = 1
WARMUP_OPS = 200
MAX_OPS_PER_PHASE = 100_000
START_TIMEOUT_S = 30.0
CLUSTER_TIMEOUT_S = 90.0
REQUEST_TIMEOUT_S = 10.0
WORKER_SLACK_S = 60.0
RESULTS_DIR = Path(__file__).resolve().parent / "results"

PHASES = ("put-1", "put-16", "get-lin-1")

TARGETS = (  # (label, phase, metric, op, threshold)
    ("single-client write p50", "put-1", "p50_ms", "<=", 2.0),
    ("16-client write throughput", "put-16", "ops_per_s", ">=", 0.7),
    ("server CPU per write (16 clients)", "put-16", "server_cpu_ms_per_op", "<=", 3.0),
    ("linearizable read p50", "get-lin-1", "p50_ms", "<=", 1.5),
)

METRICS = [
    h.Metric("ops_per_s", "ops/s", "{:,.0f}"),
    h.Metric("p50_ms", "latency p50, ms", "{:.2f}"),
    h.Metric("p99_ms", "latency p99, ms", "{:.2f}"),
    h.Metric("server_cpu_ms_per_op", "server CPU ms/op (3 processes)", "{:.3f}"),
    h.Metric("leader_cpu_ms_per_op", "leader CPU ms/op", "{:.3f}"),
    h.Metric("client_cpu_ms_per_op", "client CPU ms/op", "{:.3f}"),
    h.Metric("errors", "failed requests (sum)", "{:.0f}"),
]
SUMMED = {"errors"}


# --------------------------------------------------------------------------------------------------
# requests: (method, path, body bytes or None, headers), built before the clock starts


VALUE = b"v" * VALUE_SIZE
VALUE_B64 = base64.b64encode(VALUE).decode()
JSON_HDR = {"Content-Type": "application/json"}


def key_name(i: int) -> str:
    return f"k{i % 10_000_000:07d}"


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def make_request(side: str, kind: str, i: int) -> tuple[str, str, bytes | None, dict[str, str]]:
    """The request a client sends for op number i: same key and value on both sides."""
    if kind == "put":
        if side == "ours":
            return "PUT", f"/v1/kv/bench/{key_name(i)}", VALUE, {}
        body = json.dumps({"key": b64("bench/" + key_name(i)), "value": VALUE_B64}).encode()
        return "POST", "/v3/kv/put", body, JSON_HDR
    if kind == "get-lin":
        if side == "ours":
            return "GET", f"/v1/kv/bench/{key_name(READ_KEY)}?consistent", None, {}
        return "POST", "/v3/kv/range", json.dumps({"key": b64("bench/" + key_name(READ_KEY))}).encode(), JSON_HDR
    raise ValueError(kind)


def answer_ok(side: str, kind: str, status: int, body: bytes) -> bool:
    """Does this answer count as a completed operation?"""
    if status != 200:
        return False
    if side == "ours" and kind == "put":
        return body.strip() == b"true"
    if side == "peer" and kind == "get-lin":
        return b'"kvs"' in body  # the key exists (written in the warm-up)
    return True


def client_loop(base: str, side: str, kind: str, start_i: int, stride: int, stop_at: float, max_ops: int,
                lats: list[float], errors: list[str]) -> None:
    """One keep-alive client: sequential requests until stop_at or max_ops; latencies in seconds."""
    import httpx

    with httpx.Client(base_url=base, timeout=REQUEST_TIMEOUT_S) as c:
        i = start_i
        for _ in range(max_ops):
            if time.monotonic() >= stop_at:
                break
            method, path, body, hdrs = make_request(side, kind, i)
            t0 = time.perf_counter()
            try:
                r = c.request(method, path, content=body, headers=hdrs)
                dt = time.perf_counter() - t0
                ok = answer_ok(side, kind, r.status_code, r.content)
            except httpx.HTTPError as exc:
                ok, r = False, None
                errors.append(f"{type(exc).__name__}: {exc}")
            if ok:
                lats.append(dt)
            elif r is not None:
                errors.append(f"{method} {path}: HTTP {r.status_code} {r.content[:120]!r}")
            if len(errors) > 1000:
                break
            i += stride


def worker_proc(base: str, side: str, kind: str, threads: int, proc_idx: int, nprocs: int, seconds: float,
                max_ops_per_client: int, start_ev: Any, q: Any) -> None:
    """A client process: `threads` clients, started together when start_ev is set."""
    q.put(("ready", proc_idx))
    if not start_ev.wait(WORKER_SLACK_S):
        q.put(("done", proc_idx, [], ["never started"], 0.0, 0.0))
        return
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.monotonic()
    stop_at = t0 + seconds
    lats: list[float] = []
    errors: list[str] = []
    ths = []
    for t in range(threads):
        gid = proc_idx * threads + t
        th = threading.Thread(target=client_loop, args=(base, side, kind, gid, nprocs * threads, stop_at,
                                                        max_ops_per_client, lats, errors), daemon=True)
        ths.append(th)
        th.start()
    for th in ths:
        th.join(seconds + REQUEST_TIMEOUT_S + 5)
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    q.put(("done", proc_idx, lats, errors[:20], time.monotonic() - t0, cpu))


def phase_kind(phase: str) -> tuple[str, int]:
    """('put' | 'get-lin', clients) of a phase name like 'put-16'."""
    kind, _, n = phase.rpartition("-")
    return kind, int(n)


# --------------------------------------------------------------------------------------------------
# clusters


@dataclass
class Member:
    name: str
    argv: list[str]
    log: Path
    http_port: int  # murmur HTTP / etcd client port
    server_port: int  # murmur server port / etcd peer port
    proc: subprocess.Popen[Any] | None = None

    @property
    def base(self) -> str:
        return f"http://{h.HOST}:{self.http_port}"

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Cluster:
    side: str
    members: list[Member]
    version: str = "?"

    def pids(self) -> list[int]:
        return [m.proc.pid for m in self.members if m.proc is not None]

    def leader(self) -> Member | None:
        raise NotImplementedError

    def start(self, pg: h.ProcessGroup) -> None:
        raise NotImplementedError


def _get_json(url: str, method: str = "GET", body: Any = None, timeout: float = 2.0) -> tuple[int, Any]:
    import httpx

    try:
        r = httpx.request(method, url, json=body, timeout=timeout)
    except httpx.HTTPError as exc:
        return 0, str(exc)
    try:
        return r.status_code, r.json()
    except ValueError:
        return r.status_code, r.text


class MurmurCluster(Cluster):
    side = "ours"

    def __init__(self, tmp: Path, murmur: str, log_level: str, ports: list[int], profile: bool = False) -> None:
        self.dir = tmp / "murmur"
        self.dir.mkdir()
        conf = self.dir / "gossip.toml"
        conf.write_text('[gossip_lan]\npreset = "local"\n')
        self.members = []
        serf0 = ports[1]
        for i in range(3):
            http_port, serf_port, server_port = ports[3 * i: 3 * i + 3]
            data = self.dir / f"data-s{i}"
            data.mkdir()
            head = [murmur]
            if profile:
                head = [str(Path(murmur).parent / "python"), "-m", "cProfile", "-o", str(self.dir / f"s{i}.prof"),
                        "-m", "murmur.cli.main"]
            argv = [*head, "agent", "--server", "--bootstrap-expect", "3", "--config-file", str(conf),
                    "--node", f"s{i}", "--bind", h.HOST, "--client", h.HOST, "--data-dir", str(data),
                    "--http-port", str(http_port), "--dns-port", "-1", "--serf-port", str(serf_port),
                    "--server-port", str(server_port), "--log-level", log_level]
            if i:
                argv += ["--join", f"{h.HOST}:{serf0}"]
            self.members.append(Member(f"s{i}", argv, self.dir / f"s{i}.log", http_port, server_port))

    def start(self, pg: h.ProcessGroup) -> None:
        for m in self.members:  # one at a time: --join needs the first agent's gossip port open
            m.proc = pg.start(m.argv, log_path=m.log, cwd=self.dir)
            if not h.wait_until(lambda m=m: not m.running() or _get_json(m.base + "/v1/status/leader")[0] == 200,
                                START_TIMEOUT_S, interval=0.1):
                raise RuntimeError(f"murmur {m.name} did not answer HTTP within {START_TIMEOUT_S:g} s")
            if not m.running():
                raise RuntimeError(f"murmur {m.name} exited: {h.tail(m.log, 5)}")
        if not h.wait_until(lambda: self._stable_leader() is not None, CLUSTER_TIMEOUT_S, interval=0.2):
            raise RuntimeError(f"murmur: no agreed leader within {CLUSTER_TIMEOUT_S:g} s")

    def _stable_leader(self) -> Member | None:
        views = set()
        for m in self.members:
            st, body = _get_json(m.base + "/v1/status/leader", timeout=1.0)
            views.add(body if st == 200 and isinstance(body, str) else "")
        if len(views) != 1 or "" in views:
            return None
        port = views.pop().rpartition(":")[2]
        lead = next((m for m in self.members if str(m.server_port) == port), None)
        if lead is None:
            return None
        st, body = _get_json(lead.base + "/v1/kv/bench/probe", "PUT", None)
        return lead if st == 200 and body is True else None

    def leader(self) -> Member | None:
        return self._stable_leader()


class EtcdCluster(Cluster):
    side = "peer"

    def __init__(self, tmp: Path, etcd: str, ports: list[int]) -> None:
        self.dir = tmp / "etcd"
        self.dir.mkdir()
        cports, pports = ports[:3], ports[3:6]
        initial = ",".join(f"e{i}=http://{h.HOST}:{pports[i]}" for i in range(3))
        self.members = []
        for i in range(3):
            argv = [etcd, f"--name=e{i}", f"--data-dir={self.dir / f'e{i}'}",
                    f"--listen-client-urls=http://{h.HOST}:{cports[i]}",
                    f"--advertise-client-urls=http://{h.HOST}:{cports[i]}",
                    f"--listen-peer-urls=http://{h.HOST}:{pports[i]}",
                    f"--initial-advertise-peer-urls=http://{h.HOST}:{pports[i]}",
                    f"--initial-cluster={initial}", "--initial-cluster-state=new",
                    "--initial-cluster-token=murmur-bench", "--logger=zap", "--log-level=warn",
                    "--enable-v2=false"]
            self.members.append(Member(f"e{i}", argv, self.dir / f"e{i}.log", cports[i], pports[i]))

    def start(self, pg: h.ProcessGroup) -> None:
        for m in self.members:
            m.proc = pg.start(m.argv, log_path=m.log, cwd=self.dir)
        if not h.wait_until(lambda: self.leader() is not None, CLUSTER_TIMEOUT_S, interval=0.2):
            raise RuntimeError(f"etcd: no leader within {CLUSTER_TIMEOUT_S:g} s: "
                               + "; ".join(h.tail(m.log, 2) for m in self.members))
        st, ver = _get_json(self.members[0].base + "/version")
        if st == 200 and isinstance(ver, dict):
            self.version = f"etcd {ver.get('etcdserver', '?')}"

    def leader(self) -> Member | None:
        for m in self.members:
            if not m.running():
                continue
            st, body = _get_json(m.base + "/v3/maintenance/status", "POST", {}, timeout=1.0)
            try:
                if st == 200 and body.get("leader") and body["leader"] == body["header"]["member_id"]:
                    return m
            except (AttributeError, KeyError, TypeError):
                continue
        return None


# --------------------------------------------------------------------------------------------------
# one phase


def run_phase(cluster: Cluster, phase: str, seconds: float, max_ops: int, conc_procs: int = CLIENT_PROCS,
              ) -> dict[str, Any]:
    kind, clients = phase_kind(phase)
    lead = cluster.leader()
    if lead is None or lead.proc is None:
        return {"error": "no leader"}
    pids = cluster.pids()
    lead_pid = lead.proc.pid
    errors: list[str] = []
    load_before = loadavg()
    if clients == 1:
        lats: list[float] = []
        c0, l0 = h.cpu_of(pids), h.cpu_of([lead_pid])
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.monotonic()
        client_loop(lead.base, cluster.side, kind, 0, 1, t0 + seconds, max_ops, lats, errors)
        wall = time.monotonic() - t0
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        c1, l1 = h.cpu_of(pids), h.cpu_of([lead_pid])
        client_cpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    else:
        ctx = mp.get_context("spawn")
        procs = max(1, min(conc_procs, clients))
        threads = clients // procs
        q = ctx.Queue()
        start_ev = ctx.Event()
        per_client = max(1, max_ops // clients)
        ps = [ctx.Process(target=worker_proc, args=(lead.base, cluster.side, kind, threads, k, procs, seconds,
                                                    per_client, start_ev, q), daemon=True)
              for k in range(procs)]
        for p in ps:
            p.start()
        try:
            for _ in ps:
                msg = q.get(timeout=WORKER_SLACK_S)
                if msg[0] != "ready":
                    raise RuntimeError(f"client process: {msg!r}")
            c0, l0 = h.cpu_of(pids), h.cpu_of([lead_pid])
            start_ev.set()
            got = [q.get(timeout=seconds + REQUEST_TIMEOUT_S + WORKER_SLACK_S) for _ in ps]
            c1, l1 = h.cpu_of(pids), h.cpu_of([lead_pid])
        finally:
            for p in ps:
                p.join(timeout=10)
                if p.is_alive():
                    p.kill()
                    p.join(timeout=5)
        lats = [x for g in got for x in g[2]]
        errors = [e for g in got for e in g[3]]
        wall = max(g[4] for g in got)
        client_cpu = sum(g[5] for g in got)
    n = len(lats)
    r: dict[str, Any] = {"ops": n, "clients": clients, "wall_s": wall, "ops_per_s": n / wall if wall > 0 else None,
                         "p50_ms": statistics.median(lats) * 1e3 if lats else None,
                         "p99_ms": (percentile(lats, 99) or 0.0) * 1e3 if lats else None,
                         "server_cpu_ms_per_op": 1e3 * (c1 - c0) / n if n else None,
                         "leader_cpu_ms_per_op": 1e3 * (l1 - l0) / n if n else None,
                         "server_cpu_pct": 100.0 * (c1 - c0) / wall if wall > 0 else None,
                         "client_cpu_ms_per_op": 1e3 * client_cpu / n if n else None,
                         "errors": len(errors), "error_examples": errors[:3], "leader": lead.name,
                         "load_before": load_before, "load_after": loadavg()}
    return r


def warm_up(cluster: Cluster, ops: int) -> None:
    """Create the read key and the other keys' first versions; open the paths."""
    lead = cluster.leader()
    if lead is None:
        raise RuntimeError(f"{LABELS[cluster.side]}: no leader for the warm-up")
    lats: list[float] = []
    errors: list[str] = []
    client_loop(lead.base, cluster.side, "put", 0, 1, time.monotonic() + 30.0, ops, lats, errors)
    if errors or len(lats) < ops:
        raise RuntimeError(f"{LABELS[cluster.side]} warm-up: {len(lats)}/{ops} writes; {errors[:2]}")


# --------------------------------------------------------------------------------------------------
# summary and targets


def side_order(rnd: int) -> tuple[str, str]:
    """ABBA: murmur first on even rounds, etcd first on odd ones."""
    return SIDES if rnd % 2 == 0 else (SIDES[1], SIDES[0])


def summarize(results: Sequence[dict[str, Any]]) -> dict[str, dict[str, dict[str, float | None]]]:
    ok = [r for r in results if "error" not in r]
    out = h.summarize(ok, [m.key for m in METRICS], SIDES)
    for case, per in out.items():
        for key in SUMMED:
            row = {s: float(sum(r.get(key) or 0 for r in results if r["case"] == case and r["side"] == s))
                   for s in SIDES}
            per[key] = {**row, "ratio": None}
    return out


def targets(summary: dict[str, dict[str, dict[str, float | None]]]) -> list[dict[str, Any]]:
    out = []
    for label, phase, metric, op, threshold in TARGETS:
        value = summary.get(phase, {}).get(metric, {}).get("ratio")
        met = None if value is None else (value <= threshold if op == "<=" else value >= threshold)
        out.append({"target": label, "phase": phase, "metric": metric, "value": value, "op": op,
                    "threshold": threshold, "pass": met})
    return out


def per_round_ratios(results: Sequence[dict[str, Any]]) -> dict[str, list[float]]:
    """Per target, murmur/etcd of the same round (paired), for the spread."""
    out: dict[str, list[float]] = {}
    for label, phase, metric, _op, _th in TARGETS:
        vals = []
        for rnd in sorted({r["round"] for r in results}):
            pair = {r["side"]: r.get(metric) for r in results
                    if r["round"] == rnd and r["case"] == phase and "error" not in r}
            rt = h.ratio(pair.get("ours"), pair.get("peer"))
            if rt is not None:
                vals.append(rt)
        out[label] = vals
    return out


# --------------------------------------------------------------------------------------------------
# entry point


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--concurrency", type=int, default=CONC_DEFAULT, help="clients in the throughput phase")
    p.add_argument("--warmup", type=int, default=WARMUP_OPS, help="sequential writes per side before measuring")
    p.add_argument("--murmur", default=os.environ.get("MURMUR_BIN", str(h.REPO_ROOT / ".venv" / "bin" / "murmur")),
                   help="murmur executable (env MURMUR_BIN)")
    p.add_argument("--etcd", default=os.environ.get("ETCD_BIN", "etcd"), help="etcd executable (env ETCD_BIN)")
    p.add_argument("--log-level", default="warn", help="murmur agents' log level")
    p.add_argument("--only", choices=SIDES, help="one side only (debugging; never recorded)")
    p.add_argument("--profile", action="store_true",
                   help="run the murmur agents under cProfile and print the leader's top functions (never recorded)")
    p.add_argument("--budget", type=float, default=None, help="stop starting phases after this many seconds")
    p.add_argument("--phases", default=",".join(PHASES),
                   help=f"comma-separated subset of {','.join(PHASES)} (a subset is never recorded)")


def run(args: argparse.Namespace) -> int:
    rounds, seconds = h.rounds_and_seconds(args.quick, args.rounds, args.seconds)
    if rounds < 1 or seconds <= 0 or args.concurrency < 2 or args.warmup < 2:
        print("need --rounds >= 1, --seconds > 0, --concurrency >= 2, --warmup >= 2")
        return 2
    sides = (args.only,) if args.only else SIDES
    etcd_bin = shutil.which(args.etcd) or (args.etcd if os.path.exists(args.etcd) else None)
    if "peer" in sides and etcd_bin is None:
        print("etcd not found: apt-get install etcd-server (make apt-bench), or run with --only ours")
        return 2
    if "ours" in sides and not (os.path.exists(args.murmur) or shutil.which(args.murmur)):
        print(f"murmur not found: {args.murmur}")
        return 2
    wanted = [p for p in args.phases.split(",") if p]
    if not wanted or any(p not in PHASES for p in wanted):
        print(f"--phases: choose among {','.join(PHASES)}")
        return 2
    subset = tuple(wanted) != PHASES
    phases = tuple(p if p != "put-16" else f"put-{args.concurrency}" for p in wanted)
    budget = args.budget if args.budget is not None else rounds * len(phases) * len(sides) * (seconds + 20) + 120
    from bench.dns import murmur_version

    tmp = Path(tempfile.mkdtemp(prefix="murmur-bench-cluster-"))
    results: list[dict[str, Any]] = []
    clusters: dict[str, Cluster] = {}
    versions = {"ours": murmur_version(args.murmur), "peer": "etcd ?"}
    t_start = time.monotonic()
    try:
        with h.ProcessGroup() as pg:
            ports = h.free_ports(15)
            if "ours" in sides:
                clusters["ours"] = MurmurCluster(tmp, args.murmur, args.log_level, ports[:9], args.profile)
            if "peer" in sides:
                clusters["peer"] = EtcdCluster(tmp, etcd_bin or "etcd", ports[9:15])
            for side in sides:
                t0 = time.monotonic()
                clusters[side].start(pg)
                warm_up(clusters[side], args.warmup)
                print(f"  {LABELS[side]}: 3 servers up, leader {clusters[side].leader().name if clusters[side].leader() else '?'}, "
                      f"{args.warmup} warm-up writes, {time.monotonic() - t0:.1f} s", flush=True)
            versions["peer"] = clusters["peer"].version if "peer" in clusters else versions["peer"]
            print(f"cluster: {rounds} rounds x phases {', '.join(phases)} of {seconds:g} s per side (ABBA by "
                  f"round); {versions['ours']}; {versions['peer']}; load {loadavg()}", flush=True)
            stopped = ""
            for rnd in range(rounds):
                for phase in phases:
                    for side in side_order(rnd):
                        if side not in sides:
                            continue
                        if time.monotonic() - t_start > budget:
                            stopped = f"stopped early: {budget:.0f} s budget spent"
                            break
                        r = run_phase(clusters[side], phase, seconds, MAX_OPS_PER_PHASE)
                        r.update(side=side, case=phase, round=rnd)
                        results.append(r)
                        print(describe(r), flush=True)
                    if stopped:
                        break
                if stopped:
                    print("  " + stopped, flush=True)
                    break
            if args.profile and "ours" in clusters:
                lead = clusters["ours"].leader()
                for m in clusters["ours"].members:
                    if m.proc is not None:
                        pg.stop(m.proc, grace=20)
                if lead is not None:
                    print_profile(Path(clusters["ours"].dir) / f"{lead.name}.prof")  # type: ignore[attr-defined]
            logs = {side: log_problems(c) for side, c in clusters.items()}
        return report(args, rounds, seconds, phases, sides, versions, results, logs, stopped, subset)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def print_profile(path: Path, top: int = 40) -> None:
    import pstats

    if not path.exists():
        print(f"(no profile at {path}: did the agent exit cleanly?)")
        return
    st = pstats.Stats(str(path))
    st.sort_stats("tottime").print_stats(top)
    st.sort_stats("cumulative").print_stats(top)


def log_problems(cluster: Cluster) -> list[str]:
    from bench.raft import group_lines, problem_lines, read_text

    lines = [f"{m.name}: {ln}" for m in cluster.members for ln in problem_lines(read_text(m.log))]
    return [f"x{c} {ln[:200]}" for c, ln in group_lines(lines, limit=5)]


def describe(r: dict[str, Any]) -> str:
    head = f"  round {r['round']} {r['case']:10s} {LABELS[r['side']]:6s}:"
    if "error" in r:
        return f"{head} ERROR {r['error']}"
    s = (f"{head} {r['ops']:6d} ops {h.fmt(r['ops_per_s'], '{:8,.0f}')}/s  p50 {h.fmt(r['p50_ms'], '{:6.2f}')} ms  "
         f"p99 {h.fmt(r['p99_ms'], '{:7.2f}')} ms | servers {h.fmt(r['server_cpu_ms_per_op'], '{:.3f}')} ms/op "
         f"({h.fmt(r['server_cpu_pct'], '{:.0f}')}%), leader {h.fmt(r['leader_cpu_ms_per_op'], '{:.3f}')}, "
         f"client {h.fmt(r['client_cpu_ms_per_op'], '{:.3f}')} ms/op")
    if r.get("errors"):
        s += f"  ERRORS {r['errors']}: {r['error_examples'][:1]}"
    return s


def report(args: argparse.Namespace, rounds: int, seconds: float, phases: Sequence[str], sides: Sequence[str],
           versions: dict[str, str], results: list[dict[str, Any]], logs: dict[str, list[str]], stopped: str,
           subset: bool = False) -> int:
    summary = summarize(results)
    tg = targets(summary)
    paired = per_round_ratios(results)
    table = h.format_table(summary, METRICS, ours_name="murmur", peer_name="etcd")
    lines = [table, "", "| target | murmur/etcd (medians) | per-round pairs [min-max] | goal | met |",
             "|---|---:|---:|---:|---|"]
    for t in tg:
        vals = paired.get(t["target"], [])
        spread = f"{min(vals):.2f}-{max(vals):.2f}" if vals else "—"
        met = "—" if t["pass"] is None else ("yes" if t["pass"] else "**no**")
        lines.append(f"| {t['target']} | {h.fmt(t['value'], '{:.2f}')}× | {spread} | {t['op']} {t['threshold']:g}× "
                     f"| {met} |")
    text = "\n".join(lines)
    print()
    print(text)
    loads = [x for r in results for x in (r.get("load_before"), r.get("load_after")) if x]
    load_txt = (f"load average (1 min) around the phases: median {statistics.median(la[0] for la in loads):.2f}, "
                f"min {min(la[0] for la in loads):.2f}, max {max(la[0] for la in loads):.2f} (2 cores)"
                if loads else "load average unknown")
    notes = [
        f"{rounds} rounds; both 3-server clusters up for the whole run; per round every phase on both sides "
        f"back to back (murmur first on even rounds); phases of {seconds:g} s: 1 client writing, "
        f"{args.concurrency} clients writing ({CLIENT_PROCS} processes x {args.concurrency // CLIENT_PROCS} "
        "threads), 1 client reading linearizably; medians over rounds, p99 nearest rank",
        "murmur: 3 `murmur agent --server --bootstrap-expect 3` (data dirs on disk, sqlite WAL "
        "synchronous=FULL), requests to the leader's HTTP port: PUT /v1/kv/bench/k<i> (256 B), "
        "GET /v1/kv/bench/k0000001?consistent",
        f"etcd: {versions.get('peer')}, 3 members, temp data dirs, HTTP/JSON gateway on the leader: "
        "POST /v3/kv/put (same key, same 256 B value, base64), POST /v3/kv/range (linearizable default)",
        "same client code (httpx.Client keep-alive, one request in flight per client); server CPU = utime+stime "
        "of the 3 server processes (/proc, all threads) / completed ops",
        load_txt,
    ]
    if stopped:
        notes.append(stopped)
    for side, probs in logs.items():
        if probs:
            notes.append(f"{LABELS[side]} logs, warning/error lines: " + "; ".join(probs[:3]))
    print()
    for n in notes:
        print("NOTE: " + n)
    info = h.machine_info(versions.get("peer", ""))
    result = {"bench": NAME, "rounds": rounds, "seconds": seconds, "concurrency": args.concurrency,
              "value_bytes": VALUE_SIZE, "versions": {x: versions[x] for x in sides}, "machine": info,
              "summary": summary, "targets": tg, "paired_ratios": paired, "notes": notes, "runs": results}
    failed = [r for r in results if "error" in r]
    complete = len(sides) == 2 and all(any(r["side"] == x and "error" not in r for r in results) for x in sides)
    if args.no_record or args.only or args.profile or subset:
        why = ("--no-record" if args.no_record else "--only" if args.only else "--profile" if args.profile
               else "--phases subset")
        print(f"(not recorded: {why})")
    elif complete:
        date = info["date"].split(" ")[0]
        title = (f"cluster: murmur 3 servers vs {versions['peer']} 3 members, KV over HTTP, fsync on, "
                 f"{'quick, ' if args.quick else ''}{rounds} rounds x {seconds:g} s")
        notes.insert(0, f"murmur: {versions['ours']}")
        path = h.append_report(h.Report(NAME, title, text, info, h.command_line(), latest_rows(summary, date),
                                        notes), Path(args.doc) if args.doc else h.DOC_PATH)
        print(f"appended to {path}")
        RESULTS_DIR.mkdir(exist_ok=True)
        stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%MZ")
        jpath = RESULTS_DIR / f"cluster-{stamp}.json"
        jpath.write_text(json.dumps(result, default=str, indent=1) + "\n")
        print(f"wrote {jpath}")
    else:
        print("(not recorded: a side has no completed phase)")
    print("RESULT " + json.dumps(result, default=str))
    return 0 if (complete or args.only) and not failed else 1


def latest_rows(summary: dict[str, dict[str, dict[str, float | None]]], date: str) -> list[h.LatestRow]:
    rows = []
    for phase, label in (("put-1", "1 client PUT: p50 ms"), ("put-16", "16 clients PUT: ops/s"),
                         ("get-lin-1", "1 client linearizable GET: p50 ms")):
        per = summary.get(phase, {})
        metric, spec = ("ops_per_s", "{:,.0f}") if phase == "put-16" else ("p50_ms", "{:.2f}")
        v, cpu = per.get(metric, {}), per.get("server_cpu_ms_per_op", {})
        us = {k: (None if cpu.get(k) is None else cpu[k] * 1e3) for k in SIDES}
        rows.append(h.LatestRow(NAME, label, h.fmt(v.get("ours"), spec), h.fmt(v.get("peer"), spec),
                                h.fmt(v.get("ratio"), "{:.3f}"), h.fmt(us["ours"], "{:,.0f}"),
                                h.fmt(us["peer"], "{:,.0f}"), date))
    return rows
