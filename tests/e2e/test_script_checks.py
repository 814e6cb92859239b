"""Script checks: refused over HTTP unless enable_script_checks; enable_local_script_checks allows
them in config files only; when allowed they run (exit 0 passing, 1 warning, else critical)."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.procs import wait_for

pytestmark = pytest.mark.e2e


def script_check(cid: str, code: int) -> dict:  # type: ignore[type-arg]
    return {"Name": cid, "Args": ["/bin/sh", "-c", f"echo out-{cid}; exit {code}"], "Interval": "1s"}


def test_script_checks_over_http_and_config(tmp_path: Path, start_agent) -> None:  # type: ignore[no-untyped-def]
    local_only = tmp_path / "local"
    local_only.mkdir()
    (local_only / "a.toml").write_text(
        'enable_local_script_checks = true\n[[checks]]\nname = "cfg-script"\nargs = ["/bin/sh", "-c", "exit 1"]\n'
        'interval = "1s"\n')
    agent = start_agent(local_only, node="a")
    r = agent.put("/v1/agent/check/register", json=script_check("http-script", 0))
    assert r.status_code == 400 and "script checks are disabled" in r.text
    wait_for(lambda: agent.get("/v1/agent/checks").json()["cfg-script"]["Status"] == "warning", 30,
             what="the config file's script check ran (exit 1: warning)")

    both = tmp_path / "both"
    both.mkdir()
    (both / "a.toml").write_text("enable_script_checks = true\n")
    agent2 = start_agent(both, node="b")
    for cid, code, want in (("s0", 0, "passing"), ("s1", 1, "warning"), ("s2", 2, "critical")):
        assert agent2.put("/v1/agent/check/register", json=script_check(cid, code)).status_code == 200
        wait_for(lambda cid=cid, want=want: (  # type: ignore[misc]
            agent2.get("/v1/agent/checks").json()[cid]["Status"] == want
            and agent2.get("/v1/agent/checks").json()[cid]["Output"].strip() == f"out-{cid}"),
            30, what=f"{cid} {want}")
