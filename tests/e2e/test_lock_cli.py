"""`murmur lock` against a real dev agent: exclusion, exit status, release, and a lost lock."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from support.procs import MURMUR, ROOT, AgentProc, wait_for


@pytest.fixture
def agent(tmp_path: Path, start_agent) -> AgentProc:  # type: ignore[no-untyped-def]
    """A dev agent with an empty config dir (stopped by conftest's start_agent)."""
    conf = tmp_path / "conf"
    conf.mkdir()
    return start_agent(conf, node="l1")  # type: ignore[no-any-return]


def lock_cmd(a: AgentProc, *args: str) -> list[str]:
    return [*MURMUR, "lock", "-http-addr", a.url, *args]


def holder(a: AgentProc) -> str:
    r = a.get("/v1/kv/app/.lock")
    return r.json()[0].get("Session") or "" if r.status_code == 200 else ""


def test_lock_excludes_runs_the_child_and_releases(agent: AgentProc, tmp_path: Path) -> None:
    # The first child holds the lock until the test lets it go (a file appears; bounded at 60 s),
    # not for a fixed time: on a loaded box the second CLI's start-up alone took longer than that.
    release = tmp_path / "release"
    child = f"for i in $(seq 600); do [ -e {release} ] && exit 0; sleep 0.1; done; exit 9"
    first = subprocess.Popen(lock_cmd(agent, "app", child), cwd=ROOT, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: holder(agent), 60, what="the first holder")
        # Another holder cannot get it while the first runs (bounded wait, then exit 1)...
        second = subprocess.run(lock_cmd(agent, "-timeout", "1", "app", "true"), cwd=ROOT, capture_output=True,
                                text=True, timeout=60)
        assert second.returncode == 1 and "timed out" in second.stderr
        release.touch()
        assert first.wait(timeout=60) == 0
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(timeout=10)
    assert holder(agent) == ""  # released (not invalidated: no lock delay for the next one)
    third = subprocess.run(lock_cmd(agent, "-timeout", "30", "app", "exit 3"), cwd=ROOT, capture_output=True,
                           text=True, timeout=60)
    assert third.returncode == 3, third.stderr  # the child's own status
    assert agent.get("/v1/session/list").json() == []  # every session destroyed on the way out


def test_a_lost_lock_stops_the_child(agent: AgentProc, tmp_path: Path) -> None:
    marker = tmp_path / "finished"
    proc = subprocess.Popen(lock_cmd(agent, "-kill-grace", "2", "app", f"sleep 60 && touch {marker}"), cwd=ROOT,
                            stderr=subprocess.PIPE)
    try:
        sid = wait_for(lambda: holder(agent), 60, what="the holder")
        assert agent.put(f"/v1/session/destroy/{sid}").status_code == 200  # the session is gone
        assert proc.wait(timeout=60) == 1
        assert b"Lock lost" in (proc.stderr.read() if proc.stderr else b"")
        assert not marker.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
