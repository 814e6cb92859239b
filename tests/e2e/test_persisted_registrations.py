"""API registrations survive an agent restart (Consul's rule); config-owned IDs stay config's."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.procs import AgentProc, wait_for

SERVICE = {"Name": "api-web", "ID": "api-web-1", "Port": 8080, "Tags": ["v1"],
           "Check": {"CheckID": "api-web-ttl", "Name": "web ttl", "TTL": "30s"}}
CHECK = {"ID": "api-node-ttl", "Name": "node ttl", "TTL": "30s"}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[AgentProc]:
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "svc.toml").write_text('[[services]]\nname = "from-config"\nid = "cfg-1"\nport = 9000\n')
    agent = AgentProc(tmp_path, [conf], ["--server", "--bootstrap-expect", "1"], node="p1", dev=False)
    try:
        agent.start()
        yield agent
    finally:
        agent.stop()


def services(a: AgentProc) -> dict:  # type: ignore[type-arg]
    r = a.get("/v1/agent/services")
    assert r.status_code == 200
    return r.json()  # type: ignore[no-any-return]


def test_api_registrations_come_back_after_a_restart(server: AgentProc) -> None:
    assert server.put("/v1/agent/service/register", json=SERVICE).status_code == 200
    assert server.put("/v1/agent/check/register", json=CHECK).status_code == 200
    assert server.put("/v1/agent/service/register", json={"Name": "gone", "ID": "gone-1"}).status_code == 200
    assert server.put("/v1/agent/service/deregister/gone-1").status_code == 200
    # An API registration that reuses a config ID: the config owns it again after the restart.
    assert server.put("/v1/agent/service/register", json={"Name": "from-config", "ID": "cfg-1",
                                                          "Port": 1}).status_code == 200
    assert set(services(server)) == {"api-web-1", "cfg-1"}

    server.stop()
    server.restart()
    after = services(server)
    assert set(after) == {"api-web-1", "cfg-1"}  # "gone-1" was deregistered before the stop
    assert after["api-web-1"]["Port"] == 8080 and after["api-web-1"]["Tags"] == ["v1"]
    assert after["cfg-1"]["Port"] == 9000  # the config file's definition, not the API's
    checks = server.get("/v1/agent/checks").json()
    assert {"api-web-ttl", "api-node-ttl"} <= set(checks)
    assert checks["api-web-ttl"]["ServiceID"] == "api-web-1"
    # ... and the catalog has them again through anti-entropy.
    wait_for(lambda: server.get("/v1/catalog/service/api-web").json(), 30, what="api-web in the catalog")

    # Deregistered now, it stays gone across the next restart.
    assert server.put("/v1/agent/service/deregister/api-web-1").status_code == 200
    assert server.put("/v1/agent/check/deregister/api-node-ttl").status_code == 200
    server.stop()
    server.restart()
    assert set(services(server)) == {"cfg-1"}
    assert not {"api-web-ttl", "api-node-ttl"} & set(server.get("/v1/agent/checks").json())


def test_a_damaged_registration_file_is_skipped_not_fatal(server: AgentProc) -> None:
    assert server.put("/v1/agent/service/register", json=SERVICE).status_code == 200
    assert server.put("/v1/agent/service/register", json={"Name": "b", "ID": "b-1"}).status_code == 200
    server.stop()
    files = sorted((server.tmp / "data-p1" / "services").glob("*.json"))
    assert len(files) == 2
    victim = next(f for f in files if b"api-web-1" in f.read_bytes())
    victim.write_bytes(b"{not json")
    assert oct(files[0].stat().st_mode & 0o777) == "0o600"
    server.restart()
    assert set(services(server)) == {"b-1", "cfg-1"}
    assert "skipping damaged persisted registration" in server.log_path.read_text()
