"""Catalog write commands and their codec.

Every change to the catalog is one of these commands, applied in log order by
`StateStore.apply(index, data)`. The encoding is one type byte followed by a msgpack map with
short keys, so a Raft log entry is self-describing and decoders can ignore keys they do not know.

Type bytes with the high bit set (IGNORE_FLAG) mark commands an older server may skip; an
unknown type without the bit must stop the server rather than let replicas diverge.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

import msgpack

IGNORE_FLAG = 0x80


class CommandType(IntEnum):
    """Append only: the numbers are on disk and on the wire."""

    REGISTER = 0
    DEREGISTER = 1
    KV = 2
    REQUEST = 3  # a client write carrying its request ID: {"r": id, "c": inner command bytes}
    SESSION = 4  # session create / destroy / renew / expire
    TXN = 5  # several KV operations, all or nothing
    RESTORE = 6  # replace the whole state by a saved one (`PUT /v1/snapshot`): {"d": StateStore.snapshot()}
    ACL = 7  # ACL tokens, policies and roles (protocol 4): {"o": ACLOp, ...}
    # Autopilot's configuration, replicated as Consul's is: {"c": {ConsulKey: value}, "cas": N}.
    # Ignorable: a server that predates it skips it and keeps its defaults, as before.
    AUTOPILOT = IGNORE_FLAG | 8


class CommandError(ValueError):
    """A command that cannot be decoded."""


class UnknownCommand(CommandError):
    """A command type this version does not know. `ignorable` says whether it may be skipped."""

    def __init__(self, type_byte: int) -> None:
        self.ignorable = bool(type_byte & IGNORE_FLAG)
        super().__init__(f"unknown catalog command type {type_byte:#x}")


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """A service instance as written into the catalog."""

    id: str
    name: str
    tags: tuple[str, ...] = ()
    address: str = ""
    port: int = 0
    meta: tuple[tuple[str, str], ...] = ()
    weights: tuple[int, int] = (1, 1)  # (passing, warning)
    enable_tag_override: bool = False
    tagged_addresses: tuple[tuple[str, str, int], ...] = ()  # (name, address, port)
    kind: str = ""
    # Service-mesh fields, stored and echoed as sent: canonical JSON text of the object, "" if unset.
    proxy: str = ""
    connect: str = ""
    locality: str = ""


@dataclass(frozen=True, slots=True)
class CheckSpec:
    """A health check's catalog record: identity, status and how it is run (for display)."""

    check_id: str
    name: str
    status: str = "critical"
    notes: str = ""
    output: str = ""
    service_id: str = ""
    type: str = ""
    interval: str = ""
    timeout: str = ""
    definition: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class Register:
    """Upsert a node and, optionally, one service and some checks on it (Consul's RegisterRequest)."""

    node: str
    address: str
    node_id: str = ""
    datacenter: str = ""
    tagged_addresses: tuple[tuple[str, str], ...] = ()
    node_meta: tuple[tuple[str, str], ...] = ()
    service: ServiceSpec | None = None
    checks: tuple[CheckSpec, ...] = ()
    skip_node_update: bool = False


@dataclass(frozen=True, slots=True)
class Deregister:
    """Remove a whole node, or one service (with its checks), or one check."""

    node: str
    service_id: str = ""
    check_id: str = ""


class KVOp(IntEnum):
    """Only append: KV verbs inside a KV command."""

    SET = 0  # write the value
    CAS = 1  # write only if the key's ModifyIndex equals `index` (0: only if absent)
    DELETE = 2
    DELETE_CAS = 3  # delete only if ModifyIndex equals `index`
    DELETE_TREE = 4  # delete every key with this prefix
    LOCK = 5  # `?acquire=<session>`: take the key's lock (LockIndex+1 when newly taken)
    UNLOCK = 6  # `?release=<session>`: give the lock back if `session` holds it
    REAP = 7  # the leader's tombstone GC: forget tombstones and lock delays at or below `index`


@dataclass(frozen=True, slots=True)
class KV:
    op: KVOp
    key: str
    value: bytes = b""
    flags: int = 0
    index: int = 0
    session: str = ""  # LOCK / UNLOCK: the session taking or giving back the lock
    # LOCK: the applied index through which the proposer checked the key's lock delay. A lock
    # delay that started after it refuses the lock (the check could not have seen it).
    seen: int = 0


