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
from .commands import KV, ApplyError, CheckSpec, Deregister, KVOp, Register, Restore, ServiceSpec

TABLES = ("nodes", "services", "checks", "kvs")
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
        if isinstance(cmd, Restore):
            return self.replace_all(index, cmd.data)
        self._dirty.clear()
        result = self._register(index, cmd) if isinstance(cmd, Register) else self._deregister(index, cmd)
        for name in self._dirty:
            self.service_index[name] = index
        return result

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

    def _kv(self, index: int, cmd: KV) -> bool:
        """KV writes; the result is Consul's boolean: False for a CAS that did not match."""
        old = self.kvs.get(cmd.key)
        if cmd.op in (KVOp.SET, KVOp.CAS):
            if cmd.op == KVOp.CAS and (old.modify_index if old else 0) != cmd.index:
                return False
            self.kvs[cmd.key] = KVRecord(cmd.key, cmd.value, cmd.flags, old.create_index if old else index, index,
                                         old.lock_index if old else 0, old.session if old else "")
        elif cmd.op in (KVOp.DELETE, KVOp.DELETE_CAS):
            if cmd.op == KVOp.DELETE_CAS and (old is None or old.modify_index != cmd.index):
                return False
            if old is None:
                return True
            del self.kvs[cmd.key]
        else:
            doomed = [k for k in self.kvs if k.startswith(cmd.key)]
            if not doomed:
                return True
            for k in doomed:
                del self.kvs[k]
        self._touch("kvs", index)
        return True

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
        }
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
        return st


def _result_to_wire(result: Any) -> tuple[str, Any]:
    """Apply results are True/False or an ApplyError; kept in snapshots with the request IDs."""
    if isinstance(result, ApplyError):
        return ("e", result.message)
    return ("v", result if isinstance(result, (bool, int, str)) or result is None else repr(result))
