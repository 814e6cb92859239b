"""ACL enforcement in the agent: which token a request carries, what it may do, and what a read
may show it.

- A request's token comes from `X-Consul-Token`, `Authorization: Bearer` or `?token=` (in that
  order); none means the agent's `default` token, and that empty means the anonymous token.
  Secrets are never logged: log lines name a token by its AccessorID at most.
- Servers resolve a secret against their own store (`catalog.acl.resolve`); a client agent asks a
  server (`acl.token` read, with the token itself as credential) and keeps the answer for
  TOKEN_TTL seconds, as Consul's `acl.token_ttl`.
- The HTTP layer checks each route against the table in `agent/http/acl_guard.py`. Writes a client
  sends over RPC carry the token (`tk`), and the server checks the command itself
  (`authorize_command`); reads over RPC carry it too and the server filters their results
  (`filter_read`), so a client cannot see more through a server than through its own API.
- Agent tokens set through `PUT /v1/agent/token/<type>` are kept in the data dir
  (`acl-tokens.json`, mode 0600) when `acl.enable_token_persistence` is true, and loaded at start,
  where a persisted token wins over the config file's (Consul's rule). `--dev` keeps nothing.
- The Raft leader makes the built-ins (anonymous token, global-management policy) and the
  `initial_management` token when ACLs are enabled and they are missing (an ACL INIT command).
"""

from __future__ import annotations

import contextvars
import datetime
import json
import logging
import os
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio
from murmur.catalog import commands
from murmur.catalog.acl import ALLOW_ALL, Authorizer, resolve
from murmur.catalog.commands import (
    ACL,
    KV,
    ACLOp,
    ACLTokenSpec,
    Deregister,
    KVOp,
    Register,
    Session,
    SessionOp,
    Txn,
)
from murmur.catalog.store import ANONYMOUS_TOKEN_ID, MANAGEMENT_POLICY_ID, StateStore

if TYPE_CHECKING:
    from .agent import Agent

log = logging.getLogger("murmur.acl")

TOKEN_TTL = 30.0  # seconds a client agent trusts a token it resolved through a server
NOT_FOUND_TTL = 2.0  # and remembers that a secret is unknown (a token made meanwhile works soon)
INIT_INTERVAL = 1.0  # seconds between the leader's checks that the built-ins exist
AGENT_TOKEN_TYPES = ("default", "agent", "agent_recovery", "replication", "config_file_service_registration")
# Consul's old names for the agent token types.
AGENT_TOKEN_ALIASES = {"acl_token": "default", "acl_agent_token": "agent", "agent_master": "agent_recovery",
                       "acl_agent_master_token": "agent_recovery", "acl_replication_token": "replication"}

# The token of the HTTP request being served (set by the guard): RPCs made on its behalf carry it.
REQUEST_TOKEN: contextvars.ContextVar[str | None] = contextvars.ContextVar("murmur_request_token", default=None)


class PermissionDenied(Exception):
    """403 "Permission denied: ..." (Consul's text)."""


class TokenNotFound(Exception):
    """403 "ACL not found"."""


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def expired(expiration_time: str, now: float) -> bool:
    """Is an RFC 3339 ExpirationTime ("" = never) at or before `now` (Unix seconds)?"""
    if not expiration_time:
        return False
    try:
        when = datetime.datetime.fromisoformat(expiration_time.replace("Z", "+00:00"))
    except ValueError:
        return False  # checked when written; an unreadable one does not lock anyone out
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return when.timestamp() <= now


def request_secret(headers: dict[str, str], query: dict[str, list[str]]) -> str:
    """The token a request carries: X-Consul-Token, then Authorization: Bearer, then ?token=."""
    tok = headers.get("x-consul-token", "").strip()
    if tok:
        return tok
    auth = headers.get("authorization", "").strip()
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    vals = query.get("token")
    return vals[-1].strip() if vals else ""


