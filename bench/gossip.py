"""Gossip membership: murmur agents vs serf agents (memberlist LAN profile), side by side on loopback.

Both sides use memberlist's LAN timers: serf with `-profile=lan`, murmur with its default
`gossip_lan.preset = "lan"` (1 s probes, 500 ms probe timeout, suspicion mult 4, 200 ms gossip
to 3 members, 30 s push-pull). Each round starts a FRESH cluster of N agents per side, alternating
murmur, serf, murmur, serf, ... and measures, per cluster:

1. cold convergence: all N agents are started and ready (not joined); at t0, N-1 join calls to
   agent 0 are fired at once (one thread each: murmur `PUT /v1/agent/join/127.0.0.1:S0`, serf RPC
   `join`) -> time until every agent lists N members alive.
2. idle cost: after a settle pause, CPU (utime+stime from /proc, all threads) of all agents over
   the idle window (no polling meanwhile) -> % of one core per agent; VmRSS per agent.
3. failure detection: `--trials` times, kill -9 one agent (the same node indices on both sides in
   a round, never agent 0) -> per observer, time until it lists the victim failed: first observer,
   median, all observers. Nothing is restarted: N shrinks by one per trial (N, N-1, ...), on both
   sides alike (the suspicion timeout's log10(N) factor moves by < 6 % from N=20 to N=17).
4. join propagation: a fresh agent is started, then joins agent 0 -> time until every live agent
   lists it alive.

Around every kill the observers' Lifeguard health scores are read (murmur `/v1/agent/self`
Stats.serf_lan.health_score, serf RPC `stats` serf.health_score; outside the timed window): a
raised score stretches that agent's probe interval (x score+1), which slows the next detection.

Membership is read the way an operator reads it: murmur's `GET /v1/agent/members` (Status 1
alive, 3 left, 4 failed; suspects count as alive, as in Consul) on keep-alive HTTP connections,
serf's msgpack RPC `members` (what `serf members` prints) on persistent TCP connections. Both
are polled with the same interval (`--poll`, default 0.1 s): a sweep asks every observer in turn,
a sweep starts every poll interval (or at once when the previous one ran late), and each
observer's time is taken when its answer arrives. Timing resolution = max(poll interval, sweep
duration); the median sweep duration is printed per side. While polling, any agent that is still
running but listed failed/left by someone is recorded as a false failure (sampled at poll times:
a flap shorter than a sweep can be missed).

Defaults: N=20, 4 rounds, 3 kills per round, 30 s idle window. `--quick`: N=10, 2 rounds, 2 kills,
10 s idle. `--seconds` sets the idle window, `--rounds` the rounds, `-n` and `--trials` the rest.

Warnings and errors in the agents' logs (`--log-level warn` on both sides) are counted and
excerpts printed; lines written during the run and during shutdown are kept apart.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import harness as h
from bench.harness import cpu_of, loadavg, parse_loadavg, percentile  # noqa: F401  (parse_loadavg: re-exported for tests)

NAME = "gossip"
DESCRIPTION = "gossip membership, murmur vs serf (LAN profile): convergence, kill -9 detection, idle CPU/RSS"

DEFAULT_N, QUICK_N = 20, 10
FULL_ROUNDS, QUICK_ROUNDS = 4, 2
FULL_TRIALS, QUICK_TRIALS = 3, 2
FULL_IDLE_S, QUICK_IDLE_S = 30.0, 10.0
FULL_SETTLE_S, QUICK_SETTLE_S = 5.0, 3.0
POLL_S = 0.1
PHASE_TIMEOUT_S = 60.0  # detection can take up to suspicion max (31 s at N=20) when nobody confirms
START_TIMEOUT_S = 90.0  # all N agents ready (20 Python agents on 2 cores take a few s)
BETWEEN_TRIALS_S = 2.0
MAX_N = 64
SIDES = ("ours", "peer")
LABELS = {"ours": "murmur", "peer": "serf"}

MURMUR_STATUS = {0: "none", 1: "alive", 2: "leaving", 3: "left", 4: "failed"}
WRONG_FOR_LIVE = ("failed", "left")  # a running, never-paused agent must not be listed like this

METRICS = [
    h.Metric("converge_all_s", "cold convergence: all N list N alive, s", "{:.2f}"),
    h.Metric("detect_first_s", "kill -9 -> first observer lists failed, s (p50)", "{:.2f}"),
    h.Metric("detect_median_s", "kill -9 -> median observer lists failed, s (p50)", "{:.2f}"),
    h.Metric("detect_all_s", "kill -9 -> all observers list failed, s (p50)", "{:.2f}"),
    h.Metric("detect_all_p90_s", "kill -9 -> all observers list failed, s (p90)", "{:.2f}"),
    h.Metric("join_all_s", "new agent seen alive by all, s", "{:.2f}"),
    h.Metric("health_raised_after", "agents with raised Lifeguard health score after a detection (p50)",
             "{:.1f}"),
    h.Metric("idle_cpu_pct", "idle CPU % of a core per agent", "{:.3f}"),
    h.Metric("rss_mib", "RSS per agent, MiB", "{:.1f}"),
    h.Metric("startup_cpu_s", "start-up CPU per agent (exec -> ready), s", "{:.3f}"),
    h.Metric("false_failures", "live agents listed failed/left (sum)", "{:.0f}"),
    h.Metric("detect_timeouts", "kill trials not seen by all in time (sum)", "{:.0f}"),
    h.Metric("log_problems", "warn/error log lines during runs (sum)", "{:.0f}"),
    h.Metric("sweep_ms", "poll sweep over all agents, ms (p50)", "{:.1f}"),
]
# pooled over every trial of every round (lists in the run dicts), not a median of per-run values
POOLED = {"detect_first_s", "detect_median_s", "detect_all_s", "join_all_s", "sweep_ms", "health_raised_after"}
SUMMED = {"false_failures", "detect_timeouts", "log_problems"}


# --------------------------------------------------------------------------------------------------
# pure helpers


def murmur_view(body: Any) -> dict[str, str]:
    """{name: status} from the JSON of murmur's (Consul's) /v1/agent/members."""
    if not isinstance(body, list):
        raise ValueError(f"/v1/agent/members: expected a list, got {type(body).__name__}")
    return {str(m["Name"]): MURMUR_STATUS.get(m.get("Status"), f"status-{m.get('Status')}") for m in body}


def serf_view(body: Any) -> dict[str, str]:
    """{name: status} from the body of serf's RPC `members` reply."""
    if not isinstance(body, dict) or not isinstance(body.get("Members"), list):
        raise ValueError("serf members: expected {'Members': [...]}")
    return {str(m["Name"]): str(m["Status"]) for m in body["Members"]}


