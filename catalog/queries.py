"""Read queries over the state store, answering in Consul's JSON shapes.

Pure functions: a store in, plain JSON-ready data out. Orders are the ones Consul clients
observe: nodes by name, instances by node then service ID, checks by check ID.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

from .store import CheckRecord, KVRecord, NodeRecord, ServiceRecord, SessionRecord, StateStore

PASSING, WARNING, CRITICAL = "passing", "warning", "critical"
STATES = ("any", PASSING, WARNING, CRITICAL)


def _tagged_node_addresses(n: NodeRecord) -> dict[str, str]:
    ta = dict(n.tagged_addresses)
    ta.setdefault("lan", n.address)
    ta.setdefault("lan_ipv4", n.address)
    ta.setdefault("wan", n.address)
    ta.setdefault("wan_ipv4", n.address)
    return ta


def node_json(n: NodeRecord) -> dict[str, Any]:
    return {"ID": n.id, "Node": n.name, "Address": n.address, "Datacenter": n.datacenter,
            "TaggedAddresses": _tagged_node_addresses(n), "Meta": dict(n.meta),
            "CreateIndex": n.create_index, "ModifyIndex": n.modify_index}


def _service_tagged(r: ServiceRecord) -> dict[str, dict[str, Any]]:
    return {name: {"Address": addr, "Port": port} for name, addr, port in r.spec.tagged_addresses}


def agent_service_json(r: ServiceRecord | None, spec: Any = None, datacenter: str = "") -> dict[str, Any]:
    """The agent's view of a service (`/v1/agent/services`): optional fields only when set."""
    s = spec if spec is not None else r.spec  # type: ignore[union-attr]
    out: dict[str, Any] = {"ID": s.id, "Service": s.name, "Tags": list(s.tags), "Meta": dict(s.meta),
                           "Port": s.port, "Address": s.address,
                           "Weights": {"Passing": s.weights[0], "Warning": s.weights[1]},
                           "EnableTagOverride": s.enable_tag_override, "Datacenter": datacenter}
    if s.tagged_addresses:
        out["TaggedAddresses"] = {n: {"Address": a, "Port": p} for n, a, p in s.tagged_addresses}
    if s.kind:
        out["Kind"] = s.kind
    for key, text in (("Proxy", s.proxy), ("Connect", s.connect), ("Locality", s.locality)):
        if text:
            out[key] = json.loads(text)
    return out


def _obj(text: str) -> Any:
    return json.loads(text) if text else {}


def catalog_service_json(node: NodeRecord | None, r: ServiceRecord) -> dict[str, Any]:
    s = r.spec
    return {
        "ID": node.id if node else "", "Node": r.node, "Address": node.address if node else "",
        "Datacenter": node.datacenter if node else "",
        "TaggedAddresses": _tagged_node_addresses(node) if node else {},
        "NodeMeta": dict(node.meta) if node else {}, "ServiceKind": s.kind, "ServiceID": s.id,
        "ServiceName": s.name, "ServiceTags": list(s.tags), "ServiceAddress": s.address,
        "ServiceTaggedAddresses": _service_tagged(r),
        "ServiceWeights": {"Passing": s.weights[0], "Warning": s.weights[1]},
        "ServiceMeta": dict(s.meta), "ServicePort": s.port, "ServiceSocketPath": "",
        "ServiceEnableTagOverride": s.enable_tag_override, "ServiceProxy": _obj(s.proxy),
        "ServiceConnect": _obj(s.connect),
        "CreateIndex": r.create_index, "ModifyIndex": r.modify_index,
    }


def health_service_json(r: ServiceRecord) -> dict[str, Any]:
    s = r.spec
    return {"ID": s.id, "Service": s.name, "Tags": list(s.tags), "Address": s.address,
            "TaggedAddresses": _service_tagged(r), "Meta": dict(s.meta), "Port": s.port,
            "Weights": {"Passing": s.weights[0], "Warning": s.weights[1]},
            "EnableTagOverride": s.enable_tag_override, "Proxy": _obj(s.proxy), "Connect": _obj(s.connect),
            "CreateIndex": r.create_index, "ModifyIndex": r.modify_index}


