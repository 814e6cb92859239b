"""The agent's configuration: Consul's agent-config keys, read from TOML and Consul-style JSON.

    load(paths, overrides=None, dev=False) -> RuntimeConfig     raises ConfigError
    validate_paths(paths) -> (errors, warnings)                  for `murmur validate PATH...`

Layers, lowest first: the defaults below (Consul's), the ``--dev`` defaults, each file in order,
then ``overrides`` (the command-line flags). Between layers, a later scalar wins, tables merge key
by key (``node_meta`` and ``dns_config.service_ttl`` too) and lists are appended (services, checks,
``retry_join``, ``recursors``...), which is how Consul merges its config sources.

A directory given in ``paths`` contributes its ``*.toml`` and ``*.json`` files in lexical order;
hidden files, subdirectories and other files are skipped. The TOML format is Consul's keys in
snake_case; services are ``[[services]]`` tables, standalone checks ``[[checks]]`` tables. JSON is
Consul's own agent-config format (``service``/``services``/``check``/``checks``), whose service and
check definitions may use Consul's casing (``ServiceID``, ``HTTP``, ``DeregisterCriticalServiceAfter``):
inside a definition, JSON keys match ignoring case and underscores.

Every problem is collected before anything is raised, so one run reports all of them, each as
``file:line: dotted.key: reason`` (the line is found by searching the file's text, so it is best
effort). Consul keys that murmur does not implement are accepted with a warning; so are keys on
the conventions page whose feature is not built yet (``NOT_YET_WORKING``).

Loading has no side effects beyond reading the files: the agent fills in the hostname, creates
``data_dir`` and so on.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import difflib
import ipaddress
import json
import re
import tomllib
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints
from urllib.parse import urlsplit

from murmur.checks.durations import parse_duration

__all__ = [
    "ACLConfig",
    "ACLTokens",
    "Addresses",
    "AutopilotSeed",
    "ConfigError",
    "DNSConfig",
    "SOAConfig",
    "Limits",
    "NOT_YET_WORKING",
    "Ports",
    "RuntimeConfig",
    "TLSConfig",
    "TLSDefaults",
    "TLSInternalRPC",
    "UNIMPLEMENTED_CONSUL_KEYS",
    "load",
    "parse_duration",
    "validate_paths",
]

FLAGS_SOURCE = "command line"


class ConfigError(Exception):
    """One or more configuration errors; ``errors`` holds them one per line.

    Each reads ``file:line: key: reason`` (``file: key: reason`` when the line is unknown).
    ``warnings`` holds what was found alongside, so a caller can print both.
    """

    def __init__(self, errors: Sequence[str], warnings: Sequence[str] = ()) -> None:
        self.errors = list(errors)
        self.warnings = list(warnings)
        super().__init__(self._text())

    def _text(self) -> str:
        if len(self.errors) == 1:
            return self.errors[0]
        return f"{len(self.errors)} configuration errors:\n" + "\n".join(f"  {e}" for e in self.errors)

    def __str__(self) -> str:
        return self._text()


# --------------------------------------------------------------------------------------------
# Value checks. A check takes the value (already of the field's Python type) and returns it,
# possibly normalised, or raises _Bad.


class _Bad(Exception):
    def __init__(self, reason: str, sub: Sequence[str | int] = ()) -> None:
        super().__init__(reason)
        self.reason = reason
        self.sub = list(sub)  # path below the key being checked, e.g. [2] for retry_join[2]


def _duration(value: str) -> str:
    try:
        seconds = parse_duration(value)
    except ValueError as e:
        raise _Bad(str(e)) from None
    if seconds < 0:
        raise _Bad(f"duration {value!r} must not be negative")
    return value


def _duration_or_unset(value: str) -> str:
    """A duration, or "" for "use the preset's value"."""
    return value if value == "" else _duration(value)


def _port(value: int) -> int:
    # 0 is not Consul's: it lets the OS pick a free port, which tests on loopback use.
    if -1 <= value <= 65535:
        return value
    raise _Bad(f"port {value} out of range: use 1..65535, -1 to disable, or 0 for any free port")


def _at_least(low: int) -> Callable[[int], int]:
    def check(value: int) -> int:
        if value < low:
            raise _Bad(f"must be at least {low}, got {value}")
        return value

    return check


def _protocol(value: int) -> int:
    from .protocol import PROTOCOL_MAX, PROTOCOL_MIN

    if PROTOCOL_MIN <= value <= PROTOCOL_MAX:
        return value
    raise _Bad(f"protocol {value} is not supported: this agent speaks {PROTOCOL_MIN}..{PROTOCOL_MAX}")


def _one_of(*choices: str, upper: bool = False) -> Callable[[str], str]:
    def check(value: str) -> str:
        if value.lower() not in choices:
            raise _Bad(f"{value!r} is not one of {', '.join(choices)}")
        return value.upper() if upper else value.lower()

    return check


def _ip(value: str) -> str:
    if value == "":
        return value
    try:
        ipaddress.ip_address(value)
    except ValueError:
        hint = "; go-sockaddr templates are not supported" if "{{" in value else ""
        raise _Bad(f"{value!r} is not an IP address{hint}") from None
    return value


def _ips(value: str) -> str:
    """A space-separated list of IP addresses (Consul's client_addr and addresses.* form)."""
    for part in value.split():
        _ip(part)
    return value


def _host_port(value: str, *, port_required: bool) -> None:
    host, sep, port = value.rpartition(":")
    if not sep or not host or "]" in port:
        if port_required:
            raise _Bad(f"{value!r} is not host:port")
        host, port = value, ""
    if port and not (port.isdigit() and 0 < int(port) <= 65535):
        raise _Bad(f"{value!r}: bad port {port!r}")
    if not host.strip("[]"):
        raise _Bad(f"{value!r}: empty host")


def _recursor(value: str) -> str:
    host = value
    if value.startswith("["):  # [v6]:port
        host, _, _ = value[1:].partition("]")
        _host_port(value, port_required=False)
    elif value.count(":") == 1:
        _host_port(value, port_required=True)
        host = value.partition(":")[0]
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise _Bad(f"{value!r} is not an IP address or IP:port") from None
    return value


def _each(check: Callable[[str], str]) -> Callable[[list[str]], list[str]]:
    def run(values: list[str]) -> list[str]:
        for i, v in enumerate(values):
            try:
                check(v)
            except _Bad as e:
                raise _Bad(e.reason, [i, *e.sub]) from None
        return values

    return run


def _non_empty_items(values: list[str]) -> list[str]:
    for i, v in enumerate(values):
        if not v.strip():
            raise _Bad("empty string", [i])
    return values


def _uuid(value: str) -> str:
    if value:
        try:
            uuid.UUID(value)
        except ValueError:
            raise _Bad(f"{value!r} is not a UUID (like 'adf4238a-882b-9ddc-4a9d-5b6758e4159e')") from None
        if len(value) != 36:
            raise _Bad(f"{value!r}: write the UUID in its 36-character dashed form")
    return value


def _datacenter(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_-]+", value):
        raise _Bad(f"{value!r}: a datacenter name may only hold letters, digits, '_' and '-'")
    return value


def _domain(value: str) -> str:
    if value and not re.fullmatch(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.?", value):
        raise _Bad(f"{value!r} is not a DNS domain")
    return value


def _encrypt_key(value: str) -> str:
    # Never echo the key: it is a secret.
    if not value:
        return value
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _Bad("not valid base64 (generate a key with `murmur keygen` or `consul keygen`)") from None
    if len(raw) != 32:
        raise _Bad(f"the key decodes to {len(raw)} bytes; murmur needs 32 (as `consul keygen` prints)")
    return value


_META_KEY = re.compile(r"[A-Za-z0-9_-]{1,128}")


def _meta(values: dict[str, str]) -> dict[str, str]:
    """Consul's limits on node and service metadata."""
    if len(values) > 64:
        raise _Bad(f"{len(values)} pairs; at most 64 are allowed")
    for k, v in values.items():
        if not _META_KEY.fullmatch(k):
            raise _Bad("keys are 1-128 letters, digits, '_' or '-'", [k])
        if k.startswith("consul-"):
            raise _Bad("the 'consul-' prefix is reserved", [k])
        if len(v) > 512:
            raise _Bad(f"value is {len(v)} characters; at most 512 are allowed", [k])
    return values


def _duration_map(values: dict[str, str]) -> dict[str, str]:
    for k, v in values.items():
        try:
            _duration(v)
        except _Bad as e:
            raise _Bad(e.reason, [k]) from None
    return values


def _opt(default: Any = dataclasses.MISSING, *, factory: Any = dataclasses.MISSING,
         check: Callable[[Any], Any] | None = None, in_files: bool = True) -> Any:
    """A config field: its default, the extra check its value must pass, and whether it is a key
    of the config files (``services`` and friends are filled in by the loader instead)."""
    meta = {"check": check, "in_files": in_files}
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


# --------------------------------------------------------------------------------------------
# The runtime configuration. Defaults are Consul's; each comment gives the trade-off.


@dataclass
class Ports:
    """Listening ports; -1 disables a listener, as in Consul; 0 lets the OS pick a free one."""

    # HTTP API (TCP). Consul's 8500; every Consul client and tool looks there first.
    http: int = _opt(8500, check=_port)
    # HTTPS API. Disabled (-1) by default as in Consul; 8501 is the convention when on.
    https: int = _opt(-1, check=_port)
    # DNS, UDP and TCP. 8600 needs no root; point a resolver's forwarding at it for port 53.
    dns: int = _opt(8600, check=_port)
    # LAN gossip, UDP and TCP. Every agent of a datacenter must reach every other on it.
    serf_lan: int = _opt(8301, check=_port)
    # WAN gossip between servers of different datacenters (Consul's 8302).
    serf_wan: int = _opt(8302, check=_port)
    # Server RPC and Raft, multiplexed on one listener by the first byte of each connection.
    server: int = _opt(8300, check=_port)
    # gRPC API (Consul uses it for Envoy xDS). Disabled by default, as in Consul.
    grpc: int = _opt(-1, check=_port)


@dataclass
class Addresses:
    """Per-listener bind addresses; "" means use client_addr."""

    # HTTP API bind address(es), space-separated. Overrides client_addr for HTTP only.
    http: str = _opt("", check=_ips)
    # DNS bind address(es), space-separated. Overrides client_addr for DNS only.
    dns: str = _opt("", check=_ips)


@dataclass
class SOAConfig:
    """The SOA record of our domain (seconds). min_ttl is also the TTL of negative answers
    (RFC 2308): 0, Consul's default, means resolvers never cache an NXDOMAIN."""

    refresh: int = _opt(3600, check=_at_least(0))
    retry: int = _opt(600, check=_at_least(0))
    expire: int = _opt(86400, check=_at_least(0))
    min_ttl: int = _opt(0, check=_at_least(0))


@dataclass
class DNSConfig:
    """How DNS answers are made. Consul's defaults favour freshness over cacheability."""

    # TTL on node lookups. 0s: resolvers never cache, so answers are fresh but every lookup
    # reaches the agent; "10s" or so takes load off at the price of stale answers.
    node_ttl: str = _opt("0s", check=_duration)
    # TTL per service name; "*" is the fallback, and "web-*" a prefix. Empty: 0s for all.
    service_ttl: dict[str, str] = _opt(factory=dict, check=_duration_map)
    # Answer from any server's (possibly stale) state instead of asking the leader. True: reads
    # scale with servers and survive a leaderless cluster; answers may lag by up to max_stale.
    allow_stale: bool = _opt(True)
    # How stale an allow_stale answer may be before the leader is asked. Consul's 87600h (10
    # years) means "never ask": availability over freshness.
    max_stale: str = _opt("87600h", check=_duration)
    # Drop instances with a warning check too (critical ones are always dropped).
    only_passing: bool = _opt(False)
    # Set the TC bit when a UDP answer was cut down, so clients retry over TCP and get them all.
    # False: clients silently get fewer records (udp_answer_limit), which most prefer.
    enable_truncate: bool = _opt(False)
    # Most records in a UDP answer. 3 fits in 512 bytes and spreads load by shuffling;
    # raising it risks truncation on old resolvers.
    udp_answer_limit: int = _opt(3, check=_at_least(1))
    # Most A/AAAA records in any answer; 0 means no limit beyond udp_answer_limit.
    a_record_limit: int = _opt(0, check=_at_least(0))
    # Time to wait for one upstream recursor before trying the next (SERVFAIL when all fail).
    recursor_timeout: str = _opt("2s", check=_duration)
    # The SOA of our domain: refresh/retry/expire and min_ttl (the negative-answer TTL).
    soa: SOAConfig = _opt(factory=SOAConfig)


@dataclass
class ACLTokens:
    """Tokens the agent holds. Secrets: never logged."""

    # Bootstrap management token, created on the servers if missing. "" means bootstrap by API.
    initial_management: str = _opt("")
    # Token for requests that carry none (HTTP and DNS). "" means the anonymous token.
    default: str = _opt("")
    # Token for the agent's own writes (node registration, anti-entropy). "" means `default`.
    agent: str = _opt("")


@dataclass
class ACLConfig:
    """Access control lists."""

    # Enforce ACLs. False: everything is allowed and tokens are ignored.
    enabled: bool = _opt(False)
    # What a token may do where no rule speaks: "allow" eases a rollout; "deny" is safe.
    default_policy: str = _opt("allow", check=_one_of("allow", "deny"))
    # Keep agent tokens set by PUT /v1/agent/token/<type> in the data dir (acl-tokens.json, 0600)
    # and load them at start, where they win over the config file's. False: they last until exit.
    enable_token_persistence: bool = _opt(False)
    tokens: ACLTokens = _opt(factory=ACLTokens)


@dataclass
class TLSDefaults:
    """TLS settings shared by every listener (Consul's tls.defaults)."""

    # PEM CA bundle used to verify peers. "" means none.
    ca_file: str = _opt("")
    # PEM certificate this agent presents.
    cert_file: str = _opt("")
    # PEM private key for cert_file. Keep it mode 0600.
    key_file: str = _opt("")
    # Require clients to present a certificate signed by ca_file. False eases a rollout.
    verify_incoming: bool = _opt(False)
    # Use TLS, verified against ca_file, for outgoing connections. False eases a rollout.
    verify_outgoing: bool = _opt(False)


@dataclass
class TLSInternalRPC:
    """TLS settings for server RPC (port 8300)."""

    # Check that a server's certificate names server.<datacenter>.<domain>. False lets any
    # certificate signed by the CA act as a server (so any client could pose as one).
    verify_server_hostname: bool = _opt(False)


@dataclass
class TLSConfig:
    defaults: TLSDefaults = _opt(factory=TLSDefaults)
    internal_rpc: TLSInternalRPC = _opt(factory=TLSInternalRPC)


@dataclass
class GossipLAN:
    """LAN gossip tuning: Consul's gossip_lan keys, plus murmur's `preset` they refine.
    An unset key ("" or 0) takes the preset's value."""

    # memberlist's presets: "lan" (1 s probes, the default), "wan" (5 s probes, slow links) or
    # "local" (200 ms probe timeout, fast suspicion: loopback and test rigs only).
    preset: str = _opt("lan", check=_one_of("lan", "wan", "local"))
    # Members gossiped to per round. More spreads news faster, at more packets per round.
    gossip_nodes: int = _opt(0, check=_at_least(0))
    # Time between gossip rounds. Shorter spreads news faster, at more packets per second.
    gossip_interval: str = _opt("", check=_duration_or_unset)
    # Time between failure probes. Shorter detects failures sooner, at more packets.
    probe_interval: str = _opt("", check=_duration_or_unset)
    # Wait for a direct ack before probing indirectly; keep above the network's p99 RTT.
    probe_timeout: str = _opt("", check=_duration_or_unset)
    # Retransmits of each broadcast, times log10(N+1). Higher survives more loss.
    retransmit_mult: int = _opt(0, check=_at_least(0))
    # Suspicion timeout multiplier. Higher tolerates longer pauses before declaring death.
    suspicion_mult: int = _opt(0, check=_at_least(0))


@dataclass
class Limits:
    # Concurrent HTTP connections from one client IP. 200 (Consul's) stops one client starving
    # the rest; raise it for proxies that multiplex many users through one address.
    http_max_conns_per_client: int = _opt(200, check=_at_least(0))
    # (murmur) Once a request's first byte is in, its head, and then its body, must arrive within
    # this long: a slow client (slowloris) gets 408 and is cut off instead of holding a slot.
    http_read_timeout: str = _opt("30s", check=_duration)
    # (murmur) A keep-alive connection with no request for this long is closed.
    http_idle_timeout: str = _opt("90s", check=_duration)
    # (murmur) Largest request body accepted (413 above it). KV values are limited far below.
    http_max_body_bytes: int = _opt(16 * 1024 * 1024, check=_at_least(1))


@dataclass
class AutopilotSeed:
    """Consul's `autopilot` block: the configuration the first leader writes to the Raft log.
    After that, `/v1/operator/autopilot/configuration` (replicated) is what counts, as in Consul."""

    # Remove a server gossip has shown failed for 5 minutes (and a non-voter at once). Off: an
    # operator removes dead servers with `operator raft remove-peer`.
    cleanup_dead_servers: bool = _opt(True)
    # A server not heard from within this long is unhealthy (and a non-voter is not promoted).
    last_contact_threshold: str = _opt("200ms", check=_duration)
    # A server this many entries behind the leader is unhealthy.
    max_trailing_logs: int = _opt(250, check=_at_least(0))
    # CleanupDeadServers never shrinks the voters below this (0: no floor beyond a quorum).
    min_quorum: int = _opt(0, check=_at_least(0))
    # How long a new server must stay healthy before it is promoted to voter. Shorter adds
    # servers sooner; longer keeps a flapping server out of the quorum.
    server_stabilization_time: str = _opt("10s", check=_duration)
    # Accepted for Consul compatibility; Enterprise features murmur does not act on.
    redundancy_zone_tag: str = _opt("")
    disable_upgrade_migration: bool = _opt(False)
    upgrade_version_tag: str = _opt("")


@dataclass
class RuntimeConfig:
    """Everything the agent needs to start; see conventions.md (Config) for the key list."""

    # Datacenter name. Agents only gossip with their own datacenter's agents.
    datacenter: str = _opt("dc1", check=_datacenter)
    # Node name, unique in the datacenter. "" means the hostname (filled in by the agent).
    node_name: str = _opt("")
    # Node ID, a UUID. "" means the one kept in data_dir/node-id (random, made once).
    node_id: str = _opt("", check=_uuid)
    # Where state lives (node-id, Raft log, snapshots). Required outside --dev.
    data_dir: str = _opt("")
    # Run as a server (Raft voter, catalog replica) rather than a client.
    server: bool = _opt(False)
    # Servers to wait for before electing a leader. 0: manual bootstrap. 3 or 5 in production;
    # 1 gives no fault tolerance.
    bootstrap_expect: int = _opt(0, check=_at_least(0))
    # Address for gossip and server RPC. 0.0.0.0 listens everywhere and advertises the single
    # private IP (an error if there are several: then set advertise_addr).
    bind_addr: str = _opt("0.0.0.0", check=_ip)
    # Address other agents use to reach this one. "" means derived from bind_addr.
    advertise_addr: str = _opt("", check=_ip)
    # Address(es) for HTTP and DNS, space-separated. Loopback by default: exposing the HTTP API
    # without ACLs lets anyone register services and, with script checks, run commands.
    client_addr: str = _opt("127.0.0.1", check=_ips)
    ports: Ports = _opt(factory=Ports)
    addresses: Addresses = _opt(factory=Addresses)
    # Agents to join at start, retried until one answers (host, host:port or IP).
    retry_join: list[str] = _opt(factory=list, check=_non_empty_items)
    # Agents to join at start, once; the agent stops if none answers. Prefer retry_join.
    start_join: list[str] = _opt(factory=list, check=_non_empty_items)
    # Wait between retry_join attempts.
    retry_interval: str = _opt("30s", check=_duration)
    # Give up after this many retry_join attempts; 0 means retry forever.
    retry_max: int = _opt(0, check=_at_least(0))
    # Free-form node metadata (at most 64 pairs), shown in the catalog and usable in queries.
    node_meta: dict[str, str] = _opt(factory=dict, check=_meta)
    # Gossip encryption key, base64 of 32 bytes. "" means gossip in clear text. A secret.
    encrypt: str = _opt("", check=_encrypt_key)
    # Drop unencrypted gossip. Turn off for the middle step of an encryption rollout.
    encrypt_verify_incoming: bool = _opt(True)
    # Encrypt outgoing gossip. Turn off for the first step of an encryption rollout.
    encrypt_verify_outgoing: bool = _opt(True)
    # Allow script (`args`) checks from config files AND the HTTP API. Dangerous unless ACLs
    # guard the API: anyone who can register a check can run a command.
    enable_script_checks: bool = _opt(False)
    # Allow script checks from config files only: the safe way to use them.
    enable_local_script_checks: bool = _opt(False)
    # Leave the cluster gracefully on SIGTERM. None: Consul's rule (true for clients, false
    # for servers, so a restarting server does not shrink the quorum).
    leave_on_terminate: bool | None = _opt(None)
    # Skip the graceful leave on SIGINT. None: Consul's rule (true for servers, false for clients).
    skip_leave_on_interrupt: bool | None = _opt(None)
    # Rejoin the members in data_dir/serf/local.snapshot even after a graceful leave. Off: a leave
    # is meant to be permanent (Consul's rule); a crash or kill always rejoins.
    rejoin_after_leave: bool = _opt(False)
    dns_config: DNSConfig = _opt(factory=DNSConfig)
    # Upstream resolvers for names outside our domain (IP or IP:port). Empty: refuse them.
    recursors: list[str] = _opt(factory=list, check=_each(_recursor))
    # Domain DNS answers for. Consul's is "consul"; ours is "murmur".
    domain: str = _opt("murmur", check=_domain)
    # A second domain answered like `domain` (for a migration between names). "" means none.
    alt_domain: str = _opt("", check=_domain)
    acl: ACLConfig = _opt(factory=ACLConfig)
    tls: TLSConfig = _opt(factory=TLSConfig)
    limits: Limits = _opt(factory=Limits)
    autopilot: AutopilotSeed = _opt(factory=AutopilotSeed)
    gossip_lan: GossipLAN = _opt(factory=GossipLAN)
    # Forget a failed member after this long (Consul's 72h). Shorter cleans up after VMs that
    # are gone for good sooner; a member that comes back later simply joins again.
    reconnect_timeout: str = _opt("72h", check=_duration)
    # A change to a check's output alone (same status) reaches the servers at most this often
    # (Consul's default). Status changes go at once. Lower shows fresher output in the catalog at
    # the price of Raft writes: 1,000 checks whose output changes every run are 100 writes/s at 10 s.
    check_update_interval: str = _opt("5m", check=_duration)
    # Servers: snapshot the catalog and compact the Raft log once this many entries were applied
    # since the last snapshot (Consul's default). Lower keeps the log and restarts short but
    # snapshots more often; a follower further behind than the log reaches gets a snapshot.
    raft_snapshot_threshold: int = _opt(16384, check=_at_least(1))
    # Servers: entries kept in the log behind each snapshot (Consul's default), so a follower
    # that is only that far behind catches up from the log instead of receiving a snapshot.
    raft_trailing_logs: int = _opt(10240, check=_at_least(0))
    # Servers (murmur's own key, off as the Raft paper advises): `default`-mode reads on the
    # leader are answered from its lease (half the election timeout after a quorum acknowledged
    # a heartbeat) instead of a heartbeat round, saving a round trip per read. The price: a
    # leader whose clock runs more than ~20% slow against a follower's, or a follower restarted
    # within the lease, can answer a read stale (docs/operations.md measures the window).
    # `consistent` reads always confirm with a quorum.
    raft_lease_reads: bool = _opt(False)
    # The cluster protocol this agent speaks (murmur.agent.protocol): the newest by default.
    # Pinning the previous one (N-1) lets a rolling upgrade keep old and new servers together;
    # the leader uses a newer feature only once every server advertises it. Consul's `protocol`.
    protocol: int = _opt(4, check=_protocol)
    # TRACE, DEBUG, INFO, WARN or ERROR (files may use any case; stored upper-case).
    log_level: str = _opt("INFO", check=_one_of("trace", "debug", "info", "warn", "error", upper=True))
    # Log one JSON object a line (hclog's keys: @level, @message, @module, @timestamp) instead of text.
    log_json: bool = _opt(False)
    # --dev: a single in-memory server. Set by load(dev=True), not by files.
    dev: bool = _opt(False, in_files=False)
    # Services, in Consul HTTP API shape (ID, Name, Tags, Port, Check, Checks, ...).
    services: list[dict[str, Any]] = _opt(factory=list, in_files=False)
    # Standalone checks, in Consul HTTP API shape (CheckID, Name, TTL, ...).
    checks: list[dict[str, Any]] = _opt(factory=list, in_files=False)
    # Human-readable warnings found while loading: unimplemented Consul keys, features to come.
    warnings: list[str] = _opt(factory=list, in_files=False)
    # The files read, in order.
    sources: list[str] = _opt(factory=list, in_files=False)


# What --dev changes before the files are read (files and flags still win), as in Consul:
# one server, gossip on loopback only.
DEV_DEFAULTS: dict[str, Any] = {"server": True, "bind_addr": "127.0.0.1"}

# Keys on the conventions page whose feature is not built yet: accepted, with a warning when set.
# A key here covers everything below it. Shrink this as features land.
NOT_YET_WORKING: dict[str, str] = {
    "ports.grpc": "the gRPC API",
    "ports.serf_wan": "WAN gossip",
}

# Consul agent keys murmur does not implement: accepted, ignored, with a warning. A key here
# covers everything below it. Taken from Consul's agent configuration reference.
UNIMPLEMENTED_CONSUL_KEYS: frozenset[str] = frozenset({
    # general
    "advertise_addr_ipv4", "advertise_addr_ipv6", "advertise_addr_wan", "advertise_addr_wan_ipv4",
    "advertise_addr_wan_ipv6", "advertise_addrs", "advertise_reconnect_timeout", "audit", "auto_config",
    "auto_encrypt", "auto_reload_config", "bootstrap", "cache", "check_output_max_size",
    "cloud", "config_entries", "connect", "default_query_time",
    "disable_anonymous_signature", "disable_coordinates", "disable_host_node_id",
    "disable_http_unprintable_char_filter", "disable_keyring_file", "disable_remote_exec",
    "disable_update_check", "discard_check_output", "discovery_max_stale", "enable_agent_tls_for_checks",
    "enable_central_service_config", "enable_debug", "enable_syslog", "experiments", "http_config",
    "license_path", "locality", "log_file", "log_rotate_bytes", "log_rotate_duration",
    "log_rotate_max_files", "max_query_time", "non_voting_server", "partition", "peering", "performance",
    "pid_file", "primary_datacenter", "primary_gateways", "primary_gateways_retry_interval",
    "raft_boltdb", "raft_logstore", "raft_protocol", "raft_snapshot_interval",
    "read_replica", "reconnect_timeout_wan",
    "reporting", "retry_interval_wan", "retry_join_wan", "retry_max_wan", "rpc",
    "segment", "segments", "serf_lan", "serf_lan_allowed_cidrs", "serf_wan", "serf_wan_allowed_cidrs",
    "server_name", "server_rejoin_age_max", "session_ttl_min", "snapshot_agent", "start_join_wan",
    "syslog_facility", "telemetry", "translate_wan_addrs", "ui", "ui_config", "ui_dir",
    "unix_sockets", "use_streaming_backend", "watches", "xds",
    # pre-1.4 ACL keys and pre-1.12 TLS keys (see the hints in _RENAMED)
    "acl_datacenter", "acl_default_policy", "acl_down_policy", "acl_enforce_version_8",
    "acl_master_token", "acl_agent_master_token", "acl_agent_token", "acl_replication_token",
    "acl_token", "acl_ttl", "acl_enable_key_list_policy", "enable_acl_replication",
    "ca_file", "ca_path", "cert_file", "key_file", "verify_incoming", "verify_incoming_rpc",
    "verify_incoming_https", "verify_outgoing", "verify_server_hostname", "tls_min_version",
    "tls_cipher_suites", "tls_prefer_server_cipher_suites",
    # nested
    "ports.grpc_tls", "ports.sidecar_min_port", "ports.sidecar_max_port", "ports.expose_min_port",
    "ports.expose_max_port",
    "addresses.https", "addresses.grpc", "addresses.grpc_tls",
    "dns_config.recursor_strategy", "dns_config.disable_compression",
    "dns_config.enable_additional_node_meta_txt", "dns_config.use_cache", "dns_config.cache_max_age",
    "dns_config.prefer_namespace",
    "acl.down_policy", "acl.token_ttl", "acl.policy_ttl", "acl.role_ttl",
    "acl.enable_token_replication", "acl.enable_key_list_policy", "acl.msp_disable_bootstrap",
    "acl.tokens.master", "acl.tokens.agent_master", "acl.tokens.agent_recovery", "acl.tokens.replication",
    "acl.tokens.config_file_service_registration", "acl.tokens.dns", "acl.tokens.managed_service_provider",
    "tls.defaults.ca_path", "tls.defaults.tls_min_version", "tls.defaults.tls_cipher_suites",
    "tls.internal_rpc.ca_file", "tls.internal_rpc.ca_path", "tls.internal_rpc.cert_file",
    "tls.internal_rpc.key_file", "tls.internal_rpc.verify_incoming", "tls.internal_rpc.verify_outgoing",
    "tls.internal_rpc.tls_min_version", "tls.internal_rpc.tls_cipher_suites", "tls.https", "tls.grpc",
    "limits.rpc_rate", "limits.rpc_max_burst", "limits.rpc_max_conns_per_client",
    "limits.rpc_handshake_timeout", "limits.rpc_client_timeout", "limits.https_handshake_timeout",
    "limits.kv_max_value_size", "limits.txn_max_req_len", "limits.request_limits",
})

# Old Consul spellings whose modern key murmur does implement.
_RENAMED: dict[str, str] = {
    "acl_default_policy": "acl.default_policy", "acl_master_token": "acl.tokens.initial_management",
    "acl_token": "acl.tokens.default", "acl_agent_token": "acl.tokens.agent",
    "acl.tokens.master": "acl.tokens.initial_management", "ca_file": "tls.defaults.ca_file",
    "cert_file": "tls.defaults.cert_file", "key_file": "tls.defaults.key_file",
    "verify_incoming": "tls.defaults.verify_incoming", "verify_outgoing": "tls.defaults.verify_outgoing",
    "verify_server_hostname": "tls.internal_rpc.verify_server_hostname",
}

_UNIMPLEMENTED_MSG = "Consul option not implemented by murmur, ignored"


# --------------------------------------------------------------------------------------------
# Service and check definitions: snake_case key -> (Consul HTTP API key, value rule).


def _plain(hint: Any, check: Callable[[Any], Any] | None = None) -> _Rule:
    return _Rule(hint, check)


@dataclass(frozen=True)
class _Rule:
    hint: Any
    check: Callable[[Any], Any] | None = None


def _url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise _Bad(f"{value!r} is not an http:// or https:// URL")
    return value


def _tcp_target(value: str) -> str:
    _host_port(value, port_required=True)
    return value


def _grpc_target(value: str) -> str:
    """host:port, or host:port/service to ask about one service (Consul's form)."""
    _host_port(value.partition("/")[0], port_required=True)
    return value


def _status(value: str) -> str:
    return _one_of("passing", "warning", "critical")(value)


def _header(values: dict[str, Any]) -> dict[str, list[str]]:
    for k, v in values.items():
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise _Bad(f"expected an array of strings, got {_type_name(v, 'toml')}", [k])
    return values


def _non_empty(value: str) -> str:
    if not value.strip():
        raise _Bad("must not be empty")
    return value


def _service_port(value: int) -> int:
    if not 0 <= value <= 65535:
        raise _Bad(f"port {value} out of range 0..65535")
    return value


_CHECK_FIELDS: dict[str, tuple[str, _Rule]] = {
    "id": ("CheckID", _plain(str, _non_empty)),
    "name": ("Name", _plain(str, _non_empty)),
    "notes": ("Notes", _plain(str)),
    "status": ("Status", _plain(str, _status)),
    "service_id": ("ServiceID", _plain(str)),
    "token": ("Token", _plain(str)),
    "http": ("HTTP", _plain(str, _url)),
    "method": ("Method", _plain(str, _non_empty)),
    "header": ("Header", _plain(dict, _header)),
    "body": ("Body", _plain(str)),
    "tls_skip_verify": ("TLSSkipVerify", _plain(bool)),
    "tls_server_name": ("TLSServerName", _plain(str)),
    "disable_redirects": ("DisableRedirects", _plain(bool)),
    "tcp": ("TCP", _plain(str, _tcp_target)),
    "tcp_use_tls": ("TCPUseTLS", _plain(bool)),
    "ttl": ("TTL", _plain(str, _duration)),
    "args": ("Args", _plain(list[str], _non_empty_items)),
    "docker_container_id": ("DockerContainerID", _plain(str, _non_empty)),
    "shell": ("Shell", _plain(str, _non_empty)),
    "grpc": ("GRPC", _plain(str, _grpc_target)),
    "grpc_use_tls": ("GRPCUseTLS", _plain(bool)),
    "h2ping": ("H2PING", _plain(str, _tcp_target)),
    "h2ping_use_tls": ("H2PingUseTLS", _plain(bool)),
    "alias_node": ("AliasNode", _plain(str, _non_empty)),
    "alias_service": ("AliasService", _plain(str, _non_empty)),
    "interval": ("Interval", _plain(str, _duration)),
    "timeout": ("Timeout", _plain(str, _duration)),
    "deregister_critical_service_after": ("DeregisterCriticalServiceAfter", _plain(str, _duration)),
    "success_before_passing": ("SuccessBeforePassing", _plain(int, _at_least(0))),
    "failures_before_warning": ("FailuresBeforeWarning", _plain(int, _at_least(0))),
    "failures_before_critical": ("FailuresBeforeCritical", _plain(int, _at_least(0))),
    "output_max_size": ("OutputMaxSize", _plain(int, _at_least(0))),
}
_CHECK_ALIASES = {"check_id": "id", "script_args": "args"}
_CHECK_UNIMPLEMENTED = frozenset({"udp", "os_service", "namespace", "partition"})
# The check kinds; a definition has exactly one. alias_node and alias_service together are one
# alias check (a service on a given node), as in Consul.
_CHECK_KINDS = ("http", "tcp", "ttl", "args", "grpc", "h2ping", "alias")
_NEEDS_INTERVAL = ("http", "tcp", "args", "grpc", "h2ping")

_WEIGHT_FIELDS: dict[str, tuple[str, _Rule]] = {
    "passing": ("Passing", _plain(int, _at_least(1))),
    "warning": ("Warning", _plain(int, _at_least(0))),
}
_TAGGED_ADDRESS_FIELDS: dict[str, tuple[str, _Rule]] = {
    "address": ("Address", _plain(str)),
    "port": ("Port", _plain(int, _service_port)),
}
_SERVICE_FIELDS: dict[str, tuple[str, _Rule]] = {
    "id": ("ID", _plain(str, _non_empty)),
    "name": ("Name", _plain(str, _non_empty)),
    "tags": ("Tags", _plain(list[str])),
    "address": ("Address", _plain(str)),
    "port": ("Port", _plain(int, _service_port)),
    "meta": ("Meta", _plain(dict[str, str], _meta)),
    "enable_tag_override": ("EnableTagOverride", _plain(bool)),
    "weights": ("Weights", _plain("weights")),
    "tagged_addresses": ("TaggedAddresses", _plain("tagged_addresses")),
    "kind": ("Kind", _plain(str)),
    "token": ("Token", _plain(str)),
    "socket_path": ("SocketPath", _plain(str)),
    "check": ("Check", _plain("check")),
    "checks": ("Checks", _plain("checks")),
}
_SERVICE_UNIMPLEMENTED = frozenset({"connect", "proxy", "namespace", "partition", "locality"})


# --------------------------------------------------------------------------------------------
# Where things were found.

def _dotted(parts: Iterable[str | int]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p)
    return out


def _type_name(value: Any, fmt: str) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "table" if fmt == "toml" else "object"
    if value is None:
        return "null"
    return type(value).__name__  # TOML dates and times


def _expected_name(hint: Any, fmt: str) -> str:
    if hint is str:
        return "string"
    if hint is int:
        return "integer"
    if hint is bool or hint == (bool | None):
        return "boolean"
    if get_origin(hint) is list:
        return "array of strings"
    if hint is dict or get_origin(hint) is dict:
        return "table" if fmt == "toml" else "object"
    return str(hint)


class _Source:
    """One config source (a file, or the flags): its text for finding lines, and the sink for
    its errors and warnings."""

    def __init__(self, name: str, text: str, fmt: str, errors: list[str], warnings: list[str]) -> None:
        self.name = name
        self.text = text
        self.fmt = fmt  # "toml", "json" or "flags"
        self.errors = errors
        self.warnings = warnings

    def where(self, parts: Sequence[str | int]) -> str:
        line = _find_line(self.text, list(parts), self.fmt) if self.text else None
        return f"{self.name}:{line}" if line else self.name

    def error(self, parts: Sequence[str | int], reason: str, *, missing: bool = False) -> None:
        """Record an error at ``parts``; for a key that is ``missing``, point at its parent's line."""
        where = self.where(parts[:-1] if missing else parts)
        self.errors.append(f"{where}: {_dotted(parts)}: {reason}")

    def warn(self, parts: Sequence[str | int], message: str) -> None:
        self.warnings.append(f"{self.where(parts)}: {_dotted(parts)}: {message}")


def _find_line(text: str, parts: list[str | int], fmt: str) -> int | None:
    """The line of ``parts`` (a key path) in a file's text, narrowing step by step; when a step
    is not found, the line of the deepest step that was (best effort)."""
    pos: int | None = None
    prev: str | int | None = None
    for part in parts:
        start = pos or 0
        found = _find_index(text, start, prev, part) if isinstance(part, int) else _find_key(text, start, part, fmt)
        if found is None:
            break
        pos, prev = found, part
    return None if pos is None else text.count("\n", 0, pos) + 1


def _find_key(text: str, start: int, key: str, fmt: str) -> int | None:
    k = re.escape(key)
    if fmt == "json":
        pattern = rf'"{k}"\s*:'
    else:  # TOML: `key =`, `key.sub =`, `[key]`, `[a.key]`, `{ key = ...}`, quoted or bare
        pattern = rf'(?:^|(?<=[\s{{,.\[]))("?){k}\1\s*(?:=|\.|\])'
    for m in re.compile(pattern, re.MULTILINE).finditer(text, start):
        line_start = text.rfind("\n", 0, m.start()) + 1
        if fmt == "toml" and "#" in text[line_start:m.start()]:
            continue  # in a comment
        return m.start()
    return None


def _find_index(text: str, start: int, key: str | int | None, index: int) -> int | None:
    # TOML arrays of tables: the index-th [[...key]] header from here.
    if isinstance(key, str):
        header = re.compile(rf"^[ \t]*\[\[\s*(?:[\w.\"-]+\.)?\"?{re.escape(key)}\"?\s*\]\]", re.MULTILINE)
        line_start = text.rfind("\n", 0, start) + 1
        heads = [m.start() for m in header.finditer(text, line_start)]
        if len(heads) > index:
            return heads[index]
    # Inline arrays (JSON or TOML): the index-th element of the next [...].
    open_at = text.find("[", start)
    if open_at < 0:
        return None
    depth, count, i, expecting = 0, -1, open_at, True
    while i < len(text):
        c = text[i]
        if c == '"':
            if depth == 1 and expecting:
                count, expecting = count + 1, False
                if count == index:
                    return i
            i = _skip_string(text, i)
            continue
        if c in "[{":
            depth += 1
            if depth == 2 and expecting:
                count, expecting = count + 1, False
                if count == index:
                    return i
        elif c in "]}":
            depth -= 1
            if depth == 0:
                return None
        elif c == "," and depth == 1:
            expecting = True
        elif depth == 1 and expecting and not c.isspace() and c != "#":
            count, expecting = count + 1, False
            if count == index:
                return i
        i += 1
    return None


def _skip_string(text: str, i: int) -> int:
    j = i + 1
    while j < len(text) and text[j] != '"':
        j += 2 if text[j] == "\\" else 1
    return j + 1


# --------------------------------------------------------------------------------------------
# Checking a parsed file against the schema.


@dataclass
class _Entry:
    """A service or standalone check: its API-shape value and where it came from."""

    source: _Source
    parts: list[str | int]
    value: dict[str, Any]
    script_keys: list[list[str | int]]  # paths of `args` keys, refused unless script checks are on


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = get_type_hints(cls)
    return _HINTS[cls]


def _file_fields(cls: type) -> dict[str, dataclasses.Field[Any]]:
    return {f.name: f for f in dataclasses.fields(cls) if f.metadata.get("in_files", True)}


def _norm(key: str) -> str:
    return key.lower().replace("_", "").replace("-", "")


def _suggest(key: str, candidates: Iterable[str]) -> str:
    candidates = list(candidates)
    for c in candidates:
        if _norm(c) == _norm(key):
            return f"; did you mean {c!r}?"
    close = difflib.get_close_matches(key.lower(), candidates, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


_FLAG_TRUE = {"true", "1", "yes", "on"}
_FLAG_FALSE = {"false", "0", "no", "off"}


def _typed(value: Any, hint: Any, src: _Source) -> Any:
    """``value`` if it has the type ``hint`` names; flag values given as strings are converted."""
    flags = src.fmt == "flags"
    if hint is str:
        if isinstance(value, str):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if flags and isinstance(value, str) and re.fullmatch(r"-?[0-9]+", value.strip()):
            return int(value)
    elif hint is bool or hint == (bool | None):
        if isinstance(value, bool):
            return value
        if flags and isinstance(value, str) and value.lower() in _FLAG_TRUE | _FLAG_FALSE:
            return value.lower() in _FLAG_TRUE
    elif get_origin(hint) is list:
        if flags and isinstance(value, str):
            value = [value]
        if isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                if not isinstance(item, str):
                    raise _Bad(f"expected string, got {_type_name(item, src.fmt)}", [i])
            return list(value)
    elif hint is dict or get_origin(hint) is dict:
        if isinstance(value, dict):
            if get_args(hint) and get_args(hint)[1] is str:
                for k, item in value.items():
                    if not isinstance(item, str):
                        raise _Bad(f"expected string, got {_type_name(item, src.fmt)}", [k])
            return dict(value)
    else:
        raise TypeError(f"no rule for {hint!r}")
    raise _Bad(f"expected {_expected_name(hint, src.fmt)}, got {_type_name(value, src.fmt)}")


def _check_table(raw: Any, cls: type, parts: list[str | int], src: _Source) -> dict[str, Any]:
    """The given keys of one table, checked against the dataclass ``cls``."""
    if not isinstance(raw, dict):
        src.error(parts, f"expected {_expected_name(dict, src.fmt)}, got {_type_name(raw, src.fmt)}")
        return {}
    known = _file_fields(cls)
    hints = _hints(cls)
    out: dict[str, Any] = {}
    for key, value in raw.items():
        sub = [*parts, key]
        dotted = _dotted(sub)
        f = known.get(key)
        if f is None:
            if dotted in UNIMPLEMENTED_CONSUL_KEYS:
                hint = f" (murmur reads {_RENAMED[dotted]})" if dotted in _RENAMED else ""
                src.warn(sub, _UNIMPLEMENTED_MSG + hint)
            else:
                extra = ["service", "services", "check", "checks"] if not parts else []
                src.error(sub, "unknown key" + _suggest(key, [*known, *extra]))
            continue
        hint = hints[key]
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            out[key] = _check_table(value, hint, sub, src)
            continue
        try:
            checked = _typed(value, hint, src)
            if f.metadata.get("check") is not None:
                checked = f.metadata["check"](checked)
        except _Bad as e:
            src.error([*sub, *e.sub], e.reason)
            continue
        out[key] = checked
    return out


def _match_key(key: str, spec: Mapping[str, Any], aliases: Mapping[str, str], src: _Source) -> str | None:
    """The snake_case name of a definition key. JSON matches ignoring case and underscores."""
    if key in spec:
        return key
    if key in aliases:
        return aliases[key]
    if src.fmt == "json":
        n = _norm(key)
        for name in [*spec, *aliases]:
            if _norm(name) == n:
                return aliases.get(name, name)
    return None


def _check_object(raw: Any, spec: Mapping[str, tuple[str, _Rule]], parts: list[str | int], src: _Source,
                  *, aliases: Mapping[str, str] | None = None, unimplemented: frozenset[str] = frozenset(),
                  nested: Callable[[str, Any, list[str | int]], Any] | None = None,
                  ) -> tuple[dict[str, Any], dict[str, str]] | None:
    """Check a service/check-style definition. Returns (API-shape dict, snake name -> key as
    written), or None if it was not an object at all."""
    if not isinstance(raw, dict):
        src.error(parts, f"expected {_expected_name(dict, src.fmt)}, got {_type_name(raw, src.fmt)}")
        return None
    aliases = aliases or {}
    out: dict[str, Any] = {}
    written: dict[str, str] = {}
    for key, value in raw.items():
        sub = [*parts, key]
        name = _match_key(key, spec, aliases, src)
        if name is None:
            norm_unimpl = {_norm(u): u for u in unimplemented}
            if key in unimplemented or (src.fmt == "json" and _norm(key) in norm_unimpl):
                src.warn(sub, _UNIMPLEMENTED_MSG)
            else:
                src.error(sub, "unknown key" + _suggest(key, [*spec, *aliases]))
            continue
        if name in written:
            src.error(sub, f"given twice (as {written[name]!r} and {key!r})")
            continue
        written[name] = key
        api_key, rule = spec[name]
        if isinstance(rule.hint, str):  # a nested definition
            assert nested is not None
            result = nested(rule.hint, value, sub)
            if result is not None:
                out[api_key] = result
            continue
        try:
            checked = _typed(value, rule.hint, src)
            if rule.check is not None:
                checked = rule.check(checked)
        except _Bad as e:
            src.error([*sub, *e.sub], e.reason)
            continue
        out[api_key] = checked
    return out, written


def _check_check(raw: Any, parts: list[str | int], src: _Source, *, standalone: bool,
                 script_keys: list[list[str | int]]) -> dict[str, Any] | None:
    got = _check_object(raw, _CHECK_FIELDS, parts, src, aliases=_CHECK_ALIASES,
                        unimplemented=_CHECK_UNIMPLEMENTED)
    if got is None:
        return None
    out, written = got
    kinds = [k for k in _CHECK_KINDS if k in written]
    if "alias_node" in written or "alias_service" in written:
        kinds.append("alias")
    all_kinds = "http, tcp, ttl, args, grpc, h2ping or alias_service/alias_node"
    if not kinds:
        if len(written) == len(raw):  # no point piling on when the keys were already wrong
            src.error(parts, f"a check needs one of {all_kinds}; none given")
    elif len(kinds) > 1:
        src.error(parts, f"a check has exactly one of {all_kinds}; got {' and '.join(kinds)}")
    elif kinds[0] in _NEEDS_INTERVAL and "interval" not in written:
        src.error([*parts, "interval"], f"required: how often to run the {kinds[0]} check (e.g. \"10s\")", missing=True)
    if "args" in written:
        script_keys.append([*parts, written["args"]])
    if "docker_container_id" in written and "args" not in written:
        src.error([*parts, written["docker_container_id"]], "a Docker check also needs args (the command to run)")
    if "shell" in written and "docker_container_id" not in written:
        src.error([*parts, written["shell"]], "shell is for Docker checks: set docker_container_id too")
    if standalone and "name" not in written:
        src.error([*parts, "name"], "required: a check needs a name", missing=True)
    return out


def _check_service(raw: Any, parts: list[str | int], src: _Source,
                   script_keys: list[list[str | int]]) -> dict[str, Any] | None:
    def nested(kind: str, value: Any, sub: list[str | int]) -> Any:
        if kind == "check":
            return _check_check(value, sub, src, standalone=False, script_keys=script_keys)
        if kind == "checks":
            if not isinstance(value, list):
                src.error(sub, f"expected array of checks, got {_type_name(value, src.fmt)}")
                return None
            checks = [_check_check(c, [*sub, i], src, standalone=False, script_keys=script_keys)
                      for i, c in enumerate(value)]
            return [c for c in checks if c is not None]
        if kind == "weights":
            got = _check_object(value, _WEIGHT_FIELDS, sub, src)
            return got[0] if got else None
        # tagged_addresses: name -> {address, port}
        if not isinstance(value, dict):
            src.error(sub, f"expected {_expected_name(dict, src.fmt)}, got {_type_name(value, src.fmt)}")
            return None
        tagged = {}
        for name, addr in value.items():
            got = _check_object(addr, _TAGGED_ADDRESS_FIELDS, [*sub, name], src)
            if got:
                tagged[name] = got[0]
        return tagged

    got = _check_object(raw, _SERVICE_FIELDS, parts, src, unimplemented=_SERVICE_UNIMPLEMENTED, nested=nested)
    if got is None:
        return None
    out, written = got
    if "name" not in written:
        src.error([*parts, "name"], "required: a service needs a name", missing=True)
    return out


def _check_definitions(raw: dict[str, Any], src: _Source) -> dict[str, list[_Entry]]:
    """Check a file's service/services/check/checks keys."""
    found: dict[str, list[_Entry]] = {"services": [], "checks": []}
    for key, plural in (("service", "services"), ("services", "services"), ("check", "checks"), ("checks", "checks")):
        if key not in raw:
            continue
        value = raw.pop(key)
        if key == plural:
            if not isinstance(value, list):
                src.error([key], f"expected array of {_expected_name(dict, src.fmt)}s, got {_type_name(value, src.fmt)}")
                continue
            items: list[tuple[list[str | int], Any]] = [([key, i], v) for i, v in enumerate(value)]
        else:
            items = [([key], value)]
        for parts, item in items:
            script_keys: list[list[str | int]] = []
            if plural == "services":
                out = _check_service(item, parts, src, script_keys)
            else:
                out = _check_check(item, parts, src, standalone=True, script_keys=script_keys)
            if out is not None:
                found[plural].append(_Entry(src, parts, out, script_keys))
    return found


def _not_yet(values: Mapping[str, Any], prefix: list[str | int], src: _Source) -> None:
    for key, value in values.items():
        parts = [*prefix, key]
        feature = NOT_YET_WORKING.get(_dotted(parts))
        if feature is not None:
            disabling_port = _dotted(prefix) == "ports" and value == -1
            if not disabling_port:
                src.warn(parts, f"accepted; {feature} does not work yet")
            continue
        if isinstance(value, dict):
            _not_yet(value, parts, src)


def _check_source(raw: dict[str, Any], src: _Source) -> dict[str, Any]:
    """One source's keys, checked; services and checks as lists of _Entry."""
    raw = dict(raw)
    definitions: dict[str, Any] = {k: raw.pop(k) for k in ("service", "services", "check", "checks") if k in raw}
    out = _check_table(raw, RuntimeConfig, [], src)
    defs = _check_definitions(definitions, src)
    _not_yet(out, [], src)
    if out.get("node_name") and not re.fullmatch(r"[A-Za-z0-9-]{1,63}", out["node_name"]):
        src.warn(["node_name"], "not a valid DNS label (letters, digits, '-'; at most 63): "
                                "this node will not be found through DNS")
    if out.get("enable_script_checks"):
        src.warn(["enable_script_checks"], "anyone who can reach the HTTP API can run commands on this host; "
                                           "prefer enable_local_script_checks")
    out.update({k: v for k, v in defs.items() if v})
    return out


# --------------------------------------------------------------------------------------------
# Reading files.


def _expand(paths: Sequence[str | Path], errors: list[str], warnings: list[str]) -> list[Path]:
    files: list[Path] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            entries = sorted(path.iterdir(), key=lambda e: e.name)
            for entry in entries:
                if entry.name.startswith(".") or not entry.is_file():
                    continue
                if entry.suffix in (".toml", ".json"):
                    files.append(entry)
                elif entry.suffix == ".hcl":
                    warnings.append(f"{entry}: skipped: murmur reads TOML and JSON, not HCL")
        elif path.is_file():
            if path.suffix not in (".toml", ".json"):
                errors.append(f"{path}: unsupported file type {path.suffix or '(none)'!r}; use .toml or .json")
            else:
                files.append(path)
        elif path.exists():
            errors.append(f"{path}: not a regular file or directory")
        else:
            errors.append(f"{path}: no such file or directory")
    return files


def _parse(path: Path, errors: list[str]) -> tuple[str, dict[str, Any]] | None:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        errors.append(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})")
        return None
    except OSError as e:
        errors.append(f"{path}: cannot read: {e.strerror}")
        return None
    if path.suffix == ".toml":
        try:
            return text, tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            m = re.search(r"at line (\d+)", str(e))
            where = f"{path}:{m.group(1)}" if m else str(path)
            errors.append(f"{where}: invalid TOML: {e}")
            return None
    dupes: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        obj: dict[str, Any] = {}
        for k, v in items:
            if k in obj:
                dupes.append(k)
            obj[k] = v
        return obj

    try:
        data = json.loads(text, object_pairs_hook=pairs)
    except json.JSONDecodeError as e:
        errors.append(f"{path}:{e.lineno}: invalid JSON: {e.msg} (line {e.lineno}, column {e.colno})")
        return None
    for k in dupes:
        hits = [m.start() for m in re.finditer(rf'"{re.escape(k)}"\s*:', text)]
        line = text.count("\n", 0, hits[1]) + 1 if len(hits) > 1 else None
        errors.append(f"{path}{f':{line}' if line else ''}: {k}: given twice in one object")
    if not isinstance(data, dict):
        errors.append(f"{path}: expected a JSON object at the top, got {_type_name(data, 'json')}")
        return None
    return text, data


def _secrets_readable(path: Path, values: Mapping[str, Any], src: _Source) -> None:
    """Warn when a file holding a secret is readable by others (conventions: 0640 or stricter)."""
    secrets: list[list[str | int]] = []
    if values.get("encrypt"):
        secrets.append(["encrypt"])
    for name, token in values.get("acl", {}).get("tokens", {}).items():
        if token:
            secrets.append(["acl", "tokens", name])
    if not secrets:
        return
    try:
        mode = path.stat().st_mode & 0o777
    except OSError:
        return
    if mode & 0o037:
        src.warn(secrets[0], f"this file holds a secret but its mode is {mode:04o}; make it 0640 or stricter")


def _overrides_table(overrides: Mapping[str, Any], src: _Source) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for key, value in overrides.items():
        if value is None:  # a flag that was not given
            continue
        parts = key.split(".")
        table = nested
        for p in parts[:-1]:
            table = table.setdefault(p, {})
            if not isinstance(table, dict):
                src.error(parts, "conflicts with another flag that sets a parent key")
                break
        else:
            table[parts[-1]] = value
    return nested


# --------------------------------------------------------------------------------------------
# Merging and building.


def _merge(into: dict[str, Any], new: Mapping[str, Any]) -> None:
    for key, value in new.items():
        old = into.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            merged = dict(old)
            _merge(merged, value)
            into[key] = merged
        elif isinstance(value, list) and isinstance(old, list):
            into[key] = old + value
        else:
            into[key] = value


def _build(cls: type, values: Mapping[str, Any]) -> Any:
    hints = _hints(cls)
    kwargs: dict[str, Any] = {}
    for name, value in values.items():
        hint = hints[name]
        is_table = isinstance(hint, type) and dataclasses.is_dataclass(hint)
        kwargs[name] = _build(hint, value) if is_table else value
    return cls(**kwargs)


def _load(paths: Sequence[str | Path] | str | Path, overrides: Mapping[str, Any] | None,
          dev: bool) -> tuple[RuntimeConfig | None, list[str], list[str]]:
    if isinstance(paths, (str, Path)):
        paths = [paths]
    errors: list[str] = []
    warnings: list[str] = []
    merged: dict[str, Any] = dict(DEV_DEFAULTS) if dev else {}
    sources: list[str] = []
    for path in _expand(paths, errors, warnings):
        parsed = _parse(path, errors)
        sources.append(str(path))
        if parsed is None:
            continue
        text, raw = parsed
        src = _Source(str(path), text, path.suffix[1:], errors, warnings)
        values = _check_source(raw, src)
        _secrets_readable(path, values, src)
        _merge(merged, values)
    if overrides:
        src = _Source(FLAGS_SOURCE, "", "flags", errors, warnings)
        _merge(merged, _check_source(_overrides_table(overrides, src), src))

    # Rules across sources.
    services: list[_Entry] = merged.pop("services", [])
    checks: list[_Entry] = merged.pop("checks", [])
    if not (merged.get("enable_script_checks") or merged.get("enable_local_script_checks")):
        for entry in services + checks:
            for parts in entry.script_keys:
                entry.source.error(parts, "script checks are off: set enable_local_script_checks = true "
                                          "(or enable_script_checks) to run args checks")
    if merged.get("bootstrap_expect", 0) > 0 and not merged.get("server", False):
        errors.append(f"bootstrap_expect = {merged['bootstrap_expect']} needs server = true")
    alt = merged.get("alt_domain", "")
    if alt and alt.rstrip(".") == merged.get("domain", "murmur").rstrip("."):
        errors.append(f"alt_domain {alt!r} is the same as domain")

    if errors:
        return None, errors, warnings
    cfg: RuntimeConfig = _build(RuntimeConfig, merged)
    cfg.dev = dev
    cfg.services = [e.value for e in services]
    cfg.checks = [e.value for e in checks]
    cfg.warnings = warnings
    cfg.sources = sources
    return cfg, errors, warnings


def load(paths: Sequence[str | Path], overrides: Mapping[str, Any] | None = None, dev: bool = False) -> RuntimeConfig:
    """Read config files and directories, apply flag ``overrides``, check everything.

    ``overrides`` maps config keys, dotted for nesting (``{"ports.http": 18500}``), to values;
    a None value means "flag not given". ``dev`` starts from the --dev defaults (a server,
    gossip on loopback, no data_dir needed). Raises ConfigError listing every problem found.
    """
    cfg, errors, warnings = _load(paths, overrides, dev)
    if cfg is None:
        raise ConfigError(errors, warnings)
    return cfg


def validate_paths(paths: Sequence[str | Path], *, dev: bool = False) -> tuple[list[str], list[str]]:
    """(errors, warnings) for files and directories, without raising: `murmur validate PATH...`."""
    _, errors, warnings = _load(paths, None, dev)
    return errors, warnings
