"""DNS throughput: murmur vs dnsmasq, both loaded by dnsperf with the same query file.

Workload: N names `svc{i}.service.murmur` (default 100), one instance each, one A record each with
a 127.0.x.y address (addresses are only data in the answers; 127/8 so nothing else is implied).

- murmur: a 3-server loopback cluster (bench/cluster.py's MurmurCluster) and one client agent
  (`murmur agent --data-dir ... --join ...`, not a server) whose DNS port takes the load: the
  issue's setup, where every answer comes from catalog slices the client holds and keeps current
  (agent/dns/remote_cache.py). The N services are registered through /v1/catalog/register on the
  leader, on an external node `bench-ext` (no agent, so anti-entropy leaves them alone); ready
  when the client answers `svc0.service.murmur` with the expected address (bounded).
- dnsmasq: `--conf-file=/dev/null --no-resolv --no-hosts --addn-hosts=HOSTS`, listening on
  127.0.0.1 only; it serves exactly the same names -> the same addresses. dnsmasq's TTL for hosts
  entries is 0 (`--local-ttl` unset), the same as murmur's default service TTL.

Load: `dnsperf -s 127.0.0.1 -p PORT -d QUERYFILE -l SECONDS -q Q -c 1 -T 1` for Q = 16 and 100,
and a "churn" case at Q = 100 where the data changes every 100 ms during the run: on murmur one
name's address is re-registered through the leader's HTTP API (flipping between its address and
an alternate one, so every name keeps exactly one record); on dnsmasq the hosts file gets the
same edit followed by SIGHUP (which rereads it and clears dnsmasq's cache). After each change
the churn thread polls that name on the side's DNS port (dnspython, every ms, up to 5 s) until
the new address is served: staleness = time from the change being acknowledged (HTTP 200 from
the leader / SIGHUP sent) to the first answer with the new address; p50/p99 reported in ms.
A sampler thread also queries random names during every run (dnspython, about every 10 ms) and
checks each answer is NOERROR with exactly one A record of an address that name may have; the
share of sampled answers that pass and NOERROR / queries sent (dnsperf) must both be >= 99.9%.
Sides alternate murmur, dnsmasq, murmur, dnsmasq, ... Only NOERROR replies count: throughput =
NOERROR replies / dnsperf's run time. CPU per answer = server CPU time delta (/proc/<pid>/stat,
utime+stime, all threads and any child processes) / NOERROR replies. Before and after every run, 10 sampled names are
queried with dnspython on that side and must return exactly the expected A record; a side whose
answers are wrong scores 0 for that run, and the run says why.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import harness as h

NAME = "dns"
DESCRIPTION = ("DNS throughput on a client agent of a 3-server cluster vs dnsmasq (dnsperf at 16 and 100 "
               "outstanding, and at 100 with the data changing every 100 ms), staleness p99")

DEFAULT_NAMES = 100
MAX_NAMES = 250 * 250
PHASES = (16, 100)
CHURN = "churn"  # the case with the data changing every CHURN_INTERVAL during the run
CHURN_WINDOW = 100
CHURN_INTERVAL = 0.1
STALE_LIMIT = 5.0  # seconds a change may take to show before it counts as never seen
SAMPLE_EVERY = 0.01
MIN_OK_PCT = 99.9
SAMPLE_SIZE = 10
DOMAIN = "murmur"
START_TIMEOUT_MURMUR = 30.0
START_TIMEOUT_DNSMASQ = 10.0
WARMUP_SECONDS = 1
SIDES = ("ours", "peer")
LABELS = {"ours": "murmur", "peer": "dnsmasq"}

METRICS = [
    h.Metric("qps", "NOERROR answers/s", "{:,.0f}"),
    h.Metric("cpu_us", "server CPU µs/answer", "{:.1f}"),
    h.Metric("cpu_user_us", "server CPU µs/answer, user", "{:.1f}"),
    h.Metric("cpu_sys_us", "server CPU µs/answer, system", "{:.1f}"),
    h.Metric("mean_ms", "mean latency ms (dnsperf)", "{:.3f}"),
    h.Metric("noerror_pct", "NOERROR % of queries sent", "{:.3f}"),
    h.Metric("sample_ok_pct", "sampled answers correct %", "{:.3f}"),
    h.Metric("stale_p50_ms", "staleness after a change p50 ms", "{:.1f}"),
    h.Metric("stale_p99_ms", "staleness after a change p99 ms", "{:.1f}"),
    h.Metric("lost", "queries lost", "{:,.0f}"),
    h.Metric("other_rcodes", "non-NOERROR replies", "{:,.0f}"),
    h.Metric("server_cpu_pct", "server CPU % of a core", "{:.0f}"),
    h.Metric("gen_cpu_pct", "dnsperf CPU % of a core", "{:.0f}"),
]


# --------------------------------------------------------------------------------------------------
# the workload (pure)


def fqdn(i: int) -> str:
    return f"svc{i}.service.{DOMAIN}"


def address(i: int) -> str:
    """127.0.x.y for name i: only data carried in answers."""
    return f"127.0.{i // 250 + 1}.{i % 250 + 1}"


def alt_address(i: int) -> str:
    """The other address a name takes in the churn case: 127.1.x.y."""
    return f"127.1.{i // 250 + 1}.{i % 250 + 1}"


def hosts_text(n: int, changed: dict[int, str] | None = None) -> str:
    changed = changed or {}
    return "".join(f"{changed.get(i, address(i))} {fqdn(i)}\n" for i in range(n))


def query_text(n: int, seed: int = 1) -> str:
    """All n names, type A, in a fixed shuffled order (dnsperf loops over the file)."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return "".join(f"{fqdn(i)} A\n" for i in order)


