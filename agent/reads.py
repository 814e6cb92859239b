"""Named catalog reads: one registry shared by servers and clients.

Every read route (`/v1/catalog/*`, `/v1/health/*`, `/v1/kv/*`, `/v1/status/*`) names a read here
and passes its arguments. A server executes the read on its own store (`execute`); a client
sends the same name and arguments over server RPC (`op: read`) and the server executes the same
`execute`, so a client's answer and a server's answer come from one code path by construction.

A read's `run` turns (store, args) into msgpack-able data; its `index` says which index the read
reports and blocks on (`X-Consul-Index`). Mode: "default" and "consistent" wait on a ReadIndex
first (linearizable), "stale" reads the server's store as it is and reports its last contact with
the leader. Blocking (`index` > 0) waits on the server's change feed until the index passes.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio
from murmur.catalog import queries
from murmur.catalog.dns import slice_store
from murmur.catalog.filter import SERVICE_NODE, FilterError, compile_filter
from murmur.catalog.store import StateStore

if TYPE_CHECKING:
    from .agent import Agent

MAX_WAIT = 600.0  # Consul caps a blocking query's wait at 10 minutes
MODES = ("default", "consistent", "stale")
_jitter = random.Random()


class ReadError(Exception):
    """A read that cannot be made: `kind` is "bad_request" (unknown read, bad args) or "no_leader"."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class ReadResult:
    data: Any
    index: int
    known_leader: bool = True
    last_contact_ms: int = 0
    filtered: bool = False  # ACLs left something out (X-Consul-Results-Filtered-By-ACLs)


@dataclass(frozen=True)
class Read:
    run: Callable[[StateStore, dict[str, Any]], Any]
    index: Callable[[StateStore, dict[str, Any]], int]
    server_run: Callable[[Agent, dict[str, Any]], Any] | None = None  # reads of the server's Raft state
    # What a blocking read waits on, when finer than the index it reports (a missing KV key).
    wait_index: Callable[[StateStore, dict[str, Any]], int] | None = None


def _tables(*names: str) -> Callable[[StateStore, dict[str, Any]], int]:
    return lambda s, a: s.index_of(*names)


def _service_index(s: StateStore, a: dict[str, Any]) -> int:
    return s.index_of_service(str(a["name"]))


def _kv_get(s: StateStore, a: dict[str, Any]) -> Any:
    """keys: a list of key names; otherwise records as [key, value, flags, create, modify, lock, session]."""
    key = str(a.get("key", ""))
    if a.get("keys"):
        return queries.kv_keys(s, key, str(a.get("separator") or ""))
    if a.get("recurse"):
        recs = queries.kv_list(s, key)
    else:
        rec = s.kvs.get(key)
        recs = [rec] if rec is not None else []
    return [[r.key, r.value, r.flags, r.create_index, r.modify_index, r.lock_index, r.session] for r in recs]


def _catalog_services(s: StateStore, a: dict[str, Any]) -> dict[str, list[str]]:
    """Names and tags; `filter` (a `?filter=` expression) selects the instances that count."""
    expr = a.get("filter")
    if not expr:
        return queries.catalog_services(s)
    try:
        keep = compile_filter(str(expr), SERVICE_NODE)
    except FilterError as exc:
        raise ReadError("bad_request", f"Failed to create boolean expression evaluator: {exc}") from exc
    return queries.catalog_services(s, keep.matches)


def _kv_prefix(a: dict[str, Any]) -> bool:
    return bool(a.get("keys") or a.get("recurse"))


def _lock_delay(agent: Agent, a: dict[str, Any]) -> list[int]:
    """[ms left of the longest lock delay on these keys, the applied index the answer is good for]
    (the index goes into the lock command: a delay that started after it refuses the lock)."""
    keys = a.get("keys")
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise ReadError("bad_request", "session.lock_delay needs keys")
    tracker = agent.lock_delays
    now = trio.current_time()
    tracker.observe(agent.store, now)
    return [int(max((tracker.remaining(k, now) for k in keys), default=0.0) * 1000), agent.store.last_index]


def _txn_read(s: StateStore, a: dict[str, Any]) -> Any:
    """A read-only transaction: ops as [verb, key, index, session]."""
    from murmur.catalog.commands import TxnOp, TxnVerb

    ops = tuple(TxnOp(TxnVerb(int(v)), str(k), index=int(i), session=str(se)) for v, k, i, se in a["ops"])
    return s.read_txn(ops)


def _node_slice(s: StateStore, a: dict[str, Any]) -> bytes:
    """One node's catalog entries as a store snapshot (a client's anti-entropy diffs against it)."""
    return slice_store(s, ("node-exact", str(a["node"]))).snapshot()


