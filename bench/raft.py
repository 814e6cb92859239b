"""Raft durable commits: murmur's Raft core vs pysyncobj, beside the fsync floor of this disk; leader failover.

Throughput and commit latency (A/B rounds; each round: fsync floor, then both sides, in the order
murmur, pysyncobj on even rounds and pysyncobj, murmur on odd ones; fresh clusters every time):

- murmur: 3 voters, each its own process. This process hosts voter 1 (RaftDriver + RaftStorage
  in a temp dir, sqlite WAL synchronous=FULL, i.e. fsync on + TCPTransport + ServerPort on
  127.0.0.1) and runs the proposers in-process as trio tasks calling `driver.propose(256-byte
  payload)` on a tiny KV state machine (`bench/raft_node.py`); voters 2 and 3 are
  `python -m bench.raft_node murmur ...` processes, default RaftConfig, the agent's 100 ms tick.
  Voter 1 calls campaign() once the others listen, so it leads. Every voter fsyncs before it acks.
- pysyncobj (as shared/peers/bench_pysyncobj.py runs it): 3 processes; this process is node 0
  (election timeout 0.4-0.5 s, the others 2-3 s, so node 0 leads) and the client;
  appendEntriesUseBatch=False; in-memory journal, NO fsync (not durable per commit).
  1 in flight = ReplDict.set(sync=True) in a loop; 16 in flight = ReplDict.set(callback=...)
  with a semaphore of 16, latency from issue to callback (bench_pysyncobj.py's pipe-set method).
- Phases per cluster, after a warm-up: 1 proposer (sequential), then 16 concurrent proposers,
  each bounded by --seconds and an op count. Reported per phase: commits/s, commit latency
  p50/p99 (nearest rank), CPU ms per commit of all 3 processes (utime+stime, all threads: this
  process via getrusage, the others via /proc), the leader's fsyncs (murmur: durable writes).
- fsync floor: 256-byte append + fdatasync in a temp file in the same directory as murmur's
  logs (and a preallocated-file variant), p50/p99.

Leader failover (after the rounds; --trials, default 20, --quick 5): 3 real `murmur agent --server
--bootstrap-expect 3` processes (gossip preset "local"); per trial the leader (its server port is
in GET /v1/status/leader) is killed with SIGKILL, then `PUT /v1/kv/bench-<n>` is sent to the
survivors in turn until one returns `true`: that time is the failover. The victim is restarted
from its data dir with the same arguments, and the next trial waits for a stable leader (all three
agree on three polls in a row and a write through the restarted agent succeeds).

Targets (shared/reference/performance-anchors.md §3.2, the issue): throughput with 16 proposers
>= 1.5x pysyncobj's (with our fsync on); single-proposer commit p50 <= 20x the fdatasync p50;
16-proposer throughput >= 5x the single-proposer rate; failover p50/p99 reported.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import logging
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import harness as h
from bench.harness import cpu_of, loadavg, parse_loadavg, percentile  # noqa: F401  (parse_loadavg: re-exported for tests)
from bench.raft_node import PAYLOAD_SIZE, format_peers, payload, pysyncobj_conf, quantiles_ms

NAME = "raft"
DESCRIPTION = "durable Raft commits/s and latency, murmur vs pysyncobj (3 nodes) and the fsync floor; failover"

SIDES = ("ours", "peer")
LABELS = {"ours": "murmur", "peer": "pysyncobj"}
CONC_DEFAULT = 16
FULL_TRIALS, QUICK_TRIALS = 20, 5
WARMUP_OPS = 200
MAX_OPS_PER_PHASE = 200_000
FSYNC_COUNT, FSYNC_QUICK_COUNT, FSYNC_MAX_S = 2000, 1000, 5.0
FSYNC_PROBE_COUNT = 200  # a short floor probe right before each side's run (the disk's speed drifts)
START_TIMEOUT_S = 30.0
LEADER_TIMEOUT_S = 10.0
PROPOSE_TIMEOUT_S = 10.0
SLOW_COMMIT_S = 0.1  # a commit slower than this is counted as slow and reported
FAILOVER_TIMEOUT_S = 30.0
STABLE_TIMEOUT_S = 60.0
CLUSTER_TIMEOUT_S = 90.0
PUT_TIMEOUT_S = 2.0
SLOW_FAILOVER_S = 2.5  # print the survivors' raft log lines for slower trials

TARGET_THROUGHPUT_VS_PEER = 1.5
TARGET_P50_VS_FSYNC = 20.0
TARGET_SCALING = 5.0

METRICS = [
    h.Metric("ops_per_s", "commits/s", "{:,.0f}"),
    h.Metric("p50_ms", "commit latency p50, ms", "{:.2f}"),
    h.Metric("p99_ms", "commit latency p99, ms", "{:.2f}"),
    h.Metric("cpu_ms_per_op", "CPU ms/commit, 3 processes", "{:.3f}"),
    h.Metric("leader_cpu_ms_per_op", "CPU ms/commit, leader+proposers process", "{:.3f}"),
    h.Metric("follower_cpu_ms_per_op", "CPU ms/commit, 2 followers", "{:.3f}"),
    h.Metric("cluster_cpu_pct", "CPU % of one core, 3 processes", "{:.0f}"),
    h.Metric("entries_per_fsync", "leader: commits per durable write", "{:.1f}"),
    h.Metric("leader_save_p50_ms", "leader: durable write (sqlite txn + fsync) p50, ms", "{:.2f}"),
    h.Metric("leader_msgs_per_op", "leader: Raft messages sent+received per commit", "{:.1f}"),
    h.Metric("fsync_before_p50_ms", "fsync floor probe just before the run, p50 ms", "{:.3f}"),
    h.Metric("slow_commits", "commits > 100 ms (sum)", "{:.0f}"),
    h.Metric("errors", "failed proposals (sum)", "{:.0f}"),
]
SUMMED = {"slow_commits", "errors"}


# --------------------------------------------------------------------------------------------------
# pure helpers


def latency_summary(lats_s: Sequence[float]) -> dict[str, float | None]:
    """p50/p99/max in ms of latencies given in seconds."""
    if not lats_s:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None}
    return {"p50_ms": statistics.median(lats_s) * 1e3, "p99_ms": (percentile(lats_s, 99) or 0.0) * 1e3,
            "max_ms": max(lats_s) * 1e3}


def phase_metrics(lats_s: Sequence[float], wall_s: float, cpu_leader_s: float, cpu_followers_s: float,
                  errors: int = 0) -> dict[str, Any]:
    """Per-phase figures: rate, latency, CPU per commit (3 processes, and split)."""
    n = len(lats_s)
    cpu = cpu_leader_s + cpu_followers_s
    r: dict[str, Any] = {"ops": n, "wall_s": wall_s, "ops_per_s": n / wall_s if wall_s > 0 else None,
                         "cpu_ms_per_op": 1e3 * cpu / n if n else None,
                         "leader_cpu_ms_per_op": 1e3 * cpu_leader_s / n if n else None,
                         "follower_cpu_ms_per_op": 1e3 * cpu_followers_s / n if n else None,
                         "cluster_cpu_pct": 100.0 * cpu / wall_s if wall_s > 0 else None,
                         "slow_commits": sum(1 for x in lats_s if x > SLOW_COMMIT_S), "errors": errors}
    r.update(latency_summary(lats_s))
    return r


def leader_port(addr: Any) -> int | None:
    """The port in a /v1/status/leader body ('127.0.0.1:8300'); None when there is no leader."""
    if not isinstance(addr, str) or not addr:
        return None
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit():
        return None
    return int(port)



def parse_stats_lines(text: str) -> list[dict[str, Any]]:
    """The `STATS {json}` lines a bench.raft_node process prints when it stops."""
    out = []
    for line in text.splitlines():
        if line.startswith("STATS "):
            try:
                out.append(json.loads(line[6:]))
            except ValueError:
                continue
    return out


LEVEL_RE = re.compile(r"\b(WARNING|ERROR|CRITICAL)\b")
EXC_RE = re.compile(r"^[\s|+]*((?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*(?:Error|Exception|Exit|Interrupt))(?::\s.*)?$")


def problem_lines(text: str) -> list[str]:
    """Log lines worth reporting: warning/error records, and the exception line that ends each
    traceback (`exception: trio.BrokenResourceError`); traceback bodies are left out."""
    out = []
    for ln in text.splitlines():
        body = ln.strip(" |+")
        if LEVEL_RE.search(ln) and not ln.lstrip().startswith(("|", "+")):
            out.append(ln)
        elif EXC_RE.match(ln):
            out.append("exception: " + body)
    return out


def split_at(text: str, offset: int) -> tuple[str, str]:
    """(before, after) a byte offset taken from the file size (the log is ASCII/UTF-8)."""
    raw = text.encode()
    return raw[:offset].decode(errors="replace"), raw[offset:].decode(errors="replace")


def group_lines(lines: Iterable[str], limit: int = 6) -> list[tuple[int, str]]:
    """(count, first example) per kind of line; digits are masked to group like lines."""
    groups: dict[str, list[Any]] = {}
    for ln in lines:
        body = re.sub(r"^\S+ \S+ ", "", ln)  # drop a leading timestamp
        key = re.sub(r"\d+", "N", body)[:160]
        g = groups.setdefault(key, [0, ln])
        g[0] += 1
    return [(c, ln) for c, ln in sorted(groups.values(), key=lambda g: -g[0])[:limit]]


def side_order(rnd: int) -> tuple[str, str]:
    """ABBA: murmur first on even rounds, pysyncobj first on odd ones."""
    return SIDES if rnd % 2 == 0 else (SIDES[1], SIDES[0])


def summarize(results: Sequence[dict[str, Any]]) -> dict[str, dict[str, dict[str, float | None]]]:
    """{case: {metric: {ours, peer, ratio}}}: medians over rounds (sums for SUMMED metrics)."""
    out = h.summarize(results, [m.key for m in METRICS], SIDES)
    for case, per in out.items():
        for key in SUMMED:
            row = per.get(key)
            if row is None:
                continue
            for side in SIDES:
                vals = [r.get(key) for r in results if r["case"] == case and r["side"] == side]
                vals = [v for v in vals if v is not None]
                row[side] = float(sum(vals)) if vals else None
            row["ratio"] = h.ratio(row.get("ours"), row.get("peer"))
    return out


def targets(summary: dict[str, dict[str, dict[str, float | None]]], fsync_p50_ms: float | None,
            conc: int = CONC_DEFAULT) -> list[dict[str, Any]]:
    """The issue's three ratio targets: value, threshold, pass (None if not measurable)."""
    hi, lo = f"c={conc}", "c=1"

    def get(case: str, key: str, side: str) -> float | None:
        return summary.get(case, {}).get(key, {}).get(side)

    tput = h.ratio(get(hi, "ops_per_s", "ours"), get(hi, "ops_per_s", "peer"))
    p50 = h.ratio(get(lo, "p50_ms", "ours"), fsync_p50_ms)
    scale = h.ratio(get(hi, "ops_per_s", "ours"), get(lo, "ops_per_s", "ours"))
    rows = [
        {"target": f"throughput {conc} proposers, murmur (fsync) / pysyncobj (no fsync)", "value": tput,
         "op": ">=", "threshold": TARGET_THROUGHPUT_VS_PEER},
        {"target": "single-proposer commit p50 / fdatasync p50 (append)", "value": p50,
         "op": "<=", "threshold": TARGET_P50_VS_FSYNC},
        {"target": f"murmur throughput {conc} proposers / 1 proposer", "value": scale,
         "op": ">=", "threshold": TARGET_SCALING},
    ]
    for r in rows:
        v = r["value"]
        r["pass"] = None if v is None else (v >= r["threshold"] if r["op"] == ">=" else v <= r["threshold"])
    return rows


