"""RawNode: the driver's handle on the Raft core, handing out work as Ready batches.

The contract (etcd-io/raft's): take `ready()`; durably persist its hard state and entries; only
then send its messages; apply its committed entries; call `advance(ready)`. Persisting before
sending is what makes a vote or an ack a promise that survives kill -9.

Asynchronous storage writes (etcd-io/raft's AsyncStorageWrites, for a leader): the driver may
start the write, send the Ready's APP/HEARTBEAT/SNAP messages at once (they promise nothing about
the sender's disk), apply its committed entries and call `advance(ready, durable=False)`, then
take further Readys while the write runs; entries handed out are not handed out again. When the
write is durable it calls `persisted(ready)` and only then sends the Ready's other messages. The
leader counts its own copy toward a commit only from `persisted` (or a durable `advance`), so an
entry commits only once a quorum holds it durably, whichever copies those are.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from .config import RaftConfig
from .core import ProposalDropped, Raft
from .messages import (
    LOCAL_MESSAGES,
    NONE,
    ConfChangeType,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    Ready,
    Role,
    Snapshot,
    SoftState,
    malformed,
)

__all__ = ["ProposalDropped", "RawNode"]


class RawNode:
    def __init__(self, config: RaftConfig, voters: Sequence[int], rng: random.Random,
                 hard_state: HardState | None = None, entries: Sequence[Entry] = (),
                 snapshot: Snapshot | None = None, applied: int = 0) -> None:
        self.raft = Raft(config, voters, rng, hard_state, entries, snapshot, applied)
        self.prev_hard = self.raft.hard_state()
        self.prev_soft = self.raft.soft_state()

    # ---- inputs ---------------------------------------------------------------------------------
    def tick(self) -> None:
        self.raft.tick()

    def campaign(self) -> None:
        self.raft.step(Message(MessageType.HUP, frm=self.raft.id))

    def propose(self, data: bytes, kind: EntryType = EntryType.NORMAL) -> None:
        """Propose one entry. Raises ProposalDropped unless this node leads."""
        self.propose_many([data], kind)

    def propose_many(self, datas: Sequence[bytes], kind: EntryType = EntryType.NORMAL) -> None:
        """Propose several entries at once: one append, one AppendEntries per follower."""
        if self.raft.role != Role.LEADER:
            raise ProposalDropped(f"not the leader (leader is {self.raft.lead or 'unknown'})")
        self.raft.step(Message(MessageType.PROP, frm=self.raft.id,
                               entries=tuple(Entry(0, 0, kind, d) for d in datas)))

    def read_index(self, context: bytes, lease: bool = True) -> None:
        """Ask for a linearizable read point; it comes back as a ReadState in a later Ready.
        `lease=False` confirms the leadership with a heartbeat round even when lease reads are on
        (Consul's `consistent` mode; `default` may use the lease)."""
        self.raft.step(Message(MessageType.READ_INDEX, frm=self.raft.id, context=context, reject=not lease))

    def transfer_leader(self, target: int) -> None:
        """Hand leadership to voter `target` (the leader only; raises ProposalDropped elsewhere,
        ValueError for a target that is not another voter). Proposals are refused meanwhile; the
        attempt is abandoned after an election timeout."""
        self.raft.transfer_leader(target)

    def propose_conf_change(self, kind: ConfChangeType, node: int) -> int:
        """Add or remove one voter (the leader only). Returns the entry's index; the change is in
        force at once, and done when that index commits. Raises ProposalDropped (not the leader,
        another change pending, a transfer under way) or ValueError (already / not a voter)."""
        return self.raft.propose_conf_change(kind, node)

    def compact(self, index: int, data: bytes, keep: int = 0) -> None:
        """The application made a snapshot (`data`, its state applied through `index`) durable:
        drop the log entries it covers, but the last `keep` of them (for followers just behind).
        `index` must be applied already."""
        self.raft.compact(index, data, keep)

    def report_snapshot(self, to: int, failed: bool) -> None:
        """The transport finished sending a snapshot to `to` (etcd's ReportSnapshot): on failure
        the leader probes again, and sends a new one if the follower still needs it."""
        self.raft.step(Message(MessageType.SNAP_STATUS, frm=to, reject=failed))

    def step(self, m: Message) -> bool:
        """A message from the network. Local-only types, unknown senders and malformed messages
        are counted in `raft.dropped` and dropped (False); nothing from the network raises."""
        if malformed(m) is not None or m.to != self.raft.id:
            self.raft.dropped["malformed"] += 1
            return False
        if m.type in LOCAL_MESSAGES or m.type == MessageType.PROP:
            self.raft.dropped["local_from_network"] += 1
            return False
        r = self.raft
        # A sender outside our configuration may be in a newer one we have not heard of yet (a
        # server just added, now a candidate or the leader): take what comes with a newer term,
        # then from the leader we follow; and anything while we have no configuration at all (a
        # new server waiting for the leader to send it the log).
        # A sender with an older term is let through too: Raft answers it with our term (so a
        # leader of a configuration we have not caught up to learns it is behind us and steps
        # down, instead of both waiting forever: found by the simulation with membership changes)
        # or drops it.
        known = (m.frm in r.voters or m.frm in r.prs or m.frm == r.lead
                 or m.term > r.term or 0 < m.term < r.term or not r.voters
                 # the one leader of our own term (a term has at most one), though our configuration
                 # does not know it yet (found by the simulation: a pre-candidate waited forever)
                 or (m.term == r.term and r.lead == NONE
                     and m.type in (MessageType.APP, MessageType.HEARTBEAT, MessageType.SNAP)))
        if m.frm in (NONE, self.raft.id) or not known:  # frm 0 is "nobody": no peer sends it
            self.raft.dropped["unknown_peer"] += 1
            return False
        self.raft.step(m)
        return True

    # ---- outputs --------------------------------------------------------------------------------
    def has_ready(self) -> bool:
        r = self.raft
        return bool(r.msgs or r.read_states or r.log.pending_snapshot is not None
                    or r.soft_state() != self.prev_soft
                    or r.hard_state() != self.prev_hard or r.log.unstable_entries()
                    or r.log.committed > r.log.applied)

    def ready(self) -> Ready:
        r = self.raft
        rd = Ready(entries=r.log.unstable_entries(), committed_entries=r.log.next_committed(),
                   messages=r.msgs, read_states=r.read_states, snapshot=r.log.pending_snapshot)
        soft = r.soft_state()
        if soft != self.prev_soft:
            rd.soft_state = soft
        hard = r.hard_state()
        if hard != self.prev_hard:
            rd.hard_state = hard
        rd.must_sync = bool(rd.entries) or rd.snapshot is not None or (hard.term, hard.vote) != (self.prev_hard.term, self.prev_hard.vote)
        rd.log_epoch = r.log.epoch
        if rd.entries:
            r.log.accept(rd.entries[-1].index)  # in progress: the next Ready does not repeat them
        r.msgs = []
        r.read_states = []
        return rd

    def advance(self, rd: Ready, durable: bool = True) -> None:
        """The driver handled `rd`. `durable`: its entries and hard state are durable now (the
        synchronous contract); False: the write is still running, and `persisted(rd)` follows."""
        r = self.raft
        if rd.soft_state is not None:
            self.prev_soft = rd.soft_state
        if rd.hard_state is not None:
            self.prev_hard = rd.hard_state
        if rd.snapshot is not None:
            r.log.stable_snapshot(rd.snapshot.meta.index)
        if rd.committed_entries:
            r.log.applied_to(rd.committed_entries[-1].index)
        if durable:
            self.persisted(rd)

    def persisted(self, rd: Ready) -> None:
        """`rd`'s write is durable: its entries count as ours (a leader's own ack)."""
        if rd.entries:
            last = rd.entries[-1]
            self.raft.on_persisted(last.index, last.term, rd.log_epoch)

    # ---- status ---------------------------------------------------------------------------------
    @property
    def is_leader(self) -> bool:
        return self.raft.role == Role.LEADER

    def status(self) -> dict[str, object]:
        r = self.raft
        return {"id": r.id, "term": r.term, "vote": r.vote, "lead": r.lead, "role": r.role.name,
                "commit": r.log.committed, "applied": r.log.applied, "last_index": r.log.last_index(),
                "snapshot_index": r.log.snapshot.meta.index, "first_index": r.log.offset + 1,
                "voters": sorted(r.voters), "learners": sorted(r.learners), "transferee": r.lead_transferee}

    def soft_state(self) -> SoftState:
        return self.raft.soft_state()
