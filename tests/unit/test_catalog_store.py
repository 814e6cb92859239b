"""catalog/commands.py (codec) and catalog/store.py (the FSM): round trips, hostile input, and the
apply rules that blocking reads depend on (per-table indexes move only on real changes)."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from murmur.catalog import commands as cmds
from murmur.catalog.commands import (
    IGNORE_FLAG,
    ApplyError,
    CheckSpec,
    CommandError,
    CommandType,
    Deregister,
    Register,
    ServiceSpec,
    UnknownCommand,
)
from murmur.catalog.store import TABLES, StateStore

# ---- strategies ----------------------------------------------------------------------------------
text = st.text(max_size=8)
ident = st.text(alphabet="abcdefgh0123:-", min_size=1, max_size=6)


def sorted_pairs(keys: st.SearchStrategy[str] = text, values: st.SearchStrategy[str] = text):
    """The canonical form of a map inside a spec: unique keys, sorted."""
    return st.dictionaries(keys, values, max_size=4).map(lambda d: tuple(sorted(d.items())))


service_specs = st.builds(
    ServiceSpec,
    id=ident, name=ident, tags=st.lists(text, max_size=4).map(tuple), address=text,
    port=st.integers(0, 65535), meta=sorted_pairs(),
    weights=st.tuples(st.integers(0, 100), st.integers(0, 100)), enable_tag_override=st.booleans(),
    tagged_addresses=st.lists(st.tuples(text, text, st.integers(0, 65535)), max_size=3).map(tuple),
    kind=text, proxy=text, connect=text, locality=text,
)
json_values = st.one_of(text, st.integers(-(2**31), 2**31), st.booleans(), st.lists(text, max_size=3))
check_specs = st.builds(
    CheckSpec,
    check_id=ident, name=text, status=st.sampled_from(["passing", "warning", "critical"]), notes=text,
    output=text, service_id=st.one_of(st.just(""), ident), type=text, interval=text, timeout=text,
    definition=st.dictionaries(text, json_values, max_size=4).map(lambda d: tuple(sorted(d.items()))),
)
registers = st.builds(
    Register,
    node=ident, address=text, node_id=text, datacenter=text, tagged_addresses=sorted_pairs(),
    node_meta=sorted_pairs(), service=st.one_of(st.none(), service_specs),
    checks=st.lists(check_specs, max_size=3).map(tuple), skip_node_update=st.booleans(),
)
deregisters = st.builds(Deregister, node=ident, service_id=st.one_of(st.just(""), ident),
                        check_id=st.one_of(st.just(""), ident))

# Arbitrary msgpack-able documents, to reach the decoder's field handling with wrong types.
msgpack_docs = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(), text, st.binary(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.one_of(text, st.sampled_from(
                                ["n", "a", "s", "c", "ta", "m", "i", "p", "t", "w", "e", "k", "d", "si", "ci", "px", "cn", "lo"])),
                                inner, max_size=6)),
    max_leaves=12,
)


# ---- codec ---------------------------------------------------------------------------------------
@given(service_specs)
def test_service_spec_round_trip(spec: ServiceSpec) -> None:
    assert cmds._service_from_map(msgpack.unpackb(msgpack.packb(cmds._service_to_map(spec)))) == spec


def test_service_without_mesh_fields_encodes_as_before_they_existed() -> None:
    # Logs and snapshots written before Proxy/Connect/Locality decode to the same specs, and a
    # service without them is encoded byte for byte as then.
    plain = ServiceSpec(id="web", name="web", port=80)
    assert set(cmds._service_to_map(plain)) == {"i", "n", "t", "a", "p", "m", "w", "e", "ta", "k"}
    proxied = ServiceSpec(id="p", name="p", kind="connect-proxy", proxy='{"DestinationServiceName":"web"}',
                          locality='{"Region":"r"}')
    m = cmds._service_to_map(proxied)
    assert (m["px"], m["lo"], "cn" in m) == ('{"DestinationServiceName":"web"}', '{"Region":"r"}', False)


@given(check_specs)
def test_check_spec_round_trip(spec: CheckSpec) -> None:
    assert cmds._check_from_map(msgpack.unpackb(msgpack.packb(cmds._check_to_map(spec)))) == spec


@given(registers)
def test_register_round_trip(cmd: Register) -> None:
    data = cmds.encode(cmd)
    assert data[0] == CommandType.REGISTER
    assert cmds.decode(data) == cmd


@given(deregisters)
def test_deregister_round_trip(cmd: Deregister) -> None:
    data = cmds.encode(cmd)
    assert data[0] == CommandType.DEREGISTER
    assert cmds.decode(data) == cmd


def test_decode_is_canonical_for_unsorted_maps() -> None:
    """Maps are canonicalised (sorted) on decode, so re-encoding a decoded command is stable."""
    spec = ServiceSpec(id="a", name="a", meta=(("z", "1"), ("a", "2")))
    once = cmds.decode(cmds.encode(Register(node="n", address="1.2.3.4", service=spec,
                                            node_meta=(("y", "1"), ("b", "2")))))
    assert isinstance(once, Register) and once.service is not None
    assert once.service.meta == (("a", "2"), ("z", "1"))
    assert once.node_meta == (("b", "2"), ("y", "1"))
    assert cmds.decode(cmds.encode(once)) == once


def _decode_only_command_error(data: bytes) -> None:
    try:
        out = cmds.decode(data)
    except CommandError:
        return
    assert isinstance(out, Register | Deregister | cmds.KV | cmds.Session | cmds.Txn)


@settings(max_examples=300)
@given(st.binary(max_size=64))
def test_decode_random_bytes_raises_only_command_error(data: bytes) -> None:
    _decode_only_command_error(data)


@settings(max_examples=300)
@given(st.sampled_from([CommandType.REGISTER, CommandType.DEREGISTER]), msgpack_docs)
def test_decode_wrongly_typed_fields_raise_only_command_error(kind: int, doc: object) -> None:
    _decode_only_command_error(bytes([kind]) + msgpack.packb(doc))


@pytest.mark.parametrize("body", [
    {"n": "x", "ta": [1]},  # a list where a map belongs
    {"n": "x", "m": "not a map"},
    {"n": "x", "s": {"i": "a", "n": "b", "p": float("inf")}},  # a port that is no integer
    {"n": "x", "s": {"i": "a", "n": "b", "m": [1, 2]}},
    {"n": "x", "s": [1]},
    {"n": "x", "c": [{"i": "c", "d": [1]}]},
    {"n": "x", "c": [[1]]},
    {"a": "no node"},
])
def test_decode_malformed_register_raises_command_error(body: dict) -> None:
    with pytest.raises(CommandError):
        cmds.decode(bytes([CommandType.REGISTER]) + msgpack.packb(body))
    # positive control: the same bytes with a well formed body decode
    assert isinstance(cmds.decode(bytes([CommandType.REGISTER]) + msgpack.packb({"n": "x"})), Register)


def test_decode_empty_and_truncated() -> None:
    good = cmds.encode(Register(node="n", address="1.2.3.4"))
    assert cmds.decode(good) == Register(node="n", address="1.2.3.4")
    with pytest.raises(CommandError):
        cmds.decode(b"")
    for cut in range(1, len(good)):
        with pytest.raises(CommandError):
            cmds.decode(good[:cut])
    with pytest.raises(CommandError):  # trailing bytes after the body
        cmds.decode(good + b"\x00")


@pytest.mark.parametrize("type_byte", [0x3F, 0x7E, 0x7F, 0x80, 0x81, 0xFF])
def test_unknown_type_byte(type_byte: int) -> None:
    with pytest.raises(UnknownCommand) as info:
        cmds.decode(bytes([type_byte]) + msgpack.packb({"n": "x"}))
    assert info.value.ignorable is bool(type_byte & IGNORE_FLAG)
    assert isinstance(info.value, CommandError)
    # positive control: the known types with the same body decode
    assert cmds.decode(bytes([CommandType.DEREGISTER]) + msgpack.packb({"n": "x"})) == Deregister("x")


@given(st.integers(max(CommandType) + 1, 255), st.binary(max_size=16))
def test_unknown_type_byte_whatever_the_body(type_byte: int, body: bytes) -> None:
    """A newer command's body format is unknown to us: the type byte alone decides skip or stop."""
    with pytest.raises(UnknownCommand) as info:
        cmds.decode(bytes([type_byte]) + body)
    assert info.value.ignorable is bool(type_byte & IGNORE_FLAG)


