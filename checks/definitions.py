"""Check definitions (pure): Consul's check JSON, read leniently, into one typed record.

Clients send check fields in any casing (`HTTP`, `http`, `Http`) and snake_case aliases
(`tls_skip_verify`, `script_args`); durations are Go strings or nanosecond numbers. Everything is
folded here, once, so the runner and the catalog see one shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .durations import parse_duration
from .status import STATUSES

KINDS = ("http", "tcp", "ttl", "script", "grpc", "h2ping", "alias")
MIN_DEREGISTER_AFTER = 60.0  # seconds: Consul's minimum for deregister_critical_service_after
MIN_INTERVAL = 1.0  # seconds; a py-consul client may send `10` (10 ns) or "100ms"


class DefinitionError(ValueError):
    """A check definition that cannot be run; the message says which field and why."""


def fold(key: str) -> str:
    """The case- and underscore-insensitive form of a JSON key (Consul decodes leniently)."""
    return key.replace("_", "").replace("-", "").lower()


def folded(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a JSON object with folded keys; the last of colliding spellings wins."""
    return {fold(str(k)): v for k, v in obj.items()}


ALIASES = {"scriptargs": "args", "checkid": "id", "definitionid": "id", "deregistercriticalserviceafter": "dcsa"}


@dataclass(frozen=True)
class CheckDefinition:
    id: str
    name: str
    kind: str
    interval: float = 0.0
    timeout: float = 10.0  # Consul's default probe timeout
    ttl: float = 0.0
    http: str = ""
    method: str = "GET"
    header: dict[str, list[str]] = field(default_factory=dict)
    body: str = ""
    tls_skip_verify: bool = False
    tls_server_name: str = ""
    disable_redirects: bool = False
    tcp: str = ""
    tcp_use_tls: bool = False
    args: tuple[str, ...] = ()
    grpc: str = ""
    grpc_use_tls: bool = False
    alias_service: str = ""
    alias_node: str = ""
    service_id: str = ""
    notes: str = ""
    status: str = "critical"  # Consul starts a check critical unless told otherwise
    success_before_passing: int = 0
    failures_before_warning: int = 0
    failures_before_critical: int = 0
    deregister_critical_service_after: float = 0.0
    output_max_size: int = 4096
    interval_text: str = ""
    timeout_text: str = ""

    def display(self) -> dict[str, Any]:
        """The `Definition` map the catalog shows for this check."""
        out: dict[str, Any] = {}
        if self.http:
            out.update(HTTP=self.http, Method=self.method, Header=self.header, TLSSkipVerify=self.tls_skip_verify)
        if self.grpc:
            out.update(GRPC=self.grpc, GRPCUseTLS=self.grpc_use_tls)
        if self.tcp:
            out["TCP"] = self.tcp
            if self.tcp_use_tls:
                out.update(TCPUseTLS=True, TLSSkipVerify=self.tls_skip_verify)
        if self.args:
            out["ScriptArgs"] = list(self.args)
        if self.interval_text:
            out["Interval"] = self.interval_text
        if self.timeout_text:
            out["Timeout"] = self.timeout_text
        return out


def _duration(d: dict[str, Any], key: str, label: str) -> tuple[float, str]:
    if key not in d or d[key] in (None, ""):
        return 0.0, ""
    raw = d[key]
    try:
        secs = parse_duration(raw)
    except (ValueError, TypeError) as exc:
        raise DefinitionError(f"{label}: {exc}") from exc
    text = raw if isinstance(raw, str) else f"{secs:g}s"
    return secs, text


def _int(d: dict[str, Any], key: str, label: str) -> int:
    v = d.get(key, 0)
    if v is None:
        return 0
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise DefinitionError(f"{label}: expected a non-negative integer, got {v!r}")
    return v


def _str(d: dict[str, Any], key: str, label: str) -> str:
    v = d.get(key, "")
    if v is None:
        return ""
    if not isinstance(v, str):
        raise DefinitionError(f"{label}: expected a string, got {type(v).__name__}")
    return v