def sample_indices(n: int, rnd: int, case: Any, k: int = SAMPLE_SIZE) -> list[int]:
    """k distinct names to verify around one run; always includes name 0; deterministic per run."""
    rng = random.Random(f"{rnd}/{case}/{n}")
    rest = rng.sample(range(1, n), min(k, n) - 1) if n > 1 else []
    return [0] + rest


# --------------------------------------------------------------------------------------------------
# dnsperf output (pure)

_DNSPERF_FIELDS = {
    "sent": (r"Queries sent:\s+(\d+)", int),
    "completed": (r"Queries completed:\s+(\d+)", int),
    "lost": (r"Queries lost:\s+(\d+)", int),
    "run_time_s": (r"Run time \(s\):\s+([\d.]+)", float),
    "dnsperf_qps": (r"Queries per second:\s+([\d.]+)", float),
    "mean_latency_s": (r"Average Latency \(s\):\s+([\d.]+)", float),
}


def parse_dnsperf(text: str) -> dict[str, Any]:
    """Counts, run time, qps, mean latency and the response-code breakdown of a dnsperf report."""
    out: dict[str, Any] = {}
    for key, (rx, cast) in _DNSPERF_FIELDS.items():
        m = re.search(rx, text)
        out[key] = cast(m.group(1)) if m else None
    rcodes: dict[str, int] = {}
    m = re.search(r"^\s*Response codes:\s*(.*)$", text, re.M)
    if m:
        for code, count in re.findall(r"([A-Za-z][A-Za-z0-9_]*)\s+(\d+)\s+\(", m.group(1)):
            rcodes[code.upper()] = rcodes.get(code.upper(), 0) + int(count)
    out["rcodes"] = rcodes
    return out


def noerror_throughput(parsed: dict[str, Any], wall_s: float | None = None) -> tuple[int, float]:
    """(NOERROR replies, NOERROR replies per second of dnsperf's run time, or of wall_s if absent)."""
    noerror = int(parsed.get("rcodes", {}).get("NOERROR", 0))
    elapsed = parsed.get("run_time_s") or wall_s
    if not elapsed or elapsed <= 0:
        return noerror, 0.0
    return noerror, noerror / elapsed


# --------------------------------------------------------------------------------------------------
# answer checks


def answer_problem(name: str, want: str, resp: Any) -> str | None:
    """None if the dnspython response `resp` holds exactly one A record `want` for `name`."""
    import dns.name
    import dns.rcode
    import dns.rdatatype

    rcode = dns.rcode.to_text(resp.rcode())
    if rcode != "NOERROR":
        return f"{name}: rcode {rcode}, expected NOERROR with A {want}"
    got = [f"{rrset.name} {dns.rdatatype.to_text(rrset.rdtype)} {' '.join(r.to_text() for r in rrset)}"
           for rrset in resp.answer]
    ok = (len(resp.answer) == 1 and resp.answer[0].rdtype == dns.rdatatype.A
          and resp.answer[0].name == dns.name.from_text(name)
          and [r.address for r in resp.answer[0]] == [want])
    if not ok:
        return f"{name}: expected exactly A {want}, got answer section {got or '(empty)'}"
    return None


def query_a(port: int, name: str, timeout: float = 2.0, tries: int = 2) -> tuple[Any, str | None]:
    """(dnspython response or None, error text) for an A query over UDP to 127.0.0.1:port."""
    import dns.exception
    import dns.message
    import dns.query

    q = dns.message.make_query(name, "A")
    err = "no attempt"
    for _ in range(max(1, tries)):
        try:
            return dns.query.udp(q, h.HOST, port=port, timeout=timeout), None
        except dns.exception.Timeout:
            err = f"no reply within {timeout:g} s"
        except (dns.exception.DNSException, OSError) as e:
            return None, f"{type(e).__name__}: {e}"
    return None, err