# ---- apply ---------------------------------------------------------------------------------------
class Log:
    """A store plus the next log index, so tests read like a sequence of writes."""

    def __init__(self) -> None:
        self.store = StateStore()
        self.index = 0

    def apply(self, cmd: Register | Deregister) -> object:
        self.index += 1
        return self.store.apply(self.index, cmds.encode(cmd))


WEB = ServiceSpec(id="web1", name="web", tags=("v1",), port=80)
API = ServiceSpec(id="api1", name="api", port=8080)


def reg(service: ServiceSpec | None = None, checks: tuple[CheckSpec, ...] = (), node: str = "n1",
        address: str = "10.0.0.1", **kw: object) -> Register:
    return Register(node=node, address=address, service=service, checks=checks, **kw)  # type: ignore[arg-type]


def test_register_node_service_and_checks() -> None:
    log = Log()
    assert log.apply(reg(node_id="id-1", datacenter="dc1", node_meta=(("rack", "a"),))) is True
    node = log.store.nodes["n1"]
    assert (node.id, node.address, node.datacenter, node.meta) == ("id-1", "10.0.0.1", "dc1", (("rack", "a"),))
    assert node.create_index == node.modify_index == 1
    assert log.store.table_index == {**{"nodes": 1, "services": 0, "checks": 0}, "kvs": 0, "acls": 0}

    chk = CheckSpec(check_id="service:web1", name="web check", status="passing", service_id="web1")
    node_chk = CheckSpec(check_id="serfHealth", name="Serf", status="passing")
    assert log.apply(reg(WEB, (chk, node_chk), skip_node_update=True)) is True
    svc = log.store.services["n1"]["web1"]
    assert svc.spec == WEB and svc.create_index == svc.modify_index == 2
    assert {c: r.spec for c, r in log.store.checks["n1"].items()} == {"service:web1": chk, "serfHealth": node_chk}
    rec = log.store.checks["n1"]["service:web1"]
    assert (rec.service_name, rec.service_tags) == ("web", ("v1",))
    assert log.store.checks["n1"]["serfHealth"].service_name == ""
    assert log.store.table_index == {**{"nodes": 1, "services": 2, "checks": 2}, "kvs": 0, "acls": 0}
    assert log.store.index_of("nodes", "services", "checks") == 2