def from_api(obj: Mapping[str, Any], *, default_id: str = "", service_id: str = "",
             allow_scripts: bool = False) -> CheckDefinition:
    """Parse one check object (Consul API or config shape). Raises DefinitionError."""
    if not isinstance(obj, Mapping):
        raise DefinitionError("check definition must be a JSON object")
    d = {ALIASES.get(k, k): v for k, v in folded(obj).items()}
    name = _str(d, "name", "Name")
    cid = _str(d, "id", "CheckID") or default_id or name
    if not name:
        name = cid
    if not cid:
        raise DefinitionError("check needs a Name or an ID")
    kinds = [k for k, key in (("http", "http"), ("tcp", "tcp"), ("ttl", "ttl"), ("script", "args"),
                              ("grpc", "grpc"), ("h2ping", "h2ping"), ("alias", "aliasservice"),
                              ("alias", "aliasnode")) if d.get(key)]
    if len(set(kinds)) != 1:
        raise DefinitionError("check must have exactly one of HTTP, TCP, TTL, Args, GRPC, H2PING, "
                              f"AliasService/AliasNode (got {', '.join(sorted(set(kinds))) or 'none'})")
    kind = kinds[0]
    interval, interval_text = _duration(d, "interval", "Interval")
    timeout, timeout_text = _duration(d, "timeout", "Timeout")
    ttl, _ = _duration(d, "ttl", "TTL")
    dcsa, _ = _duration(d, "dcsa", "DeregisterCriticalServiceAfter")
    if dcsa > 0:
        dcsa = max(dcsa, MIN_DEREGISTER_AFTER)
    if kind in ("http", "tcp", "script", "grpc", "h2ping") and interval <= 0:
        raise DefinitionError(f"Interval: required and positive for a {kind.upper()} check")
    if kind in ("http", "tcp", "script", "grpc", "h2ping"):
        interval = max(interval, MIN_INTERVAL)  # Consul raises shorter intervals to 1 s
    if kind == "script" and not allow_scripts:
        raise DefinitionError("Args: script checks are disabled (enable_script_checks is false)")
    status = _str(d, "status", "Status") or "critical"
    if status not in STATUSES:
        raise DefinitionError(f"Status: must be one of {', '.join(STATUSES)}, got {status!r}")
    header_raw = d.get("header") or {}
    if not isinstance(header_raw, Mapping):
        raise DefinitionError("Header: expected an object of string lists")
    header: dict[str, list[str]] = {}
    for k, v in header_raw.items():
        vals = [v] if isinstance(v, str) else v
        if not isinstance(vals, list) or not all(isinstance(x, str) for x in vals):
            raise DefinitionError(f"Header.{k}: expected a list of strings")
        header[str(k)] = list(vals)
    args = d.get("args") or []
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise DefinitionError("Args: expected a list of strings")
    tcp = _str(d, "tcp", "TCP")
    if tcp and ":" not in tcp:
        raise DefinitionError(f"TCP: expected host:port, got {tcp!r}")
    http = _str(d, "http", "HTTP")
    if http and not (http.startswith("http://") or http.startswith("https://")):
        raise DefinitionError(f"HTTP: expected an http:// or https:// URL, got {http!r}")
    return CheckDefinition(
        id=cid, name=name, kind=kind, interval=interval, timeout=timeout or 10.0, ttl=ttl, http=http,
        method=_str(d, "method", "Method").upper() or "GET", header=header, body=_str(d, "body", "Body"),
        tls_skip_verify=bool(d.get("tlsskipverify", False)), tls_server_name=_str(d, "tlsservername", "TLSServerName"),
        disable_redirects=bool(d.get("disableredirects", False)), tcp=tcp, args=tuple(args),
        tcp_use_tls=bool(d.get("tcpusetls", False)),
        grpc=_str(d, "grpc", "GRPC"), grpc_use_tls=bool(d.get("grpcusetls", False)), alias_service=_str(d, "aliasservice", "AliasService"),
        alias_node=_str(d, "aliasnode", "AliasNode"),
        service_id=_str(d, "serviceid", "ServiceID") or service_id, notes=_str(d, "notes", "Notes"),
        status=status, success_before_passing=_int(d, "successbeforepassing", "SuccessBeforePassing"),
        failures_before_warning=_int(d, "failuresbeforewarning", "FailuresBeforeWarning"),
        failures_before_critical=_int(d, "failuresbeforecritical", "FailuresBeforeCritical"),
        deregister_critical_service_after=dcsa,
        output_max_size=_int(d, "outputmaxsize", "OutputMaxSize") or 4096,
        interval_text=interval_text, timeout_text=timeout_text,
    )