def denied(accessor: str, permission: str, name: str | None = None) -> PermissionDenied:
    on = f' on "{name}"' if name is not None else ""
    who = f"token with AccessorID {accessor!r}" if accessor else "anonymous token"
    return PermissionDenied(f"Permission denied: {who} lacks permission {permission!r}{on}")


class PersistedTokens:
    """Agent tokens set through the API, in data_dir/acl-tokens.json: {"<type>": "<secret>"} for
    the types set so far. Written to a temp file (0600), fsynced and renamed. A damaged file is
    logged (never its content) and ignored: the config file's tokens apply."""

    NAME = "acl-tokens.json"

    def __init__(self, data_dir: str) -> None:
        self.path = Path(data_dir) / self.NAME

    def load(self) -> dict[str, str]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            log.warning("cannot read the persisted agent tokens %s: %s", self.path, exc.strerror)
            return {}
        try:
            data = json.loads(raw)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            out = {}
            for kind, secret in data.items():
                if kind not in AGENT_TOKEN_TYPES or not isinstance(secret, str):
                    raise ValueError("an entry of an unknown token type, or not a string")
                out[kind] = secret
        except ValueError as exc:  # JSONDecodeError is a ValueError; its text quotes no content
            log.warning("ignoring the damaged persisted agent tokens %s: %s", self.path,
                        type(exc).__name__ if isinstance(exc, json.JSONDecodeError) else exc)
            return {}
        return out

    def save(self, kind: str, secret: str) -> None:
        data = self.load()
        data[kind] = secret
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_name(self.NAME + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)  # an older temp file may have been left with another mode
            os.write(fd, json.dumps(data, sort_keys=True).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)