def per_round(results: Sequence[dict[str, Any]], conc: int = CONC_DEFAULT) -> list[dict[str, Any]]:
    """Paired figures per round (the disk's fsync speed drifts between rounds, so pairs taken in the
    same round compare like with like): the fsync probe taken right before murmur's run, murmur's
    single-proposer p50 over it, and the throughput ratios of that round."""
    hi = f"c={conc}"

    def get(rnd: int, side: str, case: str, key: str) -> Any:
        for r in results:
            if r["round"] == rnd and r["side"] == side and r["case"] == case:
                return r.get(key)
        return None

    out = []
    for rnd in sorted({r["round"] for r in results}):
        fs = get(rnd, "ours", "c=1", "fsync_before_p50_ms")
        p50 = get(rnd, "ours", "c=1", "p50_ms")
        o1, o16, p16 = get(rnd, "ours", "c=1", "ops_per_s"), get(rnd, "ours", hi, "ops_per_s"), get(rnd, "peer", hi,
                                                                                                     "ops_per_s")
        out.append({"round": rnd, "fsync_p50_ms": fs, "ours_c1_p50_ms": p50, "p50_over_fsync": h.ratio(p50, fs),
                    "ours_c1_ops": o1, "ours_hi_ops": o16, "peer_hi_ops": p16, "tput_ratio": h.ratio(o16, p16),
                    "scaling": h.ratio(o16, o1)})
    return out


def failover_summary(times_s: Sequence[float]) -> dict[str, float | None]:
    return {"n": float(len(times_s)), "p50_s": statistics.median(times_s) if times_s else None,
            "p99_s": percentile(times_s, 99), "min_s": min(times_s) if times_s else None,
            "max_s": max(times_s) if times_s else None}


@dataclass
class Settings:
    rounds: int
    seconds: float
    conc: int
    warmup: int
    trials: int
    fsync_count: int
    murmur: str
    log_level: str


# --------------------------------------------------------------------------------------------------
# measuring helpers