def test_identical_reregister_moves_nothing() -> None:
    log = Log()
    chk = CheckSpec(check_id="service:web1", name="c", status="passing", service_id="web1")
    cmd = reg(WEB, (chk,), node_meta=(("k", "v"),))
    log.apply(cmd)
    before_tables = dict(log.store.table_index)
    before = (log.store.nodes["n1"], log.store.services["n1"]["web1"], log.store.checks["n1"]["service:web1"])
    for _ in range(3):
        assert log.apply(cmd) is True
    after = (log.store.nodes["n1"], log.store.services["n1"]["web1"], log.store.checks["n1"]["service:web1"])
    assert after == before
    assert log.store.table_index == before_tables
    assert log.store.last_index == 4  # the log still advanced

    # positive control: a changed port moves the services table and the record's ModifyIndex only
    assert log.apply(reg(ServiceSpec(id="web1", name="web", tags=("v1",), port=81), (chk,),
                         node_meta=(("k", "v"),))) is True
    svc = log.store.services["n1"]["web1"]
    assert (svc.create_index, svc.modify_index) == (1, 5)
    assert log.store.table_index == {**{"nodes": 1, "services": 5, "checks": 1}, "kvs": 0, "acls": 0}
    assert log.store.nodes["n1"].modify_index == 1
    assert log.store.checks["n1"]["service:web1"].modify_index == 1


