"""agent/local_state.py: the agent's own services and checks, and anti-entropy (`sync_commands`)
against a real StateStore that applies the commands through their encoding."""

from __future__ import annotations

from murmur.agent.definitions import parse_service
from murmur.agent.local_state import LocalState, NodeInfo
from murmur.catalog import commands as cmds
from murmur.catalog.commands import CheckSpec, Command, Deregister, Register, ServiceSpec
from murmur.catalog.store import StateStore
from murmur.checks.definitions import from_api
from murmur.checks.status import CRITICAL, PASSING, WARNING


class Catalog:
    def __init__(self) -> None:
        self.store = StateStore()
        self.index = 0

    def apply(self, cmd: Command) -> object:
        self.index += 1
        return self.store.apply(self.index, cmds.encode(cmd))

    def sync(self, local: LocalState) -> list[Command]:
        """One anti-entropy pass: the commands it wanted, each applied."""
        out = local.sync_commands(self.store)
        for cmd in out:
            assert self.apply(cmd) is True, cmd
        return out


def make_local() -> LocalState:
    return LocalState(NodeInfo(name="me", id="11111111-2222-3333-4444-555555555555", address="10.0.0.1",
                               datacenter="dc1", meta=(("env", "test"), ("rack", "r1"))))


def web_local() -> LocalState:
    local = make_local()
    sdef = parse_service({"Name": "web", "ID": "web1", "Tags": ["v1"], "Port": 80, "Meta": {"z": "1", "a": "2"},
                          "Checks": [{"HTTP": "http://127.0.0.1/", "Interval": "10s", "Header": {"X": ["y"]}},
                                     {"TTL": "30s"}]})
    local.add_service(sdef.spec)
    for defn in sdef.checks:
        local.add_check(defn, now=0.0)
    local.add_check(from_api({"Name": "disk", "Args": ["/bin/true"], "Interval": "5s"}, allow_scripts=True), 0.0)
    return local


def test_first_sync_registers_node_services_and_checks_then_nothing() -> None:
    cat, local = Catalog(), web_local()
    first = cat.sync(local)
    assert [type(c).__name__ for c in first] == ["Register", "Register", "Register"]
    node = cat.store.nodes["me"]
    assert (node.id, node.address, node.datacenter, node.meta) == (
        "11111111-2222-3333-4444-555555555555", "10.0.0.1", "dc1", (("env", "test"), ("rack", "r1")))
    assert cat.store.services["me"]["web1"].spec == local.services["web1"]
    checks = {cid: r.spec for cid, r in cat.store.checks["me"].items()}
    assert set(checks) == {"service:web1:1", "service:web1:2", "disk"}
    assert checks["service:web1:1"].service_id == "web1" and checks["disk"].service_id == ""
    assert checks["service:web1:1"].status == CRITICAL  # Consul's initial status
    assert checks["service:web1:1"].type == "http" and checks["service:web1:1"].interval == "10s"
    assert cat.store.checks["me"]["service:web1:1"].service_name == "web"
    # second pass: the catalog already matches
    before = dict(cat.store.table_index)
    assert local.sync_commands(cat.store) == []
    assert cat.store.table_index == before


def test_status_change_is_synced_once() -> None:
    cat, local = Catalog(), web_local()
    cat.sync(local)
    local.checks["service:web1:2"].machine.force(PASSING, "updated")
    out = cat.sync(local)
    assert len(out) == 1 and isinstance(out[0], Register) and out[0].service is not None
    assert cat.store.checks["me"]["service:web1:2"].spec.status == PASSING
    assert cat.store.checks["me"]["service:web1:2"].spec.output == "updated"
    assert local.sync_commands(cat.store) == []
    # a node-level check change only writes the node checks
    local.checks["disk"].machine.force(WARNING, "slow")
    out = cat.sync(local)
    assert len(out) == 1 and isinstance(out[0], Register) and out[0].service is None
    assert [c.check_id for c in out[0].checks] == ["disk"]
    assert local.sync_commands(cat.store) == []