def _dns_slice(s: StateStore, a: dict[str, Any]) -> bytes:
    """What a DNS answer for one name needs, as a store snapshot (see catalog.dns.slice_key)."""
    key = a.get("key")
    if not isinstance(key, list) or not key or not all(isinstance(k, str) for k in key):
        raise ReadError("bad_request", "dns.slice needs a key")
    return slice_store(s, tuple(key)).snapshot()


def _dns_slice_index(s: StateStore, a: dict[str, Any]) -> int:
    """The index a slice's answer can change at: a service's own index (all its casings), the
    node tables for node names, nodes and services for PTR."""
    key = a.get("key") or ["none"]
    kind = key[0]
    if kind == "service" and len(key) > 1:
        name = str(key[1]).lower()
        own = [i for n, i in s.service_index.items() if n.lower() == name]
        return max(own) if own else s.index_of("services")
    if kind in ("node", "node-exact"):
        return s.index_of("nodes", "services", "checks")
    if kind == "nodes":  # PTR: node addresses and service addresses
        return s.index_of("nodes", "services")
    return 1


READS: dict[str, Read] = {
    "catalog.services": Read(_catalog_services, _tables("services")),
    "catalog.service": Read(lambda s, a: queries.catalog_service(s, str(a["name"]), a.get("tags")),
                            _service_index),
    "catalog.nodes": Read(lambda s, a: queries.catalog_nodes(s), _tables("nodes")),
    "catalog.node": Read(lambda s, a: queries.catalog_node(s, str(a["node"])), _tables("nodes", "services")),
    "catalog.connect": Read(lambda s, a: [], _tables("nodes", "services", "checks")),
    "health.service": Read(lambda s, a: queries.health_service(s, str(a["name"]), a.get("tags"),
                                                               bool(a.get("passing"))), _service_index),
    "health.checks": Read(lambda s, a: queries.health_checks(s, str(a["name"])), _service_index),
    "health.node": Read(lambda s, a: queries.health_node(s, str(a["node"])), _tables("checks")),
    "health.state": Read(lambda s, a: queries.health_state(s, str(a["state"])), _tables("checks")),
    "kv.get": Read(_kv_get, lambda s, a: queries.kv_index(s, str(a.get("key", "")), _kv_prefix(a)),
                   wait_index=lambda s, a: queries.kv_wait_index(s, str(a.get("key", "")), _kv_prefix(a))),
    "txn.read": Read(_txn_read, _tables("kvs")),
    "session.info": Read(lambda s, a: [queries.session_json(r) for r in [s.sessions.get(str(a["id"]))] if r],
                         lambda s, a: max(1, s.sessions_index)),
    "session.node": Read(lambda s, a: [queries.session_json(r) for r in s.node_sessions(str(a["node"]))],
                         lambda s, a: max(1, s.sessions_index)),
    "session.list": Read(lambda s, a: queries.session_list(s), lambda s, a: max(1, s.sessions_index)),
    "session.lock_delay": Read(lambda s, a: None, lambda s, a: 0, server_run=_lock_delay),
    "node.slice": Read(_node_slice, _tables("nodes", "services", "checks")),
    "dns.slice": Read(_dns_slice, lambda s, a: _dns_slice_index(s, a)),
    "acl.token_slice": Read(lambda s, a: _acl_token_slice(s, a), _tables("acls")),
    "acl.list": Read(lambda s, a: _acl_list(s, a), _tables("acls")),
    "acl.get": Read(lambda s, a: _acl_get(s, a), _tables("acls")),
    "status.leader": Read(lambda s, a: None, lambda s, a: 0, server_run=lambda ag, a: _status_leader(ag)),
    "status.peers": Read(lambda s, a: None, lambda s, a: 0, server_run=lambda ag, a: _status_peers(ag)),
}


def _acl_token_slice(s: StateStore, a: dict[str, Any]) -> bytes:
    from .acl import token_slice

    return token_slice(s, str(a.get("secret", "")))


_ACL_TABLES = {"token": "acl_tokens", "policy": "acl_policies", "role": "acl_roles"}


def _acl_list(s: StateStore, a: dict[str, Any]) -> list[Any]:
    """Every token, policy or role (`kind`) as its wire row, by ID."""
    from murmur.catalog import store as st

    kind = str(a["kind"])
    wire: Callable[[Any], list[Any]] = {"token": st.acl_token_wire, "policy": st.acl_policy_wire,
                                        "role": st.acl_role_wire}[kind]  # type: ignore[assignment]
    table: dict[str, Any] = getattr(s, _ACL_TABLES[kind])
    return [wire(r) for _, r in sorted(table.items())]


