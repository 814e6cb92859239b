"""catalog/queries.py: the health rule, `?passing`, tag filters, the orders clients observe and the
JSON shapes Consul clients read (key sets from consul-compat.md, exact where the doc says exact)."""

from __future__ import annotations

import json

import pytest
from murmur.catalog import commands as cmds
from murmur.catalog import queries as q
from murmur.catalog.commands import CheckSpec, Deregister, Register, ServiceSpec
from murmur.catalog.store import StateStore


class Log:
    def __init__(self) -> None:
        self.store = StateStore()
        self.index = 0

    def apply(self, cmd: Register | Deregister) -> None:
        self.index += 1
        assert self.store.apply(self.index, cmds.encode(cmd)) is True


def reg(node: str, service: ServiceSpec | None = None, *checks: CheckSpec, address: str = "") -> Register:
    return Register(node=node, address=address or f"10.0.0.{node[-1]}", datacenter="dc1", service=service,
                    checks=checks)


def svc(sid: str, name: str = "web", tags: tuple[str, ...] = (), **kw: object) -> ServiceSpec:
    return ServiceSpec(id=sid, name=name, tags=tags, **kw)  # type: ignore[arg-type]


def chk(cid: str, status: str, service_id: str = "") -> CheckSpec:
    return CheckSpec(check_id=cid, name=cid, status=status, service_id=service_id)


def instances(store: StateStore, only_passing: bool = False, tag: str | None = None) -> list[tuple[str, str]]:
    return [(n.name, r.spec.id) for n, r in q.healthy_instances(store, "web", tag, only_passing)]


# ---- the health rule -----------------------------------------------------------------------------
def test_service_check_status_decides_health() -> None:
    log = Log()
    log.apply(reg("n1", svc("a"), chk("ca", "passing", "a")))
    log.apply(reg("n2", svc("b"), chk("cb", "warning", "b")))
    log.apply(reg("n3", svc("c"), chk("cc", "critical", "c")))
    log.apply(reg("n4", svc("d")))  # no checks at all: passing
    assert instances(log.store) == [("n1", "a"), ("n2", "b"), ("n4", "d")]
    assert instances(log.store, only_passing=True) == [("n1", "a"), ("n4", "d")]


def test_node_check_critical_makes_every_instance_on_the_node_unhealthy() -> None:
    log = Log()
    log.apply(reg("n1", svc("a"), chk("ca", "passing", "a"), chk("serfHealth", "passing")))
    log.apply(reg("n2", svc("b"), chk("cb", "passing", "b"), chk("serfHealth", "passing")))
    assert instances(log.store) == [("n1", "a"), ("n2", "b")]  # positive control
    log.apply(reg("n1", None, chk("serfHealth", "critical")))
    assert instances(log.store) == [("n2", "b")]
    log.apply(reg("n2", None, chk("_node_maintenance", "critical")))
    assert instances(log.store) == []
    # a node check in warning is healthy, unless only_passing
    log.apply(reg("n1", None, chk("serfHealth", "warning")))
    assert instances(log.store) == [("n1", "a")]
    assert instances(log.store, only_passing=True) == []


def test_other_services_checks_do_not_count() -> None:
    log = Log()
    log.apply(reg("n1", svc("a"), chk("ca", "passing", "a")))
    log.apply(reg("n1", svc("other", name="db"), chk("cdb", "critical", "other")))
    assert instances(log.store) == [("n1", "a")]
    assert [c.spec.check_id for c in q.instance_checks(log.store, log.store.services["n1"]["a"])] == ["ca"]


@pytest.mark.parametrize(("statuses", "worst"), [
    ((), "passing"), (("passing",), "passing"), (("passing", "warning"), "warning"),
    (("warning", "critical", "passing"), "critical"), (("critical",), "critical"),
])
def test_aggregate_status(statuses: tuple[str, ...], worst: str) -> None:
    log = Log()
    log.apply(reg("n1", svc("a"), *(chk(f"c{i}", s, "a") for i, s in enumerate(statuses))))
    checks = q.instance_checks(log.store, log.store.services["n1"]["a"])
    assert q.aggregate_status(checks) == worst
    assert q.is_healthy(checks, only_passing=False) is (worst != "critical")
    assert q.is_healthy(checks, only_passing=True) is (worst == "passing")


