"""The agent's own services and checks, and anti-entropy against the catalog.

The agent is the source of truth for what runs on its node; the catalog is brought in line by
`sync_commands`, which compares the two and returns the commands that close the gap. Syncing
by difference rather than by event means a lost or reordered update heals on the next pass.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from murmur.catalog.commands import CheckSpec, Command, Deregister, Register, ServiceSpec
from murmur.catalog.store import CheckRecord, StateStore
from murmur.checks.definitions import CheckDefinition
from murmur.checks.status import CRITICAL, StatusMachine, TTLTimer

# Registrations the servers own on every node; anti-entropy never removes them.
SYSTEM_CHECKS = frozenset({"serfHealth"})
SYSTEM_SERVICES = frozenset({"consul"})


@dataclass
class LocalCheck:
    defn: CheckDefinition
    machine: StatusMachine
    ttl: TTLTimer | None = None
    source: str = "api"  # "config" checks are replaced on reload; "api" ones persist until deregistered
    output_synced_at: float = float("-inf")  # when this check's output last went to the catalog
    critical_since: float | None = None  # when the reaper first saw it critical (deregister_critical_service_after)
    # The last spec built, reused while status and output stay the same: anti-entropy compares every
    # check each pass, and building a spec (its sorted definition) is most of that pass's cost.
    _spec: CheckSpec | None = field(default=None, repr=False, compare=False)
    # (the catalog's spec, ours) when last found equal: while both objects stay the same, in sync.
    _synced: tuple[CheckSpec, CheckSpec] | None = field(default=None, repr=False, compare=False)

    def spec(self, service_name: str = "") -> CheckSpec:
        m, cached = self.machine, self._spec
        if cached is not None and cached.status == m.status and cached.output == m.output:
            return cached
        if cached is not None:
            spec = dataclasses.replace(cached, status=m.status, output=m.output)
        else:
            d = self.defn
            spec = CheckSpec(check_id=d.id, name=d.name, status=m.status, notes=d.notes,
                             output=m.output, service_id=d.service_id, type=d.kind,
                             interval=d.interval_text, timeout=d.timeout_text,
                             definition=tuple(sorted(d.display().items())))
        self._spec = spec
        return spec


@dataclass
class NodeInfo:
    name: str
    id: str
    address: str
    datacenter: str
    meta: tuple[tuple[str, str], ...] = ()
    tagged_addresses: tuple[tuple[str, str], ...] = ()


@dataclass
class LocalState:
    node: NodeInfo
    services: dict[str, ServiceSpec] = field(default_factory=dict)
    service_source: dict[str, str] = field(default_factory=dict)
    checks: dict[str, LocalCheck] = field(default_factory=dict)
    # Consul's check_update_interval: a change to a check's output alone (same status) reaches the
    # catalog at most this often, in seconds (0: at once). Status changes always go at once.
    check_update_interval: float = 0.0

    # ---- changes ------------------------------------------------------------------------------
    def add_service(self, spec: ServiceSpec, source: str = "api") -> None:
        self.services[spec.id] = spec
        self.service_source[spec.id] = source

    def remove_service(self, sid: str) -> list[str]:
        """Drop a service and its checks; returns the IDs of the checks removed."""
        self.services.pop(sid, None)
        self.service_source.pop(sid, None)
        gone = [cid for cid, c in self.checks.items() if c.defn.service_id == sid]
        for cid in gone:
            del self.checks[cid]
        return gone

    def add_check(self, defn: CheckDefinition, now: float, source: str = "api") -> LocalCheck:
        """Add or replace a check. A check that already exists keeps its status and output, so
        re-registering a service does not reset its health (Consul issue (d)3)."""
        old = self.checks.get(defn.id)
        machine = StatusMachine(status=defn.status, output="",
                                success_before_passing=defn.success_before_passing,
                                failures_before_warning=defn.failures_before_warning,
                                failures_before_critical=defn.failures_before_critical,
                                output_max_size=defn.output_max_size)
        if old is not None:
            machine.status, machine.output = old.machine.status, old.machine.output
        ttl = None
        if defn.kind == "ttl":
            ttl = old.ttl if old is not None and old.ttl is not None and old.defn.ttl == defn.ttl else None
            if ttl is None:
                ttl = TTLTimer(defn.ttl, now + defn.ttl)
        check = LocalCheck(defn, machine, ttl, source)
        if old is not None:  # re-registered (a reload): its sync pacing and reaper clock carry over
            check.output_synced_at, check.critical_since = old.output_synced_at, old.critical_since
        self.checks[defn.id] = check
        return check

    def remove_check(self, cid: str) -> bool:
        return self.checks.pop(cid, None) is not None

    def reap(self, now: float) -> list[str]:
        """Services to deregister because one of their checks with deregister_critical_service_after
        has been critical that long (as the reaper saw it: `now` is when it looks)."""
        out: set[str] = set()
        for check in self.checks.values():
            after = check.defn.deregister_critical_service_after
            if after <= 0 or not check.defn.service_id:
                continue
            if check.machine.status != CRITICAL:
                check.critical_since = None
                continue
            if check.critical_since is None:
                check.critical_since = now
            if now - check.critical_since >= after and check.defn.service_id in self.services:
                out.add(check.defn.service_id)
        return sorted(out)

    # ---- anti-entropy -------------------------------------------------------------------------
    def _sync_spec(self, check: LocalCheck, have: dict[str, CheckRecord], now: float,
                   service_name: str = "") -> tuple[CheckSpec, bool]:
        """The check as it should be in the catalog now, and whether the catalog has it already: its
        current spec, or, while only its output changed and check_update_interval has not passed,
        the catalog's (no write)."""
        spec = check.spec(service_name)
        rec = have.get(spec.check_id)
        if rec is not None:
            # The catalog's record and our spec are the very objects found equal last pass: in sync,
            # without comparing field by field (2,000 checks, every second, on a server).
            if check._synced is not None and check._synced[0] is rec.spec and check._synced[1] is spec:
                return spec, True
            if rec.spec == spec:
                check._synced = (rec.spec, spec)
                return spec, True
            if self.check_update_interval > 0 and now - check.output_synced_at < self.check_update_interval \
                    and dataclasses.replace(rec.spec, output=spec.output) == spec:
                return rec.spec, True
        check.output_synced_at = now
        return spec, False

    def sync_commands(self, store: StateStore, now: float = 0.0) -> list[Command]:
        """What to write so the catalog matches this agent's node, services and checks. `now`
        (any clock, seconds) paces output-only updates by check_update_interval."""
        n = self.node
        out: list[Command] = []
        node_cmd = Register(node=n.name, address=n.address, node_id=n.id, datacenter=n.datacenter,
                            tagged_addresses=n.tagged_addresses, node_meta=n.meta)
        cur = store.nodes.get(n.name)
        if cur is None or (cur.id, cur.address, cur.datacenter, cur.meta, cur.tagged_addresses) != (
                n.id, n.address, n.datacenter, n.meta, n.tagged_addresses):
            out.append(node_cmd)
        have_services = store.services.get(n.name, {})
        have_checks = store.checks.get(n.name, {})
        by_service: dict[str, list[str]] = {}  # service ID ("" for node checks) -> its check IDs, sorted
        for c in sorted(self.checks):
            by_service.setdefault(self.checks[c].defn.service_id, []).append(c)
        for sid in sorted(self.services):
            spec = self.services[sid]
            synced = [self._sync_spec(self.checks[c], have_checks, now, spec.name) for c in by_service.get(sid, ())]
            checks = tuple(c for c, _ in synced)
            rec = have_services.get(sid)
            if rec is None or rec.spec != spec or not all(ok for _, ok in synced):
                out.append(Register(node=n.name, address=n.address, node_id=n.id, datacenter=n.datacenter,
                                    tagged_addresses=n.tagged_addresses, node_meta=n.meta, service=spec,
                                    checks=checks, skip_node_update=True))
        stale_node = tuple(c for c, ok in (self._sync_spec(self.checks[c], have_checks, now)
                                           for c in by_service.get("", ())) if not ok)
        if stale_node:
            out.append(Register(node=n.name, address=n.address, node_id=n.id, datacenter=n.datacenter,
                                checks=stale_node, skip_node_update=True))
        for sid in sorted(have_services):
            if sid not in self.services and sid not in SYSTEM_SERVICES:
                out.append(Deregister(node=n.name, service_id=sid))
        for cid in sorted(have_checks):
            rec_c = have_checks[cid]
            if cid in self.checks or cid in SYSTEM_CHECKS:
                continue
            if rec_c.spec.service_id and rec_c.spec.service_id not in self.services:
                continue  # removed with its service above
            out.append(Deregister(node=n.name, check_id=cid))
        return out
