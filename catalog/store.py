"""The catalog state store: nodes, services and checks, changed only by `apply`.

The store is the FSM behind the write path. It is deterministic: the same commands at the same
indexes give the same state on every server. Each table remembers the index of its last change,
so a blocking read knows whether its answer can have changed (Consul's per-table indexes).
Records only get a new ModifyIndex when their content changes; an identical re-registration
leaves them, and the readers blocked on them, alone.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import msgpack

from . import commands as cmds
from .commands import (
    ACL,
    KV,
    ACLOp,
    ACLPolicySpec,
    ACLRoleSpec,
    ACLTokenSpec,
    ApplyError,
    Autopilot,
    CheckSpec,
    Deregister,
    KVOp,
    Register,
    Restore,
    ServiceSpec,
    Session,
    SessionOp,
    Txn,
    TxnOp,
    TxnVerb,
)

TABLES = ("nodes", "services", "checks", "kvs", "acls")
REQUEST_MEMORY = 8192  # request IDs whose results the store remembers (oldest forgotten first)


@dataclass(frozen=True, slots=True)
class NodeRecord:
    name: str
    id: str
    address: str
    datacenter: str
    tagged_addresses: tuple[tuple[str, str], ...]
    meta: tuple[tuple[str, str], ...]
    create_index: int
    modify_index: int


@dataclass(frozen=True, slots=True)
class ServiceRecord:
    node: str
    spec: ServiceSpec
    create_index: int
    modify_index: int


@dataclass(frozen=True, slots=True)
class CheckRecord:
    node: str
    spec: CheckSpec
    service_name: str
    service_tags: tuple[str, ...]
    create_index: int
    modify_index: int


@dataclass(frozen=True, slots=True)
class KVRecord:
    key: str
    value: bytes
    flags: int
    create_index: int
    modify_index: int
    lock_index: int = 0
    session: str = ""


@dataclass(frozen=True, slots=True)
class SessionRecord:
    id: str
    name: str
    node: str
    node_checks: tuple[str, ...]
    service_checks: tuple[str, ...]
    lock_delay: int  # nanoseconds
    behavior: str  # "release" or "delete"
    ttl: str
    create_index: int
    modify_index: int
    renew_index: int  # the index of the last renewal (or the creation): the TTL timer restarts on it

    def checks(self) -> tuple[str, ...]:
        return self.node_checks + self.service_checks


@dataclass(frozen=True, slots=True)
class ACLTokenRecord:
    spec: ACLTokenSpec  # links hold policy and role IDs only (names are looked up when read)
    create_index: int
    modify_index: int


@dataclass(frozen=True, slots=True)
class ACLPolicyRecord:
    spec: ACLPolicySpec
    create_index: int
    modify_index: int


@dataclass(frozen=True, slots=True)
class ACLRoleRecord:
    spec: ACLRoleSpec
    create_index: int
    modify_index: int


# The built-ins Consul makes when ACLs start: fixed IDs every client knows.
MANAGEMENT_POLICY_ID = "00000000-0000-0000-0000-000000000001"
ANONYMOUS_TOKEN_ID = "00000000-0000-0000-0000-000000000002"
MANAGEMENT_RULES = """acl = "write"
agent_prefix "" {
  policy = "write"
}
event_prefix "" {
  policy = "write"
}
key_prefix "" {
  policy = "write"
}
keyring = "write"
node_prefix "" {
  policy = "write"
}
operator = "write"
mesh = "write"
peering = "write"
query_prefix "" {
  policy = "write"
}
service_prefix "" {
  policy = "write"
  intentions = "write"
}
session_prefix "" {
  policy = "write"
}"""


class KVBatch:
    """KV changes staged over the store and committed together (or dropped: a failed txn).

    Reads see the staged changes. `commit` writes them at one index: deleted keys leave a
    tombstone (so a prefix's index never goes back and blocking reads on a deleted key wake),
    and a lock taken clears the key's lock-delay record.
    """

    def __init__(self, store: StateStore, index: int) -> None:
        self.store = store
        self.index = index
        self.pending: dict[str, KVRecord | None] = {}
        self.locked: list[str] = []

    def get(self, key: str) -> KVRecord | None:
        return self.pending[key] if key in self.pending else self.store.kvs.get(key)

    def keys_under(self, prefix: str) -> list[str]:
        keys = {k for k in self.store.kvs if k.startswith(prefix)}
        keys |= {k for k in self.pending if k.startswith(prefix)}
        return sorted(k for k in keys if self.get(k) is not None)

    def put(self, key: str, value: bytes, flags: int, lock_index: int | None = None,
            session: str | None = None) -> KVRecord:
        old = self.get(key)
        rec = KVRecord(key, value, flags, old.create_index if old else self.index, self.index,
                       (old.lock_index if old else 0) if lock_index is None else lock_index,
                       (old.session if old else "") if session is None else session)
        self.pending[key] = rec
        return rec

    def delete(self, key: str) -> None:
        if self.get(key) is not None:
            self.pending[key] = None

    def commit(self) -> bool:
        """Write the staged changes; True if anything changed."""
        st = self.store
        changed = False
        for key, rec in self.pending.items():
            if rec is None:
                if st.kvs.pop(key, None) is not None:
                    st.tombstones[key] = self.index
                    st.gc_index = self.index
                    changed = True
            else:
                st.kvs[key] = rec
                st.tombstones.pop(key, None)
                changed = True
        for key in self.locked:
            st.lock_delays.pop(key, None)
        if changed:
            st._touch("kvs", self.index)
        return changed


class StateStore:
    """Tables of the catalog. Mutated only by `apply`; everything else reads."""

    def __init__(self) -> None:
        self.nodes: dict[str, NodeRecord] = {}
        self.services: dict[str, dict[str, ServiceRecord]] = {}  # node -> service id -> record
        self.checks: dict[str, dict[str, CheckRecord]] = {}  # node -> check id -> record
        self.kvs: dict[str, KVRecord] = {}
        self.table_index: dict[str, int] = dict.fromkeys(TABLES, 0)
        # Per service name: the index of the last change that can alter its catalog or health
        # answer (its instances, their checks, their nodes and node checks). A blocking query on
        # one service sleeps through writes to the others.
        self.service_index: dict[str, int] = {}
        self._dirty: set[str] = set()
        self.last_index = 0
        # Request ID -> result of the write that carried it (insertion order = log order).
        self.requests: dict[str, Any] = {}
        # key -> index of its deletion, until the leader's tombstone GC reaps it (KVOp.REAP).
        self.tombstones: dict[str, int] = {}
        # The index of the last RESTORE: restored keys keep their saved ModifyIndex, but no KV read
        # reports an index below this, so every blocked KV reader wakes after a restore.
        self.kv_floor = 0
        self.sessions: dict[str, SessionRecord] = {}
        self.sessions_index = 0
        self.sessions_renewed = 0  # the last index that renewed a session (renewals leave sessions_index)
        # key -> (lock delay ns, index): a session holding the key was invalidated at that index.
        # Servers turn it into a deadline on their clock when they apply it (agent/sessions.py).
        self.lock_delays: dict[str, tuple[int, int]] = {}
        self.gc_index = 0  # the last index that left a tombstone or a lock delay (the GC's hint)
        # ACLs (table "acls"): tokens by AccessorID, policies and roles by ID; the index at which
        # bootstrap happened (0: not yet, so `PUT /v1/acl/bootstrap` may make the first token).
        self.acl_tokens: dict[str, ACLTokenRecord] = {}
        self.acl_policies: dict[str, ACLPolicyRecord] = {}
        self.acl_roles: dict[str, ACLRoleRecord] = {}
        self.acl_bootstrap = 0
        # Autopilot's configuration (Consul's keys), replicated so every server and every future
        # leader acts on the same one; None until the first leader writes its seed.
        self.autopilot: dict[str, Any] | None = None
        self.autopilot_index = (0, 0)  # (CreateIndex, ModifyIndex)

    # ---- writes -------------------------------------------------------------------------------
    def apply(self, index: int, data: bytes) -> Any:
        """Apply one encoded command at log position `index`.

        Returns the command's result: True, or an ApplyError for a command that is well formed
        but refers to something missing. Raises commands.CommandError for undecodable input
        (the log is corrupt or from a newer version): the caller decides whether to stop.
        """
        if index <= self.last_index:
            raise ValueError(f"index {index} is not after the last applied index {self.last_index}")
        if data and data[0] == cmds.CommandType.REQUEST:
            rid, inner = cmds.unwrap_request(data)
            if rid in self.requests:  # a retry of a write already applied: answer, change nothing
                self.last_index = index
                return self.requests[rid]
            result = self._apply_plain(index, inner)
            self.requests[rid] = result
            if len(self.requests) > REQUEST_MEMORY:
                del self.requests[next(iter(self.requests))]
            return result
        return self._apply_plain(index, data)

    def _apply_plain(self, index: int, data: bytes) -> Any:
        cmd = cmds.decode(data)
        self.last_index = index
        if isinstance(cmd, KV):
            return self._kv(index, cmd)
        if isinstance(cmd, Session):
            return self._session(index, cmd)
        if isinstance(cmd, Txn):
            return self._txn(index, cmd)
        if isinstance(cmd, Restore):
            return self.replace_all(index, cmd.data)
        if isinstance(cmd, ACL):
            return self._acl(index, cmd)
        if isinstance(cmd, Autopilot):
            return self._autopilot(index, cmd)
        self._dirty.clear()
        if isinstance(cmd, Register):
            result = self._register(index, cmd)
            critical = {c.check_id for c in cmd.checks if c.status == "critical"}
            if critical and not isinstance(result, ApplyError):
                self._invalidate_node_sessions(index, cmd.node, critical)
        else:
            before = set(self.checks.get(cmd.node, {}))
            result = self._deregister(index, cmd)
            if cmd.node not in self.nodes:
                self._invalidate_node_sessions(index, cmd.node, None)
            elif before - set(self.checks.get(cmd.node, {})):
                self._invalidate_node_sessions(index, cmd.node, before - set(self.checks.get(cmd.node, {})))
        for name in self._dirty:
            self.service_index[name] = index
        return result

    def _autopilot(self, index: int, cmd: Autopilot) -> bool:
        """False (nothing changed) when `cas` does not match; as Consul's CAS on ModifyIndex, with
        0 meaning "only if there is none yet" (how a leader seeds it without overwriting)."""
        created, modified = self.autopilot_index
        if cmd.cas >= 0 and cmd.cas != (modified if self.autopilot is not None else 0):
            return False
        self.autopilot = dict(cmd.config)
        self.autopilot_index = (created if self.autopilot_index[0] else index, index)
        return True

    def _names_on(self, node: str) -> set[str]:
        return {r.spec.name for r in self.services.get(node, {}).values()}

    def index_of_service(self, name: str) -> int:
        """X-Consul-Index for reads of one service: its own index, or the services table's when
        it has never existed."""
        return max(1, self.service_index.get(name, self.table_index["services"]))

    def _touch(self, table: str, index: int) -> None:
        self.table_index[table] = index

    def _register(self, index: int, cmd: Register) -> Any:
        if not cmd.node:
            return ApplyError("Must provide node")
        node = self.nodes.get(cmd.node)
        services = self.services.get(cmd.node, {})
        if cmd.service is not None and not cmd.service.id:
            return ApplyError("Must provide service ID")
        for chk in cmd.checks:
            sid = chk.service_id
            if sid and sid not in services and not (cmd.service and cmd.service.id == sid):
                return ApplyError(f"Unknown service ID '{sid}' for check ID '{chk.check_id}'")
        if node is None or not cmd.skip_node_update:
            new_node = NodeRecord(
                name=cmd.node, id=cmd.node_id or (node.id if node else ""), address=cmd.address,
                datacenter=cmd.datacenter, tagged_addresses=cmd.tagged_addresses, meta=cmd.node_meta,
                create_index=node.create_index if node else index, modify_index=index)
            if node is None or replace(new_node, modify_index=node.modify_index) != node:
                self.nodes[cmd.node] = new_node
                self._touch("nodes", index)
                self._dirty |= self._names_on(cmd.node)
        if cmd.service is not None:
            old = services.get(cmd.service.id)
            if old is None or old.spec != cmd.service:
                rec = ServiceRecord(cmd.node, cmd.service, old.create_index if old else index, index)
                self.services.setdefault(cmd.node, {})[cmd.service.id] = rec
                self._touch("services", index)
                self._dirty.add(cmd.service.name)
                if old is not None:
                    self._dirty.add(old.spec.name)
                self._refresh_service_checks(index, cmd.node, cmd.service)
        for chk in cmd.checks:
            self._put_check(index, cmd.node, chk)
        return True

    def _put_check(self, index: int, node: str, chk: CheckSpec) -> None:
        svc = self.services.get(node, {}).get(chk.service_id) if chk.service_id else None
        name, tags = (svc.spec.name, svc.spec.tags) if svc else ("", ())
        table = self.checks.setdefault(node, {})
        old = table.get(chk.check_id)
        if old is not None and old.spec == chk and old.service_name == name and old.service_tags == tags:
            return
        table[chk.check_id] = CheckRecord(node, chk, name, tags, old.create_index if old else index, index)
        self._touch("checks", index)
        self._dirty |= {name} if chk.service_id else self._names_on(node)
        if old is not None and old.service_name:
            self._dirty.add(old.service_name)

    def _refresh_service_checks(self, index: int, node: str, svc: ServiceSpec) -> None:
        """Checks denormalise the service's name and tags; keep them in step with the service."""
        for cid, rec in list(self.checks.get(node, {}).items()):
            if rec.spec.service_id == svc.id and (rec.service_name, rec.service_tags) != (svc.name, svc.tags):
                self.checks[node][cid] = replace(rec, service_name=svc.name, service_tags=svc.tags,
                                                 modify_index=index)
                self._touch("checks", index)

    def _deregister(self, index: int, cmd: Deregister) -> Any:
        if not cmd.node:
            return ApplyError("Must provide node")
        if cmd.service_id:
            gone = self.services.get(cmd.node, {}).pop(cmd.service_id, None)
            if gone is not None:
                self._touch("services", index)
                self._dirty.add(gone.spec.name)
            checks = self.checks.get(cmd.node, {})
            for cid in [c for c, r in checks.items() if r.spec.service_id == cmd.service_id]:
                del checks[cid]
                self._touch("checks", index)
        if cmd.check_id:
            gone_check = self.checks.get(cmd.node, {}).pop(cmd.check_id, None)
            if gone_check is not None:
                self._touch("checks", index)
                self._dirty |= {gone_check.service_name} if gone_check.spec.service_id else self._names_on(cmd.node)
        if not cmd.service_id and not cmd.check_id and cmd.node in self.nodes:
            self._dirty |= self._names_on(cmd.node)
        if not cmd.service_id and not cmd.check_id and self.nodes.pop(cmd.node, None) is not None:
            self._touch("nodes", index)
            if self.services.pop(cmd.node, None):
                self._touch("services", index)
            if self.checks.pop(cmd.node, None):
                self._touch("checks", index)
        return True

    def _kv(self, index: int, cmd: KV) -> Any:
        """KV writes; the result is Consul's boolean: False for a CAS or lock that did not take."""
        if cmd.op == KVOp.REAP:
            for table in (self.tombstones, self.lock_delays):
                for key in [k for k, v in table.items() if (v if isinstance(v, int) else v[1]) <= cmd.index]:
                    del table[key]
            return True
        verb = _KV_VERBS.get(cmd.op)
        if verb is None:
            return ApplyError(f"unknown KV op {cmd.op}")
        batch = KVBatch(self, index)
        err, _ = self._kv_op(batch, TxnOp(verb, cmd.key, cmd.value, cmd.flags, cmd.index, cmd.session), cmd.seen)
        if err is not None:
            return ApplyError(err) if err.startswith("invalid session") else False
        batch.commit()
        return True

    def _kv_op(self, batch: KVBatch, op: TxnOp, seen: int) -> tuple[str | None, list[KVRecord]]:
        """One KV verb against a batch: (error, records to report). Shared by KV and Txn."""
        v, key = op.verb, op.key
        old = batch.get(key)
        if v == TxnVerb.SET:
            return None, [batch.put(key, op.value, op.flags)]
        if v == TxnVerb.CAS:
            if (old.modify_index if old else 0) != op.index:
                return f"failed to set key {key!r}, index is stale", []
            return None, [batch.put(key, op.value, op.flags)]
        if v == TxnVerb.LOCK:
            sess = self.sessions.get(op.session)
            if sess is None:
                return f"invalid session {op.session!r}", []
            if old is not None and old.session and old.session != op.session:
                return f"failed to lock key {key!r}, lock is already held", []
            if old is not None and old.session == op.session:  # re-acquire: update, keep the LockIndex
                return None, [batch.put(key, op.value, op.flags)]
            delay = self.lock_delays.get(key)
            if seen and delay is not None and delay[1] > seen:
                return f"failed to lock key {key!r}, a lock delay started after the check", []
            batch.locked.append(key)
            return None, [batch.put(key, op.value, op.flags, (old.lock_index if old else 0) + 1, op.session)]
        if v == TxnVerb.UNLOCK:
            if old is None or not old.session or old.session != op.session:
                return f"failed to unlock key {key!r}, lock isn't held, or is held by another session", []
            return None, [batch.put(key, op.value, op.flags, session="")]
        if v == TxnVerb.GET:
            if old is None:
                return f"key {key!r} doesn't exist", []
            return None, [old]
        if v == TxnVerb.GET_TREE:
            return None, [r for k in batch.keys_under(key) if (r := batch.get(k)) is not None]
        if v == TxnVerb.CHECK_INDEX:
            if old is None or old.modify_index != op.index:
                return f"current modify index {old.modify_index if old else 0} != {op.index}", []
            return None, [old]
        if v == TxnVerb.CHECK_SESSION:
            if old is None or old.session != op.session:
                return f"current session {old.session if old else ''!r} != {op.session!r}", []
            return None, [old]
        if v == TxnVerb.CHECK_NOT_EXISTS:
            return (f"key {key!r} exists", []) if old is not None else (None, [])
        if v == TxnVerb.DELETE:
            batch.delete(key)
            return None, []
        if v == TxnVerb.DELETE_CAS:
            if old is None or old.modify_index != op.index:
                return f"failed to delete key {key!r}, index is stale", []
            batch.delete(key)
            return None, []
        if v == TxnVerb.DELETE_TREE:
            for k in batch.keys_under(key):
                batch.delete(k)
            return None, []
        return f"unknown KV verb {v}", []

    def _txn(self, index: int, cmd: Txn, commit: bool = True) -> list[Any]:
        """All or nothing: ["ok", [records...]] after a commit, or ["err", [[op index, what]...]]
        with nothing changed. Reads report values; writes report the record without its value."""
        batch = KVBatch(self, index)
        results: list[list[Any]] = []
        errors: list[list[Any]] = []
        for i, op in enumerate(cmd.ops):
            err, recs = self._kv_op(batch, op, cmd.seen)
            if err is not None:
                errors.append([i, err])
                continue
            keep_value = op.verb in (TxnVerb.GET, TxnVerb.GET_TREE)
            results.extend(kv_wire(r, keep_value) for r in recs)
        if errors:
            return ["err", errors]
        if commit:
            batch.commit()
        return ["ok", results]

    def read_txn(self, ops: tuple[TxnOp, ...]) -> list[Any]:
        """A transaction of reads only (get, get-tree, check-*), answered without the log."""
        if any(op.verb not in READ_VERBS for op in ops):
            raise ValueError("read_txn takes read verbs only")
        return self._txn(self.last_index, Txn(ops), commit=False)

    # ---- sessions -----------------------------------------------------------------------------
    def _session(self, index: int, cmd: Session) -> Any:
        if cmd.op == SessionOp.CREATE:
            return self._create_session(index, cmd)
        sess = self.sessions.get(cmd.id)
        if cmd.op == SessionOp.RENEW:
            if sess is None:
                return False
            self.sessions[cmd.id] = replace(sess, renew_index=index)
            self.sessions_renewed = index
            return session_wire(self.sessions[cmd.id])
        if sess is None:
            return True  # destroying what is gone is done
        if cmd.op == SessionOp.EXPIRE and sess.renew_index != cmd.renew_index:
            return False  # renewed after the timer fired: the renewal wins
        self._destroy_session(index, cmd.id)
        return True

    def sessions_version(self) -> tuple[int, int, int]:
        """Changes whenever a session is created, renewed or destroyed: the leader's TTL timers
        resync on it instead of scanning every session after every write."""
        return (self.sessions_index, self.sessions_renewed, len(self.sessions))

    def _create_session(self, index: int, cmd: Session) -> Any:
        if not cmd.id or cmd.id in self.sessions:
            return ApplyError(f"Session ID {cmd.id!r} is empty or taken")
        if cmd.behavior not in ("release", "delete"):
            return ApplyError(f"Invalid Behavior setting {cmd.behavior!r}")
        if cmd.node not in self.nodes:
            return ApplyError(f"Failed session update: Missing node registration for {cmd.node!r}")
        node_checks = self.checks.get(cmd.node, {})
        for cid in cmd.node_checks + cmd.service_checks:
            chk = node_checks.get(cid)
            if chk is None:
                return ApplyError(f"Missing check '{cid}' registration")
            if chk.spec.status == "critical":
                return ApplyError(f"Check '{cid}' is in critical state")
        self.sessions[cmd.id] = SessionRecord(cmd.id, cmd.name, cmd.node, cmd.node_checks, cmd.service_checks,
                                              cmd.lock_delay, cmd.behavior, cmd.ttl, index, index, index)
        self.sessions_index = index
        return True

    def _destroy_session(self, index: int, sid: str) -> None:
        """Invalidate: the session goes; its locks are released or their keys deleted (Behavior),
        and each of those keys gets the session's lock delay."""
        sess = self.sessions.pop(sid)
        self.sessions_index = index
        batch = KVBatch(self, index)
        for key in sorted(k for k, r in self.kvs.items() if r.session == sid):
            rec = self.kvs[key]
            if sess.behavior == "delete":
                batch.delete(key)
            else:
                batch.put(key, rec.value, rec.flags, session="")
            if sess.lock_delay > 0:
                self.lock_delays[key] = (sess.lock_delay, index)
                self.gc_index = index
        batch.commit()

    def _invalidate_node_sessions(self, index: int, node: str, checks: set[str] | None) -> None:
        """Sessions of `node` bound to one of `checks` (None: all of them, the node is gone)."""
        for sid in sorted(self.sessions):
            sess = self.sessions[sid]
            if sess.node == node and (checks is None or checks.intersection(sess.checks())):
                self._destroy_session(index, sid)

    def node_sessions(self, node: str) -> list[SessionRecord]:
        return [self.sessions[s] for s in sorted(self.sessions) if self.sessions[s].node == node]

    # ---- ACLs ---------------------------------------------------------------------------------
    def _acl(self, index: int, cmd: ACL) -> Any:
        op = cmd.op
        if op == ACLOp.INIT:
            self._acl_builtins(index, cmd.id)
            if cmd.token is not None and self._token_by_secret(cmd.token.secret_id) is None:
                if cmd.token.accessor_id in self.acl_tokens:
                    return ApplyError("the initial management token's AccessorID is already in use")
                self._put_token(index, replace(cmd.token, policies=(cmds.Link(MANAGEMENT_POLICY_ID),)))
                self.acl_bootstrap = self.acl_bootstrap or index
            return True
        if op == ACLOp.BOOTSTRAP:
            if self.acl_bootstrap:
                return ApplyError(f"ACL bootstrap no longer allowed (reset index: {self.acl_bootstrap})")
            if cmd.token is None:
                return ApplyError("bootstrap needs a token")
            if self._token_by_secret(cmd.token.secret_id) is not None or cmd.token.accessor_id in self.acl_tokens:
                return ApplyError("Invalid Token: the bootstrap token's IDs are already in use")
            self._acl_builtins(index, cmd.token.create_time)
            self.acl_bootstrap = index
            token = replace(cmd.token, policies=(cmds.Link(MANAGEMENT_POLICY_ID),))
            return acl_token_wire(self._put_token(index, token))
        if op == ACLOp.TOKEN_SET and cmd.token is not None:
            return self._set_token(index, cmd.token, cmd.create)
        if op == ACLOp.TOKEN_DELETE:
            if cmd.id == ANONYMOUS_TOKEN_ID:
                return ApplyError("Deletion of the builtin anonymous token is not permitted")
            if self.acl_tokens.pop(cmd.id, None) is not None:
                self._touch("acls", index)
            return True
        if op == ACLOp.POLICY_SET and cmd.policy is not None:
            return self._set_policy(index, cmd.policy)
        if op == ACLOp.POLICY_DELETE:
            if cmd.id == MANAGEMENT_POLICY_ID:
                return ApplyError("Deletion of the builtin global-management policy is not permitted")
            if self.acl_policies.pop(cmd.id, None) is not None:
                self._touch("acls", index)
            return True
        if op == ACLOp.ROLE_SET and cmd.role is not None:
            return self._set_role(index, cmd.role)
        if op == ACLOp.ROLE_DELETE:
            if self.acl_roles.pop(cmd.id, None) is not None:
                self._touch("acls", index)
            return True
        return ApplyError(f"malformed ACL command (op {int(op)})")

    def _acl_builtins(self, index: int, now: str) -> None:
        if MANAGEMENT_POLICY_ID not in self.acl_policies:
            self.acl_policies[MANAGEMENT_POLICY_ID] = ACLPolicyRecord(
                ACLPolicySpec(MANAGEMENT_POLICY_ID, "global-management",
                              "Builtin Policy that grants unlimited access", MANAGEMENT_RULES), index, index)
            self._touch("acls", index)
        if ANONYMOUS_TOKEN_ID not in self.acl_tokens:
            self.acl_tokens[ANONYMOUS_TOKEN_ID] = ACLTokenRecord(
                ACLTokenSpec(ANONYMOUS_TOKEN_ID, "anonymous", "Anonymous Token", create_time=now), index, index)
            self._touch("acls", index)

    def _token_by_secret(self, secret: str) -> ACLTokenRecord | None:
        for rec in self.acl_tokens.values():
            if rec.spec.secret_id == secret:
                return rec
        return None

    def acl_token_by_secret(self, secret: str) -> ACLTokenRecord | None:
        """The token whose SecretID this is, or None."""
        return self._token_by_secret(secret) if secret else None

    def _put_token(self, index: int, spec: ACLTokenSpec) -> ACLTokenRecord:
        old = self.acl_tokens.get(spec.accessor_id)
        rec = ACLTokenRecord(spec, old.create_index if old else index, index)
        self.acl_tokens[spec.accessor_id] = rec
        self._touch("acls", index)
        return rec

    def _resolve_links(self, links: tuple[cmds.Link, ...], kind: str) -> tuple[cmds.Link, ...] | ApplyError:
        table: dict[str, Any] = self.acl_policies if kind == "policy" else self.acl_roles
        out: list[cmds.Link] = []
        for link in links:
            if link.id:
                if link.id not in table:
                    return ApplyError(f"No such ACL {kind} with ID {link.id!r}")
                found = link.id
            else:
                found = next((i for i, r in sorted(table.items()) if r.spec.name == link.name), "")
                if not found:
                    return ApplyError(f"No such ACL {kind} with name {link.name!r}")
            if all(o.id != found for o in out):
                out.append(cmds.Link(found))
        return tuple(out)

    def _set_token(self, index: int, spec: ACLTokenSpec, create: bool) -> Any:
        if not spec.accessor_id:
            return ApplyError("Invalid Token: missing AccessorID")
        old = self.acl_tokens.get(spec.accessor_id)
        if create and old is not None:
            return ApplyError("Invalid Token: AccessorID is already in use")
        if not create and old is None:
            return ApplyError(f"Cannot find token {spec.accessor_id!r}")
        if old is not None:  # an update keeps the secret and the birth date
            if spec.secret_id and spec.secret_id != old.spec.secret_id:
                return ApplyError("Changing a token's SecretID is not permitted")
            spec = replace(spec, secret_id=old.spec.secret_id, create_time=old.spec.create_time)
        if not spec.secret_id:
            return ApplyError("Invalid Token: missing SecretID")
        other = self._token_by_secret(spec.secret_id)
        if other is not None and other.spec.accessor_id != spec.accessor_id:
            return ApplyError("Invalid Token: SecretID is already in use")
        policies = self._resolve_links(spec.policies, "policy")
        if isinstance(policies, ApplyError):
            return policies
        roles = self._resolve_links(spec.roles, "role")
        if isinstance(roles, ApplyError):
            return roles
        return acl_token_wire(self._put_token(index, replace(spec, policies=policies, roles=roles)))

    def _set_policy(self, index: int, spec: ACLPolicySpec) -> Any:
        if not spec.name:
            return ApplyError("Invalid Policy: no Name is set")
        if not spec.id:
            return ApplyError("Invalid Policy: missing ID")
        clash = next((r for r in self.acl_policies.values() if r.spec.name == spec.name and r.spec.id != spec.id),
                     None)
        if clash is not None:
            return ApplyError(f"Invalid Policy: A Policy with Name {spec.name!r} already exists")
        old = self.acl_policies.get(spec.id)
        if spec.id == MANAGEMENT_POLICY_ID and old is not None:
            if spec.rules != old.spec.rules or spec.datacenters:
                return ApplyError("Changing the Rules or Datacenters of the builtin global-management policy "
                                  "is not permitted")
        rec = ACLPolicyRecord(spec, old.create_index if old else index, index)
        self.acl_policies[spec.id] = rec
        self._touch("acls", index)
        return acl_policy_wire(rec)

    def _set_role(self, index: int, spec: ACLRoleSpec) -> Any:
        if not spec.name:
            return ApplyError("Invalid Role: no Name is set")
        if not spec.id:
            return ApplyError("Invalid Role: missing ID")
        clash = next((r for r in self.acl_roles.values() if r.spec.name == spec.name and r.spec.id != spec.id), None)
        if clash is not None:
            return ApplyError(f"Invalid Role: A Role with Name {spec.name!r} already exists")
        policies = self._resolve_links(spec.policies, "policy")
        if isinstance(policies, ApplyError):
            return policies
        old = self.acl_roles.get(spec.id)
        rec = ACLRoleRecord(replace(spec, policies=policies), old.create_index if old else index, index)
        self.acl_roles[spec.id] = rec
        self._touch("acls", index)
        return acl_role_wire(rec)

    # ---- reads --------------------------------------------------------------------------------
    def index_of(self, *tables: str) -> int:
        """The index a read over these tables reports (X-Consul-Index): never below 1."""
        return max(1, *(self.table_index[t] for t in tables))

    def all_services(self) -> list[ServiceRecord]:
        """Every service instance, ordered by node then service ID (the order clients observe)."""
        return [self.services[n][s] for n in sorted(self.services) for s in sorted(self.services[n])]

    def service_instances(self, name: str) -> list[ServiceRecord]:
        return [r for r in self.all_services() if r.spec.name == name]

    def node_checks(self, node: str) -> list[CheckRecord]:
        """Checks of a node, sorted by check ID."""
        table = self.checks.get(node, {})
        return [table[c] for c in sorted(table)]

    def all_checks(self) -> list[CheckRecord]:
        return [rec for n in sorted(self.checks) for rec in self.node_checks(n)]

    # ---- snapshots ----------------------------------------------------------------------------
    def snapshot(self) -> bytes:
        """All state as one msgpack document (what a Raft snapshot holds for the catalog)."""
        body = {
            "v": 1, "i": self.last_index, "ti": self.table_index,
            "n": [[n.name, n.id, n.address, n.datacenter, dict(n.tagged_addresses), dict(n.meta),
                   n.create_index, n.modify_index] for n in self.nodes.values()],
            "s": [[r.node, cmds._service_to_map(r.spec), r.create_index, r.modify_index]
                  for r in self.all_services()],
            "c": [[r.node, cmds._check_to_map(r.spec), r.service_name, list(r.service_tags),
                   r.create_index, r.modify_index] for r in self.all_checks()],
            "kv": [[r.key, r.value, r.flags, r.create_index, r.modify_index, r.lock_index, r.session]
                   for _, r in sorted(self.kvs.items())],
            "si": dict(sorted(self.service_index.items())),
            "rq": [[rid, *_result_to_wire(res)] for rid, res in self.requests.items()],
            "ts": dict(sorted(self.tombstones.items())),
            "kf": self.kv_floor,
            "ss": [session_wire(r) for _, r in sorted(self.sessions.items())],
            "sx": self.sessions_index,
            "ld": {k: list(v) for k, v in sorted(self.lock_delays.items())},
            "gc": self.gc_index,
            "at": [acl_token_wire(r) for _, r in sorted(self.acl_tokens.items())],
            "ap": [acl_policy_wire(r) for _, r in sorted(self.acl_policies.items())],
            "ar": [acl_role_wire(r) for _, r in sorted(self.acl_roles.items())],
            "ab": self.acl_bootstrap,
        }
        if self.autopilot is not None:  # (absent: snapshots read by older versions stay as they were)
            body["apc"] = [dict(sorted(self.autopilot.items())), *self.autopilot_index]
        return bytes(msgpack.packb(body))

    def replace_all(self, index: int, data: bytes) -> Any:
        """RESTORE at `index`: every table becomes the saved state's (`snapshot()` bytes). Every
        table's index, and every service's, moves to `index`, so each blocked reader wakes and
        sees the change; the request-ID memory is the log's, not the data's, and stays."""
        try:
            fresh = type(self).restore(data)
        except Exception as exc:  # noqa: BLE001 - the same bytes fail the same way on every server
            return ApplyError(f"unreadable snapshot state: {exc!r}")
        requests, names = self.requests, set(self.service_index) | set(fresh.service_index)
        self.__dict__.update(fresh.__dict__)
        self.requests, self.last_index = requests, index
        self.kv_floor = index
        self.table_index = dict.fromkeys(self.table_index, index)
        self.service_index = {n: index for n in sorted(names)}
        return True

    def load(self, data: bytes) -> None:
        """Replace everything by a snapshot's contents, in place (readers keep their reference)."""
        fresh = type(self).restore(data)
        self.__dict__.update(fresh.__dict__)

    @classmethod
    def restore(cls, data: bytes) -> StateStore:
        body = msgpack.unpackb(data, raw=False, strict_map_key=False)
        st = cls()
        st.last_index = int(body["i"])
        st.table_index.update(body["ti"])
        for name, nid, addr, dc, ta, meta, ci, mi in body["n"]:
            st.nodes[name] = NodeRecord(name, nid, addr, dc, tuple(sorted(ta.items())),
                                        tuple(sorted(meta.items())), ci, mi)
        for node, svc, ci, mi in body["s"]:
            spec = cmds._service_from_map(svc)
            st.services.setdefault(node, {})[spec.id] = ServiceRecord(node, spec, ci, mi)
        for node, chk, sname, stags, ci, mi in body["c"]:
            spec_c = cmds._check_from_map(chk)
            st.checks.setdefault(node, {})[spec_c.check_id] = CheckRecord(node, spec_c, sname, tuple(stags),
                                                                          ci, mi)
        for key, value, flags, ci, mi, li, sess in body.get("kv", []):
            st.kvs[key] = KVRecord(key, value, flags, ci, mi, li, sess)
        st.service_index.update(body.get("si", {}))
        for rid, kind, value in body.get("rq", []):
            st.requests[rid] = ApplyError(value) if kind == "e" else value
        st.tombstones.update(body.get("ts", {}))
        st.kv_floor = int(body.get("kf", 0))
        for row in body.get("ss", []):
            rec = session_from_wire(row)
            st.sessions[rec.id] = rec
        st.sessions_index = int(body.get("sx", 0))
        st.sessions_renewed = max((r.renew_index for r in st.sessions.values()), default=0)
        st.lock_delays.update({k: (int(v[0]), int(v[1])) for k, v in body.get("ld", {}).items()})
        st.gc_index = int(body.get("gc", 0))
        for row in body.get("at", []):
            tok = acl_token_from_wire(row)
            st.acl_tokens[tok.spec.accessor_id] = tok
        for row in body.get("ap", []):
            pol = acl_policy_from_wire(row)
            st.acl_policies[pol.spec.id] = pol
        for row in body.get("ar", []):
            role = acl_role_from_wire(row)
            st.acl_roles[role.spec.id] = role
        st.acl_bootstrap = int(body.get("ab", 0))
        if "apc" in body:
            conf, created, modified = body["apc"]
            st.autopilot, st.autopilot_index = dict(conf), (int(created), int(modified))
        return st


READ_VERBS = (TxnVerb.GET, TxnVerb.GET_TREE, TxnVerb.CHECK_INDEX, TxnVerb.CHECK_SESSION, TxnVerb.CHECK_NOT_EXISTS)
_KV_VERBS = {KVOp.SET: TxnVerb.SET, KVOp.CAS: TxnVerb.CAS, KVOp.DELETE: TxnVerb.DELETE,
             KVOp.DELETE_CAS: TxnVerb.DELETE_CAS, KVOp.DELETE_TREE: TxnVerb.DELETE_TREE, KVOp.LOCK: TxnVerb.LOCK,
             KVOp.UNLOCK: TxnVerb.UNLOCK}


def kv_wire(r: KVRecord, keep_value: bool = True) -> list[Any]:
    """A KV record as msgpack-able data: [key, value or None, flags, create, modify, lock index, session]."""
    return [r.key, r.value if keep_value else None, r.flags, r.create_index, r.modify_index, r.lock_index,
            r.session]


def session_wire(r: SessionRecord) -> list[Any]:
    return [r.id, r.name, r.node, list(r.node_checks), list(r.service_checks), r.lock_delay, r.behavior, r.ttl,
            r.create_index, r.modify_index, r.renew_index]


def session_from_wire(row: list[Any]) -> SessionRecord:
    sid, name, node, nc, sc, ld, beh, ttl, ci, mi, ri = row
    return SessionRecord(str(sid), str(name), str(node), tuple(nc), tuple(sc), int(ld), str(beh), str(ttl),
                         int(ci), int(mi), int(ri))


def acl_token_wire(r: ACLTokenRecord) -> list[Any]:
    return [cmds.token_to_map(r.spec), r.create_index, r.modify_index]


def acl_token_from_wire(row: list[Any]) -> ACLTokenRecord:
    body, ci, mi = row
    return ACLTokenRecord(cmds.token_from_map(body), int(ci), int(mi))


def acl_policy_wire(r: ACLPolicyRecord) -> list[Any]:
    return [cmds.policy_to_map(r.spec), r.create_index, r.modify_index]


def acl_policy_from_wire(row: list[Any]) -> ACLPolicyRecord:
    body, ci, mi = row
    return ACLPolicyRecord(cmds.policy_from_map(body), int(ci), int(mi))


def acl_role_wire(r: ACLRoleRecord) -> list[Any]:
    return [cmds.role_to_map(r.spec), r.create_index, r.modify_index]


def acl_role_from_wire(row: list[Any]) -> ACLRoleRecord:
    body, ci, mi = row
    return ACLRoleRecord(cmds.role_from_map(body), int(ci), int(mi))


def _result_to_wire(result: Any) -> tuple[str, Any]:
    """Apply results (True/False, an ApplyError, a txn's or a renewal's lists); kept in snapshots
    with the request IDs."""
    if isinstance(result, ApplyError):
        return ("e", result.message)
    ok = isinstance(result, (bool, int, str, list)) or result is None
    return ("v", result if ok else repr(result))