# ---- health/service -----------------------------------------------------------------------------
def _health_world() -> Log:
    log = Log()
    log.apply(reg("n2", svc("web2", tags=("v1", "blue")), chk("service:web2", "warning", "web2"),
                  chk("serfHealth", "passing")))
    log.apply(reg("n1", svc("web1", tags=("v1",)), chk("service:web1", "passing", "web1"),
                  chk("serfHealth", "passing")))
    log.apply(reg("n1", svc("web0", tags=("v2",)), chk("service:web0", "critical", "web0")))
    log.apply(reg("n3", svc("api", name="api"), chk("serfHealth", "passing")))
    return log


def test_health_service_passing_and_tags() -> None:
    store = _health_world().store
    ids = lambda rows: [(r["Node"]["Node"], r["Service"]["ID"]) for r in rows]  # noqa: E731
    assert ids(q.health_service(store, "web")) == [("n1", "web0"), ("n1", "web1"), ("n2", "web2")]
    # ?passing drops critical AND warning entries
    assert ids(q.health_service(store, "web", passing=True)) == [("n1", "web1")]
    assert ids(q.health_service(store, "web", tags=["v1"])) == [("n1", "web1"), ("n2", "web2")]
    assert ids(q.health_service(store, "web", tags=["v1", "blue"])) == [("n2", "web2")]  # all tags must match
    assert ids(q.health_service(store, "web", tags=["v1"], passing=True)) == [("n1", "web1")]
    assert q.health_service(store, "web", tags=["nope"]) == []
    assert q.health_service(store, "missing") == []


def test_health_service_checks_include_node_checks_sorted_by_id() -> None:
    store = _health_world().store
    row = next(r for r in q.health_service(store, "web") if r["Service"]["ID"] == "web1")
    assert [(c["CheckID"], c["ServiceID"]) for c in row["Checks"]] == [("serfHealth", ""),
                                                                       ("service:web1", "web1")]


def test_health_service_json_shape() -> None:
    store = _health_world().store
    row = q.health_service(store, "web")[1]
    assert set(row) == {"Node", "Service", "Checks"}
    assert set(row["Node"]) == {"ID", "Node", "Address", "Datacenter", "TaggedAddresses", "Meta",
                                "CreateIndex", "ModifyIndex"}
    assert set(row["Service"]) == {"ID", "Service", "Tags", "Address", "TaggedAddresses", "Meta", "Port",
                                   "Weights", "EnableTagOverride", "Proxy", "Connect", "CreateIndex",
                                   "ModifyIndex"}
    assert row["Service"]["Weights"] == {"Passing": 1, "Warning": 1}
    for c in row["Checks"]:
        assert set(c) == CHECK_KEYS
    assert row["Node"]["TaggedAddresses"] == {"lan": "10.0.0.1", "lan_ipv4": "10.0.0.1", "wan": "10.0.0.1",
                                              "wan_ipv4": "10.0.0.1"}
    json.dumps(row)  # JSON-ready


CHECK_KEYS = {"Node", "CheckID", "Name", "Status", "Notes", "Output", "ServiceID", "ServiceName",
              "ServiceTags", "Type", "Interval", "Timeout", "ExposedPort", "Definition", "CreateIndex",
              "ModifyIndex"}


