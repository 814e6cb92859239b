"""Service definitions from config files and `PUT /v1/agent/service/register`, read leniently.

Consul decodes service JSON case-insensitively and accepts snake_case aliases; so do we, through
the same key folding as checks. The result pairs a catalog ServiceSpec with its check definitions,
whose IDs follow Consul: one check is `service:<id>`, several are `service:<id>:1..n`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from murmur.catalog.commands import ServiceSpec
from murmur.checks.definitions import CheckDefinition, DefinitionError, fold, folded, from_api


@dataclass(frozen=True)
class ServiceDefinition:
    spec: ServiceSpec
    checks: tuple[CheckDefinition, ...]
    # `connect.sidecar_service` as sent: the agent expands it (sidecar_definition) into a service of
    # its own, because its port is picked from what the agent already has.
    sidecar: Mapping[str, Any] | None = None


SIDECAR_PORTS = range(21000, 21256)  # Consul's sidecar_min_port..sidecar_max_port


def _json_obj(d: dict[str, Any], key: str, label: str, drop: tuple[str, ...] = ()) -> str:
    """An object-valued field (Proxy, Connect, Locality) as canonical JSON text; "" when unset."""
    v = d.get(key)
    if v is None:
        return ""
    if not isinstance(v, Mapping):
        raise DefinitionError(f"{label}: expected an object")
    v = {k: x for k, x in v.items() if fold(str(k)) not in drop}
    return json.dumps(v, sort_keys=True, separators=(",", ":")) if v else ""


def _str(d: dict[str, Any], key: str, label: str) -> str:
    v = d.get(key)
    if v is None:
        return ""
    if not isinstance(v, str):
        raise DefinitionError(f"{label}: expected a string, got {type(v).__name__}")
    return v


def _str_map(d: dict[str, Any], key: str, label: str) -> tuple[tuple[str, str], ...]:
    v = d.get(key) or {}
    if not isinstance(v, Mapping) or not all(isinstance(x, str) for x in v.values()):
        raise DefinitionError(f"{label}: expected an object of strings")
    return tuple(sorted((str(k), str(x)) for k, x in v.items()))


MAX_WEIGHT = 2**31 - 1


def _int_in(v: Any, low: int, high: int, label: str) -> int:
    """An optional integer field: 0 when absent (null or 0), else an integer in low..high."""
    if v is None or (type(v) is int and v == 0):
        return 0
    if type(v) is not int or not low <= v <= high:
        raise DefinitionError(f"{label}: expected an integer {low}..{high}, got {v!r}")
    return v


def parse_service(obj: Any, *, allow_scripts: bool = False) -> ServiceDefinition:
    """One service object (Consul API or config shape) into a definition. Raises DefinitionError."""
    if not isinstance(obj, Mapping):
        raise DefinitionError("service definition must be a JSON object")
    d = folded(obj)
    name = _str(d, "name", "Name")
    if not name:
        raise DefinitionError("Name: a service needs a name")
    sid = _str(d, "id", "ID") or name
    tags = d.get("tags") or []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise DefinitionError("Tags: expected a list of strings")
    port = d.get("port") or 0
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise DefinitionError(f"Port: expected an integer 0..65535, got {port!r}")
    weights_raw = d.get("weights") or {}
    if not isinstance(weights_raw, Mapping):
        raise DefinitionError("Weights: expected an object")
    wd = folded(weights_raw)
    weights = (_int_in(wd.get("passing"), 1, MAX_WEIGHT, "Weights.Passing") or 1,
               _int_in(wd.get("warning"), 1, MAX_WEIGHT, "Weights.Warning") or 1)
    tagged: list[tuple[str, str, int]] = []
    ta = d.get("taggedaddresses") or {}
    if not isinstance(ta, Mapping):
        raise DefinitionError("TaggedAddresses: expected an object")
    for tname, tval in sorted(ta.items()):
        tv = folded(tval) if isinstance(tval, Mapping) else {}
        tport = _int_in(tv.get("port"), 0, 65535, f"TaggedAddresses.{tname}.Port")
        tagged.append((str(tname), str(tv.get("address", "")), tport))
    spec = ServiceSpec(
        id=sid, name=name, tags=tuple(tags), address=_str(d, "address", "Address"), port=port,
        meta=_str_map(d, "meta", "Meta"), weights=weights,
        enable_tag_override=bool(d.get("enabletagoverride", False)), tagged_addresses=tuple(tagged),
        kind=_str(d, "kind", "Kind"), proxy=_json_obj(d, "proxy", "Proxy"),
        connect=_json_obj(d, "connect", "Connect", drop=("sidecarservice",)),
        locality=_json_obj(d, "locality", "Locality"),
    )
    connect = folded(d["connect"]) if isinstance(d.get("connect"), Mapping) else {}
    sidecar = connect.get("sidecarservice")
    if sidecar is not None and not isinstance(sidecar, Mapping):
        raise DefinitionError("Connect.SidecarService: expected an object")
    raw_checks: list[Any] = []
    if d.get("check"):
        raw_checks.append(d["check"])
    more = d.get("checks") or []
    if not isinstance(more, list):
        raise DefinitionError("Checks: expected a list of check objects")
    raw_checks.extend(more)
    checks = []
    for i, c in enumerate(raw_checks, 1):
        default_id = f"service:{sid}" if len(raw_checks) == 1 else f"service:{sid}:{i}"
        try:
            defn = from_api(c, default_id=default_id, service_id=sid, allow_scripts=allow_scripts)
        except DefinitionError as exc:
            raise DefinitionError(f"Checks[{i - 1}]: {exc}") from exc
        if defn.name == default_id and not folded(c).get("name"):
            defn = replace(defn, name=f"Service '{name}' check")
        checks.append(defn)
    return ServiceDefinition(spec, tuple(checks), sidecar)


def sidecar_definition(parent: ServiceDefinition, used_ports: set[int], *, allow_scripts: bool = False
                       ) -> ServiceDefinition:
    """Consul's sidecar registration: `<id>-sidecar-proxy`, kind connect-proxy, the first free port
    of 21000-21255 unless one is given, a Proxy pointing at the parent, and (unless the sidecar
    brings its own checks) a TCP "listening" check plus an alias check of the parent."""
    assert parent.sidecar is not None
    given = {k: v for k, v in parent.sidecar.items() if fold(str(k)) not in ("id", "name", "kind", "port", "proxy")}
    raw = folded(parent.sidecar)
    p = parent.spec
    sid = raw.get("id") or f"{p.id}-sidecar-proxy"
    port = raw.get("port") or next((n for n in SIDECAR_PORTS if n not in used_ports), None)
    if port is None:
        raise DefinitionError("Connect.SidecarService: no free port in 21000-21255")
    proxy = dict(raw.get("proxy") or {})
    proxy.setdefault("DestinationServiceName", p.name)
    proxy.setdefault("DestinationServiceID", p.id)
    proxy.setdefault("LocalServiceAddress", "127.0.0.1")
    proxy.setdefault("LocalServicePort", p.port)
    body: dict[str, Any] = {**given, "ID": sid, "Name": raw.get("name") or f"{p.name}-sidecar-proxy",
                            "Kind": "connect-proxy", "Port": port, "Proxy": proxy}
    if not raw.get("check") and not raw.get("checks"):
        address = raw.get("address") or p.address or "127.0.0.1"
        body["Checks"] = [{"Name": "Connect Sidecar Listening", "TCP": f"{address}:{port}", "Interval": "10s"},
                          {"Name": f"Connect Sidecar Aliasing {p.id}", "AliasService": p.id}]
    return parse_service(body, allow_scripts=allow_scripts)

