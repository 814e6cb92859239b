"""Real `murmur agent` processes inside the lab's namespaces, and HTTP to them from the test.

Each agent runs as `ip netns exec <host> python -m murmur.cli.main agent ...` (ip execs the agent,
so the PID we hold is the agent's). Gossip and server RPC bind the host's lab address; HTTP and
DNS stay on 127.0.0.1 *inside* the host namespace, on the default ports (each namespace has its
own port space). The test reaches an agent with `Http(host)`, a client whose thread has entered
that namespace, so a network fault between hosts never cuts the test off from its agent (as a
client process next to its agent on a real machine).
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from .netns import Lab, setns

ROOT = Path(__file__).resolve().parents[2]
HTTP = "http://127.0.0.1:8500"
SERVER_PORT = 8300

# The chaos timing preset: memberlist's local preset with a 200 ms probe interval and
# suspicion_mult 6 (local's is 3), retry_join every second. Suspicion minimum at 7 members:
# 6 * max(1, log10 7) * 0.2 s = 1.2 s. With local's 3 (0.6 s), an agent whose event loop the
# 2-core CI box starved for ~0.7 s while two peers probed it was declared dead: a false dead that
# says more about the box than about gossip (agent logs show such stalls as "event loop stalled").
GOSSIP = {"preset": "local", "probe_interval": "200ms", "suspicion_mult": 6}
SUSPICION_MIN = 6 * 1.0 * 0.2
# The soak's preset: memberlist's local preset as it is (1 s probe interval, suspicion minimum
# 3 * max(1, log10 8) * 1 s = 3 s at 8 members), closer to production than the chaos preset.
GOSSIP_SOAK: dict[str, str] = {"preset": "local"}


class LabAgent:
    """One agent in one lab host; started, killed, paused and resumed by PID."""

    def __init__(self, lab: Lab, host: str, name: str, workdir: Path, server: bool, servers: list[str],
                 bootstrap_expect: int, env: dict[str, str] | None = None,
                 gossip: dict[str, str] | None = None) -> None:
        self.lab, self.host, self.name, self.server = lab, host, name, server
        self.ip = lab.ip(host)
        self.dir = workdir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.dir / "agent.log"
        conf: dict[str, Any] = {
            "node_name": name, "data_dir": str(self.dir / "data"), "bind_addr": self.ip,
            "retry_join": [lab.ip(s) for s in servers if s != host], "retry_interval": "1s",
            "gossip_lan": GOSSIP if gossip is None else gossip, "log_level": "DEBUG",
        }
        if server:
            conf |= {"server": True, "bootstrap_expect": bootstrap_expect}
        (self.dir / "agent.json").write_text(json.dumps(conf, indent=1))
        # The delay fault writes "LO HI" (ms) here; the agent re-reads it at most once a second
        # (agent/labdelay.py) and delays its gossip datagrams and Raft frames by that much.
        self.delay_path = self.dir / "delay"
        # The failpoint fault writes a MURMUR_FAILPOINTS spec here ("raft-after-fsync=kill@3");
        # the running agent arms it within half a second (agent/failpoints.py).
        self.failpoints_path = self.dir / "failpoints"
        self.env = {"MURMUR_LAB_DELAY_FILE": str(self.delay_path),
                    "MURMUR_LAB_FAILPOINTS_FILE": str(self.failpoints_path), **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.paused = False
        self.starts = 0

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        if self.running:
            raise RuntimeError(f"{self.name} is running")
        with open(self.log_path, "ab") as log:
            log.write(f"\n==== lab: start {self.starts + 1} at monotonic {time.monotonic():.3f}\n".encode())
            log.flush()
            cmd = ["ip", "netns", "exec", self.host, sys.executable, "-m", "murmur.cli.main", "agent",
                   "--config-file", str(self.dir / "agent.json")]
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                                         env={**os.environ, **self.env}, start_new_session=True)
        self.paused = False
        self.starts += 1

    def kill9(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=15)
        self.paused = False

    def stop(self) -> None:
        """SIGCONT + SIGTERM, then SIGKILL after 10 s: always leaves the process gone."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGCONT)
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill9()

    def delay(self, lo_ms: int, hi_ms: int) -> None:
        self.delay_path.write_text(f"{lo_ms} {hi_ms}\n")

    def undelay(self) -> None:
        self.delay_path.unlink(missing_ok=True)

    def arm(self, spec: str) -> None:
        self.failpoints_path.write_text(spec + "\n")

    def disarm(self) -> None:
        """Before any restart: a restarted agent would arm the file's failpoints again."""
        self.failpoints_path.unlink(missing_ok=True)

    def pause(self) -> None:
        if self.running:
            self.proc.send_signal(signal.SIGSTOP)  # type: ignore[union-attr]
            self.paused = True

    def resume(self) -> None:
        if self.running:
            self.proc.send_signal(signal.SIGCONT)  # type: ignore[union-attr]
        self.paused = False