# ---- health/checks, node, state ----------------------------------------------------------------
def test_health_checks_sorted_by_check_id() -> None:
    log = Log()
    log.apply(reg("n2", svc("foo1", name="foo"), chk("service:foo1:3", "passing", "foo1"),
                  chk("service:foo1:1", "passing", "foo1")))
    log.apply(reg("n1", svc("foo1", name="foo"), chk("service:foo1:2", "critical", "foo1"),
                  chk("serfHealth", "passing")))
    rows = q.health_checks(log.store, "foo")
    assert [c["CheckID"] for c in rows] == ["service:foo1:1", "service:foo1:2", "service:foo1:3"]
    assert all(c["ServiceName"] == "foo" for c in rows)
    assert [c["CheckID"] for c in q.health_node(log.store, "n1")] == ["serfHealth", "service:foo1:2"]
    assert q.health_node(log.store, "nope") == []


def test_health_state() -> None:
    log = Log()
    log.apply(reg("n1", svc("a"), chk("a1", "passing", "a"), chk("a2", "critical", "a"), chk("a3", "warning", "a")))
    assert [c["CheckID"] for c in q.health_state(log.store, "any")] == ["a1", "a2", "a3"]
    assert [c["CheckID"] for c in q.health_state(log.store, "critical")] == ["a2"]
    assert [c["CheckID"] for c in q.health_state(log.store, "warning")] == ["a3"]
    assert [c["CheckID"] for c in q.health_state(log.store, "passing")] == ["a1"]
    with pytest.raises(ValueError, match="bogus"):
        q.health_state(log.store, "bogus")


# ---- catalog --------------------------------------------------------------------------------------
def test_catalog_services_exact() -> None:
    log = Log()
    log.apply(reg("n1", svc("consul", name="consul", port=8300)))
    log.apply(reg("n1", svc("s1", name="s1", tags=("master",))))
    log.apply(reg("n2", svc("s1b", name="s1", tags=("master",))))
    log.apply(reg("n1", svc("s2", name="s2")))
    assert q.catalog_services(log.store) == {"s1": ["master"], "s2": [], "consul": []}


def test_catalog_services_unions_tags_without_duplicates() -> None:
    log = Log()
    log.apply(reg("n1", svc("a", tags=("x", "y"))))
    log.apply(reg("n2", svc("b", tags=("y", "z"))))
    assert q.catalog_services(log.store) == {"web": ["x", "y", "z"]}


def test_catalog_service_order_tags_and_shape() -> None:
    log = Log()
    for node in ("n3", "n1", "n2"):
        for sid in ("b", "a"):
            log.apply(reg(node, svc(f"web-{sid}", tags=(sid,))))
    rows = q.catalog_service(log.store, "web")
    assert [(r["Node"], r["ServiceID"]) for r in rows] == [
        (n, f"web-{s}") for n in ("n1", "n2", "n3") for s in ("a", "b")]
    assert [(r["Node"], r["ServiceID"]) for r in q.catalog_service(log.store, "web", ["b"])] == [
        ("n1", "web-b"), ("n2", "web-b"), ("n3", "web-b")]
    assert q.catalog_service(log.store, "web", ["a", "b"]) == []
    assert set(rows[0]) == {
        "ID", "Node", "Address", "Datacenter", "TaggedAddresses", "NodeMeta", "ServiceKind", "ServiceID",
        "ServiceName", "ServiceTags", "ServiceAddress", "ServiceTaggedAddresses", "ServiceWeights",
        "ServiceMeta", "ServicePort", "ServiceSocketPath", "ServiceEnableTagOverride", "ServiceProxy",
        "ServiceConnect", "CreateIndex", "ModifyIndex"}
    assert rows[0]["Address"] == "10.0.0.1" and rows[0]["Datacenter"] == "dc1"
    assert rows[0]["ServiceWeights"] == {"Passing": 1, "Warning": 1}