class SessionOp(IntEnum):
    """Only append."""

    CREATE = 0
    DESTROY = 1  # explicit destroy (`PUT /v1/session/destroy/:id`)
    RENEW = 2
    EXPIRE = 3  # the leader's TTL timer: destroy unless renewed after `renew_index`


DEFAULT_LOCK_DELAY = 15 * 10**9  # nanoseconds
MAX_LOCK_DELAY = 60 * 10**9


@dataclass(frozen=True, slots=True)
class Session:
    """A session write. The ID is chosen by the caller (a UUID made where the request arrives)."""

    op: SessionOp
    id: str
    name: str = ""
    node: str = ""
    node_checks: tuple[str, ...] = ()
    service_checks: tuple[str, ...] = ()
    lock_delay: int = DEFAULT_LOCK_DELAY  # nanoseconds
    behavior: str = "release"  # or "delete"
    ttl: str = ""  # as given ("20s"); "" for none
    renew_index: int = 0  # EXPIRE: the renewal the timer saw


class TxnVerb(IntEnum):
    """Only append: KV verbs inside a transaction (Consul's names in TXN_VERB_NAMES)."""

    SET = 0
    CAS = 1
    LOCK = 2
    UNLOCK = 3
    GET = 4
    GET_TREE = 5
    CHECK_INDEX = 6
    CHECK_SESSION = 7
    CHECK_NOT_EXISTS = 8
    DELETE = 9
    DELETE_TREE = 10
    DELETE_CAS = 11


TXN_VERB_NAMES = {"set": TxnVerb.SET, "cas": TxnVerb.CAS, "lock": TxnVerb.LOCK, "unlock": TxnVerb.UNLOCK,
                  "get": TxnVerb.GET, "get-tree": TxnVerb.GET_TREE, "check-index": TxnVerb.CHECK_INDEX,
                  "check-session": TxnVerb.CHECK_SESSION, "check-not-exists": TxnVerb.CHECK_NOT_EXISTS,
                  "delete": TxnVerb.DELETE, "delete-tree": TxnVerb.DELETE_TREE,
                  "delete-cas": TxnVerb.DELETE_CAS}
MAX_TXN_OPS = 64  # Consul's limit on operations in one transaction


@dataclass(frozen=True, slots=True)
class TxnOp:
    verb: TxnVerb
    key: str
    value: bytes = b""
    flags: int = 0
    index: int = 0
    session: str = ""


@dataclass(frozen=True, slots=True)
class Txn:
    """KV operations applied all or nothing, in one log entry."""

    ops: tuple[TxnOp, ...]
    seen: int = 0  # as KV.seen, for every lock verb in the transaction




@dataclass(frozen=True, slots=True)
class Restore:
    """Replace every table by the state in `data` (bytes of `StateStore.snapshot()`)."""

    data: bytes


class ACLOp(IntEnum):
    """Only append: verbs of the ACL command."""

    INIT = 0  # make the built-ins (anonymous token, global-management policy) if missing; with a
    #           token: the initial management token, which also ends bootstrap
    BOOTSTRAP = 1  # the first management token, once (`PUT /v1/acl/bootstrap`)
    TOKEN_SET = 2  # create (`create`) or update a token
    TOKEN_DELETE = 3
    POLICY_SET = 4
    POLICY_DELETE = 5
    ROLE_SET = 6
    ROLE_DELETE = 7


@dataclass(frozen=True, slots=True)
class Link:
    """A token's or role's reference to a policy or role, by ID or by name (resolved to an ID when
    applied: the ID is what is stored, the name is looked up when read)."""

    id: str = ""
    name: str = ""


@dataclass(frozen=True, slots=True)
class ACLTokenSpec:
    """A token as written. IDs, times and the hash are chosen by the proposer, so every server
    applies the same record. Identities and templated policies are canonical JSON text."""

    accessor_id: str
    secret_id: str
    description: str = ""
    policies: tuple[Link, ...] = ()
    roles: tuple[Link, ...] = ()
    service_identities: str = ""
    node_identities: str = ""
    templated_policies: str = ""
    local: bool = False
    create_time: str = ""
    expiration_time: str = ""
    hash: str = ""


@dataclass(frozen=True, slots=True)
class ACLPolicySpec:
    id: str
    name: str
    description: str = ""
    rules: str = ""
    datacenters: tuple[str, ...] = ()
    hash: str = ""


@dataclass(frozen=True, slots=True)
class ACLRoleSpec:
    id: str
    name: str
    description: str = ""
    policies: tuple[Link, ...] = ()
    service_identities: str = ""
    node_identities: str = ""
    hash: str = ""


