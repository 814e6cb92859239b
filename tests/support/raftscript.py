"""Scripted Raft scenarios with golden transcripts (the idea of etcd-io/raft's interaction tests).

A script is a sequence of blocks. Each block is optional `#` prose, one command line, a `----`
line, and the exact output the command must print (no blank lines inside; a blank line ends
the block). Nothing happens on its own: messages wait in each node's inbox until a script step
delivers (or drops) them, ticks are explicit, and every node's randomized election timeout is
exactly `election` ticks, so a transcript replays identically.

Commands (IDs are node IDs; `opts` are key=value):

    add-nodes N [election=10 heartbeat=1 pre_vote=true check_quorum=true inflight=256 max_size=1048576 lease=0]
    load-log ID [term=T] [vote=V] [commit=C] log=1@1,2@1,3@2   # rewrite ID's disk, restart ID
    campaign ID | propose ID DATA | read-index ID CTX
    transfer-leader ID TARGET    # ID (the leader) hands leadership to TARGET
    new-node N [opts]            # N more nodes outside the configuration (empty voter set), to add
    add-voter ID NODE | remove-voter ID NODE  # ID (the leader) proposes a single-server change
    add-learner ID NODE          # ID (the leader) adds NODE as a non-voter (add-voter promotes it)
    voters ID                    # ID's configuration, and whether a change is pending
    tick ID [N] | tick-heartbeat ID | tick-election ID
    set-jitter ID N              # ID's election timeout is election+N from its next role change
    process-ready ID...          # persist the Ready, queue its messages, apply, advance
    deliver-msgs ID... [type=T] [from=ID] [drop]  # step (or drop) what waits in each inbox, in order
    stabilize [ID...]            # process-ready + deliver-msgs until nothing moves
    compact ID INDEX [keep=K]    # ID's application snapshots its state through INDEX (durably), then
                                 # the log drops the entries it covers but the last K
    report-snapshot ID TO [failed]  # ID's transport tells it how sending a snapshot to TO went
    status [ID...] | raft-log ID | progress ID | applied ID | dropped ID  # counters of refused input
    crash ID | restart ID        # crash loses the inbox and anything not persisted
    cut A B | isolate ID | heal  # a cut link drops what is sent on it, and what is in flight
    echo off | echo on           # silence setup steps

Outputs: entries print as `index@term` plus `noop` or the data; messages as
`from->to TYPE tTERM fields...`. A Ready prints what the driver does with it, in the order it
must do it: `state`, `hard` (persist), `snapshot` (persist), `persist` (entries), `send`,
`restore` (the state machine, from the snapshot), `apply`, `read`. A snapshot's data is the
applied entries' data, comma-separated; `applied ID` prints a restored snapshot as `[data]`.

Set RAFT_REWRITE=1 to regenerate the expected outputs; commit the change only if you can
explain every line that moved.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from murmur.raft.config import RaftConfig
from murmur.raft.core import ProposalDropped
from murmur.raft.messages import (
    ConfChangeType,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    Ready,
    Snapshot,
    SnapshotMeta,
)
from murmur.raft.progress import ProgressState
from murmur.raft.rawnode import RawNode

from .raftnet import Disk

MT = MessageType


class FixedTimeout(random.Random):
    """An rng whose election jitter is fixed (0 unless `set-jitter` says otherwise): a node's
    randomized election timeout is exactly `election + jitter` ticks."""

    jitter = 0

    def randrange(self, start: int, stop: int | None = None, step: int = 1) -> int:
        return min(self.jitter, start - 1) if stop is None else start


# ---- formatting ---------------------------------------------------------------------------------
def fmt_entry(e: Entry) -> str:
    s = f"{e.index}@{e.term}"
    if e.type == EntryType.NOOP:
        return s + " noop"
    if e.type == EntryType.CONF_CHANGE:
        return s + " conf " + e.data.decode(errors="backslashreplace")
    return s + (f' "{e.data.decode(errors="backslashreplace")}"' if e.data else "")


def fmt_msg(m: Message) -> str:
    s = f"{m.frm}->{m.to} {m.type.name if isinstance(m.type, MT) else m.type} t{m.term}"
    if m.type in (MT.APP,):
        s += f" prev={m.index}@{m.log_term} commit={m.commit}"
        if m.entries:
            s += " [" + ", ".join(fmt_entry(e) for e in m.entries) + "]"
    elif m.type in (MT.VOTE, MT.PRE_VOTE):
        s += f" last={m.index}@{m.log_term}"
    elif m.type in (MT.VOTE_RESP, MT.PRE_VOTE_RESP):
        s += " rejected" if m.reject else " granted"
    elif m.type == MT.APP_RESP:
        s += f" reject index={m.index} hint={m.reject_hint}" if m.reject else f" index={m.index}"
    elif m.type == MT.HEARTBEAT:
        s += f" commit={m.commit}"
    elif m.type == MT.READ_INDEX_RESP:
        s += f" index={m.index}"
    elif m.type == MT.SNAP and m.snapshot is not None:
        s += f" snap={fmt_snap(m.snapshot)}"
    if m.context:
        s += f" ctx={m.context.hex()}" if m.type in (MT.HEARTBEAT, MT.HEARTBEAT_RESP) \
            else f" ctx={m.context.decode(errors='backslashreplace')}"
    return s


def fmt_snap(snap: Snapshot) -> str:
    meta = snap.meta
    learners = f" learners={','.join(map(str, meta.learners))}" if meta.learners else ""
    return f"{meta.index}@{meta.term} voters={','.join(map(str, meta.voters))}{learners} data=\"{snap.data.decode()}\""


def parse_entries(spec: str) -> list[Entry]:
    out = []
    for item in spec.split(","):
        idx, term = item.split("@")
        out.append(Entry(int(term), int(idx)))
    return out


# ---- the environment ----------------------------------------------------------------------------
@dataclass
class Env:
    nodes: dict[int, RawNode] = field(default_factory=dict)
    configs: dict[int, RaftConfig] = field(default_factory=dict)
    disks: dict[int, Disk] = field(default_factory=dict)
    inbox: dict[int, list[Message]] = field(default_factory=dict)
    applied: dict[int, list[Entry]] = field(default_factory=dict)
    restored: dict[int, str] = field(default_factory=dict)  # the snapshot data the state machine began from
    down: set[int] = field(default_factory=set)
    cut: set[tuple[int, int]] = field(default_factory=set)
    voters: list[int] = field(default_factory=list)
    bootstrap: list[int] = field(default_factory=list)  # the initial configuration
    boot: dict[int, list[int]] = field(default_factory=dict)  # new-node's: empty
    echo: bool = True

    # -- lifecycle --
    def _start(self, i: int) -> None:
        d = self.disks[i]
        self.nodes[i] = RawNode(self.configs[i], self.boot.get(i, self.bootstrap), FixedTimeout(i), d.hard, d.log_after_snapshot(),
                                snapshot=d.snapshot)
        self.applied[i] = []
        self.restored[i] = d.snapshot.data.decode() if d.snapshot else ""
        self.inbox[i] = []
        self.down.discard(i)

    def add_nodes(self, n: int, opts: dict[str, str], joining: bool = False) -> str:
        first = len(self.voters) + 1
        ids = list(range(first, first + n))
        if joining:
            self.boot.update({i: [] for i in ids})
        else:
            self.bootstrap.extend(ids)
        self.voters.extend(ids)

        def flag(k: str, default: bool) -> bool:
            return opts.get(k, str(default)).lower() in ("1", "true", "yes")
        for i in ids:
            self.configs[i] = RaftConfig(
                id=i, election_tick=int(opts.get("election", 10)), heartbeat_tick=int(opts.get("heartbeat", 1)),
                pre_vote=flag("pre_vote", True), check_quorum=flag("check_quorum", True),
                max_inflight_msgs=int(opts.get("inflight", 256)),
                max_size_per_msg=int(opts.get("max_size", 1 << 20)), lease_tick=int(opts.get("lease", 0)))
            self.disks[i] = Disk()
            self._start(i)
        return "ok"

    # -- the driver's Ready loop --
    def _handle_ready(self, i: int, out: list[str]) -> None:
        node = self.nodes[i]
        rd: Ready = node.ready()
        out.append(f"> {i} handling Ready")
        if rd.soft_state is not None:
            out.append(f"  state: {rd.soft_state.role.name} lead={rd.soft_state.lead}")
        if rd.hard_state is not None:
            h = rd.hard_state
            out.append(f"  hard: term={h.term} vote={h.vote} commit={h.commit}")
        if rd.snapshot is not None:
            out.append("  snapshot: " + fmt_snap(rd.snapshot))
        if rd.entries:
            out.append("  persist: " + ", ".join(fmt_entry(e) for e in rd.entries))
        self.disks[i].persist(rd.hard_state, rd.entries, rd.snapshot)  # durable before anything is sent
        for m in rd.messages:
            if (m.frm, m.to) in self.cut:
                out.append("  send: " + fmt_msg(m) + " -- cut")
                continue
            out.append("  send: " + fmt_msg(m))
            if m.to not in self.down and m.to in self.inbox:
                self.inbox[m.to].append(m)
        if rd.snapshot is not None:
            out.append(f"  restore: {rd.snapshot.meta.index}@{rd.snapshot.meta.term}")
            self.applied[i] = []
            self.restored[i] = rd.snapshot.data.decode()
        if rd.committed_entries:
            out.append("  apply: " + ", ".join(fmt_entry(e) for e in rd.committed_entries))
            self.applied[i].extend(rd.committed_entries)
        for rs in rd.read_states:
            out.append(f"  read: index={rs.index} ctx={rs.context.decode(errors='backslashreplace')}")
        node.advance(rd)

    def _deliver(self, i: int, out: list[str], only: MessageType | None = None, frm: int | None = None,
                 drop: bool = False) -> bool:
        def chosen(m: Message) -> bool:
            return (only is None or m.type == only) and (frm is None or m.frm == frm)
        msgs = [m for m in self.inbox[i] if chosen(m)]
        if not msgs:
            return False
        self.inbox[i] = [m for m in self.inbox[i] if not chosen(m)]
        out.append(f"> {i} receiving")
        for m in msgs:
            if drop:
                out.append(f"  {fmt_msg(m)} -- dropped")
            elif (m.frm, m.to) in self.cut:
                out.append(f"  {fmt_msg(m)} -- dropped (cut)")
            else:
                accepted = self.nodes[i].step(m)
                out.append(f"  {fmt_msg(m)}" + ("" if accepted else " -- refused by step"))
        return True

    def _stabilize(self, ids: list[int], out: list[str]) -> None:
        for _ in range(10_000):
            moved = False
            for i in ids:
                if i not in self.down and self.nodes[i].has_ready():
                    self._handle_ready(i, out)
                    moved = True
            for i in ids:
                if i not in self.down and self._deliver(i, out):
                    moved = True
            if not moved:
                return
        raise AssertionError("stabilize did not settle")

    # -- views --
    def _status(self, i: int) -> str:
        if i in self.down:
            return f"{i}: down"
        r = self.nodes[i].raft
        return (f"{i}: {r.role.name} term={r.term} vote={r.vote} lead={r.lead} commit={r.log.committed} "
                f"applied={r.log.applied} last={r.log.last_index()}@{r.log.last_term()}")

    def _progress(self, i: int) -> str:
        r = self.nodes[i].raft
        lines = []
        for v, pr in sorted(r.prs.items()):
            if v == r.id:
                continue
            s = f"{v}: {pr.state.name} match={pr.match} next={pr.next}"
            if pr.state == ProgressState.PROBE and pr.probe_sent:
                s += " paused"
            if pr.state == ProgressState.SNAPSHOT:
                s += f" pending={pr.pending_snapshot}"
            if pr.state == ProgressState.REPLICATE:
                s += f" inflight={len(pr.inflights)}" + (" full" if pr.is_paused() else "")
            s += " active" if pr.recent_active else ""
            lines.append(s)
        return "\n".join(lines)

    # -- the interpreter --
    def run(self, line: str) -> str:
        words = line.split()
        cmd, rest = words[0], words[1:]
        pos = [w for w in rest if "=" not in w]
        opts = dict(w.split("=", 1) for w in rest if "=" in w)
        ids = [int(w) for w in pos if w.isdigit()]
        out: list[str] = []
        if cmd == "echo":
            self.echo = pos[0] == "on"
            return "ok"
        if cmd == "add-nodes":
            return self.add_nodes(int(pos[0]), opts)
        if cmd == "new-node":
            return self.add_nodes(int(pos[0]), opts, joining=True)
        if cmd == "load-log":
            i = ids[0]
            ents = parse_entries(opts["log"]) if opts.get("log") else []
            self.disks[i] = Disk(HardState(int(opts.get("term", 0)), int(opts.get("vote", 0)),
                                           int(opts.get("commit", 0))), ents)
            self._start(i)
            return self.run(f"raft-log {i}")
        if cmd == "set-jitter":
            rng = self.nodes[ids[0]].raft.rng
            assert isinstance(rng, FixedTimeout)
            rng.jitter = ids[1]
        elif cmd == "campaign":
            self.nodes[ids[0]].campaign()
        elif cmd == "propose":
            try:
                self.nodes[ids[0]].propose(pos[1].encode())
            except ProposalDropped as e:
                return f"ProposalDropped: {e}"
        elif cmd == "transfer-leader":
            try:
                self.nodes[ids[0]].transfer_leader(ids[1])
            except (ProposalDropped, ValueError) as e:
                return f"{type(e).__name__}: {e}"
        elif cmd in ("add-voter", "remove-voter", "add-learner"):
            kind = {"add-voter": ConfChangeType.ADD_VOTER, "remove-voter": ConfChangeType.REMOVE_VOTER,
                    "add-learner": ConfChangeType.ADD_LEARNER}[cmd]
            try:
                index = self.nodes[ids[0]].propose_conf_change(kind, ids[1])
            except (ProposalDropped, ValueError) as e:
                return f"{type(e).__name__}: {e}"
            return f"proposed at index {index}"
        elif cmd == "voters":
            r = self.nodes[ids[0]].raft
            out.append(f"{ids[0]}: voters={','.join(map(str, sorted(r.voters))) or '(none)'}"
                       + (f" learners={','.join(map(str, sorted(r.learners)))}" if r.learners else "")
                       + (" (change pending)" if r.conf_pending() else ""))
        elif cmd == "read-index":
            try:
                self.nodes[ids[0]].read_index(pos[1].encode())
            except ProposalDropped as e:
                return f"ProposalDropped: {e}"
        elif cmd in ("tick", "tick-heartbeat", "tick-election"):
            i = ids[0]
            cfg = self.configs[i]
            n = {"tick": ids[1] if len(ids) > 1 else 1, "tick-heartbeat": cfg.heartbeat_tick,
                 "tick-election": cfg.election_tick}[cmd]
            for _ in range(n):
                self.nodes[i].tick()
        elif cmd == "process-ready":
            for i in ids:
                if self.nodes[i].has_ready():
                    self._handle_ready(i, out)
        elif cmd == "deliver-msgs":
            only = MessageType[opts["type"]] if "type" in opts else None
            frm = int(opts["from"]) if "from" in opts else None
            for i in ids:
                self._deliver(i, out, only, frm, drop="drop" in pos)
        elif cmd == "compact":
            i, index = ids[0], ids[1]
            node = self.nodes[i]
            datas = [self.restored[i]] if self.restored[i] else []
            datas += [e.data.decode() for e in self.applied[i] if e.index <= index and e.data]
            term = node.raft.log.term(index)
            assert term is not None, f"compact {i} {index}: not in the log"
            snap = Snapshot(SnapshotMeta(index, term, tuple(sorted(node.raft.voters_at(index)))), ",".join(datas).encode())
            node.compact(index, snap.data, int(opts.get("keep", 0)))
            self.disks[i].compact(snap, node.raft.log.offset)  # (durable before the core drops them)
            out.append(f"{i}: snapshot {fmt_snap(snap)}, log {node.raft.log.offset + 1}.."
                       f"{node.raft.log.last_index()}")
        elif cmd == "report-snapshot":
            self.nodes[ids[0]].report_snapshot(ids[1], failed="failed" in pos)
        elif cmd == "stabilize":
            self._stabilize(ids or list(self.voters), out)
        elif cmd == "status":
            out.extend(self._status(i) for i in (ids or self.voters))
        elif cmd == "raft-log":
            r = self.nodes[ids[0]].raft
            if r.log.offset:
                out.append(f"(compacted through {r.log.offset}@{r.log.offset_term})")
            if r.log.snapshot.meta.index:
                out.append(f"(snapshot {r.log.snapshot.meta.index}@{r.log.snapshot.meta.term})")
            out.extend(fmt_entry(e) for e in r.log.entries)
            if not r.log.entries:
                out.append("(empty)")
        elif cmd == "progress":
            out.append(self._progress(ids[0]))
        elif cmd == "dropped":
            counts = self.nodes[ids[0]].raft.dropped
            out.append(" ".join(f"{k}={v}" for k, v in sorted(counts.items()) if v) or "(none)")
        elif cmd == "applied":
            items = [f"[{self.restored[ids[0]]}]"] if self.restored[ids[0]] else []
            items += [fmt_entry(e) for e in self.applied[ids[0]]]
            out.append(", ".join(items) or "(nothing)")
        elif cmd == "crash":
            self.down.add(ids[0])
            self.inbox[ids[0]] = []
        elif cmd == "restart":
            self._start(ids[0])
        elif cmd == "cut":
            a, b = ids
            self.cut |= {(a, b), (b, a)}
        elif cmd == "isolate":
            for j in self.voters:
                if j != ids[0]:
                    self.cut |= {(ids[0], j), (j, ids[0])}
        elif cmd == "heal":
            self.cut.clear()
        else:
            raise ValueError(f"unknown command {cmd!r}")
        text = "\n".join(out)
        return (text if self.echo else "") or "ok"


# ---- script files -------------------------------------------------------------------------------
@dataclass
class Block:
    prose: list[str]
    command: str
    expected: list[str]
    lineno: int


def parse_script(text: str) -> tuple[list[Block], list[str]]:
    """Blocks, and any trailing prose after the last block."""
    blocks: list[Block] = []
    prose: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip() or line.startswith("#"):
            prose.append(line)
            i += 1
            continue
        if i + 1 >= len(lines) or lines[i + 1] != "----":
            raise ValueError(f"line {i + 1}: command {line!r} is not followed by ----")
        j = i + 2
        expected = []
        while j < len(lines) and lines[j].strip():
            expected.append(lines[j])
            j += 1
        blocks.append(Block(prose, line, expected, i + 1))
        prose = []
        i = j + 1  # the blank line that ends the block belongs to it
    return blocks, prose


def run_script(path: Path, rewrite: bool = False) -> list[str]:
    """Run a script; return the mismatches (empty when it passes). With rewrite, update the file."""
    blocks, tail = parse_script(path.read_text())
    env = Env()
    problems: list[str] = []
    rendered: list[str] = []
    for b in blocks:
        got = env.run(b.command).splitlines()
        if got != b.expected:
            problems.append(f"{path.name}:{b.lineno}: {b.command}\n--- expected\n" + "\n".join(b.expected)
                            + "\n--- got\n" + "\n".join(got))
        rendered += b.prose + [b.command, "----"] + got + [""]
    if rewrite:
        text = "\n".join(rendered + tail).rstrip("\n") + "\n"
        path.write_text(text)
    return problems