def test_check_status_change_moves_only_checks_table() -> None:
    log = Log()
    log.apply(reg(WEB, (CheckSpec("service:web1", "c", "passing", service_id="web1"),)))
    log.apply(reg(WEB, (CheckSpec("service:web1", "c", "critical", output="boom", service_id="web1"),)))
    rec = log.store.checks["n1"]["service:web1"]
    assert (rec.spec.status, rec.spec.output, rec.create_index, rec.modify_index) == ("critical", "boom", 1, 2)
    assert log.store.table_index == {**{"nodes": 1, "services": 1, "checks": 2}, "kvs": 0, "acls": 0}


def test_node_change_moves_only_nodes_table() -> None:
    log = Log()
    log.apply(reg(WEB))
    log.apply(reg(address="10.0.0.9"))
    assert log.store.nodes["n1"].address == "10.0.0.9"
    assert (log.store.nodes["n1"].create_index, log.store.nodes["n1"].modify_index) == (1, 2)
    assert log.store.table_index == {**{"nodes": 2, "services": 1, "checks": 0}, "kvs": 0, "acls": 0}
    # skip_node_update leaves an existing node alone
    log.apply(reg(address="10.9.9.9", skip_node_update=True))
    assert log.store.nodes["n1"].address == "10.0.0.9"
    assert log.store.table_index["nodes"] == 2


def test_service_rename_refreshes_denormalised_check_fields() -> None:
    log = Log()
    log.apply(reg(WEB, (CheckSpec("service:web1", "c", "passing", service_id="web1"),)))
    log.apply(reg(ServiceSpec(id="web1", name="www", tags=("v2",), port=80)))
    rec = log.store.checks["n1"]["service:web1"]
    assert (rec.service_name, rec.service_tags, rec.modify_index) == ("www", ("v2",), 2)
    assert log.store.table_index["checks"] == 2


def test_check_on_unknown_service_is_an_apply_error() -> None:
    log = Log()
    orphan = CheckSpec(check_id="c1", name="c", service_id="nope")
    result = log.apply(reg(checks=(orphan,)))
    assert isinstance(result, ApplyError)
    assert "nope" in result.message and "c1" in result.message
    assert log.store.nodes == {} and log.store.checks == {}
    assert log.store.table_index == dict.fromkeys(TABLES, 0)
    assert log.store.last_index == 1  # the entry is consumed, its result is the error
    # positive control: with the service registered first (or in the same command), it applies
    assert log.apply(reg(ServiceSpec(id="nope", name="x"), (orphan,))) is True
    assert "c1" in log.store.checks["n1"]
    assert log.apply(reg(checks=(CheckSpec("c2", "c", service_id="nope"),))) is True


def test_register_without_node_or_service_id_is_an_apply_error() -> None:
    log = Log()
    assert isinstance(log.apply(Register(node="", address="1.1.1.1")), ApplyError)
    assert isinstance(log.apply(reg(ServiceSpec(id="", name="x"))), ApplyError)
    assert log.store.nodes == {}
    assert isinstance(log.apply(Deregister(node="")), ApplyError)
    assert log.apply(reg(ServiceSpec(id="x", name="x"))) is True


def test_deregister_service_removes_its_checks() -> None:
    log = Log()
    log.apply(reg(WEB, (CheckSpec("service:web1", "c", service_id="web1"),
                        CheckSpec("serfHealth", "s", "passing"))))
    log.apply(reg(API, (CheckSpec("service:api1", "c", service_id="api1"),)))
    assert log.apply(Deregister(node="n1", service_id="web1")) is True
    assert set(log.store.services["n1"]) == {"api1"}
    assert set(log.store.checks["n1"]) == {"service:api1", "serfHealth"}
    assert log.store.table_index == {**{"nodes": 1, "services": 3, "checks": 3}, "kvs": 0, "acls": 0}
    # deregistering what is already gone changes nothing
    assert log.apply(Deregister(node="n1", service_id="web1")) is True
    assert log.store.table_index == {**{"nodes": 1, "services": 3, "checks": 3}, "kvs": 0, "acls": 0}