class ACLRuntime:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        cfg = agent.cfg.acl
        self.enabled = bool(cfg.enabled)
        self.default_policy = cfg.default_policy
        self.initial_management = cfg.tokens.initial_management
        # Agent tokens: set by config, replaced by PUT /v1/agent/token/<type> (kept in memory).
        self.tokens = {t: "" for t in AGENT_TOKEN_TYPES}
        self.tokens["default"] = cfg.tokens.default
        self.tokens["agent"] = cfg.tokens.agent
        data_dir = agent.cfg.data_dir
        self.persisted = (PersistedTokens(data_dir) if cfg.enable_token_persistence and data_dir
                          and not agent.cfg.dev else None)
        if self.persisted is not None:
            for kind, secret in self.persisted.load().items():
                if secret:  # an empty persisted token leaves the config file's in force, as Consul
                    self.tokens[kind] = secret
        self.cache: dict[str, tuple[float, Authorizer | None, str]] = {}
        self.stats = {"denied": 0, "not_found": 0, "resolved_remote": 0}

    # ---- tokens ----------------------------------------------------------------------------------
    def set_token(self, kind: str, secret: str) -> None:
        """PUT /v1/agent/token/<kind>: in force at once; on disk first when persistence is on (an
        acknowledged token is not lost by a restart)."""
        if self.persisted is not None:
            self.persisted.save(kind, secret)
        self.tokens[kind] = secret
        self.cache.clear()

    def default_token(self) -> str:
        return self.tokens["default"]

    def agent_token(self) -> str:
        return self.tokens["agent"] or self.tokens["default"]

    def outgoing_token(self) -> str:
        """The token an RPC made now carries: the HTTP request's, else the agent's own."""
        tok = REQUEST_TOKEN.get()
        return self.agent_token() if tok is None else tok

    def effective(self, secret: str) -> str:
        return secret or self.default_token()

    async def authorizer(self, secret: str) -> tuple[Authorizer | None, str]:
        """(authorizer, AccessorID) for a request's secret ("" = default, then anonymous); the
        authorizer is None for a secret no token has. With ACLs off, everything is allowed."""
        if not self.enabled:
            return ALLOW_ALL, ""
        secret = self.effective(secret)
        if self.agent.server is not None:
            return self.local(secret)
        now = trio.current_time()
        hit = self.cache.get(secret)
        if hit is not None and hit[0] > now:
            return hit[1], hit[2]
        authz, accessor = await self._remote(secret)
        self.cache[secret] = (now + (TOKEN_TTL if authz is not None else NOT_FOUND_TTL), authz, accessor)
        if len(self.cache) > 4096:
            self.cache.pop(next(iter(self.cache)))
        return authz, accessor

    def local(self, secret: str) -> tuple[Authorizer | None, str]:
        return self._resolve(self.agent.store, secret)

    def _resolve(self, store: Any, secret: str) -> tuple[Authorizer | None, str]:
        tok = store.acl_token_by_secret(secret or "anonymous")
        if tok is not None and expired(tok.spec.expiration_time, time.time()):
            return None, ""  # an expired token is no token: "ACL not found", as Consul's
        authz = resolve(store, secret, self.agent.cfg.datacenter, self.default_policy)
        return authz, tok.spec.accessor_id if tok is not None else ""

    async def _remote(self, secret: str) -> tuple[Authorizer | None, str]:
        """A client: the token's slice of the ACL tables from a server, resolved here."""
        from murmur.catalog.store import StateStore

        from .reads import ReadError

        self.stats["resolved_remote"] += 1
        try:
            res = await self.agent.remote.read("acl.token_slice", {"secret": secret}, mode="stale", token=secret)
        except ReadError as exc:
            if exc.kind == "acl_not_found":  # the server knows no such token
                return None, ""
            raise
        scratch = StateStore()
        if res.data:
            scratch.load(bytes(res.data))
        return self._resolve(scratch, secret)

    async def require(self, secret: str) -> tuple[Authorizer, str]:
        authz, accessor = await self.authorizer(secret)
        if authz is None:
            self.stats["not_found"] += 1
            raise TokenNotFound("ACL not found")
        return authz, accessor

    # ---- the leader's duties ---------------------------------------------------------------------
    def init_command(self) -> ACL | None:
        """The INIT the store needs, or None when the built-ins and the initial token exist."""
        st = self.agent.store
        need = MANAGEMENT_POLICY_ID not in st.acl_policies or ANONYMOUS_TOKEN_ID not in st.acl_tokens
        token = None
        if self.initial_management and st.acl_token_by_secret(self.initial_management) is None:
            need = True
            token = ACLTokenSpec(str(uuid.uuid4()), self.initial_management, "Initial Management Token",
                                 create_time=now_rfc3339())
        return ACL(ACLOp.INIT, token=token, id=now_rfc3339()) if need else None

    async def init_once(self) -> None:
        from .protocol import ACLS
        from .writer import WriteFailed

        srv = self.agent.server
        if not self.enabled or srv is None or srv.driver is None or not srv.driver.is_leader:
            return
        cmd = self.init_command()
        if cmd is None or srv.cluster_protocol() < ACLS:
            return
        try:
            result = await self.agent.writer.apply(cmd)
        except WriteFailed as exc:
            log.debug("ACL init deferred: %s", exc)
            return
        if isinstance(result, commands.ApplyError):
            log.warning("ACL init: %s", result.message)
        else:
            log.info("ACLs initialised (anonymous token, global-management policy%s)",
                     ", initial management token" if cmd.token is not None else "")

    async def leader_loop(self) -> None:
        while True:
            await self.init_once()
            await trio.sleep(INIT_INTERVAL)


# ---- commands (server RPC) ----------------------------------------------------------------------