def check_json(c: CheckRecord) -> dict[str, Any]:
    s = c.spec
    return {"Node": c.node, "CheckID": s.check_id, "Name": s.name, "Status": s.status, "Notes": s.notes,
            "Output": s.output, "ServiceID": s.service_id, "ServiceName": c.service_name,
            "ServiceTags": list(c.service_tags), "Type": s.type, "Interval": s.interval,
            "Timeout": s.timeout, "ExposedPort": 0, "Definition": dict(s.definition),
            "CreateIndex": c.create_index, "ModifyIndex": c.modify_index}


# ---- health --------------------------------------------------------------------------------------
def instance_checks(store: StateStore, r: ServiceRecord) -> list[CheckRecord]:
    """The checks that decide an instance's health: its node's checks and its own, by check ID."""
    return [c for c in store.node_checks(r.node) if c.spec.service_id in ("", r.spec.id)]


def aggregate_status(checks: list[CheckRecord]) -> str:
    """Worst status wins: critical over warning over passing (no checks is passing)."""
    statuses = {c.spec.status for c in checks}
    if CRITICAL in statuses:
        return CRITICAL
    if WARNING in statuses:
        return WARNING
    return PASSING


def is_healthy(checks: list[CheckRecord], only_passing: bool) -> bool:
    """The conventions' rule: any critical check is unhealthy; `only_passing` also drops warnings."""
    status = aggregate_status(checks)
    return status == PASSING or (status == WARNING and not only_passing)


def _has_tag(r: ServiceRecord, tags: list[str] | None) -> bool:
    return not tags or all(t in r.spec.tags for t in tags)


# ---- catalog endpoints ---------------------------------------------------------------------------
def catalog_services(store: StateStore,
                     keep: Callable[[dict[str, Any]], bool] | None = None) -> dict[str, list[str]]:
    """Service names with their tags. `keep` (a compiled `?filter=`) selects the instances that
    count, each seen as its `/v1/catalog/service` entry, as Consul filters ServiceNodes."""
    out: dict[str, list[str]] = {}
    for r in store.all_services():
        if keep is not None and not keep(catalog_service_json(store.nodes.get(r.node), r)):
            continue
        tags = out.setdefault(r.spec.name, [])
        tags.extend(t for t in r.spec.tags if t not in tags)
    return out


def catalog_service(store: StateStore, name: str, tags: list[str] | None = None) -> list[dict[str, Any]]:
    return [catalog_service_json(store.nodes.get(r.node), r)
            for r in store.service_instances(name) if _has_tag(r, tags)]


def catalog_nodes(store: StateStore) -> list[dict[str, Any]]:
    return [node_json(store.nodes[n]) for n in sorted(store.nodes)]


def catalog_node(store: StateStore, node: str) -> dict[str, Any] | None:
    n = store.nodes.get(node)
    if n is None:
        return None
    services = {}
    for sid, r in sorted(store.services.get(node, {}).items()):
        entry = agent_service_json(r, datacenter=n.datacenter)
        entry.update(CreateIndex=r.create_index, ModifyIndex=r.modify_index)
        services[sid] = entry
    return {"Node": node_json(n), "Services": services}


def health_service(store: StateStore, name: str, tags: list[str] | None = None,
                   passing: bool = False) -> list[dict[str, Any]]:
    out = []
    for r in store.service_instances(name):
        if not _has_tag(r, tags):
            continue
        checks = instance_checks(store, r)
        if passing and aggregate_status(checks) != PASSING:
            continue
        node = store.nodes.get(r.node)
        out.append({"Node": node_json(node) if node else {"Node": r.node},
                    "Service": health_service_json(r), "Checks": [check_json(c) for c in checks]})
    return out


def health_checks(store: StateStore, service: str) -> list[dict[str, Any]]:
    checks = [c for c in store.all_checks() if c.service_name == service]
    return [check_json(c) for c in sorted(checks, key=lambda c: (c.spec.check_id, c.node))]