def test_deregister_one_check() -> None:
    log = Log()
    log.apply(reg(WEB, (CheckSpec("a", "c", service_id="web1"), CheckSpec("b", "c", service_id="web1"))))
    assert log.apply(Deregister(node="n1", check_id="a")) is True
    assert set(log.store.checks["n1"]) == {"b"}
    assert "web1" in log.store.services["n1"]
    assert log.store.table_index == {**{"nodes": 1, "services": 1, "checks": 2}, "kvs": 0, "acls": 0}


def test_deregister_node_removes_everything_of_that_node() -> None:
    log = Log()
    log.apply(reg(WEB, (CheckSpec("service:web1", "c", service_id="web1"), CheckSpec("serfHealth", "s"))))
    log.apply(reg(API, (CheckSpec("service:api1", "c", service_id="api1"),), node="n2", address="10.0.0.2"))
    assert log.apply(Deregister(node="n1")) is True
    assert set(log.store.nodes) == {"n2"}
    assert "n1" not in log.store.services and "n1" not in log.store.checks
    assert [r.spec.id for r in log.store.all_services()] == ["api1"]
    assert [r.spec.check_id for r in log.store.all_checks()] == ["service:api1"]
    assert log.store.table_index == {**{"nodes": 3, "services": 3, "checks": 3}, "kvs": 0, "acls": 0}
    # an unknown node: nothing moves
    assert log.apply(Deregister(node="ghost")) is True
    assert log.store.table_index == {**{"nodes": 3, "services": 3, "checks": 3}, "kvs": 0, "acls": 0}


def test_index_must_increase() -> None:
    store = StateStore()
    data = cmds.encode(reg())
    assert store.apply(5, data) is True
    snap = store.snapshot()
    for bad in (5, 4, 0, -1):
        with pytest.raises(ValueError):
            store.apply(bad, cmds.encode(reg(address="9.9.9.9")))
    assert store.snapshot() == snap  # a refused index changes nothing
    assert store.apply(6, cmds.encode(reg(address="9.9.9.9"))) is True  # positive control
    assert store.nodes["n1"].address == "9.9.9.9"


def test_apply_corrupt_entry_raises_command_error_and_keeps_state() -> None:
    store = StateStore()
    store.apply(1, cmds.encode(reg()))
    snap = store.snapshot()
    with pytest.raises(CommandError):
        store.apply(2, b"\x00\xc1")
    with pytest.raises(UnknownCommand):
        store.apply(2, bytes([0x85]) + msgpack.packb({}))
    assert store.snapshot() == snap
    assert store.apply(2, cmds.encode(reg(address="2.2.2.2"))) is True


def test_reads_are_ordered() -> None:
    log = Log()
    for node in ("n2", "n1"):
        for sid in ("b", "a"):
            log.apply(reg(ServiceSpec(id=sid, name="svc"), (CheckSpec(f"z{sid}", "c", service_id=sid),
                                                            CheckSpec(f"y{sid}", "c", service_id=sid)),
                          node=node))
    assert [(r.node, r.spec.id) for r in log.store.all_services()] == [
        ("n1", "a"), ("n1", "b"), ("n2", "a"), ("n2", "b")]
    assert [c.spec.check_id for c in log.store.node_checks("n2")] == ["ya", "yb", "za", "zb"]
    assert log.store.index_of("nodes") >= 1
    assert StateStore().index_of("nodes") == 1  # never below 1


def _state(store: StateStore) -> tuple:
    return (store.nodes, store.services, store.checks, store.table_index, store.last_index)


def test_snapshot_restore_round_trip() -> None:
    log = Log()
    log.apply(reg(WEB, (CheckSpec("service:web1", "c", "passing", service_id="web1",
                                  definition=(("HTTP", "http://x"), ("Header", {"A": ["b"]}))),),
                  tagged_addresses=(("lan", "10.0.0.1"),), node_meta=(("k", "v"),), node_id="id"))
    log.apply(reg(ServiceSpec(id="t", name="t", meta=(("a", "b"),), tagged_addresses=(("lan", "1.1.1.1", 5),)),
                  node="n2", address="10.0.0.2"))
    log.apply(reg(API))
    log.apply(Deregister(node="n1", service_id="api1"))
    restored = StateStore.restore(log.store.snapshot())
    assert _state(restored) == _state(log.store)
    assert restored.snapshot() == log.store.snapshot()
    # and the restored store behaves the same from here on
    nxt = cmds.encode(reg(API))
    assert restored.apply(log.index + 1, nxt) == log.store.apply(log.index + 1, nxt)
    assert _state(restored) == _state(log.store)


