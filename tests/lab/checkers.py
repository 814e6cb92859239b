"""The fault lab's checkers: pure functions over recorded histories and the nemesis log.

- `check_linearizable`: each register's history, key by key (P-compositionality), through
  support.lincheck (Wing & Gong + Lowe); unknown writes may have taken effect at any point
  after their call, or never. A search that runs out of steps counts as a checker timeout.
- `lost_writes`: acknowledged ids that a final consistent read does not return as written.
- `false_dead`: "dead" verdicts about a member that nothing excused: no fault that can
  legitimately make it look dead (a kill, a pause, a partition touching it, or touching the
  observer) was active within `window` seconds before the verdict. Loss alone excuses nothing:
  a live member must survive 20% loss without being declared dead.
- `raft_invariants`: Raft's safety properties, from the servers' agent logs (one INFO line per
  role or leader change, one per start: agent/drivers/raft.py, agent/server.py). Election safety:
  every claim "leader L in term T" (a leader's own, or a follower's view) names one L per term
  across all servers. Term monotonicity: a server's terms never go down along its log, restarts
  included (terms are persisted). Commit monotonicity within one process life. Leader
  completeness (a cheap necessary form): a leader elected in term T holds every entry committed
  in an earlier term, so its last index is at least any commit index logged at a term < T.
- `catalog_diff`: clients whose services in the catalog are not exactly the ones registered at
  the client (its local API). The runner polls it after every heal: the time until it is empty
  is the catalog's convergence time, and a client still listed after the bound is a failure.
"""

from __future__ import annotations

import re
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


def verdicts_during(verdicts: Sequence[DeadVerdict], faults: Sequence[Fault], kind: str, window: float) -> int:
    """How many `verdicts` (the false ones, say) came while a `kind` fault was on their member or
    observer, or had ended less than `window` seconds before: e.g. live agents declared dead under
    20% loss on one host."""
    return sum(1 for v in verdicts if any(f.kind == kind and f.t0 <= v.t and f.t1 >= v.t - window
                                          and (v.member in f.hosts or v.observer in f.hosts) for f in faults))


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


# "raft: leader, leader 3, term 7, commit 120, last 121" and "raft: starting at term 7, vote 3, commit 120, last 121"
_ROLE = re.compile(r"raft: (\w+), leader (\w+), term (\d+), commit (\d+), last (\d+)")
_START = re.compile(r"raft: starting at term (\d+), vote \d+, commit (\d+), last (\d+)")


@dataclass
class RaftLine:
    """One fact from a server's log: `role` is leader/follower/candidate/pre_candidate, or "start"."""

    server: str
    n: int  # line number in that server's log
    role: str
    lead: int  # 0: unknown
    term: int
    commit: int
    last: int


def parse_raft_lines(server: str, lines: Iterable[str]) -> list[RaftLine]:
    out = []
    for n, line in enumerate(lines, 1):
        if "raft: " not in line:
            continue
        if m := _ROLE.search(line):
            role, lead = m.group(1), m.group(2)
            out.append(RaftLine(server, n, role, int(lead) if lead.isdigit() else 0, int(m.group(3)),
                                int(m.group(4)), int(m.group(5))))
        elif m := _START.search(line):
            out.append(RaftLine(server, n, "start", 0, int(m.group(1)), int(m.group(2)), int(m.group(3))))
    return out


@dataclass
class RaftResult:
    lines: int = 0
    terms: int = 0  # distinct terms with a known leader
    elections: int = 0  # "leader" lines
    violations: list[str] = field(default_factory=list)


def raft_invariants(logs: Mapping[str, Iterable[str]]) -> RaftResult:
    """Check the Raft invariants over every server's log (server name -> its lines)."""
    out = RaftResult()
    leaders: dict[int, dict[int, str]] = defaultdict(dict)  # term -> leader -> first claim
    commit_at: dict[int, tuple[int, str]] = {}  # term -> (highest commit logged at it, where)
    elected: list[RaftLine] = []
    for server in sorted(logs):
        facts = parse_raft_lines(server, logs[server])
        out.lines += len(facts)
        prev: RaftLine | None = None
        life_commit: RaftLine | None = None
        for f in facts:
            where = f"{f.server}:{f.n}"
            if prev is not None and f.term < prev.term:
                out.violations.append(f"term went down on {f.server}: {prev.term} (line {prev.n}, {prev.role}) -> "
                                      f"{f.term} (line {f.n}, {f.role})")
            if f.role == "start":
                life_commit = None
            elif life_commit is not None and f.commit < life_commit.commit:
                out.violations.append(f"commit index went down on {f.server} within one life: {life_commit.commit} "
                                      f"(line {life_commit.n}) -> {f.commit} (line {f.n})")
            if f.lead:
                leaders[f.term].setdefault(f.lead, where)
            if f.role == "leader":
                elected.append(f)
            if f.commit > commit_at.get(f.term, (-1, ""))[0]:
                commit_at[f.term] = (f.commit, where)
            prev = f
            life_commit = f if life_commit is None or f.commit >= life_commit.commit else life_commit
    out.terms = len(leaders)
    out.elections = len(elected)
    for term in sorted(leaders):
        if len(leaders[term]) > 1:
            claims = ", ".join(f"{lead} ({where})" for lead, where in sorted(leaders[term].items()))
            out.violations.append(f"election safety: term {term} has {len(leaders[term])} leaders: {claims}")
    best: tuple[int, str] = (-1, "")
    terms = sorted(commit_at)
    i = 0
    for f in sorted(elected, key=lambda x: x.term):
        while i < len(terms) and terms[i] < f.term:
            if commit_at[terms[i]][0] > best[0]:
                best = commit_at[terms[i]]
            i += 1
        if f.last < best[0]:
            out.violations.append(f"leader completeness: {f.server} led term {f.term} with last index {f.last} "
                                  f"(line {f.n}), but index {best[0]} was committed at an earlier term ({best[1]})")
    return out
