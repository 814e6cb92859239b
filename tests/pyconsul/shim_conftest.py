"""Root conftest for py-consul's own test suite, run against `murmur agent --dev`.

tests/pyconsul/run.py copies this file over the sdist's root conftest.py (which starts Consul in
Docker). It defines the same fixtures with the same tuple shapes, but each test gets a fresh murmur
dev agent on 127.0.0.1:8500. The runner starts pytest inside its own network namespace
(`unshare -rn`), so that fixed port is private to this run, and with PYCONSUL_NETNS_PER_TEST=1
(the runner sets it) each test moves into a fresh network namespace of its own before its agent
starts: every agent has a loopback nobody else used. Agents are stopped by PID.

It also marks the tests listed in tests/pyconsul/exceptions.txt as (non-strict) expected failures
and records every test's outcome as JSON lines in $PYCONSUL_RESULTS for the runner's report.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import requests

ConsulInstance = collections.namedtuple("ConsulInstance", ["container", "port", "version"])

PORT = 8500
START_TIMEOUT = 20.0  # a dev agent answers in well under 1 s; this is slack, not a target
STOP_TIMEOUT = 10.0
# What py-consul's Docker fixture gives Consul in CONSUL_LOCAL_CONFIG.
AGENT_CONFIG = {"ports": {"https": -1, "dns": -1, "grpc_tls": -1}, "performance": {"raft_multiplier": 1},
                "enable_script_checks": True}
LOGS = Path(os.environ.get("PYCONSUL_LOGS", tempfile.gettempdir()))


def _exceptions() -> dict[str, str]:
    path = os.environ.get("PYCONSUL_EXCEPTIONS")
    out: dict[str, str] = {}
    if not path:
        return out
    for line in Path(path).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        test, _, reason = line.partition(" ")
        out[test] = reason.strip()
    return out


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    excepted = _exceptions()
    for item in items:
        key = item.nodeid.split("[", 1)[0]
        if key in excepted:
            item.add_marker(pytest.mark.xfail(reason=excepted[key], strict=False))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    path = os.environ.get("PYCONSUL_RESULTS")
    if not path:
        return
    outcome = None
    if report.when == "call" or (report.when == "setup" and not report.passed):
        if hasattr(report, "wasxfail"):
            outcome = "xpassed" if report.passed else "xfailed"
        else:
            outcome = report.outcome
    elif report.when == "teardown" and report.failed:
        outcome = "failed"
    if outcome is not None:
        with open(path, "a") as f:
            f.write(json.dumps({"test": report.nodeid, "when": report.when, "outcome": outcome,
                                "duration": round(report.duration, 3)}) + "\n")


@pytest.fixture(scope="session", autouse=True)
def _unset_consul_token():  # noqa: PT004 - as upstream's fixture
    os.environ.pop("CONSUL_HTTP_TOKEN", None)


def _port_free() -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", PORT)) != 0


class Agent:
    def __init__(self, name: str, config: dict | None = None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="murmur-pyconsul-"))
        (self.dir / "config.json").write_text(json.dumps({**AGENT_CONFIG, **(config or {})}))
        (self.dir / "config.json").chmod(0o600)  # it may hold a token
        LOGS.mkdir(parents=True, exist_ok=True)
        self.log_path = LOGS / f"{name}.log"
        self.log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "murmur.cli.main", "agent", "--dev", "--node", "pyconsul",
             "--config-dir", str(self.dir), "--http-port", str(PORT), "--log-level", "debug"],
            stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self) -> None:
        base = f"http://127.0.0.1:{PORT}/v1/"
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"murmur agent exited with {self.proc.returncode}; log {self.log_path}")
            try:
                r = requests.get(base + "status/leader", timeout=2)
                if r.status_code == 200 and r.json():
                    return
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"murmur agent not ready after {START_TIMEOUT}s; log {self.log_path}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=STOP_TIMEOUT)
        self.log.close()
        # The next test's agent binds the same port: make sure nothing still listens.
        deadline = time.monotonic() + STOP_TIMEOUT
        while not _port_free() and time.monotonic() < deadline:
            time.sleep(0.05)


CLONE_NEWNET = 0x40000000


def _fresh_netns() -> None:
    """Move this (single-threaded) test process into a new network namespace, loopback up. It needs
    the user namespace `unshare -r` gives; the agent started next inherits the namespace, and the
    previous test's namespace goes away with its agent."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unshare(CLONE_NEWNET): {os.strerror(err)}")
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True, timeout=10)


def _instance(request: pytest.FixtureRequest, token: str | None = None):
    if os.environ.get("PYCONSUL_NETNS_PER_TEST") == "1":
        _fresh_netns()
    # What py-consul's Docker fixture adds for an ACL-enabled Consul (default_policy stays "allow").
    config = {"primary_datacenter": "dc1", "acl": {"enabled": True, "tokens": {"initial_management": token}}}
    agent = Agent(request.node.name.replace("/", "_"), config if token else None)
    try:
        agent.wait_ready()
        headers = {"X-Consul-Token": token} if token else {}
        version = requests.get(f"http://127.0.0.1:{PORT}/v1/agent/self", headers=headers,
                               timeout=10).json()["Config"]["Version"]
        instance = ConsulInstance(agent.proc.pid, PORT, version.strip())
        yield instance if token is None else (instance, token)
    finally:
        agent.stop()


@pytest.fixture
def consul_instance(request):
    yield from _instance(request)


@pytest.fixture
def acl_consul_instance(request):
    import uuid

    yield from _instance(request, uuid.uuid4().hex)  # as upstream: a 32-hex initial management token


@pytest.fixture
def consul_port(consul_instance):
    return consul_instance.port, consul_instance.version
