"""Pieces every benchmark shares.

- free ports on 127.0.0.1 (bound to port 0 by the kernel, checked free for TCP and UDP);
- ProcessGroup: starts children, keeps their PIDs, and stops exactly those PIDs (SIGTERM, then
  SIGKILL) in `finally`/`__exit__` and on SIGINT/SIGTERM;
- cpu_seconds(pid): utime+stime of a process (all its threads) from /proc/<pid>/stat;
- run_alternating(): the A/B runner (ours, peer, ours, peer, ... for `rounds` rounds);
- median / ratio / summarize / format_table: the result printer;
- append_report(): adds a dated section to docs/benchmarks.md and refreshes its "latest figures".

Everything talks to 127.0.0.1 only, and every loop here is bounded in count and time.
"""

from __future__ import annotations

import atexit
import datetime as _dt
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

HOST = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parent.parent
DOC_PATH = REPO_ROOT / "docs" / "benchmarks.md"
CLK_TCK = os.sysconf("SC_CLK_TCK")

QUICK_ROUNDS, FULL_ROUNDS = 3, 5
QUICK_SECONDS, FULL_SECONDS = 3, 10


# --------------------------------------------------------------------------------------------------
# ports


def _udp_free(port: int, host: str = HOST) -> bool:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind((host, port))
    except OSError:
        return False
    finally:
        s.close()
    return True


def free_port(host: str = HOST, exclude: Iterable[int] = (), attempts: int = 64) -> int:
    """A port on `host` that is free for both TCP and UDP right now (the kernel picks it)."""
    taken = set(exclude)
    for _ in range(attempts):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind((host, 0))
            port = s.getsockname()[1]
        finally:
            s.close()
        if port not in taken and _udp_free(port, host):
            return port
    raise RuntimeError(f"no free TCP+UDP port on {host} after {attempts} attempts")


def free_ports(count: int, host: str = HOST) -> list[int]:
    """`count` distinct ports, each free for TCP and UDP."""
    ports: list[int] = []
    for _ in range(count):
        ports.append(free_port(host, exclude=ports))
    return ports


# --------------------------------------------------------------------------------------------------
# processes