def authorize_command(authz: Authorizer, cmd: commands.Command, store: StateStore) -> str | None:
    """None if `authz` may apply `cmd`; else the missing permission ("key:write on 'a/b'")."""
    if authz.management:
        return None

    def need(kind: str, name: str, level: str) -> str | None:
        return None if authz.allowed(kind, name, level) else f"{kind}:{level} on {name!r}"

    if isinstance(cmd, Register):
        svc = cmd.service
        if not (cmd.skip_node_update and cmd.node in store.nodes) or svc is None:
            if (err := need("node", cmd.node, "write")) is not None:
                return err
        if svc is not None and (err := need("service", svc.name, "write")) is not None:
            return err
        for spec in cmd.checks:
            if spec.service_id:
                rec = store.services.get(cmd.node, {}).get(spec.service_id)
                name = svc.name if svc is not None and svc.id == spec.service_id else (rec.spec.name if rec else "")
                if (err := need("service", name, "write")) is not None:
                    return err
            elif (err := need("node", cmd.node, "write")) is not None:
                return err
        return None
    if isinstance(cmd, Deregister):
        if cmd.service_id:
            rec = store.services.get(cmd.node, {}).get(cmd.service_id)
            return need("service", rec.spec.name, "write") if rec is not None else need("node", cmd.node, "write")
        if cmd.check_id:
            chk = store.checks.get(cmd.node, {}).get(cmd.check_id)
            if chk is not None and chk.spec.service_id:
                return need("service", chk.service_name, "write")
        return need("node", cmd.node, "write")
    if isinstance(cmd, KV):
        if cmd.op == KVOp.REAP:
            return "management (internal KV reap)"
        if cmd.op == KVOp.DELETE_TREE:
            return None if authz.write_prefix("key", cmd.key) else f"key:write on prefix {cmd.key!r}"
        return need("key", cmd.key, "write")
    if isinstance(cmd, Session):
        if cmd.op == SessionOp.CREATE:
            return need("session", cmd.node, "write")
        if cmd.op == SessionOp.EXPIRE:
            return "management (internal session expiry)"
        sess = store.sessions.get(cmd.id)
        return need("session", sess.node, "write") if sess is not None else None
    if isinstance(cmd, Txn):
        from murmur.catalog.store import READ_VERBS

        for op in cmd.ops:
            if op.verb in READ_VERBS:
                err = need("key", op.key, "read")
            elif op.verb == commands.TxnVerb.DELETE_TREE:
                err = None if authz.write_prefix("key", op.key) else f"key:write on prefix {op.key!r}"
            else:
                err = need("key", op.key, "write")
            if err is not None:
                return err
        return None
    if isinstance(cmd, ACL):
        if cmd.op == ACLOp.BOOTSTRAP:
            return None  # the one unauthenticated ACL write; the store allows it once
        if cmd.op == ACLOp.INIT:
            return "management (ACL init)"
        return None if authz.scalar("acl", "write") else "acl:write"
    if isinstance(cmd, commands.Autopilot):
        return None if authz.scalar("operator", "write") else "operator:write"
    return "management"  # RESTORE and anything newer


# ---- reads ----------------------------------------------------------------------------------------

def _svc_node_ok(authz: Authorizer, service: str, node: str) -> bool:
    return authz.allowed("service", service, "read") and authz.allowed("node", node, "read")


def _check_ok(authz: Authorizer, chk: dict[str, Any]) -> bool:
    name = chk.get("ServiceName") or ""
    if name:
        return authz.allowed("service", str(name), "read")
    return authz.allowed("node", str(chk.get("Node", "")), "read")


def filter_store(authz: Authorizer, store: StateStore) -> StateStore:
    """A copy of a (slice) store without what the token may not read: nodes, services, checks."""
    out = StateStore.restore(store.snapshot())
    for node in list(out.nodes):
        if not authz.allowed("node", node, "read"):
            out.nodes.pop(node)
            out.services.pop(node, None)
            out.checks.pop(node, None)
    for table in out.services.values():
        for sid in [s for s, r in table.items() if not authz.allowed("service", r.spec.name, "read")]:
            del table[sid]
    for checks in out.checks.values():
        for cid in [c for c, r in checks.items()
                    if r.service_name and not authz.allowed("service", r.service_name, "read")]:
            del checks[cid]
    out.kvs.clear()
    out.sessions.clear()
    out.acl_tokens.clear()
    out.acl_policies.clear()
    out.acl_roles.clear()
    return out