def test_catalog_only_service_and_check_are_deregistered_except_system_ones() -> None:
    cat, local = Catalog(), web_local()
    cat.sync(local)
    cat.apply(Register(node="me", address="10.0.0.1", service=ServiceSpec(id="consul", name="consul", port=8300),
                       checks=(CheckSpec("serfHealth", "Serf Health Status", PASSING),), skip_node_update=True))
    cat.apply(Register(node="me", address="10.0.0.1", service=ServiceSpec(id="stray", name="stray"),
                       checks=(CheckSpec("service:stray", "c", service_id="stray"),), skip_node_update=True))
    cat.apply(Register(node="me", address="10.0.0.1", checks=(CheckSpec("orphan", "c"),), skip_node_update=True))
    out = cat.sync(local)
    # the stray service goes (its check with it); the orphan node check goes; consul and serfHealth stay
    assert out == [Deregister(node="me", service_id="stray"), Deregister(node="me", check_id="orphan")]
    assert set(cat.store.services["me"]) == {"web1", "consul"}
    assert set(cat.store.checks["me"]) == {"service:web1:1", "service:web1:2", "disk", "serfHealth"}
    assert local.sync_commands(cat.store) == []


def test_other_nodes_are_left_alone() -> None:
    cat, local = Catalog(), web_local()
    cat.apply(Register(node="external", address="192.0.2.1", service=ServiceSpec(id="ext", name="ext"),
                       checks=(CheckSpec("ext-check", "c", service_id="ext"),)))
    cat.sync(local)
    assert local.sync_commands(cat.store) == []
    assert "ext" in cat.store.services["external"] and "ext-check" in cat.store.checks["external"]


def test_removed_service_is_deregistered_with_its_checks() -> None:
    cat, local = Catalog(), web_local()
    cat.sync(local)
    assert sorted(local.remove_service("web1")) == ["service:web1:1", "service:web1:2"]
    out = cat.sync(local)
    assert out == [Deregister(node="me", service_id="web1")]  # its checks go with it, no extra commands
    assert "web1" not in cat.store.services["me"]
    assert set(cat.store.checks["me"]) == {"disk"}
    assert local.sync_commands(cat.store) == []


def test_removed_check_is_deregistered() -> None:
    cat, local = Catalog(), web_local()
    cat.sync(local)
    assert local.remove_check("disk") is True
    assert local.remove_check("disk") is False
    assert cat.sync(local) == [Deregister(node="me", check_id="disk")]
    assert local.sync_commands(cat.store) == []


def test_node_change_is_synced() -> None:
    cat, local = Catalog(), web_local()
    cat.sync(local)
    local.node.address = "10.0.0.9"
    out = cat.sync(local)
    assert len(out) == 1 and isinstance(out[0], Register) and out[0].service is None and not out[0].checks
    assert cat.store.nodes["me"].address == "10.0.0.9"
    assert local.sync_commands(cat.store) == []


def test_catalog_edit_of_own_service_is_reverted() -> None:
    """The agent is authoritative for its own services (anti-entropy)."""
    cat, local = Catalog(), web_local()
    cat.sync(local)
    edited = ServiceSpec(id="web1", name="web", port=9999)
    cat.apply(Register(node="me", address="10.0.0.1", service=edited, skip_node_update=True))
    out = cat.sync(local)
    assert len(out) == 1
    assert cat.store.services["me"]["web1"].spec == local.services["web1"]


def test_readding_a_check_keeps_status_and_output() -> None:
    local = make_local()
    defn = from_api({"Name": "api", "HTTP": "http://x/", "Interval": "10s"})
    first = local.add_check(defn, now=0.0)
    first.machine.force(PASSING, "HTTP GET http://x/: 200 OK")
    again = local.add_check(from_api({"Name": "api", "HTTP": "http://x/", "Interval": "20s"}), now=5.0)
    assert local.checks["api"] is again
    assert (again.machine.status, again.machine.output) == (PASSING, "HTTP GET http://x/: 200 OK")
    assert again.defn.interval == 20.0  # the new definition applies
    # positive control: a new ID starts from the definition's status
    fresh = local.add_check(from_api({"Name": "other", "HTTP": "http://x/", "Interval": "10s"}), now=5.0)
    assert (fresh.machine.status, fresh.machine.output) == (CRITICAL, "")
    # ... and after removal the same ID starts over
    local.remove_check("api")
    assert local.add_check(defn, now=6.0).machine.status == CRITICAL


def test_readding_a_ttl_check_keeps_its_timer_when_ttl_is_unchanged() -> None:
    local = make_local()
    first = local.add_check(from_api({"Name": "t", "TTL": "30s"}), now=0.0)
    assert first.ttl is not None and first.ttl.deadline == 30.0
    same = local.add_check(from_api({"Name": "t", "TTL": "30s", "Notes": "n"}), now=20.0)
    assert same.ttl is first.ttl and same.ttl.deadline == 30.0
    changed = local.add_check(from_api({"Name": "t", "TTL": "60s"}), now=20.0)
    assert changed.ttl is not None and changed.ttl.deadline == 80.0