def self_cpu() -> float:
    """utime+stime of this process, all threads (the leader node, the proposers, the fsync worker)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def fsync_floor(directory: Path, mode: str, count: int, max_s: float, size: int = PAYLOAD_SIZE) -> list[float]:
    """Latencies (s) of `size`-byte write + fdatasync: 'append' to a growing file or 'prealloc'
    (overwrite inside a preallocated 64 MiB file), as shared/peers/fsync_latency.py measures it."""
    path = directory / f"fsync-floor-{mode}"
    data = os.urandom(size)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if mode == "append" else 0)
    fd = os.open(path, flags, 0o600)
    lats: list[float] = []
    try:
        if mode == "prealloc":
            os.posix_fallocate(fd, 0, 64 << 20)
            os.fsync(fd)
        end = time.monotonic() + max_s
        off = 0
        for _ in range(count):
            if time.monotonic() > end:
                break
            t0 = time.perf_counter()
            if mode == "prealloc":
                os.pwrite(fd, data, off)
                off += size
            else:
                os.write(fd, data)
            os.fdatasync(fd)
            lats.append(time.perf_counter() - t0)
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    return lats


def wait_files(paths: Sequence[Path], procs: Sequence[subprocess.Popen[Any]], timeout: float) -> str | None:
    """None once every path exists; else why not (a process died, or the time ran out)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dead = [p for p in procs if p.poll() is not None]
        if dead:
            return f"process {dead[0].pid} exited with {dead[0].returncode}"
        if all(p.exists() for p in paths):
            return None
        time.sleep(0.05)
    return f"not ready within {timeout:g} s"


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def tcp_open(port: int, host: str = h.HOST) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def read_from(path: Path, offset: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read(1 << 20).decode(errors="replace")
    except OSError:
        return ""


def read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


# --------------------------------------------------------------------------------------------------
# murmur side


def run_murmur(pg: h.ProcessGroup, tmp: Path, rnd: int, s: Settings) -> dict[str, Any]:
    """One fresh 3-process murmur cluster: warm-up, then a phase per concurrency. Returns per-phase dicts."""
    import trio

    rdir = tmp / f"murmur-r{rnd}"
    rdir.mkdir()
    ports = h.free_ports(3)
    peers = {i + 1: (h.HOST, ports[i]) for i in range(3)}
    handler = logging.FileHandler(rdir / "n1.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    mlog = logging.getLogger("murmur")
    old_level = mlog.level
    mlog.setLevel(getattr(logging, s.log_level.upper(), logging.INFO))
    mlog.addHandler(handler)
    out: dict[str, Any] = {"label": "murmur", "load_before": loadavg(), "phases": {}}
    try:
        trio.run(_murmur_round, pg, rdir, peers, s, out)
    except Exception as exc:  # noqa: BLE001 - a failed round is reported, the others still run
        out["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        mlog.removeHandler(handler)
        mlog.setLevel(old_level)
        handler.close()
        out["load_after"] = loadavg()
        sizes = {f"n{i}": file_size(rdir / f"n{i}.log") for i in (2, 3)}
        for p in list(out.get("_procs", [])):
            pg.stop(p)
        out.pop("_procs", None)
        logs = {f"n{i}": read_text(rdir / f"n{i}.log") for i in (1, 2, 3)}
        out["follower_stats"] = [st for i in (2, 3) for st in parse_stats_lines(logs[f"n{i}"])]
        during = {n: split_at(text, sizes[n])[0] if n in sizes else text for n, text in logs.items()}
        after = {n: split_at(text, sizes[n])[1] for n, text in logs.items() if n in sizes}
        probs = [f"{n}: {ln}" for n, text in during.items() for ln in problem_lines(text)]
        out["log_problems"] = len(probs)
        out["log_groups"] = group_lines(probs)
        late = [f"{n}: {ln}" for n, text in after.items() for ln in problem_lines(text)]
        out["log_problems_shutdown"] = len(late)
        out["log_groups_shutdown"] = group_lines(late, limit=3)
        out["role_changes"] = [f"{n}: {ln}" for n, text in logs.items() for ln in text.splitlines()
                               if "raft: " in ln and ", leader " in ln][:12]
    return out


async def _murmur_round(pg: h.ProcessGroup, rdir: Path, peers: dict[int, tuple[str, int]], s: Settings,
                        out: dict[str, Any]) -> None:
    import trio

    from bench.raft_node import MurmurNode

    node = MurmurNode(1, peers, rdir / "n1")
    driver = node.driver
    try:
        async with trio.open_nursery() as nursery:
            await node.start(nursery)
            budget = s.warmup * 0.1 + 2 * (s.seconds + PROPOSE_TIMEOUT_S) + 120
            procs = []
            for i in (2, 3):
                argv = [sys.executable, "-m", "bench.raft_node", "murmur", "--id", str(i), "--port",
                        str(peers[i][1]), "--peers", format_peers(peers), "--data-dir", str(rdir / f"n{i}"),
                        "--log-level", s.log_level, "--max-seconds", f"{budget:.0f}"]
                procs.append(pg.start(argv, log_path=rdir / f"n{i}.log", cwd=h.REPO_ROOT))
            out["_procs"] = procs
            pids = [p.pid for p in procs]
            why = await trio.to_thread.run_sync(wait_files, [rdir / f"n{i}" / "ready" for i in (2, 3)], procs,
                                                START_TIMEOUT_S)
            if why:
                raise RuntimeError(f"followers: {why}")
            node.connect_peers()
            t_camp = time.monotonic()
            node.campaign()
            with trio.move_on_after(LEADER_TIMEOUT_S):
                while not driver.is_leader:
                    await trio.sleep(0.01)
            if not driver.is_leader:
                raise RuntimeError(f"voter 1 did not become leader within {LEADER_TIMEOUT_S:g} s "
                                   f"(leader: {driver.leader or 'none'})")
            out["election_s"] = time.monotonic() - t_camp
            counter = itertools.count()
            warm, werr = await _murmur_phase(driver, 1, 60.0, s.warmup, counter)
            if not warm:
                raise RuntimeError(f"warm-up: no commit ({werr[:1]})")
            for conc in (1, s.conc):
                st0, tr0, sv0 = dict(driver.stats), dict(node.transport.stats), len(node.timed.times)
                c0, f0 = self_cpu(), cpu_of(pids)
                t0 = time.monotonic()
                lats, errs = await _murmur_phase(driver, conc, s.seconds, MAX_OPS_PER_PHASE, counter)
                wall = time.monotonic() - t0
                c1, f1 = self_cpu(), cpu_of(pids)
                st1, tr1 = dict(driver.stats), dict(node.transport.stats)
                r = phase_metrics(lats, wall, c1 - c0, f1 - f0, len(errs))
                if lats:
                    r["leader_msgs_per_op"] = ((tr1["sent"] - tr0["sent"]) + (tr1["received"] - tr0["received"])) / len(lats)
                r.update({f"leader_save_{k}": v for k, v in quantiles_ms(node.timed.times[sv0:]).items()})
                writes = st1["writes"] - st0["writes"]
                r["leader_fsyncs"] = writes
                r["entries_per_fsync"] = (st1["entries_written"] - st0["entries_written"]) / writes if writes else None
                r["error_examples"] = sorted(set(errs))[:3]
                out["phases"][f"c={conc}"] = r
            out["leader_stats"] = node.stats()
            out["still_leader"] = driver.is_leader
            nursery.cancel_scope.cancel()
    finally:
        node.close()


async def _murmur_phase(driver: Any, conc: int, seconds: float, max_ops: int,
                        counter: itertools.count[int]) -> tuple[list[float], list[str]]:
    """`conc` proposer tasks, each proposing one payload at a time until the time or op count is up."""
    import trio

    lats: list[float] = []
    errs: list[str] = []
    deadline = time.monotonic() + seconds

    async def proposer() -> None:
        while time.monotonic() < deadline and len(lats) + len(errs) < max_ops:
            data = payload(next(counter))
            t0 = time.perf_counter()
            try:
                with trio.fail_after(PROPOSE_TIMEOUT_S):
                    await driver.propose(data)
            except Exception as exc:  # noqa: BLE001 - counted and reported
                errs.append(f"{type(exc).__name__}: {exc}"[:160])
                await trio.sleep(0.01)
                continue
            lats.append(time.perf_counter() - t0)

    async with trio.open_nursery() as nursery:
        for _ in range(conc):
            nursery.start_soon(proposer)
    return lats, errs


# --------------------------------------------------------------------------------------------------
# pysyncobj side


def run_pysyncobj(pg: h.ProcessGroup, tmp: Path, rnd: int, s: Settings) -> dict[str, Any]:
    from pysyncobj import SyncObj
    from pysyncobj.batteries import ReplDict

    rdir = tmp / f"pysyncobj-r{rnd}"
    rdir.mkdir()
    ports = h.free_ports(3)
    out: dict[str, Any] = {"label": "pysyncobj", "load_before": loadavg(), "phases": {}}
    budget = s.warmup * 0.1 + 2 * (s.seconds + 20) + 120
    procs = []
    obj = None
    try:
        for i in (1, 2):
            argv = [sys.executable, "-m", "bench.raft_node", "pysyncobj", "--index", str(i), "--ports",
                    ",".join(map(str, ports)), "--max-seconds", f"{budget:.0f}"]
            procs.append(pg.start(argv, log_path=rdir / f"n{i}.log", cwd=h.REPO_ROOT))
        pids = [p.pid for p in procs]
        # pysyncobj retries a failed connection only every 5 s (connectionRetryTime): if node 0 came up
        # before the others listen, they would elect one of themselves. So wait until they listen.
        if not h.wait_until(lambda: any(p.poll() is not None for p in procs) or all(tcp_open(pt) for pt in ports[1:]),
                            START_TIMEOUT_S, interval=0.05):
            raise RuntimeError(f"pysyncobj nodes not listening within {START_TIMEOUT_S:g} s")
        kv = ReplDict()
        obj = SyncObj(f"{h.HOST}:{ports[0]}", [f"{h.HOST}:{p}" for p in ports[1:]], conf=pysyncobj_conf(True),
                      consumers=[kv])
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            st = obj.getStatus()
            if st["leader"] is not None and st["has_quorum"]:
                break
            time.sleep(0.05)
        st = obj.getStatus()
        if st["leader"] is None or st["leader"] != st["self"]:
            raise RuntimeError(f"node 0 is not the leader (leader {st['leader']}, quorum {st['has_quorum']})")
        value = "v" * PAYLOAD_SIZE
        for i in range(s.warmup):
            kv.set(f"w{i:07d}", value, sync=True, timeout=PROPOSE_TIMEOUT_S)
        seq = itertools.count()
        for conc in (1, s.conc):
            c0, f0 = self_cpu(), cpu_of(pids)
            t0 = time.monotonic()
            if conc == 1:
                lats, errs = _pysyncobj_sync(kv, s.seconds, MAX_OPS_PER_PHASE, seq, value)
            else:
                lats, errs = _pysyncobj_window(kv, conc, s.seconds, MAX_OPS_PER_PHASE, seq, value)
            wall = time.monotonic() - t0
            c1, f1 = self_cpu(), cpu_of(pids)
            r = phase_metrics(lats, wall, c1 - c0, f1 - f0, len(errs))
            r["error_examples"] = sorted(set(errs))[:3]
            out["phases"][f"c={conc}"] = r
        st2 = obj.getStatus()
        out["still_leader"] = st2["leader"] == st["leader"]
        out["commit_idx"] = st2.get("commit_idx")
    except Exception as exc:  # noqa: BLE001
        out["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        if obj is not None:
            obj.destroy()
            end = time.monotonic() + 10
            while obj.tick_thread_alive() and time.monotonic() < end:
                time.sleep(0.05)
        for p in procs:
            pg.stop(p)
        out["load_after"] = loadavg()
        logs = {f"n{i}": read_text(rdir / f"n{i}.log") for i in (1, 2)}
        probs = [f"{n}: {ln}" for n, text in logs.items() for ln in problem_lines(text)]
        out["log_problems"] = len(probs)
        out["log_groups"] = group_lines(probs)
    return out


def _pysyncobj_sync(kv: Any, seconds: float, max_ops: int, seq: itertools.count[int],
                    value: str) -> tuple[list[float], list[str]]:
    lats: list[float] = []
    errs: list[str] = []
    end = time.monotonic() + seconds
    for _ in range(max_ops):
        if time.monotonic() > end:
            break
        t0 = time.perf_counter()
        try:
            kv.set(f"k{next(seq):09d}", value, sync=True, timeout=PROPOSE_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - SyncObjException('timeout') and the like
            errs.append(f"{type(exc).__name__}: {exc}"[:160])
            continue
        lats.append(time.perf_counter() - t0)
    return lats, errs


def _pysyncobj_window(kv: Any, window: int, seconds: float, max_ops: int, seq: itertools.count[int],
                      value: str) -> tuple[list[float], list[str]]:
    """bench_pysyncobj.py's pipe-set: async set() with a callback, `window` commands in flight."""
    sem = threading.Semaphore(window)
    lats: list[float] = []
    errs: list[str] = []
    lock = threading.Lock()

    def cb(result: Any, err: Any, t0: float) -> None:
        with lock:
            if err == 0:
                lats.append(time.perf_counter() - t0)
            else:
                errs.append(f"pysyncobj error code {err}")
        sem.release()

    end = time.monotonic() + seconds
    for _ in range(max_ops):
        if time.monotonic() > end:
            break
        if not sem.acquire(timeout=PROPOSE_TIMEOUT_S):
            errs.append("no callback within the timeout")
            break
        t0 = time.perf_counter()
        kv.set(f"k{next(seq):09d}", value, callback=lambda r, e, t0=t0: cb(r, e, t0))
    for _ in range(window):  # drain what is in flight (bounded)
        if not sem.acquire(timeout=PROPOSE_TIMEOUT_S):
            errs.append("in-flight command not completed at the end")
            break
    return lats, errs


# --------------------------------------------------------------------------------------------------
# leader failover with real agents


class Agent:
    def __init__(self, name: str, argv: list[str], log: Path, http_port: int, server_port: int) -> None:
        self.name, self.argv, self.log = name, argv, log
        self.http_port, self.server_port = http_port, server_port
        self.proc: subprocess.Popen[Any] | None = None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def request(self, method: str, path: str, body: bytes | None = None,
                timeout: float = PUT_TIMEOUT_S) -> tuple[int, Any]:
        """(status, JSON body or None); (0, error text) when the agent does not answer."""
        conn = http.client.HTTPConnection(h.HOST, self.http_port, timeout=timeout)
        try:
            conn.request(method, path, body=body)
            resp = conn.getresponse()
            raw = resp.read()
            try:
                return resp.status, json.loads(raw.decode() or "null")
            except ValueError:
                return resp.status, raw.decode(errors="replace")[:200]
        except (OSError, http.client.HTTPException) as exc:
            return 0, f"{type(exc).__name__}: {exc}"
        finally:
            conn.close()

    def leader(self) -> str:
        status, body = self.request("GET", "/v1/status/leader", timeout=1.0)
        return body if status == 200 and isinstance(body, str) else ""

    def put(self, key: str) -> tuple[bool, str]:
        status, body = self.request("PUT", f"/v1/kv/{key}", b"x")
        return (status == 200 and body is True), f"{status} {str(body)[:120]}"


def _agreed_leader(agents: Sequence[Agent]) -> str:
    views = {a.leader() for a in agents if a.running()}
    return views.pop() if len(views) == 1 else ""


def wait_stable(agents: Sequence[Agent], timeout: float, polls: int = 3, check_put: Agent | None = None,
                key: str = "bench-stable") -> str | None:
    """The agreed leader address once all running agents agree `polls` times in a row (0.2 s apart)
    and, if given, a write through `check_put` succeeds; None on timeout."""
    deadline = time.monotonic() + timeout
    streak, last = 0, ""
    while time.monotonic() < deadline:
        lead = _agreed_leader(agents)
        if lead and lead == last:
            streak += 1
        else:
            streak = 1 if lead else 0
        last = lead
        if streak >= polls:
            if check_put is None or check_put.put(key)[0]:
                return lead
        time.sleep(0.2)
    return None


def run_failover(pg: h.ProcessGroup, tmp: Path, s: Settings) -> dict[str, Any]:
    fdir = tmp / "failover"
    fdir.mkdir()
    conf = fdir / "gossip.toml"
    conf.write_text('[gossip_lan]\npreset = "local"\n')
    taken: set[int] = set()

    def port() -> int:
        p = h.free_port(exclude=taken)
        taken.add(p)
        return p

    agents: list[Agent] = []
    serf0 = 0
    for i in range(3):
        http_port, serf_port, server_port = port(), port(), port()
        if i == 0:
            serf0 = serf_port
        data = fdir / f"data-s{i}"
        data.mkdir()
        argv = [s.murmur, "agent", "--server", "--bootstrap-expect", "3", "--config-file", str(conf),
                "--node", f"s{i}", "--bind", h.HOST, "--client", h.HOST, "--data-dir", str(data),
                "--http-port", str(http_port), "--dns-port", "-1", "--serf-port", str(serf_port),
                "--server-port", str(server_port), "--log-level", s.log_level]
        if i:
            argv += ["--join", f"{h.HOST}:{serf0}"]
        agents.append(Agent(f"s{i}", argv, fdir / f"s{i}.log", http_port, server_port))
    out: dict[str, Any] = {"trials": [], "load_before": loadavg()}
    try:
        t0 = time.monotonic()
        for a in agents:  # one at a time: --join needs the first agent's gossip port open
            a.proc = pg.start(a.argv, log_path=a.log, cwd=fdir)
            if not h.wait_until(lambda a=a: not a.running() or a.request("GET", "/v1/status/leader", timeout=1.0)[0]
                                == 200, START_TIMEOUT_S, interval=0.1):
                out["error"] = f"{a.name} did not answer HTTP within {START_TIMEOUT_S:g} s"
                return out
            if not a.running():
                out["error"] = f"{a.name} exited with {a.proc.returncode}: {h.tail(a.log, 3)}"
                return out
        lead = wait_stable(agents, CLUSTER_TIMEOUT_S)
        if not lead:
            out["error"] = f"no agreed leader within {CLUSTER_TIMEOUT_S:g} s"
            return out
        out["bootstrap_s"] = time.monotonic() - t0
        for n in range(s.trials):
            lead = wait_stable(agents, STABLE_TIMEOUT_S) or ""
            lp = leader_port(lead)
            victim = next((a for a in agents if a.server_port == lp), None)
            if victim is None or victim.proc is None:
                out["error"] = f"trial {n}: leader {lead!r} is none of the agents"
                break
            survivors = [a for a in agents if a is not victim]
            trial: dict[str, Any] = {"n": n, "victim": victim.name}
            offsets = {a.name: (a.log.stat().st_size if a.log.exists() else 0) for a in survivors}
            tk = time.monotonic()
            os.kill(victim.proc.pid, signal.SIGKILL)
            victim.proc.wait(timeout=10)
            attempts, last = 0, ""
            done = False
            for attempt in range(100_000):
                if time.monotonic() - tk > FAILOVER_TIMEOUT_S:
                    break
                a = survivors[attempt % len(survivors)]
                ok, last = a.put(f"bench-{n}")
                attempts += 1
                if ok:
                    trial["failover_s"] = time.monotonic() - tk
                    trial["via"] = a.name
                    done = True
                    break
                time.sleep(0.01)
            trial["attempts"], trial["last_answer"] = attempts, last if not done else ""
            trial["raft_log"] = [f"{a.name}: {ln}" for a in survivors
                                 for ln in read_from(a.log, offsets[a.name]).splitlines()
                                 if "murmur.raft" in ln or "raft:" in ln or "WARN" in ln or "ERROR" in ln][:12]
            new_lead = _agreed_leader(survivors)
            trial["new_leader"] = next((a.name for a in survivors if a.server_port == leader_port(new_lead)), "?")
            # restart the victim from its data dir, same arguments
            tr = time.monotonic()
            victim.proc = pg.start(victim.argv, log_path=victim.log, cwd=fdir)
            stable = wait_stable(agents, STABLE_TIMEOUT_S, check_put=victim, key=f"bench-after-{n}")
            trial["restart_stable_s"] = time.monotonic() - tr if stable else None
            out["trials"].append(trial)
            print(f"    failover trial {n}: killed {victim.name} (leader) -> write acked via "
                  f"{trial.get('via', '-')} after {h.fmt(trial.get('failover_s'), '{:.3f}')} s "
                  f"({attempts} attempts), new leader {trial['new_leader']}; restarted, stable after "
                  f"{h.fmt(trial['restart_stable_s'], '{:.1f}')} s", flush=True)
            if trial.get("failover_s") is None or trial["failover_s"] > SLOW_FAILOVER_S:
                for ln in trial["raft_log"][:8]:
                    print(f"      {ln[:200]}", flush=True)
            if not done:
                trial["error"] = f"no write acknowledged within {FAILOVER_TIMEOUT_S:g} s; last answer {last}"
            if not stable:
                out["error"] = f"trial {n}: no stable leader within {STABLE_TIMEOUT_S:g} s after the restart"
                break
        return out
    finally:
        sizes = {a.name: file_size(a.log) for a in agents}
        for a in agents:
            if a.proc is not None:
                pg.stop(a.proc)
        out["load_after"] = loadavg()
        parts = {a.name: split_at(read_text(a.log), sizes[a.name]) for a in agents}
        probs = [f"{n}: {ln}" for n, (text, _) in parts.items() for ln in problem_lines(text)]
        out["log_problems"] = len(probs)
        out["log_groups"] = group_lines(probs, limit=8)
        late = [f"{n}: {ln}" for n, (_, text) in parts.items() for ln in problem_lines(text)]
        out["log_problems_shutdown"] = len(late)
        out["log_groups_shutdown"] = group_lines(late, limit=4)
        out["exit_codes_on_sigterm"] = {a.name: (a.proc.returncode if a.proc is not None else None) for a in agents}
        times = [t["failover_s"] for t in out["trials"] if "failover_s" in t]
        out["summary"] = failover_summary(times)


# --------------------------------------------------------------------------------------------------
# printing and the entry point


def describe_run(side: str, rnd: int, r: dict[str, Any]) -> str:
    head = f"  round {rnd} {LABELS[side]:9s}:"
    if "error" in r:
        lines = [f"{head} FAILED: {r['error']}"]
    else:
        la = r.get("load_before") or (None,)
        extra = f"election {r['election_s']:.2f} s, " if "election_s" in r else ""
        fol = "; ".join(f"follower {st.get('id')}: {st['driver']['writes']} writes for "
                        f"{st['driver']['entries_written']} entries, save p50 {h.fmt(st['save']['p50_ms'], '{:.2f}')} "
                        f"ms p99 {h.fmt(st['save']['p99_ms'], '{:.2f}')} ms"
                        for st in r.get("follower_stats", []) if "driver" in st and "save" in st)
        lines = [f"{head} {extra}load {h.fmt(la[0], '{:.2f}')}, fsync probe before "
                 f"{h.fmt(r.get('fsync_before_p50_ms'), '{:.3f}')} ms p50, still leader {r.get('still_leader')}"
                 + (f"\n    {fol}" if fol else "")]
    for case, p in r.get("phases", {}).items():
        lines.append(f"    {case:5s} {p['ops']:7d} commits {h.fmt(p['ops_per_s'], '{:8,.0f}')}/s  "
                     f"p50 {h.fmt(p['p50_ms'], '{:6.2f}')} ms  p99 {h.fmt(p['p99_ms'], '{:7.2f}')} ms  "
                     f"max {h.fmt(p['max_ms'], '{:7.1f}')} ms | CPU {h.fmt(p['cpu_ms_per_op'], '{:.3f}')} ms/op "
                     f"(leader {h.fmt(p['leader_cpu_ms_per_op'], '{:.3f}')}, followers "
                     f"{h.fmt(p['follower_cpu_ms_per_op'], '{:.3f}')}), {h.fmt(p['cluster_cpu_pct'], '{:.0f}')} %"
                     + (f" | leader {p['leader_fsyncs']} writes, {h.fmt(p.get('entries_per_fsync'), '{:.1f}')} "
                        f"entries/write, write p50 {h.fmt(p.get('leader_save_p50_ms'), '{:.2f}')} ms p99 "
                        f"{h.fmt(p.get('leader_save_p99_ms'), '{:.2f}')} ms, "
                        f"{h.fmt(p.get('leader_msgs_per_op'), '{:.1f}')} msgs/commit"
                        if "leader_fsyncs" in p else "")
                     + (f" | {p['slow_commits']} slow" if p.get("slow_commits") else "")
                     + (f" | {p['errors']} errors e.g. {p['error_examples'][:1]}" if p.get("errors") else ""))
    for c, ln in r.get("log_groups", [])[:4]:
        lines.append(f"    log x{c}: {ln[:220]}")
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--concurrency", type=int, default=CONC_DEFAULT, help="concurrent proposers (default 16)")
    p.add_argument("--warmup", type=int, default=WARMUP_OPS, help="sequential commits before measuring")
    p.add_argument("--trials", type=int, default=None,
                   help=f"leader kill -9 trials (default {FULL_TRIALS}; --quick {QUICK_TRIALS}; 0 skips)")
    p.add_argument("--fsync-count", type=int, default=None, help="fdatasyncs per floor measurement")
    p.add_argument("--murmur", default=os.environ.get("MURMUR_BIN", str(h.REPO_ROOT / ".venv" / "bin" / "murmur")),
                   help="murmur executable for the failover agents (env MURMUR_BIN)")
    p.add_argument("--log-level", default="info", help="log level of the murmur nodes and agents")
    p.add_argument("--only", choices=SIDES, help="one side only (debugging; never recorded)")


def settings_from(args: argparse.Namespace) -> Settings:
    rounds, seconds = h.rounds_and_seconds(args.quick, args.rounds, args.seconds)
    trials = args.trials if args.trials is not None else (QUICK_TRIALS if args.quick else FULL_TRIALS)
    fc = args.fsync_count if args.fsync_count is not None else (FSYNC_QUICK_COUNT if args.quick else FSYNC_COUNT)
    return Settings(rounds=rounds, seconds=seconds, conc=args.concurrency, warmup=args.warmup, trials=trials,
                    fsync_count=fc, murmur=args.murmur, log_level=args.log_level)


def pysyncobj_version() -> str:
    try:
        from importlib.metadata import version

        return f"pysyncobj {version('pysyncobj')}"
    except Exception:  # noqa: BLE001
        return "pysyncobj ?"


def run(args: argparse.Namespace) -> int:
    s = settings_from(args)
    if s.rounds < 1 or s.seconds <= 0 or s.conc < 2 or s.warmup < 1 or s.trials < 0 or s.fsync_count < 10:
        print("need --rounds >= 1, --seconds > 0, --concurrency >= 2, --warmup >= 1, --trials >= 0, "
              "--fsync-count >= 10")
        return 2
    sides = (args.only,) if args.only else SIDES
    try:
        import pysyncobj  # noqa: F401
    except ImportError:
        if "peer" in sides:
            print("pysyncobj missing: pip install -e '.[bench]' (or run with --only ours)")
            return 2
    if s.trials and not (os.path.exists(s.murmur) or shutil.which(s.murmur)):
        print(f"murmur binary not found: {s.murmur} (or use --trials 0)")
        return 2
    from bench.dns import murmur_version

    versions = {"ours": murmur_version(s.murmur), "peer": pysyncobj_version()}
    concs = (1, s.conc)
    print(f"raft: {s.rounds} rounds x (fsync floor, murmur, pysyncobj; ABBA order), phases "
          f"{' and '.join(f'{c} proposer' + ('s' if c > 1 else '') for c in concs)} of {s.seconds:g} s "
          f"after {s.warmup} warm-up commits; {PAYLOAD_SIZE}-byte commands; then {s.trials} leader kill -9 "
          f"trials; {versions['ours']}; {versions['peer']}; load {loadavg()}", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="murmur-bench-raft-"))
    results: list[dict[str, Any]] = []
    fsync: list[dict[str, Any]] = []
    failover: dict[str, Any] = {}
    try:
        with h.ProcessGroup() as pg:
            for rnd in range(s.rounds):
                fs: dict[str, Any] = {"round": rnd}
                for mode in ("append", "prealloc"):
                    lats = fsync_floor(tmp, mode, s.fsync_count, FSYNC_MAX_S)
                    fs[mode] = {"n": len(lats), **latency_summary(lats)}
                fsync.append(fs)
                print(f"  round {rnd} fsync floor: 256 B append+fdatasync p50 "
                      f"{fs['append']['p50_ms'] * 1e3:.0f} us p99 {fs['append']['p99_ms'] * 1e3:.0f} us; "
                      f"prealloc+fdatasync p50 {fs['prealloc']['p50_ms'] * 1e3:.0f} us "
                      f"p99 {fs['prealloc']['p99_ms'] * 1e3:.0f} us", flush=True)
                for side in side_order(rnd):
                    if side not in sides:
                        continue
                    probe = fsync_floor(tmp, "append", FSYNC_PROBE_COUNT, FSYNC_MAX_S)
                    fn = run_murmur if side == "ours" else run_pysyncobj
                    r = fn(pg, tmp, rnd, s)
                    if "leader" in r.get("error", "") and not r.get("phases"):
                        print(f"  round {rnd} {LABELS[side]}: {r['error']}; retrying with a fresh cluster", flush=True)
                        r = fn(pg, tmp, rnd + 1000, s)
                        r["retried"] = True
                    r["fsync_before_p50_ms"] = latency_summary(probe)["p50_ms"]
                    print(describe_run(side, rnd, r), flush=True)
                    for case, p in r.get("phases", {}).items():
                        results.append({**p, "side": side, "case": case, "round": rnd,
                                        "fsync_before_p50_ms": r["fsync_before_p50_ms"]})
                    results.append({"side": side, "case": "run", "round": rnd,
                                    **{k: v for k, v in r.items() if k != "phases"}})
            if s.trials and "ours" in sides:
                print(f"  leader failover: 3 murmur agents, {s.trials} kill -9 trials", flush=True)
                failover = run_failover(pg, tmp, s)
        return report(args, s, sides, versions, results, fsync, failover)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def report(args: argparse.Namespace, s: Settings, sides: Sequence[str], versions: dict[str, str],
           results: list[dict[str, Any]], fsync: list[dict[str, Any]], failover: dict[str, Any]) -> int:
    phase_rows = [r for r in results if r["case"] != "run"]
    runs = [r for r in results if r["case"] == "run"]
    summary = summarize(phase_rows)
    table = h.format_table(summary, METRICS, ours_name="murmur", peer_name="pysyncobj")
    fs_p50 = h.median(f["append"]["p50_ms"] for f in fsync)
    fs_p99 = h.median(f["append"]["p99_ms"] for f in fsync)
    pa_p50 = h.median(f["prealloc"]["p50_ms"] for f in fsync)
    pa_p99 = h.median(f["prealloc"]["p99_ms"] for f in fsync)
    tg = targets(summary, fs_p50, s.conc)
    rounds = per_round(phase_rows, s.conc)
    fo = failover.get("summary", {})
    lines = [table, "",
             "| fsync floor (256 B, this disk, same dir, median of rounds) | p50 µs | p99 µs |",
             "|---|---:|---:|",
             f"| append + fdatasync | {h.fmt(fs_p50 and fs_p50 * 1e3, '{:.0f}')} | {h.fmt(fs_p99 and fs_p99 * 1e3, '{:.0f}')} |",
             f"| preallocated + fdatasync | {h.fmt(pa_p50 and pa_p50 * 1e3, '{:.0f}')} | "
             f"{h.fmt(pa_p99 and pa_p99 * 1e3, '{:.0f}')} |", "",
             "| round | fsync probe p50 before murmur, ms | murmur 1-proposer p50, ms | ÷ fsync | murmur "
             f"{s.conc}-proposer commits/s | pysyncobj {s.conc} in flight/s | ratio | murmur {s.conc}/1 |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for pr in rounds:
        lines.append(f"| {pr['round']} | {h.fmt(pr['fsync_p50_ms'], '{:.3f}')} | {h.fmt(pr['ours_c1_p50_ms'], '{:.2f}')} | "
                     f"{h.fmt(pr['p50_over_fsync'], '{:.1f}')}× | {h.fmt(pr['ours_hi_ops'], '{:,.0f}')} | "
                     f"{h.fmt(pr['peer_hi_ops'], '{:,.0f}')} | {h.fmt(pr['tput_ratio'], '{:.2f}')}× | "
                     f"{h.fmt(pr['scaling'], '{:.1f}')}× |")
    lines += ["", "| target | value | goal | met |", "|---|---:|---:|---|"]
    for t in tg:
        met = "—" if t["pass"] is None else ("yes" if t["pass"] else "**no**")
        lines.append(f"| {t['target']} | {h.fmt(t['value'], '{:.2f}')}× | {t['op']} {t['threshold']:g}× | {met} |")
    for key, label, spec in (("p50_over_fsync", "single-proposer p50 / fsync probe taken just before it", "<= 20×"),
                             ("tput_ratio", f"throughput {s.conc} proposers / pysyncobj, same round", ">= 1.5×")):
        vals = [pr[key] for pr in rounds if pr[key] is not None]
        if vals:
            lines.append(f"| (paired per round) {label}: median [min-max] | {statistics.median(vals):.2f}× "
                         f"[{min(vals):.2f}-{max(vals):.2f}] | {spec} | — |")
    own = h.ratio(summary.get("c=1", {}).get("p50_ms", {}).get("ours"),
                  summary.get("c=1", {}).get("leader_save_p50_ms", {}).get("ours"))
    lines.append(f"| (info) single-proposer commit p50 / the leader's own durable write p50 in the same phase "
                 f"| {h.fmt(own, '{:.2f}')}× | — | — |")
    if failover:
        lines += ["", "| leader failover (kill -9 → first acked write) | n | p50 s | p99 s | min s | max s |",
                  "|---|---:|---:|---:|---:|---:|",
                  f"| murmur agents, 3 servers | {h.fmt(fo.get('n'), '{:.0f}')} | {h.fmt(fo.get('p50_s'), '{:.3f}')} | "
                  f"{h.fmt(fo.get('p99_s'), '{:.3f}')} | {h.fmt(fo.get('min_s'), '{:.3f}')} | "
                  f"{h.fmt(fo.get('max_s'), '{:.3f}')} |"]
    text = "\n".join(lines)
    print()
    print(text)
    loads = [x for r in runs for x in (r.get("load_before"), r.get("load_after")) if x]
    loads += [x for x in (failover.get("load_before"), failover.get("load_after")) if x]
    load_txt = (f"load average (1 min) around the runs: median {statistics.median(la[0] for la in loads):.2f}, "
                f"min {min(la[0] for la in loads):.2f}, max {max(la[0] for la in loads):.2f} (2 cores)"
                if loads else "load average unknown")
    failed = [r for r in runs if "error" in r]
    notes = [
        f"{s.rounds} rounds, fresh 3-process cluster per side per round, order ABBA (murmur first on even "
        f"rounds); per cluster {s.warmup} warm-up commits, then 1 proposer for {s.seconds:g} s, then "
        f"{s.conc} concurrent proposers for {s.seconds:g} s; medians over rounds; p99 nearest rank",
        f"murmur: leader in the bench process (RaftDriver + RaftStorage sqlite WAL synchronous=FULL + "
        f"TCPTransport + ServerPort), proposers = trio tasks awaiting driver.propose({PAYLOAD_SIZE} B) on a "
        "KV test FSM; 2 follower processes (bench/raft_node.py), default RaftConfig, 100 ms tick; "
        "every voter fsyncs before acking",
        "pysyncobj: node 0 = leader + client in the bench process, 2 node processes, "
        "appendEntriesUseBatch=False, 1 in flight = set(sync=True), N in flight = set(callback) under a "
        "semaphore (shared/peers/bench_pysyncobj.py); in-memory journal, **no fsync**: not durable per commit",
        "CPU = utime+stime of the 3 processes (all threads; the leader's includes the proposers/client) "
        "/ commits",
        f"fsync floor: {s.fsync_count} × 256 B write + fdatasync (≤ {FSYNC_MAX_S:g} s) per round, same "
        "directory as murmur's logs",
        load_txt,
    ]
    if failover:
        notes.append(f"failover: 3 `murmur agent --server --bootstrap-expect 3` (gossip preset local, raft "
                     f"tick 100 ms, election 10-20 ticks), {len(failover.get('trials', []))} trials: kill -9 "
                     "the leader, PUT /v1/kv/bench-<n> to the survivors in turn (10 ms apart, 2 s timeout) "
                     "until one returns true; victim restarted from its data dir; next trial after a stable "
                     "leader" + (f"; ERROR: {failover['error']}" if failover.get("error") else ""))
    if failed:
        notes.append(f"{len(failed)} run(s) failed: " + "; ".join(
            f"{LABELS[r['side']]} round {r['round']}: {r['error']}" for r in failed[:3]))
    print()
    for n in notes:
        print("NOTE: " + n)
    for side in sides:
        groups: dict[str, list[Any]] = {}
        for r in runs:
            if r["side"] != side:
                continue
            for c, ln in r.get("log_groups", []):
                key = re.sub(r"\d+", "N", re.sub(r"^\S+ \S+ \S+ ", "", ln))[:160]
                g = groups.setdefault(key, [0, ln])
                g[0] += c
        if groups:
            print(f"{LABELS[side]} node logs, warning/error lines (count, example):")
            for c, ln in sorted(groups.values(), key=lambda g: -g[0])[:6]:
                print(f"  x{c}: {ln[:240]}")
    for side in sides:
        late = [(c, ln) for r in runs if r["side"] == side for c, ln in r.get("log_groups_shutdown", [])]
        if late:
            print(f"{LABELS[side]} follower logs at shutdown (SIGTERM): " + "; ".join(f"x{c} {ln[:200]}" for c, ln in late[:3]))
    if failover.get("log_groups"):
        print(f"failover agents' logs while running: {failover['log_problems']} warning/error lines; most common:")
        for c, ln in failover["log_groups"]:
            print(f"  x{c}: {ln[:240]}")
    if failover.get("log_groups_shutdown"):
        print(f"failover agents' logs at the final SIGTERM: {failover['log_problems_shutdown']} lines; exit codes "
              f"{failover.get('exit_codes_on_sigterm')}:")
        for c, ln in failover["log_groups_shutdown"]:
            print(f"  x{c}: {ln[:240]}")
    result = {"bench": NAME, "rounds": s.rounds, "seconds": s.seconds, "concurrency": s.conc,
              "payload_bytes": PAYLOAD_SIZE, "versions": {x: versions[x] for x in sides},
              "summary": summary, "targets": tg, "per_round": rounds,
              "fsync_floor_ms": {"append_p50": fs_p50, "append_p99": fs_p99, "prealloc_p50": pa_p50,
                                 "prealloc_p99": pa_p99, "rounds": fsync},
              "failover": failover, "load_1min": [la[0] for la in loads], "runs_failed": len(failed),
              "runs": results}
    complete = len(sides) == 2 and all(any(r["side"] == x and "error" not in r for r in runs) for x in sides)
    if args.no_record or args.only:
        print("(not recorded: " + ("--no-record" if args.no_record else "--only") + ")")
    elif complete:
        info = h.machine_info(versions["peer"])
        date = info["date"].split(" ")[0]
        title = (f"raft: murmur (fsync on) vs {versions['peer']} (no fsync), 3 nodes, "
                 f"{'quick, ' if args.quick else ''}{s.rounds} rounds x {s.seconds:g} s, 1 and {s.conc} proposers, "
                 f"{len(failover.get('trials', []))} failover trials")
        notes.insert(0, f"murmur: {versions['ours']}")
        path = h.append_report(h.Report(NAME, title, text, info, h.command_line(),
                                        latest_rows(summary, s.conc, fs_p50, fo, date), notes),
                               Path(args.doc) if args.doc else h.DOC_PATH)
        print(f"appended to {path}")
    else:
        print("(not recorded in docs/benchmarks.md: a side has no completed run)")
    print("RESULT " + json.dumps(result, default=str))
    ok = complete and not failed and not failover.get("error")
    return 0 if ok or (args.only and not failed) else 1


def latest_rows(summary: dict[str, dict[str, dict[str, float | None]]], conc: int, fsync_p50_ms: float | None,
                fo: dict[str, Any], date: str) -> list[h.LatestRow]:
    rows = []
    for case in ("c=1", f"c={conc}"):
        per = summary.get(case, {})
        tp, cpu, p50 = per.get("ops_per_s", {}), per.get("cpu_ms_per_op", {}), per.get("p50_ms", {})
        us = {k: (None if cpu.get(k) is None else cpu[k] * 1e3) for k in SIDES}
        label = "1 proposer" if case == "c=1" else f"{conc} proposers"
        rows.append(h.LatestRow(NAME, f"{label}: commits/s (murmur fsync, pysyncobj none)",
                                h.fmt(tp.get("ours"), "{:,.0f}"), h.fmt(tp.get("peer"), "{:,.0f}"),
                                h.fmt(tp.get("ratio"), "{:.3f}"), h.fmt(us["ours"], "{:,.0f}"),
                                h.fmt(us["peer"], "{:,.0f}"), date))
        rows.append(h.LatestRow(NAME, f"{label}: commit p50 ms", h.fmt(p50.get("ours"), "{:.2f}"),
                                h.fmt(p50.get("peer"), "{:.2f}"), h.fmt(p50.get("ratio"), "{:.3f}"), "—", "—", date))
    rows.append(h.LatestRow(NAME, "fsync floor: 256 B append+fdatasync p50 ms (peer col)", "—",
                            h.fmt(fsync_p50_ms, "{:.3f}"), "—", "—", "—", date))
    if fo.get("p50_s") is not None:
        rows.append(h.LatestRow(NAME, f"leader kill -9 -> first acked write, s p50 / p99 (n={fo['n']:.0f})",
                                f"{fo['p50_s']:.2f} / {h.fmt(fo.get('p99_s'), '{:.2f}')}", "—", "—", "—", "—",
                                date))
    return rows