class ProcessGroup:
    """Children started by a benchmark. Stops them by PID only: on exit, on error, on SIGINT/SIGTERM.

    Children get their own session, so a terminal ^C reaches only us and we stop them in order.
    """

    def __init__(self, grace: float = 5.0) -> None:
        self.grace = grace
        self._procs: list[subprocess.Popen[Any]] = []
        self._files: list[IO[bytes]] = []
        self._old_handlers: dict[int, Any] = {}
        atexit.register(self.stop_all)

    # context manager: handlers installed for the lifetime of the group
    def __enter__(self) -> ProcessGroup:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old_handlers[sig] = signal.signal(sig, self._on_signal)
            except ValueError:  # not the main thread: rely on __exit__/atexit
                pass
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop_all()
        finally:
            for sig, old in self._old_handlers.items():
                signal.signal(sig, old)
            self._old_handlers.clear()

    def _on_signal(self, signum: int, frame: object) -> None:
        self.stop_all()
        raise SystemExit(128 + signum)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs]

    def start(self, argv: Sequence[str], *, log_path: str | os.PathLike[str] | None = None,
              stdout: int | IO[Any] | None = None, env: dict[str, str] | None = None,
              cwd: str | os.PathLike[str] | None = None) -> subprocess.Popen[Any]:
        """Start argv; output goes to `stdout` if given, else appended to `log_path`, else nowhere."""
        if stdout is None:
            if log_path is not None:
                fh = open(log_path, "ab")  # closed in stop_all
                self._files.append(fh)
                stdout = fh
            else:
                stdout = subprocess.DEVNULL
        p = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=stdout, stderr=subprocess.STDOUT,
                             env=env, cwd=cwd, start_new_session=True)
        self._procs.append(p)
        return p

    def stop(self, p: subprocess.Popen[Any], grace: float | None = None) -> int | None:
        """SIGTERM p's PID, wait up to `grace` s, then SIGKILL it. Returns its exit status."""
        grace = self.grace if grace is None else grace
        if p.poll() is None:
            try:
                os.kill(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                try:
                    os.kill(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
        if p in self._procs and p.poll() is not None:
            self._procs.remove(p)
        return p.returncode

    def stop_all(self, grace: float | None = None) -> None:
        grace = self.grace if grace is None else grace
        live = [p for p in self._procs if p.poll() is None]
        for p in live:
            try:
                os.kill(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        for p in live:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.kill(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
        self._procs = [p for p in self._procs if p.poll() is None]
        for fh in self._files:
            try:
                fh.close()
            except OSError:
                pass
        self._files = []


def parse_proc_stat_cpu(stat_text: str) -> int:
    """utime+stime clock ticks from the text of /proc/<pid>/stat (comm may hold spaces and ')')."""
    fields = stat_text.rsplit(")", 1)[1].split()
    # after "pid (comm)": state=0 ... utime is field 14 of the file, i.e. index 11 here; stime 12
    return int(fields[11]) + int(fields[12])


def parse_proc_stat_times(stat_text: str) -> tuple[int, int]:
    """(utime, stime) clock ticks from the text of /proc/<pid>/stat."""
    fields = stat_text.rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])


def cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds a process (all its threads) has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        u, s = parse_proc_stat_times(f.read())
    return u / CLK_TCK, s / CLK_TCK


def cpu_seconds(pid: int) -> float:
    """User+system CPU seconds a process (all its threads) has used so far."""
    return sum(cpu_times(pid))


def _stat_fields(pid: int | str) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def descendants(pid: int) -> list[int]:
    """PIDs of every live descendant of pid (children, grandchildren, ...), from /proc/*/stat."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ppid = int(_stat_fields(entry)[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out: list[int] = []
    todo = list(children.get(pid, []))
    while todo and len(out) < 10_000:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_times_tree(pid: int) -> tuple[float, float]:
    """cpu_times of pid plus its live descendants (a server that forks workers is counted whole)."""
    user, system = cpu_times(pid)
    for child in descendants(pid):
        try:
            u, s = cpu_times(child)
        except OSError:
            continue
        user, system = user + u, system + s
    return user, system


def cpu_seconds_tree(pid: int) -> float:
    return sum(cpu_times_tree(pid))


def children_cpu_seconds() -> float:
    """CPU seconds of all our reaped children so far (used to time a load generator's own cost)."""
    t = os.times()
    return t.children_user + t.children_system


def cpu_of(pids: Sequence[int]) -> float:
    """utime+stime seconds of these processes (all threads); a process already gone counts 0."""
    total = 0.0
    for p in pids:
        try:
            total += cpu_seconds(p)
        except OSError:
            pass
    return total


def parse_loadavg(text: str) -> tuple[float, float, float]:
    """The 1, 5 and 15 minute load averages from /proc/loadavg's text."""
    a, b, c = text.split()[:3]
    return float(a), float(b), float(c)


def loadavg() -> tuple[float, float, float] | None:
    """The machine's load now (recorded beside every run: figures taken at load > 2 are noisy)."""
    try:
        with open("/proc/loadavg") as f:
            return parse_loadavg(f.read())
    except (OSError, ValueError):
        return None


def wait_until(pred: Callable[[], bool], timeout: float, interval: float = 0.2,
               max_tries: int = 100_000) -> bool:
    """Poll `pred` until it is true, `timeout` seconds pass, or `max_tries` polls were made."""
    deadline = time.monotonic() + timeout
    for _ in range(max_tries):
        if pred():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
    return False


def tail(path: str | os.PathLike[str], lines: int = 30) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError as e:
        return f"(no log: {e})"


# --------------------------------------------------------------------------------------------------
# A/B runs and statistics


def rounds_and_seconds(quick: bool, rounds: int | None = None, seconds: float | None = None) -> tuple[int, float]:
    """Defaults: 5 rounds of 10 s; 3 rounds of 3 s with --quick; explicit values win."""
    r = rounds if rounds is not None else (QUICK_ROUNDS if quick else FULL_ROUNDS)
    s = seconds if seconds is not None else (QUICK_SECONDS if quick else FULL_SECONDS)
    return r, s


def run_alternating(run_one: Callable[[str, Any, int], dict[str, Any]], cases: Sequence[Any], rounds: int,
                    sides: Sequence[str] = ("ours", "peer"), max_seconds: float | None = None,
                    ) -> list[dict[str, Any]]:
    """A/B runner: for each round, for each case, run every side in turn (ours, peer, ours, peer, ...).

    run_one(side, case, round) returns a dict of metrics; side/case/round are added to it. Stops early
    (and marks the result list with a note in the last run) if `max_seconds` pass.
    """
    results: list[dict[str, Any]] = []
    t0 = time.monotonic()
    for rnd in range(rounds):
        for case in cases:
            for side in sides:
                if max_seconds is not None and time.monotonic() - t0 > max_seconds:
                    if results:
                        results[-1]["note"] = f"stopped early: {max_seconds:.0f} s budget spent"
                    return results
                r = dict(run_one(side, case, rnd))
                r.update(side=side, case=case, round=rnd)
                results.append(r)
    return results


def median(values: Iterable[float | None]) -> float | None:
    """Median of the values that are not None; None if there are none."""
    vs = [v for v in values if v is not None]
    return statistics.median(vs) if vs else None


def ratio(ours: float | None, peer: float | None) -> float | None:
    """ours/peer, or None when either is missing or the peer is 0."""
    if ours is None or peer is None or peer == 0:
        return None
    return ours / peer


def cases_in(results: Sequence[dict[str, Any]]) -> list[Any]:
    """The distinct `case` values of the runs, in first-seen order."""
    cases: list[Any] = []
    for r in results:
        if r["case"] not in cases:
            cases.append(r["case"])
    return cases


def percentile(values: Iterable[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100), as shared/peers/common.py's pct; None when empty."""
    v = sorted(values)
    if not v:
        return None
    k = max(0, min(len(v) - 1, int(round(q / 100.0 * (len(v) - 1)))))
    return v[k]


def summarize(results: Sequence[dict[str, Any]], metrics: Sequence[str],
              sides: Sequence[str] = ("ours", "peer")) -> dict[Any, dict[str, dict[str, float | None]]]:
    """{case: {metric: {side: median, ..., "ratio": ours/peer}}} over the runs in `results`."""
    out: dict[Any, dict[str, dict[str, float | None]]] = {}
    for case in cases_in(results):
        out[case] = {}
        for m in metrics:
            row: dict[str, float | None] = {}
            for side in sides:
                row[side] = median(r.get(m) for r in results if r["case"] == case and r["side"] == side)
            row["ratio"] = ratio(row.get(sides[0]), row.get(sides[1])) if len(sides) == 2 else None
            out[case][m] = row
    return out


@dataclass
class Metric:
    key: str
    label: str
    fmt: str = "{:,.0f}"


def fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else spec.format(value)


def format_table(summary: dict[Any, dict[str, dict[str, float | None]]], metrics: Sequence[Metric],
                 case_label: Callable[[Any], str] = str, ours_name: str = "ours", peer_name: str = "peer",
                 ) -> str:
    """A Markdown table: one row per (case, metric): medians of each side and the ratio ours/peer."""
    lines = [f"| case | metric (median) | {ours_name} | {peer_name} | ratio {ours_name}/{peer_name} |",
             "|---|---|---:|---:|---:|"]
    for case, per_metric in summary.items():
        for m in metrics:
            row = per_metric.get(m.key)
            if row is None:
                continue
            lines.append(f"| {case_label(case)} | {m.label} | {fmt(row.get('ours'), m.fmt)} | "
                         f"{fmt(row.get('peer'), m.fmt)} | {fmt(row.get('ratio'), '{:.3f}')} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# machine facts and docs/benchmarks.md


def cpu_model(cpuinfo_text: str | None = None) -> str:
    if cpuinfo_text is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo_text = f.read()
        except OSError:
            return "unknown"
    m = re.search(r"^model name\s*:\s*(.+)$", cpuinfo_text, re.M)
    return m.group(1).strip() if m else "unknown"


def machine_info(peer_version: str = "") -> dict[str, str]:
    try:
        ncpu = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        ncpu = os.cpu_count() or 0
    return {
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": platform.machine(),
        "nproc": str(ncpu),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "peer": peer_version,
    }


def command_line(argv: Sequence[str] | None = None) -> str:
    args = list(sys.argv[1:] if argv is None else argv)
    return "python -m bench " + " ".join(args)


LATEST_BEGIN = "<!-- latest:begin -->"
LATEST_END = "<!-- latest:end -->"
HISTORY_MARK = "<!-- history: newest last; appended by bench/harness.py -->"
LATEST_HEADER = ("| benchmark | case | murmur | peer | ratio murmur/peer | CPU µs/op murmur | CPU µs/op peer | date |\n"
                 "|---|---|---:|---:|---:|---:|---:|---|")

DOC_TEMPLATE = f"""# Benchmarks

Written by `python -m bench` (see `bench/`); edit the text by hand, the tables are rewritten.

## Latest figures

{LATEST_BEGIN}
{LATEST_HEADER}
{LATEST_END}

## History

{HISTORY_MARK}
"""


@dataclass
class LatestRow:
    benchmark: str
    case: str
    ours: str
    peer: str
    ratio: str
    cpu_ours: str
    cpu_peer: str
    date: str

    def line(self) -> str:
        return (f"| {self.benchmark} | {self.case} | {self.ours} | {self.peer} | {self.ratio} | "
                f"{self.cpu_ours} | {self.cpu_peer} | {self.date} |")


@dataclass
class Report:
    benchmark: str
    title: str
    table: str
    info: dict[str, str]
    command: str
    latest: list[LatestRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def section(self) -> str:
        i = self.info
        out = [f"### {i.get('date', '?')} — {self.title}", "",
               f"- machine: `{i.get('machine', '?')}`, nproc {i.get('nproc', '?')}, CPU {i.get('cpu', '?')}",
               f"- python {i.get('python', '?')}; peer: {i.get('peer', '?')}",
               f"- command: `{self.command}`"]
        out += [f"- {n}" for n in self.notes]
        out += ["", self.table, ""]
        return "\n".join(out)


def update_doc(text: str, report: Report) -> str:
    """The new text of docs/benchmarks.md: latest rows of this benchmark replaced, section appended."""
    if not text.strip():
        text = DOC_TEMPLATE
    if LATEST_BEGIN not in text or LATEST_END not in text:
        text = text.rstrip("\n") + f"\n\n## Latest figures\n\n{LATEST_BEGIN}\n{LATEST_HEADER}\n{LATEST_END}\n"
    head, rest = text.split(LATEST_BEGIN, 1)
    block, tail_text = rest.split(LATEST_END, 1)
    rows = [ln for ln in block.strip().splitlines() if ln.startswith("|")][2:]
    kept = [ln for ln in rows if _first_cell(ln) != report.benchmark]
    new_rows = sorted(kept + [r.line() for r in report.latest], key=_first_cell)
    block = "\n" + LATEST_HEADER + "\n" + "".join(r + "\n" for r in new_rows)
    text = head + LATEST_BEGIN + block + LATEST_END + tail_text
    if HISTORY_MARK not in text:
        text = text.rstrip("\n") + "\n\n## History\n\n" + HISTORY_MARK + "\n"
    return text.rstrip("\n") + "\n\n" + report.section()


def _first_cell(line: str) -> str:
    cells = line.strip().strip("|").split("|")
    return cells[0].strip() if cells else ""


def append_report(report: Report, path: Path = DOC_PATH) -> Path:
    text = path.read_text() if path.exists() else ""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(update_doc(text, report))
    os.replace(tmp, path)
    return path
