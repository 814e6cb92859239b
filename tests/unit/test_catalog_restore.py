"""The RESTORE command (type 6): codec, and a store whose tables are replaced by a saved state."""

from __future__ import annotations

import pytest
from murmur.catalog import commands as cmds
from murmur.catalog.commands import KV, ApplyError, Deregister, KVOp, Register, Restore, ServiceSpec
from murmur.catalog.store import StateStore


def enc(cmd: cmds.Command) -> bytes:
    return cmds.encode(cmd)


def test_restore_is_type_6_and_round_trips() -> None:
    data = enc(Restore(b"\x01\x02state"))
    assert data[0] == 6 == cmds.CommandType.RESTORE
    assert cmds.decode(data) == Restore(b"\x01\x02state")
    with pytest.raises(cmds.CommandError):
        cmds.decode(bytes([6]) + b"\x81\xa1d\x01")  # {"d": 1}: data is not bytes


def test_restore_replaces_tables_moves_indexes_and_keeps_request_memory() -> None:
    st = StateStore()
    st.apply(1, enc(Register("n1", "10.0.0.1", service=ServiceSpec("web", "web"))))
    st.apply(2, enc(KV(KVOp.SET, "a", b"1")))
    st.apply(3, enc(KV(KVOp.SET, "b", b"2")))
    saved = st.snapshot()
    st.apply(4, cmds.wrap_request("rid-1", enc(KV(KVOp.SET, "a", b"changed"))))
    st.apply(5, enc(KV(KVOp.DELETE, "b")))
    st.apply(6, enc(Deregister("n1")))
    st.apply(7, enc(Register("n2", "10.0.0.2", service=ServiceSpec("db", "db"))))
    assert st.apply(8, enc(Restore(saved))) is True
    assert {k: r.value for k, r in st.kvs.items()} == {"a": b"1", "b": b"2"}
    assert st.kvs["a"].modify_index == 2  # records keep their own indexes
    assert set(st.nodes) == {"n1"} and set(st.services) == {"n1"}
    assert st.last_index == 8
    assert all(st.table_index[t] == 8 for t in ("nodes", "services", "checks", "kvs"))
    assert st.index_of_service("web") == 8 and st.index_of_service("db") == 8  # both woken
    # the request-ID memory is the log's: a retry of rid-1 is still answered, not re-applied
    assert st.apply(9, cmds.wrap_request("rid-1", enc(KV(KVOp.SET, "a", b"changed")))) is True
    assert st.kvs["a"].value == b"1"
    # the store goes on as usual, and its own snapshot round-trips
    assert st.apply(10, enc(KV(KVOp.SET, "c", b"3"))) is True
    assert StateStore.restore(st.snapshot()).kvs["c"].create_index == 10


def test_an_unreadable_state_is_an_apply_error_and_changes_nothing() -> None:
    st = StateStore()
    st.apply(1, enc(KV(KVOp.SET, "a", b"1")))
    before = st.snapshot()
    result = st.apply(2, enc(Restore(b"\x93\x01\x02\x03")))
    assert isinstance(result, ApplyError)
    assert {k: r.value for k, r in st.kvs.items()} == {"a": b"1"}
    assert st.last_index == 2  # the log position is consumed either way, on every server alike
    assert StateStore.restore(before).kvs == st.kvs
