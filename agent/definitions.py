"""Service definitions from config files and `PUT /v1/agent/service/register`, read leniently.

Consul decodes service JSON case-insensitively and accepts snake_case aliases; so do we, through
the same key folding as checks. The result pairs a catalog ServiceSpec with its check definitions,
whose IDs follow Consul: one check is `service:<id>`, several are `service:<id>:1..n`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from murmur.catalog.commands import ServiceSpec
from murmur.checks.definitions import CheckDefinition, DefinitionError, folded, from_api


@dataclass(frozen=True)
class ServiceDefinition:
    spec: ServiceSpec
    checks: tuple[CheckDefinition, ...]


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
    weights_raw = folded(d.get("weights") or {})
    weights = (int(weights_raw.get("passing", 1) or 1), int(weights_raw.get("warning", 1) or 1))
    tagged: list[tuple[str, str, int]] = []
    ta = d.get("taggedaddresses") or {}
    if not isinstance(ta, Mapping):
        raise DefinitionError("TaggedAddresses: expected an object")
    for tname, tval in sorted(ta.items()):
        tv = folded(tval) if isinstance(tval, Mapping) else {}
        tagged.append((str(tname), str(tv.get("address", "")), int(tv.get("port", 0) or 0)))
    spec = ServiceSpec(
        id=sid, name=name, tags=tuple(tags), address=_str(d, "address", "Address"), port=port,
        meta=_str_map(d, "meta", "Meta"), weights=weights,
        enable_tag_override=bool(d.get("enabletagoverride", False)), tagged_addresses=tuple(tagged),
        kind=_str(d, "kind", "Kind"),
    )
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
    return ServiceDefinition(spec, tuple(checks))