def test_catalog_service_fields() -> None:
    log = Log()
    log.apply(reg("n1", svc("w", tags=("t",), address="10.1.1.1", port=81, meta=(("m", "v"),),
                            tagged_addresses=(("lan", "10.1.1.1", 81),), weights=(3, 2),
                            enable_tag_override=True)))
    row = q.catalog_service(log.store, "web")[0]
    assert {k: row[k] for k in ("ServiceTags", "ServiceAddress", "ServicePort", "ServiceMeta",
                                "ServiceTaggedAddresses", "ServiceWeights", "ServiceEnableTagOverride")} == {
        "ServiceTags": ["t"], "ServiceAddress": "10.1.1.1", "ServicePort": 81, "ServiceMeta": {"m": "v"},
        "ServiceTaggedAddresses": {"lan": {"Address": "10.1.1.1", "Port": 81}},
        "ServiceWeights": {"Passing": 3, "Warning": 2}, "ServiceEnableTagOverride": True}


def test_catalog_nodes_and_node() -> None:
    log = Log()
    log.apply(reg("n2", svc("b")))
    log.apply(Register(node="n1", address="10.0.0.1", datacenter="dc1", node_id="id1",
                       node_meta=(("rack", "r1"),), tagged_addresses=(("wan", "1.2.3.4"),)))
    log.apply(Register(node="n1", address="10.0.0.1", service=svc("z"), skip_node_update=True))
    log.apply(Register(node="n1", address="10.0.0.1", service=svc("a"), skip_node_update=True))
    nodes = q.catalog_nodes(log.store)
    assert [n["Node"] for n in nodes] == ["n1", "n2"]
    assert nodes[0]["TaggedAddresses"]["wan"] == "1.2.3.4"  # given: kept
    assert nodes[0]["TaggedAddresses"]["lan"] == "10.0.0.1"  # not given: the node address
    assert nodes[0]["Meta"] == {"rack": "r1"} and nodes[0]["ID"] == "id1"
    node = q.catalog_node(log.store, "n1")
    assert node is not None
    assert list(node["Services"]) == ["a", "z"]
    assert node["Services"]["a"]["CreateIndex"] == 4 and node["Services"]["a"]["Datacenter"] == "dc1"
    assert q.catalog_node(log.store, "ghost") is None


# ---- agent services ------------------------------------------------------------------------------
def test_agent_service_plain_is_exact() -> None:
    out = q.agent_service_json(None, spec=ServiceSpec(id="foo", name="foo"), datacenter="dc1")
    assert json.dumps(out, sort_keys=True, separators=(",", ":")) == (
        '{"Address":"","Datacenter":"dc1","EnableTagOverride":false,"ID":"foo","Meta":{},"Port":0,'
        '"Service":"foo","Tags":[],"Weights":{"Passing":1,"Warning":1}}')


def test_agent_service_optional_fields_only_when_set() -> None:
    log = Log()
    log.apply(reg("n1", svc("p", kind="connect-proxy", tagged_addresses=(("lan", "10.0.0.5", 80),))))
    out = q.agent_service_json(log.store.services["n1"]["p"], datacenter="dc1")
    assert out["Kind"] == "connect-proxy"
    assert out["TaggedAddresses"] == {"lan": {"Address": "10.0.0.5", "Port": 80}}
    plain = q.agent_service_json(None, spec=svc("x"), datacenter="dc1")
    assert "Kind" not in plain and "TaggedAddresses" not in plain


def test_check_json_shape() -> None:
    log = Log()
    log.apply(reg("n1", svc("a", tags=("t",)),
                  CheckSpec("c", "name", "warning", notes="n", output="o", service_id="a", type="http",
                            interval="10s", timeout="1s", definition=(("HTTP", "http://x"),))))
    out = q.check_json(log.store.checks["n1"]["c"])
    assert out == {"Node": "n1", "CheckID": "c", "Name": "name", "Status": "warning", "Notes": "n",
                   "Output": "o", "ServiceID": "a", "ServiceName": "web", "ServiceTags": ["t"], "Type": "http",
                   "Interval": "10s", "Timeout": "1s", "ExposedPort": 0, "Definition": {"HTTP": "http://x"},
                   "CreateIndex": 1, "ModifyIndex": 1}
