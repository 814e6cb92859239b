"""Fuzzing the HTTP API's body decoders in-process (thousands of examples a second, where the
real-agent target in test_fuzz_agent.py manages hundreds): service and check definitions
(`/v1/agent/service/register`, `/v1/agent/check/register`), catalog registrations, transactions,
session creation and snapshot archives.

Rule: the decoder returns a value whose command encodes (what the agent will write), or raises
its clear error (DefinitionError, HTTPError with a 4xx status); anything else would be the
server's catch-all 500.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st
from murmur.agent.definitions import parse_service
from murmur.agent.http.catalog_routes import parse_catalog_register
from murmur.agent.http.server import HTTPError
from murmur.agent.http.session_routes import parse_create
from murmur.agent.http.snapshot_routes import parse_archive
from murmur.agent.http.txn_routes import parse_ops
from murmur.catalog import commands as cmds
from murmur.checks.definitions import DefinitionError, from_api

from .fuzzing import byte_mutations, fuzz, mutated, values

SERVICE = {"Name": "web", "ID": "w1", "Port": 80, "Tags": ["a"], "Address": "10.0.0.1", "Meta": {"k": "v"},
           "Weights": {"Passing": 3, "Warning": 1}, "EnableTagOverride": True, "Kind": "",
           "TaggedAddresses": {"lan": {"Address": "10.0.0.1", "Port": 80}, "wan": {"Address": "1.2.3.4", "Port": 81}},
           "Check": {"TTL": "30s", "Notes": "n"}, "Checks": [{"CheckID": "c1", "TTL": "10s", "Status": "passing"},
                                                              {"Name": "alias", "AliasService": "db"}],
           "Proxy": {"DestinationServiceName": "web"}, "Connect": {"Native": False}, "Locality": {"Region": "r"}}
CHECK = {"CheckID": "c1", "Name": "c", "TTL": "5s", "ServiceID": "w1", "Status": "warning", "Notes": "x",
         "DeregisterCriticalServiceAfter": "1m", "Interval": "10s", "Timeout": "1s"}
REGISTER = {"Node": "n1", "Address": "10.0.0.2", "ID": "6a2c6f5e-0000-4000-8000-000000000001", "Datacenter": "dc1",
            "TaggedAddresses": {"lan": "10.0.0.2"}, "NodeMeta": {"a": "b"},
            "Service": {"Service": "db", "Port": 5432, "Tags": ["primary"]},
            "Check": {"CheckID": "c", "Status": "passing", "ServiceID": "db"}, "SkipNodeUpdate": False}
TXN = [{"KV": {"Verb": "set", "Key": "t/a", "Value": "eA==", "Flags": 3}}, {"KV": {"Verb": "get", "Key": "t/a"}},
       {"KV": {"Verb": "cas", "Key": "t/a", "Index": 1, "Value": ""}},
       {"KV": {"Verb": "lock", "Key": "t/l", "Session": "6a2c6f5e-0000-4000-8000-000000000001"}},
       {"KV": {"Verb": "delete-tree", "Key": "t/"}}]
SESSION = {"Name": "s", "TTL": "10s", "Behavior": "delete", "LockDelay": "1s", "Node": "n1",
           "Checks": ["serfHealth"], "NodeChecks": ["a"], "ServiceChecks": [{"ID": "c1", "Namespace": ""}]}


def bodies(base: Any) -> st.SearchStrategy[Any]:
    """Mutations of `base`, round-tripped through JSON as the server's req.json() would see them
    (Infinity and NaN included: Python's json accepts them)."""
    return st.one_of(mutated(base), values).map(lambda v: json.loads(json.dumps(v, default=repr)))


def _fits(cmd: cmds.Command) -> None:
    assert cmds.decode(cmds.encode(cmd)) is not None  # what the route writes must encode


def _http_4xx(exc: HTTPError) -> None:
    assert 400 <= exc.status < 500, exc.status


@fuzz(bodies(SERVICE))
def test_fuzz_http_service_definition(body: Any) -> None:
    try:
        sdef = parse_service(body)
    except DefinitionError:
        return
    _fits(cmds.Register("n", "a", service=sdef.spec))


@fuzz(bodies(CHECK))
def test_fuzz_http_check_definition(body: Any) -> None:
    try:
        from_api(body, default_id="x")
    except DefinitionError:
        pass


@fuzz(bodies(REGISTER))
def test_fuzz_http_catalog_register(body: Any) -> None:
    try:
        _fits(parse_catalog_register(body))
    except HTTPError as exc:
        _http_4xx(exc)


@fuzz(bodies(TXN))
def test_fuzz_http_txn(body: Any) -> None:
    try:
        _fits(cmds.Txn(tuple(parse_ops(body))))
    except HTTPError as exc:
        _http_4xx(exc)


@fuzz(bodies(SESSION))
def test_fuzz_http_session_create(body: Any) -> None:
    try:
        _fits(parse_create(body, "n1", "6a2c6f5e-0000-4000-8000-000000000002"))
    except HTTPError as exc:
        _http_4xx(exc)


def _archive() -> bytes:
    from murmur.agent.storage import snapshots as archive
    from murmur.catalog.store import StateStore
    from murmur.raft.messages import Snapshot, SnapshotMeta

    return archive.encode(Snapshot(SnapshotMeta(3, 1, (1,)), StateStore().snapshot()))  # type: ignore[no-any-return]


@fuzz(st.one_of(st.binary(max_size=120), st.builds(_archive).flatmap(byte_mutations)))
def test_fuzz_http_snapshot_archive(raw: bytes) -> None:
    try:
        parse_archive(raw)
    except HTTPError as exc:
        _http_4xx(exc)
