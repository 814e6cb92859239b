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