def filter_read(authz: Authorizer, name: str, args: dict[str, Any], data: Any) -> tuple[Any, bool]:
    """A named read's data as `authz` may see it, and whether anything was left out.
    Raises PermissionDenied where Consul refuses the whole read."""
    if authz.management or data is None:
        return data, False
    kept: Any
    if name == "catalog.services":
        kept = {k: v for k, v in data.items() if authz.allowed("service", k, "read")}
        return kept, len(kept) != len(data)
    if name in ("catalog.service", "catalog.connect"):
        kept = [e for e in data if _svc_node_ok(authz, str(e.get("ServiceName", "")), str(e.get("Node", "")))]
        return kept, len(kept) != len(data)
    if name == "catalog.nodes":
        kept = [e for e in data if authz.allowed("node", str(e.get("Node", "")), "read")]
        return kept, len(kept) != len(data)
    if name == "catalog.node":
        node = data.get("Node", {}).get("Node", "")
        if not authz.allowed("node", str(node), "read"):
            return None, True
        services = data.get("Services") or {}
        kept_s = {k: v for k, v in services.items() if authz.allowed("service", str(v.get("Service", "")), "read")}
        return {**data, "Services": kept_s}, len(kept_s) != len(services)
    if name == "health.service":
        kept = [e for e in data if _svc_node_ok(authz, str(e["Service"].get("Service", "")),
                                                str(e["Node"].get("Node", "")))]
        return kept, len(kept) != len(data)
    if name in ("health.checks", "health.node", "health.state"):
        kept = [c for c in data if _check_ok(authz, c)]
        return kept, len(kept) != len(data)
    if name == "kv.get":
        if args.get("keys"):
            kept = [k for k in data if authz.allowed("key", str(k), "list")]
        else:
            kept = [r for r in data if authz.allowed("key", str(r[0]), "read")]
        return kept, len(kept) != len(data)
    if name in ("session.info", "session.node", "session.list"):
        kept = [s for s in data if authz.allowed("session", str(s.get("Node", "")), "read")]
        return kept, len(kept) != len(data)
    if name in ("node.slice", "dns.slice"):
        full = StateStore.restore(bytes(data))
        return filter_store(authz, full).snapshot(), False
    if name == "txn.read":
        for _verb, key, _index, _session in args.get("ops", []):
            if not authz.allowed("key", str(key), "read"):
                raise PermissionDenied(f"Permission denied: lacks permission 'key:read' on {key!r}")
        return data, False
    if name in ("acl.list", "acl.get"):
        if not authz.scalar("acl", "read"):
            raise PermissionDenied("Permission denied: lacks permission 'acl:read'")
        return data, False
    if name in ("status.leader", "status.peers", "session.lock_delay", "acl.token_slice"):
        return data, False
    raise PermissionDenied(f"Permission denied: no ACL rule for read {name!r}")  # fail closed


def token_slice(store: StateStore, secret: str) -> bytes:
    """The ACL records a token's resolution needs (the token, its roles and policies) as a store
    snapshot; empty when no token has this secret. The secret is the caller's credential."""
    out = StateStore()
    tok = store.acl_token_by_secret(secret or "anonymous")
    if tok is None:
        return b""
    out.acl_tokens[tok.spec.accessor_id] = tok
    pids = [lk.id for lk in tok.spec.policies]
    for link in tok.spec.roles:
        role = store.acl_roles.get(link.id)
        if role is not None:
            out.acl_roles[link.id] = role
            pids.extend(lk.id for lk in role.spec.policies)
    for pid in pids:
        pol = store.acl_policies.get(pid)
        if pol is not None:
            out.acl_policies[pid] = pol
    return out.snapshot()