def health_node(store: StateStore, node: str) -> list[dict[str, Any]]:
    return [check_json(c) for c in store.node_checks(node)]


def health_state(store: StateStore, state: str) -> list[dict[str, Any]]:
    """Checks in one state ('any' for all). Raises ValueError for an unknown state."""
    if state not in STATES:
        raise ValueError(f"Unknown check state '{state}'")
    return [check_json(c) for c in store.all_checks() if state == "any" or c.spec.status == state]


def healthy_instances(store: StateStore, name: str, tag: str | None,
                      only_passing: bool) -> list[tuple[NodeRecord, ServiceRecord]]:
    """Instances DNS may hand out: the healthy ones of a service, with their nodes."""
    out = []
    for r in store.service_instances(name):
        if tag is not None and tag not in r.spec.tags:
            continue
        node = store.nodes.get(r.node)
        if node is None or not is_healthy(instance_checks(store, r), only_passing):
            continue
        out.append((node, r))
    return out


# ---- KV --------------------------------------------------------------------------------------------
def kv_json(r: KVRecord) -> dict[str, Any]:
    out: dict[str, Any] = {"LockIndex": r.lock_index, "Key": r.key, "Flags": r.flags,
                           "Value": base64.b64encode(r.value).decode() if r.value else None,
                           "CreateIndex": r.create_index, "ModifyIndex": r.modify_index}
    if r.session:
        out["Session"] = r.session
    return out


def kv_list(store: StateStore, prefix: str) -> list[KVRecord]:
    """Keys under `prefix`, sorted by key (the order clients observe)."""
    return [store.kvs[k] for k in sorted(store.kvs) if k.startswith(prefix)]


def kv_keys(store: StateStore, prefix: str, separator: str = "") -> list[str]:
    """Key names under `prefix`; with a separator, rolled up to the next separator (`?keys&separator=/`)."""
    out: list[str] = []
    for k in sorted(store.kvs):
        if not k.startswith(prefix):
            continue
        if separator:
            cut = k.find(separator, len(prefix))
            if cut >= 0:
                k = k[: cut + len(separator)]
        if not out or out[-1] != k:
            out.append(k)
    return out


def kv_index(store: StateStore, key: str, prefix: bool) -> int:
    """X-Consul-Index of a KV read, as Consul reports it. One key: its ModifyIndex, or the KV
    table's index when it is missing (never lower than before its deletion, so a blocked reader
    wakes and sees the 404). A prefix (`recurse`, `keys`): the highest ModifyIndex or tombstone
    under it, or the table's index when there is neither."""
    if not prefix:
        rec = store.kvs.get(key)
        return max(rec.modify_index, store.kv_floor) if rec is not None else store.index_of("kvs")
    best = max((r.modify_index for k, r in store.kvs.items() if k.startswith(key)), default=0)
    best = max(best, max((i for k, i in store.tombstones.items() if k.startswith(key)), default=0))
    return max(best, store.kv_floor) if best else store.index_of("kvs")


def kv_wait_index(store: StateStore, key: str, prefix: bool) -> int:
    """What a blocking KV read waits on: the key's own ModifyIndex or tombstone, so writes to other
    keys do not wake it; for prefixes the same as kv_index."""
    if prefix:
        return kv_index(store, key, True)
    rec = store.kvs.get(key)
    return max(rec.modify_index if rec is not None else store.tombstones.get(key, 0), store.kv_floor)


# ---- sessions --------------------------------------------------------------------------------------
def session_json(r: SessionRecord) -> dict[str, Any]:
    return {"ID": r.id, "Name": r.name, "Node": r.node, "LockDelay": r.lock_delay, "Behavior": r.behavior,
            "TTL": r.ttl, "NodeChecks": list(r.node_checks) or None,
            "ServiceChecks": [{"ID": c, "Namespace": ""} for c in r.service_checks] or None,
            "CreateIndex": r.create_index, "ModifyIndex": r.modify_index}


def session_list(store: StateStore) -> list[dict[str, Any]]:
    """Every session, sorted by ID."""
    return [session_json(store.sessions[s]) for s in sorted(store.sessions)]