def test_readding_a_service_keeps_check_status_through_sync() -> None:
    """Re-registering an identical service must not flap its checks (consul-compat (d)3)."""
    cat, local = Catalog(), web_local()
    cat.sync(local)
    for c in local.checks.values():
        c.machine.force(PASSING, "ok")
    cat.sync(local)
    sdef = parse_service({"Name": "web", "ID": "web1", "Tags": ["v1"], "Port": 80, "Meta": {"a": "2", "z": "1"},
                          "Checks": [{"HTTP": "http://127.0.0.1/", "Interval": "10s", "Header": {"X": ["y"]}},
                                     {"TTL": "30s"}]})
    local.add_service(sdef.spec)
    for defn in sdef.checks:
        local.add_check(defn, now=1.0)
    assert local.sync_commands(cat.store) == []
    assert {r.spec.status for r in cat.store.checks["me"].values()} == {PASSING}


def test_check_update_interval_paces_output_only_changes() -> None:
    cat, local = Catalog(), web_local()
    local.check_update_interval = 300.0

    def sync(now: float) -> list[Command]:
        out = local.sync_commands(cat.store, now)
        for cmd in out:
            assert cat.apply(cmd) is True
        return out

    def catalog_check() -> CheckSpec:
        return cat.store.checks["me"]["service:web1:2"].spec

    sync(0.0)
    local.checks["service:web1:2"].machine.force(PASSING, "run 1")
    assert len(sync(10.0)) == 1 and catalog_check().output == "run 1"  # a status change: at once
    local.checks["service:web1:2"].machine.record(PASSING, "run 2")
    assert sync(20.0) == [] and catalog_check().output == "run 1"  # output alone: held back
    local.checks["service:web1:2"].machine.record(PASSING, "run 3")
    assert sync(309.0) == []
    assert len(sync(311.0)) == 1 and catalog_check().output == "run 3"  # the interval passed
    local.checks["service:web1:2"].machine.record(PASSING, "run 4")
    assert sync(312.0) == []
    local.checks["service:web1:2"].machine.force(CRITICAL, "down")
    assert len(sync(313.0)) == 1 and catalog_check().status == CRITICAL  # status: never held back
    # Positive control: with the interval 0, every output change is written.
    local.check_update_interval = 0.0
    local.checks["service:web1:2"].machine.force(CRITICAL, "down again")
    assert len(sync(314.0)) == 1 and catalog_check().output == "down again"


def test_reap_deregisters_services_critical_for_their_deregister_after() -> None:
    local = make_local()
    sdef = parse_service({"Name": "web", "ID": "web1",
                          "Check": {"TTL": "30s", "DeregisterCriticalServiceAfter": "90s"}})
    local.add_service(sdef.spec)
    local.add_check(sdef.checks[0], now=0.0)
    other = parse_service({"Name": "db", "ID": "db1", "Check": {"TTL": "30s"}})  # no deregister_after
    local.add_service(other.spec)
    local.add_check(other.checks[0], now=0.0)
    assert sdef.checks[0].deregister_critical_service_after == 90.0
    assert local.reap(0.0) == []  # critical since first seen at 0 (both start critical)
    assert local.reap(89.0) == []
    local.checks["service:web1"].machine.force(PASSING, "")
    assert local.reap(95.0) == []  # passing again: the clock restarts
    local.checks["service:web1"].machine.force(CRITICAL, "")
    assert local.reap(100.0) == [] and local.reap(189.0) == []
    assert local.reap(190.0) == ["web1"]  # db1 is critical as long, but has no deregister_after


def test_deregister_after_has_a_one_minute_minimum() -> None:
    assert from_api({"Name": "t", "TTL": "5s", "DeregisterCriticalServiceAfter": "10s"}).deregister_critical_service_after == 60.0
    assert from_api({"Name": "t", "TTL": "5s"}).deregister_critical_service_after == 0.0


def test_reregistration_keeps_the_reaper_clock() -> None:
    local = make_local()
    sdef = parse_service({"Name": "web", "ID": "web1", "Check": {"TTL": "30s", "DeregisterCriticalServiceAfter": "90s"}})
    local.add_service(sdef.spec)
    local.add_check(sdef.checks[0], now=0.0)
    assert local.reap(0.0) == []
    local.add_check(sdef.checks[0], now=50.0)  # a reload re-adds the unchanged check
    assert local.reap(90.0) == ["web1"]
