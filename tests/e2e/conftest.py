"""Fixtures for end-to-end tests: real agent processes and backends, always stopped by PID."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support.procs import AgentProc, Backend


@pytest.fixture
def start_agent(tmp_path: Path) -> Iterator[Callable[..., AgentProc]]:
    started: list[AgentProc] = []

    def start(*config_dirs: Path, extra: list[str] | None = None, node: str = "e2e", dev: bool = True,
              wait_leader: bool = True, env: dict[str, str] | None = None) -> AgentProc:
        a = AgentProc(tmp_path, list(config_dirs), extra, node=node, dev=dev)
        a.wait_leader = wait_leader
        a.env = env
        started.append(a)
        return a.start()

    yield start
    for a in started:
        a.stop()


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[Backend]:
    b = Backend(tmp_path)
    yield b
    b.stop()


# What a failed real-process test leaves for whoever reads CI's output: the agents' own account of
# membership, leadership and sessions (their full logs stay in tmp_path, which CI does not keep).
_TELLING = ("murmur.gossip", "WARNING", "ERROR", "leader", "session", "Traceback")
_LINES_PER_AGENT = 120


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    tmp = item.funcargs.get("tmp_path") if hasattr(item, "funcargs") else None
    if not isinstance(tmp, Path):
        return
    for log in sorted(tmp.glob("agent-*.log"))[:12]:
        lines = [ln for ln in log.read_text(errors="replace").splitlines()
                 if any(word in ln for word in _TELLING) and "DEBUG" not in ln]
        report.sections.append((f"agent log {log.name} (INFO+ on gossip, leadership, sessions; last "
                                f"{_LINES_PER_AGENT})", "\n".join(lines[-_LINES_PER_AGENT:])))
