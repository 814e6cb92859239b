"""Fuzzing the catalog command decoder (what RPC `apply` checks before anything reaches the Raft
log) and the replicated store that applies log entries.

Rules: `commands.decode` returns a command or raises CommandError. `StateStore.apply` returns a
result (True/False, an ApplyError, a list) or raises CommandError, and when it raises, the store
is exactly as it was: same snapshot, same last index (a server that cannot apply an entry stops
instead of diverging, so what a command does must be all or nothing); and whatever was applied,
the store can still be snapshotted. An entry that passed
`decode` must apply without raising at all: it is already in the log when the store sees it.
"""

from __future__ import annotations

from typing import Any

import msgpack
from hypothesis import strategies as st
from murmur.catalog import commands as cmds
from murmur.catalog.commands import (
    KV,
    CheckSpec,
    CommandError,
    Deregister,
    KVOp,
    Register,
    ServiceSpec,
    Session,
    SessionOp,
    Txn,
    TxnOp,
    TxnVerb,
)
from murmur.catalog.store import StateStore

from .fuzzing import byte_mutations, fuzz, mutated, values

SID = "11111111-2222-3333-4444-555555555555"


def seeded() -> StateStore:
    st_ = StateStore()
    for i, c in enumerate(BASE, 1):
        st_.apply(i, c)
    return st_


BASE = [
    cmds.encode(Register("n1", "10.0.0.1", node_id="6a2c6f5e-0000-4000-8000-000000000001", datacenter="dc1",
                         tagged_addresses=(("lan", "10.0.0.1"),), node_meta=(("rack", "a"),),
                         service=ServiceSpec("web1", "web", ("v1",), "10.0.0.1", 80, (("m", "1"),),
                                             tagged_addresses=(("lan", "10.0.0.1", 80),)),
                         checks=(CheckSpec("serfHealth", "Serf", "passing"),
                                 CheckSpec("web-check", "web", "passing", service_id="web1",
                                           definition=(("HTTP", "http://x"),))))),
    cmds.encode(KV(KVOp.SET, "a/b", b"v", flags=3)),
    cmds.encode(Session(SessionOp.CREATE, SID, "s", "n1", ("serfHealth",), ttl="10s")),
    cmds.encode(KV(KVOp.LOCK, "lock", b"", session=SID, seen=3)),
]
VALID = [
    *BASE,
    cmds.encode(Deregister("n1", service_id="web1")),
    cmds.encode(Deregister("n1", check_id="web-check")),
    cmds.encode(KV(KVOp.CAS, "a/b", b"w", index=2)),
    cmds.encode(KV(KVOp.DELETE_TREE, "a/")),
    cmds.encode(KV(KVOp.REAP, "", index=9)),
    cmds.encode(Session(SessionOp(1), SID)),
    cmds.encode(Txn((TxnOp(TxnVerb.SET, "t/1", b"x"), TxnOp(TxnVerb.CHECK_INDEX, "a/b", index=2),
                     TxnOp(TxnVerb.LOCK, "t/l", session=SID), TxnOp(TxnVerb.GET_TREE, "t/")), seen=4)),
    cmds.encode(cmds.Restore(StateStore().snapshot())),
    cmds.wrap_request("rid-1", cmds.encode(KV(KVOp.SET, "r", b"1"))),
]


def structure(data: bytes) -> tuple[int, Any]:
    return data[0], msgpack.unpackb(data[1:], raw=False, strict_map_key=False)


commands_ = st.one_of(
    st.binary(max_size=100),
    st.sampled_from(VALID).flatmap(byte_mutations),
    st.tuples(st.sampled_from([0, 1, 2, 3, 4, 5, 6, 7, 0x80]), values).map(lambda t: bytes([t[0]]) + msgpack.packb(t[1])),
    st.sampled_from(VALID).map(structure).flatmap(
        lambda s: mutated(s[1]).map(lambda v: bytes([s[0]]) + msgpack.packb(v))),
)


@fuzz(commands_)
def test_fuzz_catalog_command_decoder(data: bytes) -> None:
    try:
        cmd = cmds.decode(data)
    except CommandError:
        return
    assert cmds.decode(cmds.encode(cmd)) == cmd


@fuzz(st.lists(commands_, min_size=1, max_size=3))
def test_fuzz_store_applies_all_or_nothing(entries: list[bytes]) -> None:
    store = seeded()
    index = store.last_index
    for data in entries:
        index += 1
        before = (store.snapshot(), store.last_index)
        try:
            cmds.decode(data if not data or data[0] != cmds.CommandType.REQUEST else cmds.unwrap_request(data)[1])
            valid = True
        except CommandError:
            valid = False
        try:
            store.apply(index, data)
        except CommandError:
            assert not valid, "a command that decodes must apply"
            assert (store.snapshot(), store.last_index) == before
    store.snapshot()  # whatever was applied, the store can still be snapshotted (and so compacted)
