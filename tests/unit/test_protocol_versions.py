"""The cluster protocol gate (agent/protocol.py) and an N-1 server's refusal of newer entries."""

from __future__ import annotations

import pytest
from murmur.agent.protocol import (
    PROTOCOL_MAX,
    PROTOCOL_MIN,
    REQUEST_IDS,
    cluster_protocol,
    protocol_tags,
    spoken,
)
from murmur.agent.server import CatalogFSM
from murmur.catalog import commands
from murmur.catalog.store import StateStore


def test_the_cluster_speaks_its_oldest_servers_protocol() -> None:
    assert cluster_protocol(PROTOCOL_MAX, [protocol_tags(PROTOCOL_MAX)] * 2) == PROTOCOL_MAX
    assert cluster_protocol(PROTOCOL_MAX, [protocol_tags(PROTOCOL_MAX), protocol_tags(PROTOCOL_MIN)]) == PROTOCOL_MIN
    assert cluster_protocol(PROTOCOL_MIN, []) == PROTOCOL_MIN
    assert spoken({}) == PROTOCOL_MIN and spoken({"vsn": "junk"}) == PROTOCOL_MIN


def test_an_old_server_refuses_a_request_entry_and_a_new_one_applies_it() -> None:
    inner = commands.encode(commands.KV(commands.KVOp.SET, "k", b"v"))
    entry = commands.wrap_request("client/1", inner)
    with pytest.raises(commands.UnknownCommand):
        CatalogFSM(StateStore(), protocol=REQUEST_IDS - 1).apply(1, entry)
    new = CatalogFSM(StateStore(), protocol=PROTOCOL_MAX)
    assert new.apply(1, entry) is True and new.store.kvs["k"].value == b"v"
    old = CatalogFSM(StateStore(), protocol=REQUEST_IDS - 1)
    assert old.apply(1, inner) is True  # the bare command both understand


def test_what_each_command_needs() -> None:
    from murmur.agent.protocol import required_protocol

    plain = [commands.KV(commands.KVOp.SET, "k", b"v"), commands.KV(commands.KVOp.DELETE_TREE, "k"),
             commands.Deregister(node="n1")]
    assert all(required_protocol(commands.encode(c)) == PROTOCOL_MIN for c in plain)
    newer = [commands.KV(commands.KVOp.LOCK, "k", b"v", session="s"), commands.KV(commands.KVOp.REAP, "", index=3),
             commands.Session(commands.SessionOp.CREATE, "0b0e2a54-2d1c-4d7e-9d7c-6c8f4f3a1b2c", node="n1"),
             commands.Restore(b"x")]
    assert all(required_protocol(commands.encode(c)) == REQUEST_IDS for c in newer)
    assert required_protocol(commands.wrap_request("r", commands.encode(plain[0]))) == REQUEST_IDS
    old = CatalogFSM(StateStore(), protocol=REQUEST_IDS - 1)
    with pytest.raises(commands.UnknownCommand):
        old.apply(1, commands.encode(newer[2]))
