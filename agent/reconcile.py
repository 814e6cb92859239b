"""What a Consul server leader writes for gossip members: the catalog follows the member list.

Each member is a node with a `serfHealth` check that is passing while it is alive and critical
once it failed; servers also carry the `consul` service. Members that left (or were reaped) are
deregistered. Nodes without a serfHealth check were registered through /v1/catalog/register and
have no agent: they are left alone. Like anti-entropy this works by difference, so running it
every second writes nothing unless something changed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from murmur.catalog.commands import CheckSpec, Command, Deregister, Register, ServiceSpec
from murmur.catalog.store import StateStore

log = logging.getLogger("murmur.reconcile")

SERF_CHECK = "serfHealth"
ALIVE_OUTPUT = "Agent alive and reachable"
FAILED_OUTPUT = "Agent not live or unreachable"


@dataclass(frozen=True)
class MemberView:
    name: str
    addr: str
    node_id: str
    datacenter: str
    alive: bool  # alive or suspect
    left: bool  # left gracefully (deregister)
    server_port: int = 0  # > 0 for servers: register the `consul` service


def serf_check(alive: bool) -> CheckSpec:
    return CheckSpec(check_id=SERF_CHECK, name="Serf Health Status", status="passing" if alive else "critical",
                     output=ALIVE_OUTPUT if alive else FAILED_OUTPUT)


def reconcile_commands(store: StateStore, members: list[MemberView], datacenter: str) -> list[Command]:
    out: list[Command] = []
    names = set()
    for m in members:
        if m.datacenter != datacenter:
            continue
        names.add(m.name)
        if m.left:
            if m.name in store.nodes:
                out.append(Deregister(node=m.name))
            continue
        node = store.nodes.get(m.name)
        check = store.checks.get(m.name, {}).get(SERF_CHECK)
        want_check = serf_check(m.alive)
        svc = store.services.get(m.name, {}).get("consul")
        want_svc = ServiceSpec(id="consul", name="consul", port=m.server_port) if m.server_port else None
        stale_node = node is None or (m.alive and node.address != m.addr)
        stale_check = check is None or (check.spec.status, check.spec.output) != (want_check.status, want_check.output)
        stale_svc = want_svc is not None and (svc is None or svc.spec != want_svc)
        if stale_node or stale_check or stale_svc:
            out.append(Register(node=m.name, address=m.addr if (stale_node or node is None) else node.address,
                                node_id=m.node_id, datacenter=datacenter,
                                service=want_svc if stale_svc else None, checks=(want_check,),
                                skip_node_update=not stale_node))
    for name in sorted(store.nodes):
        if name not in names and SERF_CHECK in store.checks.get(name, {}):
            out.append(Deregister(node=name))  # reaped: gossip forgot it, so does the catalog
    return out


def log_reconcile(cmd: Command) -> None:
    """What the leader is about to write for a member, at INFO when it changes a node's health or
    removes it (both invalidate the node's sessions); a plain re-registration stays at DEBUG."""
    if isinstance(cmd, Deregister):
        log.info("reconcile: deregistering node %s (left, or reaped by gossip)", cmd.node)
    elif isinstance(cmd, Register) and any(c.status == "critical" for c in cmd.checks):
        log.info("reconcile: node %s failed: marking serfHealth critical", cmd.node)
    elif isinstance(cmd, Register):
        log.debug("reconcile: registering node %s", cmd.node)