@settings(max_examples=60)
@given(st.lists(st.one_of(registers, deregisters), max_size=12))
def test_snapshot_restore_after_any_history(history: list[Register | Deregister]) -> None:
    log = Log()
    for cmd in history:
        result = log.apply(cmd)
        assert result is True or isinstance(result, ApplyError)
    restored = StateStore.restore(log.store.snapshot())
    assert _state(restored) == _state(log.store)
    # table indexes never run ahead of the log, and record indexes are within the log
    assert all(0 <= i <= log.store.last_index for i in log.store.table_index.values())
    for rec in log.store.all_services():
        assert 1 <= rec.create_index <= rec.modify_index <= log.store.last_index


def test_kv_set_cas_delete_and_indexes() -> None:
    st_ = StateStore()
    enc = cmds.encode
    assert st_.apply(1, enc(cmds.KV(cmds.KVOp.CAS, "a", b"1", index=0))) is True  # cas=0: create only
    assert st_.apply(2, enc(cmds.KV(cmds.KVOp.CAS, "a", b"2", index=0))) is False  # exists now
    assert st_.kvs["a"].value == b"1" and st_.table_index["kvs"] == 1  # a failed CAS leaves the index
    assert st_.apply(3, enc(cmds.KV(cmds.KVOp.CAS, "a", b"3", index=1))) is True
    assert (st_.kvs["a"].create_index, st_.kvs["a"].modify_index) == (1, 3)
    st_.apply(4, enc(cmds.KV(cmds.KVOp.SET, "a/b", b"x", flags=42)))
    st_.apply(5, enc(cmds.KV(cmds.KVOp.SET, "ab", b"y")))
    assert st_.apply(6, enc(cmds.KV(cmds.KVOp.DELETE_CAS, "ab", index=4))) is False
    assert st_.apply(7, enc(cmds.KV(cmds.KVOp.DELETE_TREE, "a/"))) is True
    assert sorted(st_.kvs) == ["a", "ab"]
    restored = StateStore.restore(st_.snapshot())
    assert restored.kvs == st_.kvs and restored.table_index == st_.table_index


def test_service_index_moves_only_for_changes_that_touch_that_service() -> None:
    st_ = StateStore()
    enc = cmds.encode
    n = 0

    def put(cmd: cmds.Command) -> int:
        nonlocal n
        n += 1
        st_.apply(n, enc(cmd))
        return n

    web = put(cmds.Register("n1", "10.0.0.1", service=cmds.ServiceSpec("web", "web")))
    put(cmds.Register("n2", "10.0.0.2", service=cmds.ServiceSpec("db", "db")))
    assert st_.index_of_service("web") == web
    for i in range(10):  # writes to another service, even on the same node, leave web's index alone
        put(cmds.Register("n1", "10.0.0.1", service=cmds.ServiceSpec(f"other{i}", "other", port=i),
                          skip_node_update=True))
    assert st_.index_of_service("web") == web
    # Its own check, a node check on its node, and the node itself all move it.
    chk = put(cmds.Register("n1", "10.0.0.1", skip_node_update=True,
                            checks=(cmds.CheckSpec("c1", "c1", "critical", service_id="web"),)))
    assert st_.index_of_service("web") == chk
    node_chk = put(cmds.Register("n1", "10.0.0.1", skip_node_update=True, checks=(cmds.CheckSpec("maint", "m"),)))
    assert st_.index_of_service("web") == node_chk and st_.index_of_service("db") < node_chk
    gone = put(cmds.Deregister("n1", service_id="web"))
    assert st_.index_of_service("web") == gone
    assert StateStore.restore(st_.snapshot()).service_index == st_.service_index
