"""`murmur watch` and `murmur catalog datacenters` against a real dev agent."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from support.procs import MURMUR, ROOT, AgentProc, wait_for


@pytest.fixture
def agent(tmp_path: Path, start_agent) -> AgentProc:  # type: ignore[no-untyped-def]
    """A dev agent with an empty config dir (stopped by conftest's start_agent)."""
    conf = tmp_path / "conf"
    conf.mkdir()
    return start_agent(conf, node="w1")  # type: ignore[no-any-return]


def cli(a: AgentProc, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MURMUR, *args, "-http-addr", a.url], capture_output=True, text=True, timeout=60,
                          cwd=ROOT)


def test_catalog_datacenters(agent: AgentProc) -> None:
    run = cli(agent, "catalog", "datacenters")
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["dc1"]


def test_watch_without_a_handler_prints_the_view_once(agent: AgentProc) -> None:
    assert agent.put("/v1/agent/service/register", json={"Name": "web", "Port": 80}).status_code == 200
    wait_for(lambda: "web" in agent.get("/v1/catalog/services").json(), 30, what="web registered")
    run = cli(agent, "watch", "-type", "services")
    assert run.returncode == 0, run.stderr
    assert "web" in json.loads(run.stdout)
    bad = cli(agent, "watch", "-type", "service")
    assert bad.returncode != 0 and "-service is required" in bad.stderr


def test_watch_runs_the_handler_on_each_change(agent: AgentProc, tmp_path: Path) -> None:
    out = tmp_path / "calls"
    out.mkdir()
    # The handler stores each view it is given, named by CONSUL_INDEX.
    handler = f'{sys.executable} -c "import os,sys; open(os.path.join(\'{out}\', os.environ[\'CONSUL_INDEX\']), \'w\').write(sys.stdin.read())"'
    proc = subprocess.Popen([*MURMUR, "watch", "-type", "service", "-service", "web", "-passingonly",
                             "-http-addr", agent.url, "-wait", "2s", handler], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        def views() -> list[list[dict]]:  # type: ignore[type-arg]
            return [json.loads(p.read_text()) for p in sorted(out.iterdir(), key=lambda p: int(p.name))]

        first = wait_for(lambda: views(), 60, what="the first handler run")
        assert first[0] == []  # no web instances yet
        assert agent.put("/v1/agent/service/register", json={"Name": "web", "ID": "web-1", "Port": 80}
                         ).status_code == 200
        wait_for(lambda: any(v and v[0]["Service"]["ID"] == "web-1" for v in views()), 60, what="web-1 seen")
        runs = len(views())
        # A change elsewhere (another service) may or may not wake it, but a critical check on
        # web-1 must: -passingonly then gives an empty view again.
        assert agent.put("/v1/agent/check/register", json={"ID": "web-ttl", "Name": "t", "TTL": "60s",
                                                             "ServiceID": "web-1"}).status_code == 200
        assert agent.put("/v1/agent/check/fail/web-ttl").status_code == 200
        wait_for(lambda: len(views()) > runs and views()[-1] == [], 60, what="web-1 gone from the passing view")
        assert proc.poll() is None  # still watching
    finally:
        proc.kill()
        proc.wait(timeout=10)