def check_answers(port: int, indices: list[int]) -> tuple[list[str], list[int]]:
    """(problems, TTLs seen) over the names `indices` on the server at 127.0.0.1:port."""
    problems: list[str] = []
    ttls: list[int] = []
    for i in indices:
        resp, err = query_a(port, fqdn(i))
        if resp is None:
            problems.append(f"{fqdn(i)}: {err}")
            continue
        p = answer_problem(fqdn(i), address(i), resp)
        if p:
            problems.append(p)
        elif resp.answer:
            ttls.append(resp.answer[0].ttl)
    return problems, ttls


def dig(port: int, name: str, short: bool = False) -> str:
    argv = ["dig", f"@{h.HOST}", "-p", str(port), name, "A", "+time=1", "+tries=1"]
    if short:
        argv.append("+short")
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=5)
        return (r.stdout + r.stderr).strip()
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"(dig failed: {e})"


# --------------------------------------------------------------------------------------------------
# servers


@dataclass
class Server:
    side: str
    port: int = 0
    proc: subprocess.Popen[Any] | None = None
    log: Path | None = None
    error: str | None = None  # did not start / died: the side has no figures
    wrong: list[str] = field(default_factory=list)  # wrong answers seen at start: the side scores 0
    ttls: list[int] = field(default_factory=list)
    version: str = ""
    leader_url: str = ""  # murmur cluster: where changes are written
    hosts: Path | None = None  # dnsmasq: the hosts file changes are written to
    changed: dict[int, str] = field(default_factory=dict)  # names currently at their alternate address
    cluster: Any = None
    http_port: int = 0  # murmur client: its /v1/agent/self counters are printed per run

    def dns_stats(self) -> dict[str, int]:
        if not self.http_port:
            return {}
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(f"http://{h.HOST}:{self.http_port}/v1/agent/self", timeout=2.0) as r:
                return {k: int(v) for k, v in json.loads(r.read())["Stats"]["dns"].items()}
        except (OSError, ValueError, KeyError):
            return {}

    def change(self, i: int, addr: str) -> bool:
        """Point name i at `addr`; True once the side acknowledged the change."""
        if addr == address(i):
            self.changed.pop(i, None)
        else:
            self.changed[i] = addr
        if self.side == "peer":
            assert self.hosts is not None and self.proc is not None
            tmp = self.hosts.with_suffix(".tmp")
            tmp.write_text(hosts_text(len(hosts_lines(self.hosts)), self.changed))
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.hosts)
            self.proc.send_signal(signal.SIGHUP)
            return True
        return register(self.leader_url, i, addr)

    @property
    def label(self) -> str:
        return LABELS[self.side]

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self) -> str:
        return h.tail(self.log) if self.log else ""

    def last_log_line(self) -> str:
        lines = [ln for ln in self.log_tail().splitlines() if ln.strip()]
        return lines[-1].strip() if lines else "(empty log)"