def _acl_get(s: StateStore, a: dict[str, Any]) -> Any:
    """[row, {policy ID: name}, {role ID: name}] of one token, policy or role by `id` or `name`
    (the maps let the route show link names), or None."""
    from murmur.catalog import store as st

    kind = str(a["kind"])
    table: dict[str, Any] = getattr(s, _ACL_TABLES[kind])
    rec = table.get(str(a.get("id", "")))
    if rec is None and a.get("name"):
        rec = next((r for r in table.values() if r.spec.name == a["name"]), None)
    if rec is None:
        return None
    wire: Callable[[Any], list[Any]] = {"token": st.acl_token_wire, "policy": st.acl_policy_wire,
                                        "role": st.acl_role_wire}[kind]  # type: ignore[assignment]
    policy_names, role_names = acl_names(s)
    return [wire(rec), policy_names, role_names]


def acl_names(s: StateStore) -> tuple[dict[str, str], dict[str, str]]:
    return ({i: r.spec.name for i, r in s.acl_policies.items()}, {i: r.spec.name for i, r in s.acl_roles.items()})


def _status_leader(agent: Agent) -> str:
    assert agent.server is not None
    addr = agent.server.leader_address()
    return f"{addr[0]}:{addr[1]}" if addr else ""


def _status_peers(agent: Agent) -> list[str]:
    srv = agent.server
    assert srv is not None
    return [f"{srv.addresses[v][0]}:{srv.addresses[v][1]}" for v in srv.voters if v in srv.addresses]


def leader_info(agent: Agent) -> tuple[bool, int]:
    """(a leader is known, ms since this server last heard from it; 0 on the leader)."""
    srv = agent.server
    if srv is None or srv.driver is None:
        return False, 0
    known = bool(srv.driver.leader)
    contact = 0
    if not srv.driver.is_leader and srv.driver.last_contact:
        contact = int(max(0.0, trio.current_time() - srv.driver.last_contact) * 1000)
    return known, contact


def _planted_local_read(agent: Agent, mode: str) -> bool:
    """The planted bug read.serve_from_follower (fault-lab tests only): a follower answers
    default-mode reads from its own store without a ReadIndex, so they can be stale."""
    from .failpoints import FAILPOINTS

    if not FAILPOINTS.bugs or not FAILPOINTS.bug("read.serve_from_follower") or mode != "default":
        return False
    driver = agent.server.driver if agent.server is not None else None
    return driver is not None and not driver.is_leader


async def execute(agent: Agent, name: str, args: dict[str, Any], mode: str = "default", min_index: int = 0,
                  wait: float = 0.0, authz: Any = None) -> ReadResult:
    """Run a named read on this server's store (the one path for local and RPC reads). With an
    ACL authorizer, the data is what that token may see (agent/acl.py filter_read)."""
    read = READS.get(name)
    if read is None:
        raise ReadError("bad_request", f"unknown read {name!r}")
    if mode not in MODES:
        raise ReadError("bad_request", f"unknown read mode {mode!r}")
    if not isinstance(args, dict):
        raise ReadError("bad_request", "read arguments must be a map")
    if agent.server is None:
        raise ReadError("bad_request", "this agent is not a server")
    if mode != "stale" and read.server_run is None and not _planted_local_read(agent, mode):
        from .server import NoLeader

        try:
            await agent.server.read_barrier(lease=mode == "default")
        except NoLeader as exc:
            raise ReadError("no_leader", "No cluster leader") from exc
    store = agent.store
    try:
        wait_index = read.wait_index or read.index
        current = wait_index(store, args)
        if min_index > 0 and current <= min_index and wait > 0:
            wait = min(wait, MAX_WAIT)
            wait += _jitter.uniform(0, wait / 16)
            await agent.feed.wait_past(lambda: wait_index(agent.store, args), min_index, wait)
        store = agent.store  # the store may have been replaced (a snapshot restore) while we waited
        index = read.index(store, args)
        data = read.server_run(agent, args) if read.server_run is not None else read.run(store, args)
    except (KeyError, TypeError, ValueError) as exc:
        raise ReadError("bad_request", f"bad arguments for {name}: {exc!r}") from exc
    filtered = False
    if authz is not None:
        from .acl import PermissionDenied, filter_read

        try:
            data, filtered = filter_read(authz, name, args, data)
        except PermissionDenied as exc:
            raise ReadError("permission_denied", str(exc)) from exc
    known, contact = leader_info(agent)
    return ReadResult(data, index, known, contact, filtered)
