"""Real processes for end-to-end tests: murmur agents and backends on loopback, free ports, stopped by PID."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
MURMUR = [sys.executable, "-m", "murmur.cli.main"]
START_TIMEOUT = 60.0  # seconds; a dev agent starts in about 1 s alone, 3-5 s beside other
# test workers (CI runs e2e under pytest-xdist -n 3): 10x+ slack over the loaded case


_HANDED_OUT: set[int] = set()
# Below Linux's default ephemeral range (32768-60999), so no socket the kernel numbers for itself
# (an agent's outbound connection, another test's port-0 bind) can take a port we handed out
# between our check and the agent's bind; and never the same port twice in one test run.
_PORT_RANGE = (20000, 32767)


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _worker_slice(lo: int, hi: int) -> tuple[int, int]:
    """Under pytest-xdist each worker draws from its own slice of the range, so two workers never
    hand out the same port (each only remembers its own)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    if not worker.startswith("gw") or count <= 1:
        return lo, hi
    index = int(worker[2:]) % count
    width = (hi - lo + 1) // count
    return lo + index * width, lo + (index + 1) * width - 1


def free_port(host: str = "127.0.0.1") -> int:
    """A port free for both TCP and UDP on `host` (a loopback address) right now, outside the
    kernel's ephemeral range and not handed out before in this process."""
    lo, hi = _worker_slice(_PORT_RANGE[0], min(_PORT_RANGE[1], _ephemeral_low() - 1))
    rng = random.Random(os.getpid() ^ time.monotonic_ns())
    for _ in range(200):
        port = rng.randint(lo, hi)
        if port in _HANDED_OUT:
            continue
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                t.bind((host, port))
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                u.bind((host, port))
        except OSError:
            continue
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError("no free port found")


def wait_for(predicate, timeout: float, interval: float = 0.05, what: str = "condition"):  # type: ignore[no-untyped-def]
    """Poll `predicate` until it returns a truthy value; bounded in time and count."""
    deadline = time.monotonic() + timeout
    last = None
    for _ in range(int(timeout / interval) + 1):
        try:
            last = predicate()
        except Exception as exc:  # noqa: BLE001 - polled conditions may fail while starting
            last = exc
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            break
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


class AgentProc:
    def __init__(self, tmp: Path, config_dirs: list[Path], extra: list[str] | None = None, node: str = "e2e",
                 dev: bool = True, host: str = "127.0.0.1") -> None:
        self.node = node
        self.host = host
        self.http_port = free_port(host)
        self.dns_port = free_port(host)
        self.serf_port = free_port(host)
        self.server_port = free_port(host)
        self.tmp = tmp
        self.log_path = tmp / f"agent-{node}-{self.http_port}.log"
        self.args = [*MURMUR, "agent", *(["--dev"] if dev else ["--data-dir", str(tmp / f"data-{node}")]),
                     "--node", node, "--bind", host, "--http-port", str(self.http_port),
                     "--dns-port", str(self.dns_port), "--serf-port", str(self.serf_port),
                     "--server-port", str(self.server_port), "--log-level", "debug"]
        if host != "127.0.0.1":
            self.args += ["--client", host]
        for d in config_dirs:
            self.args += ["--config-dir", str(d)]
        self.args += extra or []
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"http://{host}:{self.http_port}"
        self.wait_leader = True  # start() waits for a known leader; servers still bootstrapping cannot
        # A client agent (neither --dev nor --server) learns the leader from servers; without
        # servers to join (gossip-only tests) it is ready once its HTTP API answers at all.
        self.has_servers = dev or "--server" in (extra or [])
        self.env: dict[str, str] | None = None

    def start(self, wait: bool = True) -> AgentProc:
        """Start the process; unless `wait` is False (a failpoint may kill it while it starts),
        wait until its HTTP API answers."""
        self.launch()
        if not wait:
            return self
        try:
            return self.wait_ready()
        except BaseException:
            self.stop()  # a start that timed out must not leave the agent running after the test
            raise

    def launch(self) -> AgentProc:
        """Start the process without waiting for it (start many, then wait_ready() on each)."""
        self.log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop(); appends across restarts
        env = {**os.environ, **self.env} if self.env else None
        self.proc = subprocess.Popen(self.args, stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        return self

    def wait_ready(self, timeout: float = START_TIMEOUT) -> AgentProc:
        wait_for(self._ready, timeout, what=f"agent on {self.url} (log {self.log_path})")
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"agent exited with {self.proc.returncode}:\n{self.log_path.read_text()}")
        r = httpx.get(self.url + "/v1/status/leader", timeout=1)
        if not self.has_servers:
            return True
        return r.status_code == 200 and (bool(r.json()) or not self.wait_leader)

    def restart(self, wait: bool = True) -> AgentProc:
        """Start again with the same ports, data dir and flags (after stop() or a kill)."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("still running")
        self.log.close()
        return self.start(wait)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)

    def get(self, path: str, **kw):  # type: ignore[no-untyped-def]
        return httpx.get(self.url + path, timeout=10, **kw)

    def put(self, path: str, **kw):  # type: ignore[no-untyped-def]
        return httpx.put(self.url + path, timeout=10, **kw)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        self.log.close()
        return self.proc.returncode

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")


class Backend:
    """A real HTTP server process (python -m http.server) a check can probe, stopped by PID."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.tmp = tmp
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "http.server", str(self.port), "--bind", "127.0.0.1"],
                                     cwd=self.tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def up() -> bool:
            with socket.socket() as s:
                s.settimeout(0.5)
                return s.connect_ex(("127.0.0.1", self.port)) == 0

        wait_for(up, 15, what="backend http server")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None
