"""Consul behaviours py-consul 1.8.0's own tests rely on, checked against one real dev agent
(the whole suite runs in its own stage: tests/pyconsul/run.py)."""

from __future__ import annotations

import consul


def test_pyconsul_error_paths_and_peer_and_catalog_service_key(start_agent) -> None:  # type: ignore[no-untyped-def]
    agent = start_agent()
    c = consul.Consul(host="127.0.0.1", port=agent.http_port)

    # A check for a service the agent does not have: 404 (py-consul returns False), nothing added.
    r = agent.put("/v1/agent/check/register", json={"name": "foo", "ttl": "10s", "serviceid": "nope"})
    assert r.status_code == 404 and "does not exist" in r.text
    assert c.agent.check.register("foo", consul.Check.ttl("10s"), service_id="nope") is False
    assert c.agent.checks() == {}
    # Positive control: once the service exists the same check registers.
    assert c.agent.service.register("nope")
    assert c.agent.check.register("foo", consul.Check.ttl("10s"), service_id="nope") is True
    assert set(c.agent.checks()) == {"foo"}

    # A Datacenter in the register/deregister body is checked like ?dc=.
    r = agent.put("/v1/catalog/register", json={"Node": "x", "Address": "10.0.0.1", "Datacenter": "dc2"})
    assert r.status_code == 500 and "No path to datacenter" in r.text
    r = agent.put("/v1/catalog/deregister", json={"Node": "x", "Datacenter": "dc2"})
    assert r.status_code == 500
    # The catalog's service object is named by `Service` (and `dc1` in the body is fine).
    assert c.catalog.register("n1", "10.1.10.11", service={"service": "s1", "port": 8080}, dc="dc1") is True
    _, nodes = c.catalog.service("s1")
    assert [(n["Node"], n["ServicePort"]) for n in nodes] == [("n1", 8080)]

    # ?peer=<unknown> has no instances, with the index header still there; without it, the same
    # reads answer as before.
    for path in ("/v1/catalog/service/s1", "/v1/health/service/s1", "/v1/catalog/connect/s1"):
        r = agent.get(path + "?peer=unknown-peer")
        assert r.status_code == 200 and r.json() == [] and int(r.headers["X-Consul-Index"]) > 0
    assert len(agent.get("/v1/health/service/s1").json()) == 1


def test_connect_sidecar_registers_and_goes_with_its_parent(start_agent) -> None:  # type: ignore[no-untyped-def]
    agent = start_agent()
    c = consul.Consul(host="127.0.0.1", port=agent.http_port)
    assert c.agent.service.register("web", port=8080, connect={"sidecar_service": {}}) is True
    services = c.agent.services()
    assert set(services) == {"web", "web-sidecar-proxy"}
    side = services["web-sidecar-proxy"]
    assert (side["Kind"], side["Port"], side["Proxy"]["DestinationServiceID"]) == ("connect-proxy", 21000, "web")
    _, nodes = c.catalog.service("web-sidecar-proxy")
    assert nodes[0]["ServiceKind"] == "connect-proxy" and nodes[0]["ServiceProxy"]["LocalServicePort"] == 8080
    assert {ch for ch in c.agent.checks()} == {"service:web-sidecar-proxy:1", "service:web-sidecar-proxy:2"}
    # Re-registering the parent keeps the sidecar's port.
    assert c.agent.service.register("web", port=8080, connect={"sidecar_service": {}}) is True
    assert c.agent.services()["web-sidecar-proxy"]["Port"] == 21000
    assert c.agent.service.deregister("web") is True
    assert c.agent.services() == {} and c.agent.checks() == {}
    assert "web-sidecar-proxy" not in c.catalog.services()[1]