def dnsmasq_version() -> str:
    try:
        out = subprocess.run(["dnsmasq", "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "dnsmasq (version unknown)"
    m = re.search(r"Dnsmasq version (\S+)", out)
    return f"dnsmasq {m.group(1)}" if m else out.split("\n")[0].strip()


def murmur_version(binary: str) -> str:
    try:
        rev = subprocess.run(["git", "-C", str(h.REPO_ROOT), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        rev = ""
    try:
        dirty = subprocess.run(["git", "-C", str(h.REPO_ROOT), "status", "--porcelain", "--", "agent", "catalog",
                                "checks", "cli", "gossip", "raft"], capture_output=True, text=True,
                               timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        dirty = ""
    return f"murmur git {rev or '?'}" + (" + uncommitted changes in the work tree" if dirty else "")


def hosts_lines(path: Path) -> list[str]:
    return [ln for ln in path.read_text().splitlines() if ln.strip()]


def register(leader_url: str, i: int, addr: str) -> bool:
    """Register (or re-register) svc{i} at `addr` on the external node bench-ext, via the leader."""
    body = json.dumps({"Node": "bench-ext", "Address": "127.0.0.1",
                       "Service": {"ID": f"svc{i}", "Service": f"svc{i}", "Address": addr, "Port": 8000 + i}})
    req = urllib.request.Request(f"{leader_url}/v1/catalog/register", data=body.encode(), method="PUT")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=5.0) as r:
            return r.status == 200
    except OSError:
        return False


def start_murmur_cluster(pg: h.ProcessGroup, tmp: Path, n: int, binary: str) -> Server:
    """3 servers (no DNS) and a client agent whose DNS takes the load; services via the catalog API."""
    from bench.cluster import MurmurCluster

    srv = Server("ours", log=tmp / "murmur-client.log", version=murmur_version(binary))
    if not (os.path.exists(binary) or shutil.which(binary)):
        srv.error = f"murmur binary not found: {binary}"
        return srv
    cluster = MurmurCluster(tmp, binary, "warn", h.free_ports(9))
    srv.cluster = cluster
    try:
        cluster.start(pg)
    except RuntimeError as exc:
        srv.error = f"murmur cluster did not start: {exc}"
        return srv
    lead = cluster.leader()
    if lead is None:
        srv.error = "murmur cluster: no leader"
        return srv
    srv.leader_url = lead.base
    for i in range(n):
        if not register(srv.leader_url, i, address(i)):
            srv.error = f"murmur: registering svc{i} through {srv.leader_url} failed"
            return srv
    http_port, dns_port, serf_port, server_port = h.free_ports(4)
    srv.port, srv.http_port = dns_port, http_port
    data = tmp / "murmur-client-data"
    data.mkdir()
    serf0 = cluster.members[0].argv[cluster.members[0].argv.index("--serf-port") + 1]
    argv = [binary, "agent", "--node", "bench-client", "--data-dir", str(data),
            "--config-file", str(cluster.dir / "gossip.toml"), "--join", f"{h.HOST}:{serf0}",
            "--http-port", str(http_port), "--dns-port", str(dns_port), "--serf-port", str(serf_port),
            "--server-port", str(server_port), "--bind", h.HOST, "--client", h.HOST, "--log-level", "warn"]
    srv.proc = pg.start(argv, log_path=srv.log, cwd=tmp)
    ok = h.wait_until(lambda: not srv.alive() or dig(dns_port, fqdn(0), short=True) == address(0),
                      START_TIMEOUT_MURMUR, interval=0.25)
    if not srv.alive():
        srv.error = f"murmur client exited ({srv.proc.returncode}): {srv.last_log_line()}\nlog tail:\n{srv.log_tail()}"
    elif not ok:
        srv.error = (f"murmur client not answering {fqdn(0)} with {address(0)} within {START_TIMEOUT_MURMUR:g} s; "
                     f"last dig:\n{dig(dns_port, fqdn(0))}\nlog tail:\n{srv.log_tail()}")
    return srv


def start_dnsmasq(pg: h.ProcessGroup, tmp: Path, hosts: Path) -> Server:
    srv = Server("peer", log=tmp / "dnsmasq.log", version=dnsmasq_version(), hosts=hosts)
    if shutil.which("dnsmasq") is None:
        srv.error = "dnsmasq not installed (apt-get install dnsmasq)"
        return srv
    srv.port = h.free_port()
    argv = ["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
            f"--addn-hosts={hosts}", "--listen-address=127.0.0.1", "--bind-interfaces",
            f"--port={srv.port}", "--pid-file=", "--cache-size=10000", "--user=root", "--log-facility=-"]
    srv.proc = pg.start(argv, log_path=srv.log)

    def ready() -> bool:
        if not srv.alive():
            return True
        resp, _ = query_a(srv.port, fqdn(0), timeout=0.5, tries=1)
        return resp is not None and answer_problem(fqdn(0), address(0), resp) is None

    ok = h.wait_until(ready, START_TIMEOUT_DNSMASQ, interval=0.1)
    if not srv.alive():
        srv.error = f"dnsmasq exited ({srv.proc.returncode}): {srv.last_log_line()}\nlog tail:\n{srv.log_tail()}"
    elif not ok:
        srv.error = f"dnsmasq did not answer {fqdn(0)} within {START_TIMEOUT_DNSMASQ:g} s"
    return srv


# --------------------------------------------------------------------------------------------------
# load


def run_dnsperf(pg: h.ProcessGroup, port: int, qfile: Path, window: int, seconds: float) -> tuple[str, float]:
    """(dnsperf report text, wall seconds). dnsperf is a child of the group, so ^C stops it too."""
    argv = ["dnsperf", "-s", h.HOST, "-p", str(port), "-d", str(qfile), "-l", f"{seconds:g}",
            "-q", str(window), "-c", "1", "-T", "1"]
    t0 = time.monotonic()
    p = pg.start(argv, stdout=subprocess.PIPE)
    try:
        out, _ = p.communicate(timeout=seconds + 30)
    except subprocess.TimeoutExpired:
        pg.stop(p)
        out, _ = p.communicate()
    pg.stop(p)  # reaped already; drops it from the group
    return (out or b"").decode(errors="replace"), time.monotonic() - t0


class Sampler(threading.Thread):
    """Queries random names while dnsperf runs; each answer must be NOERROR with exactly one A
    record of an address the name may have (its own, or in the churn case its alternate)."""

    def __init__(self, port: int, n: int, churn: bool, stop: threading.Event, seed: int) -> None:
        super().__init__(daemon=True)
        self.port, self.n, self.churn, self.stop_ev = port, n, churn, stop
        self.rng = random.Random(seed)
        self.ok = self.total = 0
        self.problems: list[str] = []

    def run(self) -> None:
        for _ in range(1_000_000):
            if self.stop_ev.wait(SAMPLE_EVERY):
                return
            i = self.rng.randrange(self.n)
            resp, err = query_a(self.port, fqdn(i), timeout=2.0, tries=1)
            self.total += 1
            allowed = [address(i), alt_address(i)] if self.churn else [address(i)]
            p = err if resp is None else min((answer_problem(fqdn(i), a, resp) or "" for a in allowed), key=len)
            if p:
                if len(self.problems) < 5:
                    self.problems.append(p)
            else:
                self.ok += 1


class Churner(threading.Thread):
    """Every CHURN_INTERVAL: flip one name's address (name k to its alternate, then back, then the
    next name), and time how long until the side's DNS serves the new address."""

    def __init__(self, srv: Server, n: int, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.srv, self.n, self.stop_ev = srv, n, stop
        self.stale_ms: list[float] = []
        self.unseen = self.failed = 0

    def run(self) -> None:
        tick = 0
        next_at = time.monotonic()
        while not self.stop_ev.is_set() and tick < 1_000_000:
            i = (tick // 2) % self.n
            addr = alt_address(i) if tick % 2 == 0 else address(i)
            tick += 1
            if not self.srv.change(i, addr):
                self.failed += 1
            else:
                acked = time.monotonic()
                seen = None
                while time.monotonic() - acked < STALE_LIMIT:
                    resp, _ = query_a(self.srv.port, fqdn(i), timeout=0.5, tries=1)
                    if resp is not None and answer_problem(fqdn(i), addr, resp) is None:
                        seen = time.monotonic()
                        break
                    time.sleep(0.001)
                if seen is None:
                    self.unseen += 1
                else:
                    self.stale_ms.append(1e3 * (seen - acked))
            next_at += CHURN_INTERVAL
            self.stop_ev.wait(max(0.0, next_at - time.monotonic()))
        for i in list(self.srv.changed):  # leave every name at its own address
            self.srv.change(i, address(i))


def measure(pg: h.ProcessGroup, srv: Server, qfile: Path, n: int, window: int, seconds: float,
            rnd: int, churn: bool = False) -> dict[str, Any]:
    """One dnsperf run against one side, with the answer checks before and after."""
    r: dict[str, Any] = {"label": srv.label, "window": window, "valid": False}
    if srv.error or not srv.alive():
        if not srv.error and srv.proc is not None:
            srv.error = (f"{srv.label} exited ({srv.proc.returncode}): {srv.last_log_line()}\n"
                         f"log tail:\n{srv.log_tail()}")
        r["error"] = (srv.error or "").split("\n")[0]
        return r  # no figures: the side did not run
    assert srv.proc is not None
    idx = sample_indices(n, rnd, f"{window}{churn}")
    pre, _ = check_answers(srv.port, idx)
    stats0 = srv.dns_stats()
    stop = threading.Event()
    sampler = Sampler(srv.port, n, churn, stop, seed=rnd * 1000 + window)
    churner = Churner(srv, n, stop) if churn else None
    servers_cpu0 = h.cpu_of(srv.cluster.pids()) if srv.cluster is not None else None
    u0, s0 = h.cpu_times_tree(srv.proc.pid)
    g0 = h.children_cpu_seconds()
    sampler.start()
    if churner is not None:
        churner.start()
    text, wall = run_dnsperf(pg, srv.port, qfile, window, seconds)
    stop.set()
    sampler.join(timeout=10)
    if churner is not None:
        churner.join(timeout=STALE_LIMIT + 10)
    g1 = h.children_cpu_seconds()
    try:
        u1, s1 = h.cpu_times_tree(srv.proc.pid)
    except OSError:
        u1, s1 = u0, s0
    c0, c1 = u0 + s0, u1 + s1
    if servers_cpu0 is not None:
        r["servers_cpu_pct"] = 100.0 * (h.cpu_of(srv.cluster.pids()) - servers_cpu0) / max(wall, 1e-9)
    alive = srv.alive()
    stats1 = srv.dns_stats()
    if stats0 and stats1:
        r["agent_counters"] = {k: stats1[k] - stats0.get(k, 0) for k in stats1 if stats1[k] != stats0.get(k, 0)}
    post, _ = check_answers(srv.port, idx) if alive else ([f"{srv.label} died during the run"], [])
    parsed = parse_dnsperf(text)
    noerror, qps = noerror_throughput(parsed, wall)
    elapsed = parsed.get("run_time_s") or wall
    completed = parsed.get("completed") or 0
    r.update(noerror=noerror, completed=completed, sent=parsed.get("sent"), lost=parsed.get("lost"),
             rcodes=parsed["rcodes"], other_rcodes=completed - noerror if parsed.get("completed") is not None
             else None, dnsperf_qps=parsed.get("dnsperf_qps"),
             mean_ms=(parsed["mean_latency_s"] * 1e3 if parsed.get("mean_latency_s") is not None else None),
             run_time_s=elapsed, server_cpu_s=c1 - c0,
             server_cpu_pct=100.0 * (c1 - c0) / elapsed if elapsed else None,
             gen_cpu_pct=100.0 * (g1 - g0) / wall if wall else None,
             noerror_pct=(100.0 * noerror / parsed["sent"]) if parsed.get("sent") else None,
             sample_ok_pct=(100.0 * sampler.ok / sampler.total) if sampler.total else None,
             samples=sampler.total)
    if churner is not None:
        st = churner.stale_ms
        r.update(changes=len(st), changes_unseen=churner.unseen, changes_failed=churner.failed,
                 stale_p50_ms=h.percentile(st, 50) if st else None, stale_p99_ms=h.percentile(st, 99) if st else None,
                 stale_max_ms=max(st) if st else None)
    problems = list(srv.wrong) + [f"before: {p}" for p in pre] + [f"after: {p}" for p in post]
    if r.get("sample_ok_pct") is not None and r["sample_ok_pct"] < MIN_OK_PCT:
        problems.append(f"sampled answers correct {r['sample_ok_pct']:.3f}% < {MIN_OK_PCT}%: "
                        + "; ".join(sampler.problems[:3]))
    if r.get("noerror_pct") is not None and r["noerror_pct"] < MIN_OK_PCT:
        r["below_noerror_target"] = True  # reported (lost UDP under load counts against it), not scored 0
    if churner is not None and (churner.unseen or churner.failed):
        problems.append(f"{churner.unseen} change(s) never seen within {STALE_LIMIT:g} s, {churner.failed} not acked")
    if parsed.get("completed") is None:
        problems.append("dnsperf printed no statistics: " + " | ".join(text.strip().splitlines()[-3:]))
    if problems:
        r.update(valid=False, qps=0.0, cpu_us=None, problems=problems[:5], raw_qps=qps)
    else:
        r.update(valid=True, qps=qps, cpu_us=(1e6 * (c1 - c0) / noerror) if noerror else None,
                 cpu_user_us=(1e6 * (u1 - u0) / noerror) if noerror else None,
                 cpu_sys_us=(1e6 * (s1 - s0) / noerror) if noerror else None)
    if not alive:
        srv.error = (f"{srv.label} died during a run ({srv.proc.returncode}): {srv.last_log_line()}\n"
                     f"log tail:\n{srv.log_tail()}")
    return r


def case_name(case: Any) -> str:
    return f"{CHURN} q={CHURN_WINDOW}" if case == CHURN else f"q={case}"


def describe_run(r: dict[str, Any]) -> str:
    head = f"  round {r['round']} {case_name(r['case']):9s} {r['label']:7s}:"
    if "error" in r:
        return f"{head} not run: {r['error']}"
    rc = ", ".join(f"{k} {v}" for k, v in sorted(r.get("rcodes", {}).items())) or "none"
    line = (f"{head} {r['qps']:9,.0f} NOERROR/s  mean {h.fmt(r.get('mean_ms'), '{:.3f}')} ms  "
            f"lost {r.get('lost')}  rcodes [{rc}]  server {h.fmt(r.get('cpu_us'), '{:.1f}')} µs/answer "
            f"[user {h.fmt(r.get('cpu_user_us'), '{:.1f}')} + sys {h.fmt(r.get('cpu_sys_us'), '{:.1f}')}] "
            f"({h.fmt(r.get('server_cpu_pct'), '{:.0f}')}% core)  dnsperf {h.fmt(r.get('gen_cpu_pct'), '{:.0f}')}% core"
            f"  NOERROR {h.fmt(r.get('noerror_pct'), '{:.3f}')}% of sent, sampled ok "
            f"{h.fmt(r.get('sample_ok_pct'), '{:.3f}')}% of {r.get('samples')}")
    if r.get("servers_cpu_pct") is not None:
        line += f"  [3 servers {r['servers_cpu_pct']:.0f}% core]"
    if r.get("agent_counters"):
        line += "\n    agent counters: " + ", ".join(f"{k} +{v}" for k, v in sorted(r["agent_counters"].items()))
    if "changes" in r:
        line += (f"\n    churn: {r['changes']} changes seen, staleness p50 {h.fmt(r.get('stale_p50_ms'), '{:.1f}')} ms "
                 f"p99 {h.fmt(r.get('stale_p99_ms'), '{:.1f}')} ms max {h.fmt(r.get('stale_max_ms'), '{:.1f}')} ms; "
                 f"unseen {r.get('changes_unseen')}, failed {r.get('changes_failed')}")
    if not r["valid"]:
        line += f"\n    WRONG ANSWERS -> scored 0 (unscored rate {r.get('raw_qps', 0):,.0f}/s): " + \
            "; ".join(r.get("problems", []))
    return line


# --------------------------------------------------------------------------------------------------
# entry points


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--names", type=int, default=DEFAULT_NAMES, help="services/names (default 100, also with --quick)")
    p.add_argument("--phases", default=",".join(map(str, PHASES)),
                   help="dnsperf outstanding-query windows, comma separated (default 16,100)")
    p.add_argument("--murmur", default=os.environ.get("MURMUR_BIN", str(h.REPO_ROOT / ".venv" / "bin" / "murmur")),
                   help="murmur executable (default: the repo's .venv/bin/murmur; env MURMUR_BIN)")
    p.add_argument("--only", choices=SIDES, help="run one side only (for debugging; never recorded)")
    p.add_argument("--no-churn", dest="churn", action="store_false",
                   help="skip the case with the data changing every 100 ms")


def run(args: argparse.Namespace) -> int:
    rounds, seconds = h.rounds_and_seconds(args.quick, args.rounds, args.seconds)
    n = int(args.names)
    if not 1 <= n <= MAX_NAMES:
        print(f"--names must be within 1..{MAX_NAMES}")
        return 2
    phases = [int(x) for x in str(args.phases).split(",") if x.strip()]
    if shutil.which("dnsperf") is None:
        print("dnsperf not installed (apt-get install dnsperf)")
        return 2
    try:
        import dns.message  # noqa: F401
    except ImportError:
        print("dnspython missing: run with the repo's venv, e.g. .venv/bin/python -m bench dns")
        return 2
    sides = (args.only,) if args.only else SIDES
    tmp = Path(tempfile.mkdtemp(prefix="murmur-bench-dns-"))
    os.chmod(tmp, 0o755)
    try:
        hosts, qfile = tmp / "hosts", tmp / "queries"
        hosts.write_text(hosts_text(n))
        qfile.write_text(query_text(n))
        for f in (hosts, qfile):
            os.chmod(f, 0o644)
        with h.ProcessGroup() as pg:
            servers: dict[str, Server] = {}
            if "peer" in sides:
                servers["peer"] = start_dnsmasq(pg, tmp, hosts)
            if "ours" in sides:
                servers["ours"] = start_murmur_cluster(pg, tmp, n, args.murmur)
            for side in sides:
                srv = servers[side]
                if srv.error:
                    print(f"{srv.label}: NOT STARTED: {srv.error}")
                    continue
                problems, srv.ttls = check_answers(srv.port, list(range(n)))
                srv.wrong = [f"at start: {p}" for p in problems[:5]]
                ttl = sorted(set(srv.ttls))
                print(f"{srv.label} on 127.0.0.1:{srv.port} (pid {srv.proc.pid if srv.proc else '?'}): "
                      f"{n - len(problems)}/{n} names answered correctly at start; TTLs seen {ttl}")
                if problems:
                    print(f"  WRONG at start ({len(problems)}): " + "; ".join(problems[:5]))
                    m = re.match(r"svc(\d+)\.", problems[0])
                    print("  dig output:\n" + dig(srv.port, fqdn(int(m.group(1)) if m else 0)))
                run_dnsperf(pg, srv.port, qfile, phases[0], WARMUP_SECONDS)  # warm caches, not counted
            cases: list[Any] = [*phases, *([CHURN] if args.churn else [])]
            print(f"{n} names, dnsperf q in {phases}" + (f" and {CHURN} (q={CHURN_WINDOW}, a change every "
                                                          f"{CHURN_INTERVAL * 1e3:g} ms)" if args.churn else "")
                  + f", {rounds} rounds x {seconds:g} s per run, sides "
                  + ", ".join(LABELS[s] for s in sides) + " alternating")

            def one(side: str, case: Any, rnd: int) -> dict[str, Any]:
                window = CHURN_WINDOW if case == CHURN else int(case)
                r = measure(pg, servers[side], qfile, n, window, seconds, rnd, churn=case == CHURN)
                r.update(side=side, case=case, round=rnd)
                print(describe_run(r), flush=True)
                return r

            budget = rounds * len(cases) * len(sides) * (seconds + 40) + 60
            results = h.run_alternating(one, cases, rounds, sides=sides, max_seconds=budget)
            if servers.get("ours") and servers["ours"].alive() and servers["ours"].log:
                log_text = h.tail(servers["ours"].log, 20).strip()
                if log_text:
                    print("murmur log tail (warn and above):\n" + log_text)
        return report(args, n, rounds, seconds, phases, sides, servers, results)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def report(args: argparse.Namespace, n: int, rounds: int, seconds: float, phases: list[int],
           sides: tuple[str, ...], servers: dict[str, Server], results: list[dict[str, Any]]) -> int:
    summary = h.summarize(results, [m.key for m in METRICS])
    metrics = [m for m in METRICS if any(per.get(m.key, {}).get(s) is not None for per in summary.values()
                                         for s in ("ours", "peer"))]
    table = h.format_table(summary, metrics, case_label=case_name, ours_name="murmur", peer_name="dnsmasq")
    print()
    print(table)
    invalid = [r for r in results if "error" not in r and not r["valid"]]
    not_run = [r for r in results if "error" in r]
    notes = [f"murmur: a client agent (DNS) of a 3-server loopback cluster; {n} names `svc{{i}}.service.murmur` "
             f"-> one A record each (127.0.x.y), registered via /v1/catalog/register on the leader; dnsmasq from "
             f"a hosts file; query file of all {n} names type A; dnsperf `-q` in {phases}, `-c 1 -T 1`; "
             f"churn: q={CHURN_WINDOW} while one name's address flips every {CHURN_INTERVAL * 1e3:g} ms "
             "(murmur: catalog register on the leader; dnsmasq: hosts file + SIGHUP); "
             f"{rounds} rounds x {seconds:g} s per run, sides alternating murmur, dnsmasq; medians over rounds",
             "throughput counts NOERROR replies only (/ dnsperf run time); CPU µs/answer = the DNS-answering "
             "process's utime+stime delta / NOERROR replies (murmur: the client agent; the 3 servers' CPU is "
             "printed per run); 10 sampled names verified before and after every run, and random names "
             "sampled every ~10 ms during it (NOERROR, exactly one A record of an allowed address); "
             "staleness = change acknowledged -> first answer with the new address (polled every ms)",
             "TTL seen: " + ", ".join(f"{servers[s].label} {sorted(set(servers[s].ttls)) or '?'}"
                                      for s in sides if s in servers)
             + " (dnsmasq gives hosts entries TTL 0 unless --local-ttl; Consul's service_ttl default is 0)"]
    for s in sides:
        srv = servers.get(s)
        if srv and srv.error:
            notes.append(f"{srv.label} did not run: {srv.error.splitlines()[0]}")
        if srv and srv.wrong:
            notes.append(f"{srv.label} WRONG answers: {srv.wrong[0]}")
    if invalid:
        notes.append(f"{len(invalid)} run(s) scored 0 for wrong answers: "
                     + "; ".join(f"{r['label']} q={r['window']} round {r['round']}: {r['problems'][0]}"
                                 for r in invalid[:3]))
    low = [r for r in results if r.get("below_noerror_target")]
    if low:
        notes.append(f"{len(low)} run(s) with NOERROR below {MIN_OK_PCT}% of queries sent (dnsperf lost or "
                     "non-NOERROR): " + "; ".join(f"{r['label']} {case_name(r['case'])} round {r['round']}: "
                                                  f"{r['noerror_pct']:.3f}%" for r in low[:4]))
    for note in notes[3:]:
        print("NOTE: " + note)
    versions = {s: servers[s].version for s in sides if s in servers}
    result = {"bench": NAME, "names": n, "rounds": rounds, "seconds": seconds, "phases": phases,
              "versions": versions,
              "summary": {case_name(q): per for q, per in summary.items()},
              "invalid_runs": len(invalid), "runs_not_run": len(not_run),
              "errors": {s: servers[s].error for s in sides if s in servers and servers[s].error},
              "runs": results}
    both_started = len(sides) == 2 and all(not servers[s].error for s in sides)
    if args.no_record or args.only:
        print("(not recorded: " + ("--no-record" if args.no_record else "--only") + ")")
    elif not both_started:
        print("(not recorded in docs/benchmarks.md: a side did not start)")
    else:
        info = h.machine_info(versions.get("peer", ""))
        date = info["date"].split(" ")[0]
        latest = []
        for q, per in summary.items():
            qps, cpu = per["qps"], per["cpu_us"]
            latest.append(h.LatestRow(
                benchmark=NAME, case=f"{case_name(q)} NOERROR answers/s", ours=h.fmt(qps["ours"], "{:,.0f}"),
                peer=h.fmt(qps["peer"], "{:,.0f}"), ratio=h.fmt(qps["ratio"], "{:.3f}"),
                cpu_ours=h.fmt(cpu["ours"], "{:.1f}"), cpu_peer=h.fmt(cpu["peer"], "{:.1f}"), date=date))
        title = (f"dns: murmur client agent (3-server cluster) vs {versions.get('peer', 'dnsmasq')}, {n} names, "
                 f"{'quick, ' if args.quick else ''}{rounds} x {seconds:g} s")
        notes.insert(0, f"murmur: {versions.get('ours', '?')}")
        path = h.append_report(h.Report(NAME, title, table, info, h.command_line(), latest, notes),
                               Path(args.doc) if args.doc else h.DOC_PATH)
        print(f"appended to {path}")
    print("RESULT " + json.dumps(result, default=str))
    ok = both_started or (args.only is not None and not servers[args.only].error)
    return 0 if ok and not invalid and not not_run else 1
