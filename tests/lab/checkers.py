"""The fault lab's checkers: pure functions over recorded histories and the nemesis log.

- `check_linearizable`: each register's history, key by key (P-compositionality), through
  support.lincheck (Wing & Gong + Lowe); unknown writes may have taken effect at any point
  after their call, or never. A search that runs out of steps counts as a checker timeout.
- `lost_writes`: acknowledged ids that a final consistent read does not return as written.
- `false_dead`: "dead" verdicts about a member that nothing excused: no fault that can
  legitimately make it look dead (a kill, a pause, a partition touching it, or touching the
  observer) was active within `window` seconds before the verdict. Loss alone excuses nothing:
  a live member must survive 20% loss without being declared dead.
- `catalog_diff`: clients whose services in the catalog are not exactly the ones registered at
  the client (its local API). The runner polls it after every heal: the time until it is empty
  is the catalog's convergence time, and a client still listed after the bound is a failure.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from support.lincheck import Op, check

from .workload import DeadVerdict


@dataclass
class Fault:
    """One nemesis action: `hosts` (agent names) are the ones it may legitimately make look dead;
    `excuses` is False for faults that must not cause a dead verdict (packet loss)."""

    kind: str
    t0: float
    t1: float
    hosts: list[str]
    excuses: bool = True
    detail: str = ""


@dataclass
class LinResult:
    histories: int = 0
    violations: int = 0
    timeouts: int = 0
    ops: int = 0
    indeterminate: int = 0
    reports: list[str] = field(default_factory=list)


def check_linearizable(ops: Iterable[Op], max_steps: int = 300_000) -> LinResult:
    by_key: dict[str, list[Op]] = defaultdict(list)
    for op in ops:
        by_key[op.key].append(op)
    out = LinResult()
    for key in sorted(by_key):
        hist = by_key[key]
        out.histories += 1
        out.ops += len(hist)
        out.indeterminate += sum(1 for op in hist if op.unknown)
        r = check(hist, key=key, max_steps=max_steps)
        if r.ok is None:
            out.timeouts += 1
            out.reports.append(r.explain())
        elif not r.ok:
            out.violations += 1
            out.reports.append(r.explain())
    return out


def lost_writes(acked: Mapping[str, str], got: Mapping[str, str]) -> list[str]:
    """Acknowledged keys the final read does not hold with the value written."""
    return sorted(k for k, v in acked.items() if got.get(k) != v)


def false_dead(verdicts: Sequence[DeadVerdict], faults: Sequence[Fault], window: float) -> list[DeadVerdict]:
    out = []
    for v in verdicts:
        excused = any(f.excuses and f.t0 <= v.t and f.t1 >= v.t - window and (v.member in f.hosts or v.observer in f.hosts)
                      for f in faults)
        if not excused:
            out.append(v)
    return out


def catalog_diff(local: Mapping[str, set[str] | None], catalog: Mapping[str, set[str] | None]) -> dict[str, str]:
    """client -> what differs between its local registrations and the catalog's entries for it
    (None: that side could not be read, which is not convergence either)."""
    out: dict[str, str] = {}
    for client in sorted(local):
        mine, theirs = local[client], catalog.get(client)
        if mine is None or theirs is None:
            out[client] = "unreadable " + ("local services" if mine is None else "catalog")
        elif mine != theirs:
            out[client] = (f"missing from the catalog: {sorted(mine - theirs)[:5]} ({len(mine - theirs)}); "
                           f"stale in the catalog: {sorted(theirs - mine)[:5]} ({len(theirs - mine)})")
    return out