@dataclass(frozen=True, slots=True)
class ACL:
    """One ACL write. `id` names what DELETE removes; `create` makes TOKEN_SET refuse an existing
    accessor (and update refuse a missing one)."""

    op: ACLOp
    token: ACLTokenSpec | None = None
    policy: ACLPolicySpec | None = None
    role: ACLRoleSpec | None = None
    id: str = ""
    create: bool = False


@dataclass(frozen=True, slots=True)
class Autopilot:
    """Set autopilot's whole configuration (`config`: Consul's keys and JSON values). `cas` -1:
    unconditionally; 0: only if none is stored yet; N: only if the stored ModifyIndex is N."""

    config: tuple[tuple[str, Any], ...]
    cas: int = -1


Command = Register | Deregister | KV | Session | Txn | Restore | ACL | Autopilot


@dataclass(frozen=True, slots=True)
class ApplyError:
    """A command that decoded fine but cannot be applied (a client error, not corruption)."""

    message: str
    kinds: tuple[str, ...] = field(default=())


def _service_to_map(s: ServiceSpec) -> dict[str, Any]:
    out = {"i": s.id, "n": s.name, "t": list(s.tags), "a": s.address, "p": s.port, "m": dict(s.meta),
           "w": list(s.weights), "e": s.enable_tag_override, "ta": [list(t) for t in s.tagged_addresses],
           "k": s.kind}
    # Optional keys only when set: a service without them encodes exactly as before they existed.
    for key, value in (("px", s.proxy), ("cn", s.connect), ("lo", s.locality)):
        if value:
            out[key] = value
    return out


INT64 = (-(2**63), 2**63 - 1)


def _bounded(v: Any, bounds: tuple[int, int], what: str) -> int:
    """An integer field within `bounds`: the store keeps it, and snapshots must encode it again
    (a float such as 1e300 made an int too large for msgpack). Entries already in logs were
    written within these bounds: weights and tagged ports as int64, service ports 0..65535."""
    if type(v) is not int or not bounds[0] <= v <= bounds[1]:
        raise ValueError(f"{what} must be an integer in {bounds[0]}..{bounds[1]}, got {v!r}"[:120])
    return v