class NsWorker:
    """A thread that lives in one lab namespace and runs the calls given to it, in order."""

    def __init__(self, ns: str) -> None:
        self.ns = ns
        self.jobs: queue.Queue[tuple[Callable[[], Any], queue.Queue[tuple[bool, Any]]] | None] = queue.Queue()
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"ns-{ns}")
        self.thread.start()

    def _run(self) -> None:
        setns(self.ns)
        while True:
            job = self.jobs.get()
            if job is None:
                return
            fn, out = job
            try:
                out.put((True, fn()))
            except BaseException as exc:  # noqa: BLE001 - handed back to the caller
                out.put((False, exc))

    def call(self, fn: Callable[[], Any], timeout: float = 60.0) -> Any:
        out: queue.Queue[tuple[bool, Any]] = queue.Queue()
        self.jobs.put((fn, out))
        ok, val = out.get(timeout=timeout)
        if not ok:
            raise val
        return val

    def close(self) -> None:
        self.jobs.put(None)


def in_ns(ns: str, fn: Callable[[], Any], timeout: float = 60.0) -> Any:
    """Run `fn` once in a fresh thread inside `ns`."""
    w = NsWorker(ns)
    try:
        return w.call(fn, timeout)
    finally:
        w.close()


class Cluster:
    """`servers` server agents on hosts 1..S, `clients` client agents after them."""

    def __init__(self, lab: Lab, workdir: Path, servers: int, clients: int,
                 env: dict[str, str] | None = None, gossip: dict[str, str] | None = None) -> None:
        assert lab.n >= servers + clients
        self.lab = lab
        server_hosts = lab.hosts[:servers]
        self.agents: list[LabAgent] = []
        for i, h in enumerate(server_hosts, 1):
            self.agents.append(LabAgent(lab, h, f"s{i}", workdir, True, server_hosts, servers, env, gossip))
        for i, h in enumerate(lab.hosts[servers:servers + clients], 1):
            self.agents.append(LabAgent(lab, h, f"c{i}", workdir, False, server_hosts, servers, env, gossip))
        self.by_host = {a.host: a for a in self.agents}
        self.by_name = {a.name: a for a in self.agents}
        self.last_wait = ""

    @property
    def servers(self) -> list[LabAgent]:
        return [a for a in self.agents if a.server]

    def start(self) -> None:
        for a in self.agents:
            a.start()

    def stop(self) -> None:
        for a in self.agents:
            try:
                a.stop()
            except Exception:  # noqa: BLE001 - stop the rest regardless
                a.kill9()

    # ---- observation (from inside each host) --------------------------------------------------------
    def get(self, agent: LabAgent, path: str, timeout: float = 2.0) -> httpx.Response:
        return in_ns(agent.host, lambda: httpx.get(HTTP + path, timeout=timeout), timeout + 5)  # type: ignore[no-any-return]

    def leader_of(self, agent: LabAgent) -> str:
        """The leader (a host name) `agent` knows, or ""."""
        if not agent.running or agent.paused:
            return ""
        try:
            r = self.get(agent, "/v1/status/leader", 1.0)
        except Exception:  # noqa: BLE001 - down, starting or cut off
            return ""
        if r.status_code != 200 or not r.json():
            return ""
        return self.lab.host_of_ip(r.json().rsplit(":", 1)[0]) or ""

    def leader(self) -> LabAgent | None:
        """The leader every live server agrees on, else None."""
        views = {self.leader_of(s) for s in self.servers if s.running and not s.paused}
        if len(views) == 1 and "" not in views:
            return self.by_host[views.pop()]
        return None

    def wait_stable(self, timeout: float) -> bool:
        """Every agent runs, knows the same leader, and the leader answers a consistent read;
        bounded in time. `last_wait` says which condition held us up last."""
        from concurrent.futures import ThreadPoolExecutor

        deadline = time.monotonic() + timeout
        self.last_wait = ""
        with ThreadPoolExecutor(len(self.agents)) as pool:
            while time.monotonic() < deadline:
                views = dict(zip([a.name for a in self.agents], pool.map(self.leader_of, self.agents), strict=True))
                leaders = set(views.values())
                if len(leaders) != 1 or "" in leaders:
                    self.last_wait = "leader views " + ",".join(f"{k}:{v[-2:] or '-'}" for k, v in views.items())
                    time.sleep(0.1)
                    continue
                lead = self.by_host[leaders.pop()]
                try:
                    if self.get(lead, "/v1/kv/_probe?consistent", 2.0).status_code in (200, 404):
                        return True
                    self.last_wait = "consistent read refused"
                except Exception as exc:  # noqa: BLE001 - keep polling
                    self.last_wait = f"consistent read: {exc!r}"[:80]
                time.sleep(0.1)
        return False
