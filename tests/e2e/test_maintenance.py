"""Maintenance mode against a real server agent with a data dir: the checks, their effect on DNS
and `?passing`, the CLI, and that maintenance survives a restart."""

from __future__ import annotations

import subprocess
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest
from support.procs import MURMUR, ROOT, wait_for

pytestmark = pytest.mark.e2e


def a_records(agent, name: str) -> list[str]:  # type: ignore[no-untyped-def]
    resp = dns.query.udp(dns.message.make_query(name, "A"), "127.0.0.1", port=agent.dns_port, timeout=5)
    return sorted(rr.address for rrset in resp.answer for rr in rrset)


def passing(agent, svc: str) -> list[str]:  # type: ignore[no-untyped-def]
    r = agent.get(f"/v1/health/service/{svc}?passing")
    assert r.status_code == 200, r.text
    return [e["Service"]["ID"] for e in r.json()]


def cli(agent, *args: str) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    return subprocess.run([*MURMUR, *args, "-http-addr", agent.url], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)


def test_maintenance_drops_instances_and_survives_restart(tmp_path: Path, start_agent) -> None:  # type: ignore[no-untyped-def]
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "web.toml").write_text('[[services]]\nname = "web"\nport = 8080\naddress = "127.0.0.21"\n')
    agent = start_agent(conf, node="m1", dev=False, extra=["--server", "--bootstrap-expect", "1"])
    # Positive control: healthy before maintenance.
    wait_for(lambda: passing(agent, "web") == ["web"], 30, what="web passing")
    assert a_records(agent, "web.service.murmur") == ["127.0.0.21"]

    # Bad input: enable is required and boolean; an unknown service is a 404.
    assert agent.put("/v1/agent/maintenance").status_code == 400
    assert agent.put("/v1/agent/maintenance?enable=maybe").status_code == 400
    assert agent.put("/v1/agent/service/maintenance/nope?enable=true").status_code == 404

    r = cli(agent, "maint", "-enable", "-service", "web", "-reason", "deploy 42")
    assert r.returncode == 0, r.stderr
    checks = agent.get("/v1/agent/checks").json()
    mc = checks["_service_maintenance:web"]
    assert (mc["Status"], mc["Notes"], mc["ServiceID"]) == ("critical", "deploy 42", "web")
    wait_for(lambda: passing(agent, "web") == [], 30, what="web dropped from ?passing")
    wait_for(lambda: a_records(agent, "web.service.murmur") == [], 30, what="web dropped from DNS")

    assert agent.put("/v1/agent/maintenance?enable=true&reason=kernel+upgrade").status_code == 200
    node_check = agent.get("/v1/agent/checks").json()["_node_maintenance"]
    assert (node_check["Status"], node_check["Notes"], node_check["ServiceID"]) == ("critical", "kernel upgrade", "")
    listing = cli(agent, "maint")
    assert "kernel upgrade" in listing.stdout and "deploy 42" in listing.stdout, listing.stdout

    # Restart: both maintenance checks come back from the data dir.
    assert agent.stop() == 0
    agent.restart()
    wait_for(lambda: {"_node_maintenance", "_service_maintenance:web"} <= set(agent.get("/v1/agent/checks").json()),
             30, what="maintenance checks restored")
    checks = agent.get("/v1/agent/checks").json()
    assert checks["_node_maintenance"]["Notes"] == "kernel upgrade"
    assert checks["_service_maintenance:web"]["Notes"] == "deploy 42"
    wait_for(lambda: "_node_maintenance" in {c["CheckID"] for c in agent.get("/v1/health/node/m1").json()},
             30, what="node maintenance in the catalog after restart")
    assert passing(agent, "web") == []
    assert a_records(agent, "web.service.murmur") == []

    # Node maintenance off: web still held back by its own maintenance.
    assert cli(agent, "maint", "-disable").returncode == 0
    assert "_node_maintenance" not in agent.get("/v1/agent/checks").json()
    wait_for(lambda: "_node_maintenance" not in {c["CheckID"] for c in agent.get("/v1/health/node/m1").json()},
             30, what="node maintenance gone from the catalog")
    assert passing(agent, "web") == []
    assert cli(agent, "maint", "-disable", "-service", "web").returncode == 0
    wait_for(lambda: passing(agent, "web") == ["web"], 30, what="web passing again")
    wait_for(lambda: a_records(agent, "web.service.murmur") == ["127.0.0.21"], 30, what="web back in DNS")

    # And off stays off across a restart.
    assert agent.stop() == 0
    agent.restart()
    wait_for(lambda: passing(agent, "web") == ["web"], 30, what="web passing after second restart")
    assert not {"_node_maintenance", "_service_maintenance:web"} & set(agent.get("/v1/agent/checks").json())