def murmur_health(self_body: Any) -> int:
    """Lifeguard health score (0 = healthy) from murmur's /v1/agent/self: Stats.serf_lan.health_score."""
    return int(self_body["Stats"]["serf_lan"]["health_score"])


def serf_health(stats_body: Any) -> int:
    """Lifeguard health score from the body of serf's RPC `stats` reply: serf.health_score."""
    return int(stats_body["serf"]["health_score"])


def health_summary(scores: Iterable[int]) -> tuple[int, int]:
    """(agents with a raised health score, the highest score)."""
    v = list(scores)
    return sum(1 for x in v if x > 0), max(v, default=0)


def count_status(view: dict[str, str], status: str = "alive") -> int:
    return sum(1 for s in view.values() if s == status)


def serf_request(command: str, seq: int, args: Any = None) -> bytes:
    """One serf RPC request: a msgpack header {Command, Seq}, then the msgpack body if any."""
    import msgpack

    data = msgpack.packb({"Command": command, "Seq": seq})
    if args is not None:
        data += msgpack.packb(args)
    return data


def check_serf_header(header: Any, seq: int) -> None:
    """Raise if a serf RPC response header is not the answer to `seq` or carries an error."""
    if not isinstance(header, dict) or header.get("Seq") != seq:
        raise ConnectionError(f"serf rpc: unexpected response header {header!r} (wanted Seq {seq})")
    if header.get("Error"):
        raise RuntimeError(f"serf rpc: {header['Error']}")


def spread(times: Iterable[float]) -> tuple[float, float, float] | None:
    """(first, median, last) of per-observer times; None when empty."""
    v = sorted(times)
    if not v:
        return None
    return v[0], statistics.median(v), v[-1]


def victims(n: int, trials: int, seed: int, rnd: int) -> list[int]:
    """Agent indices to kill in a round: distinct, never 0 (the seed), the same for both sides."""
    k = max(0, min(trials, n - 2))  # leave at least agent 0 and one other
    return random.Random(f"{seed}/{rnd}/{n}").sample(range(1, n), k)


def wrong_listings(view: dict[str, str], running: set[str]) -> list[tuple[str, str]]:
    """(member, status) for agents in `running` that this view lists failed or left."""
    return sorted((m, s) for m, s in view.items() if m in running and s in WRONG_FOR_LIVE)



def parse_vmrss_kib(status_text: str) -> int | None:
    """VmRSS in KiB from the text of /proc/<pid>/status."""
    m = re.search(r"^VmRSS:\s+(\d+)\s+kB", status_text, re.M)
    return int(m.group(1)) if m else None


def rss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            return parse_vmrss_kib(f.read())
    except OSError:
        return None


_PROBLEM = re.compile(r"\[(WARN|WARNING|ERR|ERROR|CRITICAL|FATAL)\]|Traceback \(most recent|^panic:", re.M)
_TIMESTAMP = re.compile(r"^\s*\d{4}[-/]\d{2}[-/]\d{2}[ T]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?\s*")


def problem_lines(text: str) -> list[str]:
    """Log lines at warning level or worse (murmur `[WARNING]`, serf `[WARN]`/`[ERR]`), tracebacks, panics."""
    return [ln.rstrip() for ln in text.splitlines() if _PROBLEM.search(ln)]


def problem_key(line: str) -> str:
    """A line with its timestamp dropped and numbers/addresses blurred, to group repeats."""
    s = _TIMESTAMP.sub("", line)
    s = re.sub(r"\d+\.\d+\.\d+\.\d+(:\d+)?", "ADDR", s)
    return re.sub(r"\d+", "#", s)[:200]


def group_problems(lines: Iterable[tuple[str, str]], limit: int = 8) -> list[tuple[int, str, str]]:
    """(count, agent, first example) per distinct problem; lines are (agent, line); most frequent first."""
    groups: dict[str, list[Any]] = {}
    for agent, line in lines:
        g = groups.setdefault(problem_key(line), [0, agent, line])
        g[0] += 1
    out = sorted(((c, a, ln) for c, a, ln in groups.values()), key=lambda t: -t[0])
    return out[:limit]


def summarize_runs(results: Sequence[dict[str, Any]], sides: Sequence[str] = SIDES,
                   ) -> dict[Any, dict[str, dict[str, float | None]]]:
    """{case: {metric: {side: value, "ratio": ours/peer}}}: medians over rounds of per-round scalars,
    medians over all trials for the POOLED lists, p90 of all detect_all_s, sums for SUMMED."""
    out: dict[Any, dict[str, dict[str, float | None]]] = {}
    for case in h.cases_in(results):
        out[case] = {}
        for m in METRICS:
            row: dict[str, float | None] = {}
            for side in sides:
                runs = [r for r in results if r["case"] == case and r["side"] == side and "error" not in r]
                if m.key == "detect_all_p90_s":
                    row[side] = percentile([v for r in runs for v in r.get("detect_all_s", [])], 90)
                elif m.key in POOLED:
                    row[side] = h.median(v for r in runs for v in r.get(m.key, []))
                elif m.key in SUMMED:
                    row[side] = float(sum(r.get(m.key, 0) or 0 for r in runs)) if runs else None
                else:
                    row[side] = h.median(r.get(m.key) for r in runs)
            row["ratio"] = (h.ratio(row.get(sides[0]), row.get(sides[1]))
                            if len(sides) == 2 and m.key not in SUMMED else None)
            out[case][m.key] = row
    return out


