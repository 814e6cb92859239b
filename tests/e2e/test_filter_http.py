"""`?filter=` on a real dev agent: the right items, a 400 for a bad expression, blocking reads."""

from __future__ import annotations

import threading
from typing import Any

import httpx

BAD = "Service == web and (("


def test_filter_on_every_endpoint_and_400_for_bad_ones(start_agent) -> None:  # type: ignore[no-untyped-def]
    agent = start_agent()
    for sid, tags, meta, port in (("web1", ["prod", "v2"], {"env": "prod"}, 8080),
                                  ("web2", ["staging"], {"env": "qa"}, 8081)):
        r = agent.put("/v1/agent/service/register",
                      json={"ID": sid, "Name": "web", "Tags": tags, "Meta": meta, "Port": port,
                            "Check": {"TTL": "30s", "Status": "passing" if sid == "web1" else "critical"}})
        assert r.status_code == 200, r.text
    for node, addr, rack in (("ext1", "10.1.0.1", "r1"), ("ext2", "10.1.0.2", "r2")):
        r = agent.put("/v1/catalog/register", json={"Node": node, "Address": addr, "NodeMeta": {"rack": rack},
                                                    "Service": {"Service": "db", "Tags": [rack], "Port": 5432}})
        assert r.status_code == 200, r.text

    def get(path: str, expr: str) -> Any:
        r = agent.get(path, params={"filter": expr})
        assert r.status_code == 200, (path, expr, r.text)
        return r.json()

    # agent: a map filtered by its values
    assert set(get("/v1/agent/services", '"prod" in Tags')) == {"web1"}
    assert set(get("/v1/agent/services", "Meta.env == qa or Port == 8080")) == {"web1", "web2"}
    assert set(get("/v1/agent/checks", "Status == `critical`")) == {"service:web2"}
    assert set(get("/v1/agent/checks", 'ServiceID matches "1$"')) == {"service:web1"}
    # catalog
    assert [n["Node"] for n in get("/v1/catalog/nodes", 'Meta.rack == "r2"')] == ["ext2"]
    assert [n["Node"] for n in get("/v1/catalog/nodes", '"rack" not in Meta')] == ["e2e"]
    assert [n["Node"] for n in get("/v1/catalog/service/db", "NodeMeta.rack == r1")] == ["ext1"]
    assert [n["ServiceID"] for n in get("/v1/catalog/service/web", "ServicePort != 8080")] == ["web2"]
    assert get("/v1/catalog/services", '"r1" in ServiceTags') == {"db": ["r1"]}
    node = get("/v1/catalog/node/e2e", "Service == web and Port == 8081")
    assert node["Node"]["Node"] == "e2e" and set(node["Services"]) == {"web2"}
    # health
    assert [e["Service"]["ID"] for e in get("/v1/health/service/web", "Checks.Status == critical")] == ["web2"]
    assert [e["Service"]["ID"] for e in get("/v1/health/service/web", "not Checks.Status != passing")] == ["web1"]
    assert [e["Service"]["ID"] for e in get("/v1/health/service/web", '"v2" in Service.Tags')] == ["web1"]
    assert [c["CheckID"] for c in get("/v1/health/checks/web", "Status == passing")] == ["service:web1"]
    assert [c["CheckID"] for c in get("/v1/health/node/e2e", "ServiceName == web")] == ["service:web1",
                                                                                          "service:web2"]
    assert [c["CheckID"] for c in get("/v1/health/state/any", 'ServiceID == "web2"')] == ["service:web2"]
    assert get("/v1/health/state/passing", 'ServiceID == "web2"') == []
    assert get("/v1/catalog/connect/web", '"prod" in ServiceTags') == []
    assert get("/v1/health/ingress/web", "Node.Node != ``") == []
    # An empty filter is no filter (positive control for the 400s below).
    assert set(get("/v1/agent/services", "")) == {"web1", "web2"}

    paths = ["/v1/agent/services", "/v1/agent/checks", "/v1/catalog/nodes", "/v1/catalog/services",
             "/v1/catalog/service/web", "/v1/catalog/node/e2e", "/v1/catalog/connect/web",
             "/v1/health/service/web", "/v1/health/checks/web", "/v1/health/node/e2e", "/v1/health/state/any",
             "/v1/health/connect/web", "/v1/health/ingress/web"]
    for path in paths:
        for expr in (BAD, "NoSuchField == 1", "x" * 20000, "(" * 3000 + "Node == a" + ")" * 3000):
            r = agent.get(path, params={"filter": expr})
            assert r.status_code == 400, (path, expr[:40], r.status_code, r.text[:200])
            assert r.text.startswith("Failed to create boolean expression evaluator: "), r.text[:200]
    r = agent.get("/v1/catalog/nodes", params={"filter": "Nope == 1"})
    assert 'Selector "Nope" is not valid' in r.text
    # The agent is still fine after all that.
    assert set(get("/v1/agent/services", "Port == 8080")) == {"web1"}


def test_filtered_blocking_read_wakes_and_keeps_the_index(start_agent) -> None:  # type: ignore[no-untyped-def]
    agent = start_agent()
    assert agent.put("/v1/catalog/register", json={"Node": "a1", "Address": "10.2.0.1",
                                                   "NodeMeta": {"role": "app"}}).status_code == 200
    plain = agent.get("/v1/catalog/nodes")
    filt = agent.get("/v1/catalog/nodes", params={"filter": "Meta.role == app"})
    index = plain.headers["X-Consul-Index"]
    assert filt.headers["X-Consul-Index"] == index  # filtering does not change the index
    assert [n["Node"] for n in filt.json()] == ["a1"]

    got: dict[str, Any] = {}

    def block() -> None:
        got["r"] = httpx.get(agent.url + "/v1/catalog/nodes", timeout=60,
                             params={"filter": "Meta.role == app", "index": index, "wait": "30s"})

    t = threading.Thread(target=block)
    t.start()
    t.join(0.5)
    assert t.is_alive(), "a blocking read returned before anything changed"
    assert agent.put("/v1/catalog/register", json={"Node": "a2", "Address": "10.2.0.2",
                                                   "NodeMeta": {"role": "app"}}).status_code == 200
    t.join(30)
    assert not t.is_alive()
    r = got["r"]
    assert r.status_code == 200 and int(r.headers["X-Consul-Index"]) > int(index)
    assert [n["Node"] for n in r.json()] == ["a1", "a2"]
    # A bad filter on a blocking read is refused at once, not after the wait.
    r = agent.get("/v1/catalog/nodes", params={"filter": BAD, "index": r.headers["X-Consul-Index"], "wait": "30s"})
    assert r.status_code == 400