def _str_pairs(v: Any, what: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(v, dict) or not all(isinstance(k, str) and isinstance(x, str) for k, x in v.items()):
        raise TypeError(f"{what} must be a map of strings")
    return tuple(sorted(v.items()))


def _service_from_map(m: dict[str, Any]) -> ServiceSpec:
    weights = m.get("w", [1, 1])
    if not isinstance(weights, list) or len(weights) != 2:
        raise TypeError("service weights must be a list of two integers")
    return ServiceSpec(
        id=str(m["i"]), name=str(m["n"]), tags=_strings(m.get("t", []), "service tags"),
        address=str(m.get("a", "")), port=_bounded(m.get("p", 0), (0, 65535), "service port"),
        meta=_str_pairs(m.get("m", {}), "service meta"),
        weights=(_bounded(weights[0], INT64, "weight"), _bounded(weights[1], INT64, "weight")),
        enable_tag_override=bool(m.get("e", False)),
        tagged_addresses=tuple((str(a), str(b), _bounded(c, INT64, "tagged address port"))
                               for a, b, c in m.get("ta", ())),
        kind=str(m.get("k", "")), proxy=str(m.get("px", "")), connect=str(m.get("cn", "")),
        locality=str(m.get("lo", "")),
    )


def _check_to_map(c: CheckSpec) -> dict[str, Any]:
    return {"i": c.check_id, "n": c.name, "s": c.status, "no": c.notes, "o": c.output, "si": c.service_id,
            "t": c.type, "iv": c.interval, "to": c.timeout, "d": dict(c.definition)}


def _check_from_map(m: dict[str, Any]) -> CheckSpec:
    return CheckSpec(
        check_id=str(m["i"]), name=str(m.get("n", "")), status=str(m.get("s", "critical")),
        notes=str(m.get("no", "")), output=str(m.get("o", "")), service_id=str(m.get("si", "")),
        type=str(m.get("t", "")), interval=str(m.get("iv", "")), timeout=str(m.get("to", "")),
        definition=tuple(sorted(m.get("d", {}).items())),
    )


def encode(cmd: Command) -> bytes:
    """Type byte + msgpack body."""
    if isinstance(cmd, Register):
        body: dict[str, Any] = {
            "n": cmd.node, "a": cmd.address, "id": cmd.node_id, "dc": cmd.datacenter,
            "ta": dict(cmd.tagged_addresses), "m": dict(cmd.node_meta),
            "c": [_check_to_map(c) for c in cmd.checks], "sk": cmd.skip_node_update,
        }
        if cmd.service is not None:
            body["s"] = _service_to_map(cmd.service)
        return bytes([CommandType.REGISTER]) + bytes(msgpack.packb(body))
    if isinstance(cmd, KV):
        kv: dict[str, Any] = {"o": int(cmd.op), "k": cmd.key, "v": cmd.value, "f": cmd.flags, "i": cmd.index}
        if cmd.session:  # optional keys only when set: plain KV writes encode as before
            kv["s"] = cmd.session
        if cmd.seen:
            kv["ls"] = cmd.seen
        return bytes([CommandType.KV]) + bytes(msgpack.packb(kv))
    if isinstance(cmd, Session):
        return bytes([CommandType.SESSION]) + bytes(msgpack.packb(
            {"o": int(cmd.op), "id": cmd.id, "n": cmd.name, "nd": cmd.node, "nc": list(cmd.node_checks),
             "sc": list(cmd.service_checks), "ld": cmd.lock_delay, "b": cmd.behavior, "t": cmd.ttl,
             "ri": cmd.renew_index}))
    if isinstance(cmd, Txn):
        return bytes([CommandType.TXN]) + bytes(msgpack.packb(
            {"ops": [{"v": int(o.verb), "k": o.key, "d": o.value, "f": o.flags, "i": o.index, "s": o.session}
                     for o in cmd.ops], "ls": cmd.seen}))
    if isinstance(cmd, Restore):
        return bytes([CommandType.RESTORE]) + bytes(msgpack.packb({"d": cmd.data}))
    if isinstance(cmd, ACL):
        return bytes([CommandType.ACL]) + bytes(msgpack.packb(acl_to_map(cmd)))
    if isinstance(cmd, Autopilot):
        return bytes([CommandType.AUTOPILOT]) + bytes(msgpack.packb({"c": dict(cmd.config), "cas": cmd.cas}))
    return bytes([CommandType.DEREGISTER]) + bytes(msgpack.packb(
        {"n": cmd.node, "si": cmd.service_id, "ci": cmd.check_id}))


def decode(data: bytes) -> Command:
    """Inverse of encode. Raises CommandError (or UnknownCommand) on bad input."""
    if not data:
        raise CommandError("empty command")
    kind = data[0]
    if kind not in (CommandType.REGISTER, CommandType.DEREGISTER, CommandType.KV, CommandType.SESSION,
                    CommandType.TXN, CommandType.RESTORE, CommandType.ACL, CommandType.AUTOPILOT):
        raise UnknownCommand(kind)  # a newer command: its body may not be ours to parse
    try:
        body = msgpack.unpackb(data[1:], raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated exception types
        raise CommandError(f"undecodable command body: {exc}") from exc
    if not isinstance(body, dict):
        raise CommandError("command body is not a map")
    try:
        if kind == CommandType.REGISTER:
            svc = body.get("s")
            return Register(
                node=str(body["n"]), address=str(body.get("a", "")), node_id=str(body.get("id", "")),
                datacenter=str(body.get("dc", "")),
                tagged_addresses=_str_pairs(body.get("ta", {}), "tagged addresses"),
                node_meta=_str_pairs(body.get("m", {}), "node meta"),
                service=_service_from_map(svc) if svc else None,
                checks=tuple(_check_from_map(c) for c in body.get("c", ())),
                skip_node_update=bool(body.get("sk", False)),
            )
        if kind == CommandType.DEREGISTER:
            return Deregister(node=str(body["n"]), service_id=str(body.get("si", "")),
                              check_id=str(body.get("ci", "")))
        if kind == CommandType.KV:
            value = body.get("v", b"")
            if not isinstance(value, bytes) or not isinstance(body["k"], str):
                raise TypeError("KV key must be a string and value bytes")
            flags, index = int(body.get("f", 0)), int(body.get("i", 0))
            if not (0 <= flags < 1 << 64 and 0 <= index < 1 << 63):
                raise ValueError("KV flags or index out of range")
            session, seen = body.get("s", ""), int(body.get("ls", 0))
            if not isinstance(session, str) or not 0 <= seen < 1 << 63:
                raise ValueError("KV session must be a string and seen an index")
            return KV(op=KVOp(body["o"]), key=body["k"], value=value, flags=flags, index=index, session=session,
                      seen=seen)
        if kind == CommandType.SESSION:
            return _session_from_map(body)
        if kind == CommandType.TXN:
            ops = body["ops"]
            if not isinstance(ops, list) or len(ops) > MAX_TXN_OPS:
                raise ValueError("txn ops must be a list of at most 64")
            seen = int(body.get("ls", 0))
            if not 0 <= seen < 1 << 63:
                raise ValueError("txn seen out of range")
            return Txn(ops=tuple(_txn_op_from_map(o) for o in ops), seen=seen)
        if kind == CommandType.RESTORE:
            if not isinstance(body["d"], bytes):
                raise TypeError("RESTORE data must be bytes")
            return Restore(body["d"])
        if kind == CommandType.ACL:
            return acl_from_map(body)
        if kind == CommandType.AUTOPILOT:
            conf, cas = body["c"], body.get("cas", -1)
            if not isinstance(conf, dict) or not all(isinstance(k, str) and isinstance(v, bool | int | str)
                                                     for k, v in conf.items()):
                raise TypeError("autopilot config must map names to booleans, integers or strings")
            if isinstance(cas, bool) or not isinstance(cas, int) or not -1 <= cas < 1 << 63:
                raise ValueError("autopilot cas must be -1 or an index")
            return Autopilot(tuple(sorted(conf.items())), cas)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError) as exc:
        raise CommandError(f"malformed {CommandType(kind).name} command: {exc!r}") from exc
    raise UnknownCommand(kind)


def _strings(value: Any, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"{what} must be a list of strings")
    return tuple(value)


def _session_from_map(body: dict[str, Any]) -> Session:
    fields = {k: body.get(k, d) for k, d in (("id", ""), ("n", ""), ("nd", ""), ("b", "release"), ("t", ""))}
    if not all(isinstance(v, str) for v in fields.values()):
        raise TypeError("session text fields must be strings")
    lock_delay, renew_index = int(body.get("ld", DEFAULT_LOCK_DELAY)), int(body.get("ri", 0))
    if not (0 <= lock_delay <= MAX_LOCK_DELAY and 0 <= renew_index < 1 << 63):
        raise ValueError("session lock delay or renew index out of range")
    return Session(op=SessionOp(body["o"]), id=fields["id"], name=fields["n"], node=fields["nd"],
                   node_checks=_strings(body.get("nc", []), "node checks"),
                   service_checks=_strings(body.get("sc", []), "service checks"), lock_delay=lock_delay,
                   behavior=fields["b"], ttl=fields["t"], renew_index=renew_index)


def _txn_op_from_map(o: Any) -> TxnOp:
    if not isinstance(o, dict):
        raise TypeError("txn op must be a map")
    key, value, session = o.get("k", ""), o.get("d", b""), o.get("s", "")
    if not isinstance(key, str) or not isinstance(value, bytes) or not isinstance(session, str):
        raise TypeError("txn op key and session must be strings and value bytes")
    flags, index = int(o.get("f", 0)), int(o.get("i", 0))
    if not (0 <= flags < 1 << 64 and 0 <= index < 1 << 63):
        raise ValueError("txn op flags or index out of range")
    return TxnOp(verb=TxnVerb(o["v"]), key=key, value=value, flags=flags, index=index, session=session)


# ---- ACL records ---------------------------------------------------------------------------

def _links_to_wire(links: tuple[Link, ...]) -> list[list[str]]:
    return [[lk.id, lk.name] for lk in links]


def _links_from_wire(value: Any) -> tuple[Link, ...]:
    if not isinstance(value, list):
        raise TypeError("links must be a list")
    out = []
    for item in value:
        if not (isinstance(item, list) and len(item) == 2 and all(isinstance(x, str) for x in item)):
            raise TypeError("a link is [id, name]")
        out.append(Link(item[0], item[1]))
    return tuple(out)


def _text(body: dict[str, Any], key: str) -> str:
    value = body.get(key, "")
    if not isinstance(value, str):
        raise TypeError(f"{key} must be a string")
    return value


def token_to_map(t: ACLTokenSpec) -> dict[str, Any]:
    return {"a": t.accessor_id, "s": t.secret_id, "d": t.description, "p": _links_to_wire(t.policies),
            "r": _links_to_wire(t.roles), "si": t.service_identities, "ni": t.node_identities,
            "tp": t.templated_policies, "l": t.local, "ct": t.create_time, "et": t.expiration_time, "h": t.hash}


def token_from_map(b: dict[str, Any]) -> ACLTokenSpec:
    return ACLTokenSpec(
        accessor_id=_text(b, "a"), secret_id=_text(b, "s"), description=_text(b, "d"),
        policies=_links_from_wire(b.get("p", [])), roles=_links_from_wire(b.get("r", [])),
        service_identities=_text(b, "si"), node_identities=_text(b, "ni"), templated_policies=_text(b, "tp"),
        local=bool(b.get("l", False)), create_time=_text(b, "ct"), expiration_time=_text(b, "et"),
        hash=_text(b, "h"))


def policy_to_map(p: ACLPolicySpec) -> dict[str, Any]:
    return {"i": p.id, "n": p.name, "d": p.description, "r": p.rules, "dc": list(p.datacenters), "h": p.hash}


def policy_from_map(b: dict[str, Any]) -> ACLPolicySpec:
    return ACLPolicySpec(id=_text(b, "i"), name=_text(b, "n"), description=_text(b, "d"), rules=_text(b, "r"),
                         datacenters=_strings(b.get("dc", []), "datacenters"), hash=_text(b, "h"))


def role_to_map(r: ACLRoleSpec) -> dict[str, Any]:
    return {"i": r.id, "n": r.name, "d": r.description, "p": _links_to_wire(r.policies),
            "si": r.service_identities, "ni": r.node_identities, "h": r.hash}


def role_from_map(b: dict[str, Any]) -> ACLRoleSpec:
    return ACLRoleSpec(id=_text(b, "i"), name=_text(b, "n"), description=_text(b, "d"),
                       policies=_links_from_wire(b.get("p", [])), service_identities=_text(b, "si"),
                       node_identities=_text(b, "ni"), hash=_text(b, "h"))


def acl_to_map(cmd: ACL) -> dict[str, Any]:
    out: dict[str, Any] = {"o": int(cmd.op)}
    if cmd.token is not None:
        out["t"] = token_to_map(cmd.token)
    if cmd.policy is not None:
        out["p"] = policy_to_map(cmd.policy)
    if cmd.role is not None:
        out["r"] = role_to_map(cmd.role)
    if cmd.id:
        out["i"] = cmd.id
    if cmd.create:
        out["c"] = True
    return out


def _sub(body: dict[str, Any], key: str) -> dict[str, Any] | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise TypeError(f"{key} must be a map")
    return value


def acl_from_map(body: dict[str, Any]) -> ACL:
    t, p, r = _sub(body, "t"), _sub(body, "p"), _sub(body, "r")
    return ACL(op=ACLOp(body["o"]), token=token_from_map(t) if t is not None else None,
               policy=policy_from_map(p) if p is not None else None,
               role=role_from_map(r) if r is not None else None, id=_text(body, "i"),
               create=bool(body.get("c", False)))


# ---- request IDs ------------------------------------------------------------------------------
# A client's write travels wrapped with the ID the client chose for it; a retry of the same write
# (after a timeout or a leader change, when the outcome is unknown) carries the same ID. The store
# remembers the results of the last REQUEST_MEMORY IDs it applied and answers a repeat with the
# remembered result instead of applying it again. That memory is part of the replicated state
# (same log, same order, same eviction on every server, kept in snapshots), so the dedup holds
# across leader changes.

MAX_REQUEST_ID = 128  # bytes


def wrap_request(request_id: str, inner: bytes) -> bytes:
    """A REQUEST command: the inner command's encoded bytes under the client's request ID."""
    if not request_id or len(request_id) > MAX_REQUEST_ID:
        raise CommandError("request ID must be 1-128 characters")
    return bytes([CommandType.REQUEST]) + bytes(msgpack.packb({"r": request_id, "c": inner}))


def unwrap_request(data: bytes) -> tuple[str, bytes]:
    """Inverse of wrap_request. Raises CommandError on a malformed wrapper."""
    try:
        body = msgpack.unpackb(data[1:], raw=False)
    except Exception as exc:  # msgpack raises several unrelated exception types
        raise CommandError(f"undecodable request wrapper: {exc}") from exc
    if not isinstance(body, dict) or not isinstance(body.get("r"), str) or not isinstance(body.get("c"), bytes):
        raise CommandError("malformed request wrapper")
    if not body["c"] or body["c"][0] == CommandType.REQUEST:
        raise CommandError("a request wrapper must hold one plain command")
    return body["r"], body["c"]
