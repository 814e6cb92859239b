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