# --------------------------------------------------------------------------------------------------
# clients


class HttpClient:
    """A keep-alive HTTP/1.1 connection to one murmur agent on 127.0.0.1 (no proxy involved)."""

    def __init__(self, port: int, timeout: float = 2.0) -> None:
        self.port, self.timeout = port, timeout
        self.conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str) -> tuple[int, bytes]:
        if self.conn is None:
            self.conn = http.client.HTTPConnection(h.HOST, self.port, timeout=self.timeout)
        try:
            self.conn.request(method, path)
            resp = self.conn.getresponse()
            return resp.status, resp.read()
        except (OSError, http.client.HTTPException) as e:
            self.close()
            raise OSError(f"{method} {path} on :{self.port}: {type(e).__name__}: {e}") from e

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class SerfRPC:
    """serf's msgpack RPC over one TCP connection (handshake, then one request at a time)."""

    def __init__(self, port: int, timeout: float = 5.0) -> None:
        import msgpack

        self.timeout = timeout
        self.sock = socket.create_connection((h.HOST, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.unpacker = msgpack.Unpacker(raw=False, unicode_errors="surrogateescape")
        self.seq = 0
        try:
            self.call("handshake", {"Version": 1}, has_body=False)
        except BaseException:
            self.close()
            raise

    def _next(self) -> Any:
        deadline = time.monotonic() + self.timeout
        for _ in range(100_000):
            try:
                return next(self.unpacker)
            except StopIteration:
                pass
            if time.monotonic() > deadline:
                break
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("serf rpc: connection closed")
            self.unpacker.feed(chunk)
        raise TimeoutError("serf rpc: no complete reply in time")

    def call(self, command: str, args: Any = None, has_body: bool = True) -> Any:
        self.seq += 1
        self.sock.sendall(serf_request(command, self.seq, args))
        check_serf_header(self._next(), self.seq)
        return self._next() if has_body else None

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


# --------------------------------------------------------------------------------------------------
# agents and the two sides


@dataclass
class Agent:
    name: str
    proc: subprocess.Popen[Any]
    log: Path
    ports: dict[str, int]
    started: float
    client: Any = None
    killed: bool = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def running(self) -> bool:
        return self.proc.poll() is None


# memberlist's DefaultLANConfig, which `serf agent -profile=lan` runs (serf reports no timers over
# RPC, so its side is this documented table). murmur's side is read from the running agent's
# /v1/agent/self DebugConfig; a run whose two tables differ is not comparable and is refused.
MEMBERLIST_LAN_TIMERS = {"ProbeInterval": "1000ms", "ProbeTimeout": "500ms", "SuspicionMult": "4",
                         "SuspicionMaxTimeoutMult": "6", "GossipInterval": "200ms", "GossipNodes": "3",
                         "RetransmitMult": "4", "IndirectChecks": "3", "PushPullInterval": "30000ms",
                         "AwarenessMaxMultiplier": "8"}


def timer_table(debug_config: dict[str, Any]) -> dict[str, str]:
    """murmur's GossipLAN* DebugConfig entries under memberlist's names."""
    return {k: str(debug_config.get("GossipLAN" + k, "?")) for k in MEMBERLIST_LAN_TIMERS}


class Backend:
    """What differs between the sides: how an agent is started, asked for members, told to join."""

    label = "?"

    def __init__(self, pg: h.ProcessGroup, tmp: Path, taken: set[int]) -> None:
        self.pg, self.tmp, self.taken = pg, tmp, taken

    def _ports(self, k: int) -> list[int]:
        out = []
        for _ in range(k):
            p = h.free_port(exclude=self.taken)
            self.taken.add(p)
            out.append(p)
        return out

    def start(self, name: str) -> Agent:
        raise NotImplementedError

    def connect(self, a: Agent) -> bool:
        """Open the polling client; False if the agent does not answer yet."""
        raise NotImplementedError

    def members(self, a: Agent) -> dict[str, str]:
        raise NotImplementedError

    def join(self, a: Agent, seed: Agent, timeout: float) -> str | None:
        """Tell `a` to join `seed` on a connection of its own; None, or the error."""
        raise NotImplementedError

    def health(self, a: Agent) -> int:
        """The agent's Lifeguard health score (awareness; its probe interval is scaled by score+1)."""
        raise NotImplementedError

    def timers(self, a: Agent) -> dict[str, str]:
        """The gossip timers this side runs with, under memberlist's names."""
        raise NotImplementedError

    def close(self, a: Agent) -> None:
        if a.client is not None:
            a.client.close()
            a.client = None


class MurmurBackend(Backend):
    label = "murmur"

    def __init__(self, pg: h.ProcessGroup, tmp: Path, taken: set[int], binary: str) -> None:
        super().__init__(pg, tmp, taken)
        self.binary = binary

    def start(self, name: str) -> Agent:
        http_port, serf_port, server_port = self._ports(3)
        data = self.tmp / f"data-{name}"
        data.mkdir(parents=True, exist_ok=True)
        log = self.tmp / f"{name}.log"
        argv = [self.binary, "agent", "--node", name, "--bind", h.HOST, "--client", h.HOST,
                "--data-dir", str(data), "--http-port", str(http_port), "--dns-port", "-1",
                "--serf-port", str(serf_port), "--server-port", str(server_port), "--log-level", "warn"]
        p = self.pg.start(argv, log_path=log, cwd=self.tmp)
        return Agent(name, p, log, {"http": http_port, "serf": serf_port, "server": server_port},
                     time.monotonic())

    def connect(self, a: Agent) -> bool:
        c = HttpClient(a.ports["http"], timeout=0.5)
        try:
            status, body = c.request("GET", "/v1/agent/members")
            if status != 200:
                c.close()
                return False
            murmur_view(json.loads(body))
        except (OSError, ValueError):
            c.close()
            return False
        c.timeout = 2.0
        c.close()  # reopen with the polling timeout
        a.client = c
        return True

    def members(self, a: Agent) -> dict[str, str]:
        status, body = a.client.request("GET", "/v1/agent/members")
        if status != 200:
            raise OSError(f"{a.name}: /v1/agent/members -> HTTP {status}: {body[:200]!r}")
        return murmur_view(json.loads(body))

    def join(self, a: Agent, seed: Agent, timeout: float) -> str | None:
        c = HttpClient(a.ports["http"], timeout=timeout)
        try:
            status, body = c.request("PUT", f"/v1/agent/join/{h.HOST}:{seed.ports['serf']}")
        except OSError as e:
            return str(e)
        finally:
            c.close()
        return None if status == 200 else f"HTTP {status}: {body[:200].decode(errors='replace')}"

    def health(self, a: Agent) -> int:
        status, body = a.client.request("GET", "/v1/agent/self")
        if status != 200:
            raise OSError(f"{a.name}: /v1/agent/self -> HTTP {status}")
        return murmur_health(json.loads(body))

    def timers(self, a: Agent) -> dict[str, str]:
        status, body = a.client.request("GET", "/v1/agent/self")
        if status != 200:
            raise OSError(f"{a.name}: /v1/agent/self -> HTTP {status}")
        return timer_table(json.loads(body).get("DebugConfig", {}))


class SerfBackend(Backend):
    label = "serf"

    def __init__(self, pg: h.ProcessGroup, tmp: Path, taken: set[int], binary: str, profile: str) -> None:
        super().__init__(pg, tmp, taken)
        self.binary, self.profile = binary, profile

    def start(self, name: str) -> Agent:
        bind, rpc = self._ports(2)
        log = self.tmp / f"{name}.log"
        argv = [self.binary, "agent", f"-node={name}", f"-bind={h.HOST}:{bind}", f"-rpc-addr={h.HOST}:{rpc}",
                f"-profile={self.profile}", "-log-level=warn"]
        p = self.pg.start(argv, log_path=log, cwd=self.tmp)
        return Agent(name, p, log, {"bind": bind, "rpc": rpc}, time.monotonic())

    def connect(self, a: Agent) -> bool:
        try:
            a.client = SerfRPC(a.ports["rpc"], timeout=2.0)
        except (OSError, RuntimeError, ConnectionError, ValueError):
            return False
        return True

    def members(self, a: Agent) -> dict[str, str]:
        try:
            return serf_view(a.client.call("members"))
        except (OSError, RuntimeError, ConnectionError, ValueError):
            self.close(a)  # the stream may be out of step now: reconnect on the next sweep
            raise

    def join(self, a: Agent, seed: Agent, timeout: float) -> str | None:
        try:
            c = SerfRPC(a.ports["rpc"], timeout=timeout)
        except (OSError, RuntimeError, ConnectionError, ValueError) as e:
            return f"connect: {e}"
        try:
            c.call("join", {"Existing": [f"{h.HOST}:{seed.ports['bind']}"], "Replay": False})
        except (OSError, RuntimeError, ConnectionError, ValueError) as e:
            return str(e)
        finally:
            c.close()
        return None

    def health(self, a: Agent) -> int:
        try:
            return serf_health(a.client.call("stats"))
        except (OSError, RuntimeError, ConnectionError, ValueError):
            self.close(a)
            raise

    def timers(self, a: Agent) -> dict[str, str]:
        if self.profile != "lan":
            raise ValueError(f"no timer table for serf profile {self.profile!r}")
        return dict(MEMBERLIST_LAN_TIMERS)


# --------------------------------------------------------------------------------------------------
# one cluster


@dataclass
class Cluster:
    backend: Backend
    poll: float
    agents: dict[str, Agent] = field(default_factory=dict)
    sweeps_ms: list[float] = field(default_factory=list)
    false_failures: list[dict[str, Any]] = field(default_factory=list)
    poll_errors: int = 0

    def running_names(self) -> list[str]:
        return [n for n, a in self.agents.items() if a.running() and not a.killed]

    def start(self, names: Sequence[str], timeout: float) -> str | None:
        """Start agents, wait until each answers; None, or what went wrong."""
        for n in names:
            self.agents[n] = self.backend.start(n)
        pending = list(names)
        deadline = time.monotonic() + timeout
        for _ in range(int(timeout / 0.05) + 10):
            for n in list(pending):
                a = self.agents[n]
                if not a.running():
                    return f"{n} exited ({a.proc.returncode}) while starting; log tail:\n{h.tail(a.log, 15)}"
                if self.backend.connect(a):
                    pending.remove(n)
            if not pending or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        if pending:
            return f"{len(pending)} agents not answering after {timeout:g} s: {pending[:5]}"
        return None

    def view(self, name: str) -> dict[str, str] | None:
        a = self.agents[name]
        try:
            if a.client is None and not self.backend.connect(a):
                return None
            return self.backend.members(a)
        except (OSError, RuntimeError, ConnectionError, ValueError):
            self.poll_errors += 1
            return None

    def poll_until(self, observers: Sequence[str], pred: Callable[[dict[str, str]], bool], timeout: float,
                   t0: float, phase: str) -> dict[str, float]:
        """Sweep the observers every poll interval until pred(view) held once for each, or timeout.
        Returns {observer: seconds from t0 to the answer in which pred first held}."""
        done: dict[str, float] = {}
        start = time.monotonic()
        max_sweeps = int(timeout / self.poll) + 20
        for _ in range(max_sweeps):
            sweep_start = time.monotonic()
            running = set(self.running_names())
            for o in observers:
                if o in done:
                    continue
                v = self.view(o)
                t = time.monotonic() - t0
                if v is None:
                    continue
                self._note_wrong(o, v, running, t, phase)
                if pred(v):
                    done[o] = t
            now = time.monotonic()
            self.sweeps_ms.append(1e3 * (now - sweep_start))
            if len(done) == len(observers) or now - start > timeout:
                break
            time.sleep(max(0.0, sweep_start + self.poll - now))
        return done

    def _note_wrong(self, observer: str, view: dict[str, str], running: set[str], t: float, phase: str) -> None:
        for member, status in wrong_listings(view, running):
            self.false_failures.append({"observer": observer, "member": member, "status": status,
                                        "t": round(t, 2), "phase": phase})

    def check_all(self, phase: str) -> None:
        """One sweep of every running agent for false failures only."""
        running = set(self.running_names())
        for o in sorted(running):
            v = self.view(o)
            if v is not None:
                self._note_wrong(o, v, running, 0.0, phase)

    def health_scores(self, names: Sequence[str]) -> list[int]:
        """Health scores of the agents that answer (asked outside any timed window)."""
        out = []
        for n in names:
            a = self.agents[n]
            try:
                if a.client is None and not self.backend.connect(a):
                    continue
                out.append(self.backend.health(a))
            except (OSError, RuntimeError, ConnectionError, ValueError, KeyError, TypeError):
                self.poll_errors += 1
        return out

    def kill9(self, name: str) -> None:
        a = self.agents[name]
        self.backend.close(a)
        a.killed = True
        if a.running():
            os.kill(a.pid, signal.SIGKILL)
        try:
            a.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass

    def close_clients(self) -> None:
        for a in self.agents.values():
            self.backend.close(a)


def join_all_at_once(cluster: Cluster, joiners: Sequence[str], seed: str, timeout: float,
                     ) -> tuple[float, dict[str, str], list[threading.Thread]]:
    """Fire one join call per joiner (a thread each), all released together at t0.
    Returns (t0, {joiner: error} filled in as calls finish, the threads)."""
    errors: dict[str, str] = {}
    lock = threading.Lock()
    barrier = threading.Barrier(len(joiners) + 1)
    seed_agent = cluster.agents[seed]

    def worker(name: str) -> None:
        try:
            barrier.wait(timeout=30)
        except threading.BrokenBarrierError:
            with lock:
                errors[name] = "barrier broken"
            return
        err = cluster.backend.join(cluster.agents[name], seed_agent, timeout)
        if err:
            with lock:
                errors[name] = err

    threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in joiners]
    for t in threads:
        t.start()
    t0 = time.monotonic()
    barrier.wait(timeout=30)
    return t0, errors, threads


# --------------------------------------------------------------------------------------------------
# one run: one side, one fresh cluster


@dataclass
class Settings:
    n: int
    trials: int
    idle: float
    settle: float
    poll: float
    timeout: float
    seed: int
    murmur: str
    serf: str
    profile: str


def read_from(path: Path, offset: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def run_side(pg: h.ProcessGroup, tmp: Path, side: str, s: Settings, rnd: int) -> dict[str, Any]:
    """Everything measured on one fresh cluster of one side; agents stopped before returning."""
    run_dir = tmp / f"{side}-r{rnd}"
    run_dir.mkdir()
    taken: set[int] = set()
    backend: Backend = (MurmurBackend(pg, run_dir, taken, s.murmur) if side == "ours"
                        else SerfBackend(pg, run_dir, taken, s.serf, s.profile))
    cl = Cluster(backend, s.poll)
    r: dict[str, Any] = {"label": backend.label, "n": s.n, "load_before": loadavg()}
    names = [f"n{i:02d}" for i in range(s.n)]
    seed = names[0]
    try:
        t_start = time.monotonic()
        err = cl.start(names, START_TIMEOUT_S)
        if err:
            r["error"] = err
            return r
        r["start_all_ready_s"] = time.monotonic() - t_start
        r["timers"] = backend.timers(cl.agents[seed])
        r["startup_cpu_s"] = cpu_of([cl.agents[n].pid for n in names]) / s.n

        # 1. cold convergence
        t0, join_errors, threads = join_all_at_once(cl, names[1:], seed, timeout=30.0)
        conv = cl.poll_until(names, lambda v: count_status(v) >= s.n, s.timeout, t0, "converge")
        for t in threads:
            t.join(timeout=max(0.1, 30.0 - (time.monotonic() - t0)))
        r["join_errors"] = dict(list(join_errors.items())[:5])
        r["join_error_count"] = len(join_errors)
        r["converged_agents"] = len(conv)
        sp = spread(conv.values())
        r["converge_all_s"] = sp[2] if sp and len(conv) == s.n else None
        r["converge_first_s"] = sp[0] if sp else None

        # 2. idle cost (no polling during the window)
        time.sleep(s.settle)
        pids = [cl.agents[n].pid for n in cl.running_names()]
        w0, c0 = time.monotonic(), cpu_of(pids)
        time.sleep(s.idle)
        w1, c1 = time.monotonic(), cpu_of(pids)
        r["child_processes"] = sum(len(h.descendants(p)) for p in pids)
        rss = [k for k in (rss_kib(p) for p in pids) if k is not None]
        r["idle_window_s"] = w1 - w0
        r["idle_cpu_pct"] = 100.0 * (c1 - c0) / (w1 - w0) / len(pids)
        r["idle_cpu_pct_total"] = 100.0 * (c1 - c0) / (w1 - w0)
        r["rss_mib"] = statistics.median(rss) / 1024 if rss else None
        r["rss_mib_max"] = max(rss) / 1024 if rss else None
        cl.check_all("idle")

        # 3. kill -9 trials, N shrinking
        kills: list[dict[str, Any]] = []
        for vi in victims(s.n, s.trials, s.seed, rnd):
            victim = names[vi]
            observers = [n for n in cl.running_names() if n != victim]
            raised_before, max_before = health_summary(cl.health_scores(observers))
            tk = time.monotonic()
            cl.kill9(victim)
            seen = cl.poll_until(observers, lambda v, vic=victim: v.get(vic) == "failed", s.timeout, tk,
                                 f"kill {victim}")
            raised_after, max_after = health_summary(cl.health_scores(observers))
            k: dict[str, Any] = {"victim": victim, "n_before": len(observers) + 1,
                                 "observers": len(observers), "seen": len(seen),
                                 "health_raised_before": raised_before, "health_max_before": max_before,
                                 "health_raised_after": raised_after, "health_max_after": max_after}
            sp = spread(seen.values())
            if sp:
                k["first_s"], k["median_s"] = sp[0], sp[1]
            if sp and len(seen) == len(observers):
                k["all_s"] = sp[2]
            kills.append(k)
            time.sleep(BETWEEN_TRIALS_S)
        r["kills"] = kills
        r["detect_first_s"] = [k["first_s"] for k in kills if "first_s" in k]
        r["detect_median_s"] = [k["median_s"] for k in kills if "all_s" in k]
        r["detect_all_s"] = [k["all_s"] for k in kills if "all_s" in k]
        r["detect_timeouts"] = sum(1 for k in kills if "all_s" not in k)
        r["health_raised_after"] = [k["health_raised_after"] for k in kills]

        # 4. a fresh agent joins agent 0
        new = f"j{rnd:02d}"
        err = cl.start([new], START_TIMEOUT_S)
        if err:
            r["join_trial_error"] = err
            r["join_all_s"] = []
        else:
            observers = cl.running_names()
            tj = time.monotonic()
            jerr = backend.join(cl.agents[new], cl.agents[seed], 30.0)
            seen = cl.poll_until(observers, lambda v: v.get(new) == "alive", s.timeout, tj, "join")
            r["join_all_s"] = [max(seen.values())] if len(seen) == len(observers) and seen else []
            if jerr:
                r["join_trial_error"] = jerr
        cl.check_all("end")
        return r
    finally:
        r["load_after"] = loadavg()
        r["sweep_ms"] = [statistics.median(cl.sweeps_ms)] if cl.sweeps_ms else []
        r["poll_errors"] = cl.poll_errors
        r["false_failure_events"] = cl.false_failures[:20]
        r["false_failures"] = len({(e["observer"], e["member"], e["phase"]) for e in cl.false_failures})
        cl.close_clients()
        sizes = {n: (a.log.stat().st_size if a.log.exists() else 0) for n, a in cl.agents.items()}
        during = [(n, ln) for n, a in cl.agents.items() for ln in problem_lines(read_from(a.log, 0)[:sizes[n]])]
        pg.stop_all()
        after = [(n, ln) for n, a in cl.agents.items() for ln in problem_lines(read_from(a.log, sizes[n]))]
        r["log_problems"] = len(during)
        r["log_problems_shutdown"] = len(after)
        r["log_groups"] = [list(g) for g in group_problems(during)]
        r["log_groups_shutdown"] = [list(g) for g in group_problems(after, limit=4)]


def describe_run(r: dict[str, Any]) -> str:
    head = f"  round {r['round']} {r['label']:6s}:"
    if "error" in r:
        return f"{head} FAILED: {r['error']}"
    la = r.get("load_before") or (None,)
    lines = [f"{head} ready {h.fmt(r.get('start_all_ready_s'), '{:.1f}')} s "
             f"(start-up CPU {h.fmt(r.get('startup_cpu_s'), '{:.2f}')} s/agent); converged "
             f"{r.get('converged_agents')}/{r['n']} first {h.fmt(r.get('converge_first_s'), '{:.2f}')} s, "
             f"all {h.fmt(r.get('converge_all_s'), '{:.2f}')} s (join errors {r.get('join_error_count', 0)}); "
             f"idle {h.fmt(r.get('idle_cpu_pct'), '{:.3f}')} %/agent, RSS {h.fmt(r.get('rss_mib'), '{:.1f}')} MiB; "
             f"sweep {h.fmt(h.median(r.get('sweep_ms', [])), '{:.0f}')} ms; load {h.fmt(la[0], '{:.2f}')}"]
    for k in r.get("kills", []):
        lines.append(f"    kill -9 {k['victim']} (N={k['n_before']}): first {h.fmt(k.get('first_s'), '{:.2f}')} s, "
                     f"median {h.fmt(k.get('median_s'), '{:.2f}')} s, all {k['seen']}/{k['observers']} "
                     f"{h.fmt(k.get('all_s'), '{:.2f}')} s; health score raised on "
                     f"{k['health_raised_before']} (max {k['health_max_before']}) before, "
                     f"{k['health_raised_after']} (max {k['health_max_after']}) after")
    ja = r.get("join_all_s") or [None]
    lines.append(f"    new agent seen alive by all: {h.fmt(ja[0], '{:.2f}')} s"
                 + (f" ({r['join_trial_error']})" if r.get("join_trial_error") else ""))
    if r.get("false_failures"):
        ev = r["false_failure_events"][:3]
        lines.append(f"    FALSE FAILURES: {r['false_failures']} (observer, member, phase); e.g. {ev}")
    if r.get("join_errors"):
        lines.append(f"    join errors: {r['join_errors']}")
    for c, agent, ln in r.get("log_groups", [])[:4]:
        lines.append(f"    log x{c} (e.g. {agent}): {ln[:220]}")
    if r.get("log_problems_shutdown"):
        lines.append(f"    + {r['log_problems_shutdown']} warn/error lines at shutdown, e.g. "
                     f"{r['log_groups_shutdown'][0][2][:200]}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# entry points


def serf_version(binary: str) -> str:
    try:
        pkg = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "serf"], capture_output=True, text=True,
                             timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        pkg = ""
    try:
        out = subprocess.run([binary, "version"], capture_output=True, text=True, timeout=10).stdout
        v = out.splitlines()[0].strip() if out.strip() else "?"
    except (OSError, subprocess.TimeoutExpired):
        v = "?"
    return f"serf {pkg or '?'} (reports {v})"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-n", type=int, default=None, help=f"agents per cluster (default {DEFAULT_N}; --quick {QUICK_N})")
    p.add_argument("--trials", type=int, default=None,
                   help=f"kill -9 trials per round (default {FULL_TRIALS}; --quick {QUICK_TRIALS})")
    p.add_argument("--poll", type=float, default=POLL_S, help=f"membership poll interval, s (default {POLL_S})")
    p.add_argument("--timeout", type=float, default=PHASE_TIMEOUT_S, help="per-phase timeout, s (default 60)")
    p.add_argument("--seed", type=int, default=1, help="victim choice seed (same victims on both sides)")
    p.add_argument("--profile", default="lan", choices=["lan"], help="timing profile (only lan: murmur's default)")
    p.add_argument("--murmur", default=os.environ.get("MURMUR_BIN", str(h.REPO_ROOT / ".venv" / "bin" / "murmur")),
                   help="murmur executable (default: the repo's .venv/bin/murmur; env MURMUR_BIN)")
    p.add_argument("--serf", default=os.environ.get("SERF_BIN", "serf"), help="serf executable (env SERF_BIN)")
    p.add_argument("--only", choices=SIDES, help="run one side only (for debugging; never recorded)")


def settings_from(args: argparse.Namespace) -> tuple[Settings, int]:
    rounds = args.rounds if args.rounds is not None else (QUICK_ROUNDS if args.quick else FULL_ROUNDS)
    n = args.n if args.n is not None else (QUICK_N if args.quick else DEFAULT_N)
    s = Settings(n=n, trials=args.trials if args.trials is not None else (QUICK_TRIALS if args.quick else FULL_TRIALS),
                 idle=args.seconds if args.seconds is not None else (QUICK_IDLE_S if args.quick else FULL_IDLE_S),
                 settle=QUICK_SETTLE_S if args.quick else FULL_SETTLE_S, poll=args.poll, timeout=args.timeout,
                 seed=args.seed, murmur=args.murmur, serf=args.serf, profile=args.profile)
    return s, rounds


def run(args: argparse.Namespace) -> int:
    s, rounds = settings_from(args)
    if not 3 <= s.n <= MAX_N:
        print(f"-n must be within 3..{MAX_N}")
        return 2
    if s.poll <= 0 or s.idle <= 0 or s.timeout <= 0 or rounds < 1:
        print("--poll, --seconds, --timeout and --rounds must be positive")
        return 2
    sides = (args.only,) if args.only else SIDES
    if "peer" in sides and shutil.which(s.serf) is None:
        print("serf not installed (apt-get install serf)")
        return 2
    if "ours" in sides and not (os.path.exists(s.murmur) or shutil.which(s.murmur)):
        print(f"murmur binary not found: {s.murmur}")
        return 2
    try:
        import msgpack  # noqa: F401
    except ImportError:
        print("msgpack missing: run with the repo's venv, e.g. .venv/bin/python -m bench gossip")
        return 2
    from bench.dns import murmur_version

    versions = {"ours": murmur_version(s.murmur), "peer": serf_version(s.serf)}
    print(f"gossip: N={s.n}, {rounds} rounds (fresh cluster per side per round, sides alternating "
          + ", ".join(LABELS[x] for x in sides) + f"), {s.trials} kill -9 trials/round (N shrinking), "
          f"idle window {s.idle:g} s, poll {s.poll:g} s, profile {s.profile}; "
          + "; ".join(versions[x] for x in sides), flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="murmur-bench-gossip-"))
    try:
        with h.ProcessGroup() as pg:
            def one(side: str, case: int, rnd: int) -> dict[str, Any]:
                r = run_side(pg, tmp, side, s, rnd)
                r.update(side=side, case=case, round=rnd)
                print(describe_run(r), flush=True)
                return r

            per_run = (START_TIMEOUT_S + s.timeout * (s.trials + 2) + s.settle + s.idle
                       + s.trials * BETWEEN_TRIALS_S + 30)
            budget = rounds * len(sides) * per_run
            results = h.run_alternating(one, [s.n], rounds, sides=sides, max_seconds=budget)
        return report(args, s, rounds, sides, versions, results)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def latest_rows(summary: dict[Any, dict[str, dict[str, float | None]]], n: int, date: str) -> list[h.LatestRow]:
    per = summary.get(n, {})
    rows = []
    for key, case, spec in (("converge_all_s", f"N={n} cold convergence, s", "{:.2f}"),
                            ("detect_all_s", f"N={n} kill -9 -> all list failed, s (p50)", "{:.2f}"),
                            ("detect_first_s", f"N={n} kill -9 -> first lists failed, s (p50)", "{:.2f}"),
                            ("rss_mib", f"N={n} RSS per agent, MiB", "{:.1f}")):
        row = per.get(key)
        if row:
            rows.append(h.LatestRow(NAME, case, h.fmt(row.get("ours"), spec), h.fmt(row.get("peer"), spec),
                                    h.fmt(row.get("ratio"), "{:.3f}"), "—", "—", date))
    row = per.get("idle_cpu_pct")
    if row:
        # CPU columns: idle CPU µs per agent per second of wall time
        us = {k: (None if row.get(k) is None else row[k] * 1e4) for k in ("ours", "peer")}
        rows.append(h.LatestRow(NAME, f"N={n} idle CPU % of a core per agent (CPU cols: µs per agent-s)",
                                h.fmt(row.get("ours"), "{:.3f}"), h.fmt(row.get("peer"), "{:.3f}"),
                                h.fmt(row.get("ratio"), "{:.3f}"), h.fmt(us["ours"], "{:,.0f}"),
                                h.fmt(us["peer"], "{:,.0f}"), date))
    return rows


def print_timers(results: list[dict[str, Any]], sides: tuple[str, ...]) -> bool:
    """Print each side's gossip timers (every run's must agree) and say whether the sides match."""
    seen: dict[str, dict[str, str]] = {}
    consistent = True
    for r in results:
        t = r.get("timers")
        if t is None:
            continue
        if r["side"] in seen and seen[r["side"]] != t:
            consistent = False
        seen.setdefault(r["side"], t)
    print("gossip timers (memberlist names): " + ", ".join(f"{LABELS[x]}" for x in sides))
    for key in MEMBERLIST_LAN_TIMERS:
        print(f"  {key:<24}" + "".join(f"{seen.get(x, {}).get(key, '?'):>10}" for x in sides))
    equal = consistent and len({tuple(sorted(t.items())) for t in seen.values()}) <= 1
    print("  -> " + ("equal on both sides" if equal else "NOT EQUAL"))
    return equal


def report(args: argparse.Namespace, s: Settings, rounds: int, sides: tuple[str, ...], versions: dict[str, str],
           results: list[dict[str, Any]]) -> int:
    summary = summarize_runs(results, sides if len(sides) == 2 else (sides[0], "none"))
    table = h.format_table(summary, METRICS, case_label=lambda n: f"N={n}", ours_name="murmur", peer_name="serf")
    print()
    print(table)
    failed = [r for r in results if "error" in r]
    loads = [x for r in results for x in (r.get("load_before"), r.get("load_after")) if x]
    load_txt = (f"load average (1 min) during runs: median {statistics.median(la[0] for la in loads):.2f}, "
                f"max {max(la[0] for la in loads):.2f}") if loads else "load average unknown"
    sweeps = {x: h.median(v for r in results if r["side"] == x for v in r.get("sweep_ms", [])) for x in sides}
    notes = [f"N={s.n} agents per cluster, fresh cluster per side per round; {rounds} rounds alternating "
             "murmur, serf; serf `-profile=lan` (memberlist DefaultLANConfig), murmur default "
             "`gossip_lan.preset = \"lan\"` (same timers)",
             "convergence: all agents started and answering, then N-1 join calls to agent 0 released at once "
             "(murmur `PUT /v1/agent/join`, serf RPC `join`) -> time until every agent lists N alive",
             f"kill -9: {s.trials} trials per round, victims = same node indices on both sides, never agent 0; "
             "nothing restarted (N shrinks by 1 per trial); detection times pooled over all trials "
             "(p50, p90 nearest rank); then one fresh agent joins -> time until all list it alive",
             f"membership polled every {s.poll:g} s (murmur GET /v1/agent/members over keep-alive HTTP, serf "
             "msgpack RPC `members`), time taken when each observer's answer arrives; resolution = "
             "max(poll, sweep): median sweep " + ", ".join(f"{LABELS[x]} {h.fmt(sweeps[x], '{:.0f}')} ms"
                                                            for x in sides),
             f"idle: {s.settle:g} s settle, then {s.idle:g} s window without polling; CPU = utime+stime "
             "(/proc, all threads) / window / agents; RSS = median VmRSS",
             load_txt,
             "targets (issue 4): detection p50 <= 1.05x, p90 <= 1.15x serf; join propagation p50 <= 1.5x; "
             "idle CPU <= 2x serf; RSS <= 50 MiB per agent"]
    if failed:
        notes.append(f"{len(failed)} run(s) failed: " + "; ".join(f"{r['label']} round {r['round']}: "
                                                                    f"{r['error'].splitlines()[0]}" for r in failed[:3]))
    ff = [(r["label"], r["round"], e) for r in results for e in r.get("false_failure_events", [])]
    if ff:
        notes.append("false failures seen (label, round, event): " + "; ".join(map(str, ff[:3])))
    timers_equal = print_timers(results, sides)
    if not timers_equal:
        notes.append("the two sides ran DIFFERENT gossip timers: the figures are not comparable")
    for note in notes[5:]:
        print("NOTE: " + note)
    for side in sides:
        groups: dict[str, list[Any]] = {}
        for r in results:
            if r["side"] != side:
                continue
            for c, agent, ln in r.get("log_groups", []):
                g = groups.setdefault(problem_key(ln), [0, agent, ln])
                g[0] += c
        if groups:
            print(f"{LABELS[side]} agent logs, warn/error lines during runs (count, example):")
            for c, _agent, ln in sorted(groups.values(), key=lambda g: -g[0])[:6]:
                print(f"  x{c}: {ln[:240]}")
    result = {"bench": NAME, "n": s.n, "rounds": rounds, "trials_per_round": s.trials, "idle_s": s.idle,
              "poll_s": s.poll, "profile": s.profile, "versions": {x: versions[x] for x in sides},
              "summary": {f"N{n}": per for n, per in summary.items()}, "runs_failed": len(failed),
              "load_1min": [la[0] for la in loads], "timers_equal": timers_equal, "runs": results}
    both = len(sides) == 2 and not failed and timers_equal
    if args.no_record or args.only:
        print("(not recorded: " + ("--no-record" if args.no_record else "--only") + ")")
    elif not timers_equal:
        print("(not recorded in docs/benchmarks.md: the sides ran different gossip timers)")
    elif len(sides) == 2 and all(any(r["side"] == x and "error" not in r for r in results) for x in sides):
        info = h.machine_info(versions["peer"])
        date = info["date"].split(" ")[0]
        title = (f"gossip: murmur vs {versions['peer']}, N={s.n}, "
                 f"{'quick, ' if args.quick else ''}{rounds} rounds x {s.trials} kills, idle {s.idle:g} s")
        notes.insert(0, f"murmur: {versions['ours']}")
        path = h.append_report(h.Report(NAME, title, table, info, h.command_line(), latest_rows(summary, s.n, date),
                                        notes), Path(args.doc) if args.doc else h.DOC_PATH)
        print(f"appended to {path}")
    else:
        print("(not recorded in docs/benchmarks.md: a side has no completed run)")
    print("RESULT " + json.dumps(result, default=str))
    return 0 if (both or (args.only and not failed)) else 1
