"""The Raft state machine (after etcd-io/raft's raft.go), pure and single-threaded.

Messages and ticks go in through `step` and `tick`; messages to send accumulate in `msgs`, log
changes in `log`. `RawNode` (rawnode.py) packages the outputs into Ready batches. Every rule here
is from the Raft paper, with etcd's pre-vote, check-quorum and flow control; node IDs are
positive integers, 0 is "none".
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from .config import RaftConfig
from .log import LogError, RaftLog
from .messages import (
    NONE,
    ConfChange,
    ConfChangeType,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    ReadState,
    Role,
    Snapshot,
    SnapshotMeta,
    SoftState,
)
from .progress import Progress, ProgressState

MT = MessageType


class ProposalDropped(Exception):
    """This node cannot take the proposal now (not the leader, or the leader is stepping down)."""


# The context of a VOTE sent because the leader asked for it (TIMEOUT_NOW): the voters' lease
# check does not apply, since the leader itself is handing over (etcd's campaignTransfer).
CAMPAIGN_TRANSFER = b"transfer"


@dataclass
class PendingRead:
    """A ReadIndex request waiting for a quorum to confirm the leadership it was taken under.

    `seq` names it in the heartbeat round (the leader's own counter, so contexts chosen by
    different requesters never collide); `origin` is the node that asked (this one: NONE)."""

    seq: int
    index: int
    origin: int
    context: bytes
    acks: set[int] = field(default_factory=set)


class Raft:
    def __init__(self, config: RaftConfig, voters: Sequence[int], rng: random.Random,
                 hard_state: HardState | None = None, entries: Sequence[Entry] = (),
                 snapshot: Snapshot | None = None, applied: int = 0) -> None:
        config.validate()
        self.config = config
        self.id = config.id
        self.rng = rng
        hs = hard_state or HardState()
        self.log = RaftLog(snapshot, entries, hs.commit, applied)
        # The configuration (Raft thesis §4.1): each change takes effect as soon as its entry is in
        # the log, committed or not. conf_history holds (index, voters, learners from then on),
        # starting with the snapshot's (or the bootstrap) set; a truncated log drops the changes
        # it loses. An empty voter set: a new server waiting for a leader to send it the
        # configuration. Learners (non-voters) get the log but neither vote nor count for commits.
        from_snap = snapshot is not None and bool(snapshot.meta.voters)
        base = snapshot.meta.voters if snapshot and from_snap else voters
        base_learners = snapshot.meta.learners if snapshot and from_snap else ()
        self.conf_history: list[tuple[int, frozenset[int], frozenset[int]]] = [
            (self.log.offset, frozenset(base), frozenset(base_learners))]
        self.voters: set[int] = set(base)
        self.learners: set[int] = set(base_learners)
        self._scan_conf(self.log.offset + 1)
        self.voters = set(self.conf_history[-1][1])
        self.learners = set(self.conf_history[-1][2])
        self.term = hs.term
        self.vote = hs.vote
        self.lead = NONE
        self.role = Role.FOLLOWER
        self.votes: dict[int, bool] = {}
        self.msgs: list[Message] = []
        self.prs: dict[int, Progress] = {}
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_timeout = config.election_tick
        self.read_states: list[ReadState] = []
        self.pending_reads: list[PendingRead] = []  # in arrival order
        # Leadership transfer: the voter we are handing over to (NONE: no transfer), and the
        # ticks since it began; it is abandoned after an election timeout.
        self.lead_transferee = NONE
        self.transfer_elapsed = 0
        self.read_seq = 0  # never reset: a late heartbeat response cannot confirm a newer read
        # Lease reads: ticks of our own clock (never reset), and per follower the send tick of the
        # newest heartbeat it acknowledged in this term.
        self.ticks = 0
        self.heartbeat_acked: dict[int, int] = {}
        self.read_stats = {"lease": 0, "read_index": 0}
        self.dropped: dict[str, int] = {"stale_term": 0, "unknown_peer": 0, "local_from_network": 0,
                                        "read_index_not_leader": 0, "malformed": 0}
        self.become_follower(self.term, NONE)

    # ---- state ----------------------------------------------------------------------------------
    def quorum(self) -> int:
        return len(self.voters) // 2 + 1

    def hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.committed)

    def soft_state(self) -> SoftState:
        return SoftState(self.lead, self.role)

    def promotable(self) -> bool:
        return self.id in self.voters

    def removed_pending(self) -> bool:
        """Our latest configuration leaves us out but is not committed, and we were a voter in the
        one before: a leader that removed itself and crashed before the commit, say. We may hold
        the longest log, which the remaining voters need, so we must still be able to campaign
        (always with a pre-vote, so a server removed behind the others' backs cannot disrupt
        them: its log is behind theirs). Votes count in the latest configuration, as always."""
        return (self.id not in self.voters and len(self.conf_history) > 1 and self.conf_pending()
                and self.id in self.conf_history[-2][1])

    def _reset(self, term: int) -> None:
        if term != self.term:
            self.term = term
            self.vote = NONE
        self.lead = NONE
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_timeout = self.config.election_tick + self.rng.randrange(self.config.election_tick)
        self.votes = {}
        last = self.log.last_index()
        self.prs = {v: Progress(last + 1, self.config.max_inflight_msgs) for v in sorted(self.voters | self.learners)}
        if self.id in self.prs:
            # Our own copy counts only as far as it is durable (etcd-io/raft's self-ack after
            # the storage write): entries still being written do not count toward a commit.
            self.prs[self.id].match = self.log.stabled
        self.pending_reads.clear()
        self.heartbeat_acked = {}
        self.lead_transferee = NONE
        self.transfer_elapsed = 0

    def become_follower(self, term: int, lead: int) -> None:
        self._reset(term)
        self.lead = lead
        self.role = Role.FOLLOWER

    def _become_candidate(self) -> None:
        self._reset(self.term + 1)
        self.vote = self.id
        self.role = Role.CANDIDATE

    def _become_pre_candidate(self) -> None:
        # Neither the term nor the vote changes: a pre-vote that fails leaves no trace.
        self.votes = {}
        self.lead = NONE
        self.role = Role.PRE_CANDIDATE

    # ---- configuration ----------------------------------------------------------------------------
    def voters_at(self, index: int) -> frozenset[int]:
        """The voter set in force at log index `index` (as far back as the history reaches)."""
        return self.conf_at(index)[0]

    def conf_at(self, index: int) -> tuple[frozenset[int], frozenset[int]]:
        """The (voters, learners) in force at log index `index`."""
        found = self.conf_history[0]
        for c in self.conf_history:
            if c[0] > index:
                break
            found = c
        return found[1], found[2]

    def conf_pending(self) -> bool:
        """A configuration change is in the log but not yet committed."""
        return self.conf_history[-1][0] > self.log.committed

    def _scan_conf(self, lo: int) -> None:
        """Record the conf entries in the log from `lo` on (history past lo-1 already dropped)."""
        last = self.log.last_index()
        if lo > last:
            return
        for e in self.log.slice(lo, last + 1):
            if e.type == EntryType.CONF_CHANGE:
                try:
                    cc = ConfChange.decode(e.data)
                except ValueError:
                    continue  # never proposed by a correct leader; nothing to do with it
                self.conf_history.append((e.index, frozenset(cc.voters), frozenset(cc.learners)))

    def _rebuild_conf(self, after: int) -> None:
        """The log past `after` changed: recompute the configuration from the entries there."""
        while len(self.conf_history) > 1 and self.conf_history[-1][0] > after:
            self.conf_history.pop()
        self._scan_conf(after + 1)
        self._set_conf(self.conf_history[-1][1], self.conf_history[-1][2])

    def _set_conf(self, voters: frozenset[int], learners: frozenset[int]) -> None:
        old = self.voters | self.learners
        self.voters, self.learners = set(voters), set(learners)
        if self.role != Role.LEADER:
            return
        last = self.log.last_index()
        for v in sorted((self.voters | self.learners) - old):
            if v not in self.prs:
                self.prs[v] = Progress(last + 1, self.config.max_inflight_msgs)
        # A removed server keeps getting appends until the change commits, so it learns it is
        # out (and stops campaigning); _maybe_commit forgets it then.
        if self.lead_transferee not in self.voters:
            self.abort_transfer()

    def propose_conf_change(self, kind: ConfChangeType, node: int) -> int:
        """The leader appends a single-server change; returns its log index. At most one change
        may be pending (uncommitted), and none before the leader has committed an entry of its
        term (so it knows every earlier change is committed)."""
        if self.role != Role.LEADER:
            raise ProposalDropped(f"not the leader (leader is {self.lead or 'unknown'})")
        if self.lead_transferee != NONE:
            raise ProposalDropped(f"leadership is being transferred to {self.lead_transferee}")
        if self.log.term(self.log.committed) != self.term:
            raise ProposalDropped("the leader has not committed an entry in its term yet")
        if self.conf_pending():
            raise ProposalDropped(f"a configuration change is pending (index {self.conf_history[-1][0]})")
        if node <= 0:
            raise ValueError("node ids are positive")
        learners = set(self.learners)
        if kind == ConfChangeType.ADD_VOTER:  # a new voter, or a learner promoted
            if node in self.voters:
                raise ValueError(f"{node} is already a voter")
            new = self.voters | {node}
            learners.discard(node)
        elif kind == ConfChangeType.ADD_LEARNER:
            if node in self.voters or node in self.learners:
                raise ValueError(f"{node} is already in the configuration")
            new = set(self.voters)
            learners.add(node)
        elif node in self.learners:
            new = set(self.voters)
            learners.discard(node)
        else:
            if node not in self.voters:
                raise ValueError(f"{node} is not a voter")
            if self.voters == {node}:
                raise ValueError("cannot remove the last voter")
            new = self.voters - {node}
        cc = ConfChange(kind, node, tuple(sorted(new)), tuple(sorted(learners)))
        self._append([Entry(0, 0, EntryType.CONF_CHANGE, cc.encode())])
        self._bcast_append()
        return self.log.last_index()

    def _maybe_step_down_removed(self) -> None:
        """A leader no longer in the configuration leads until the change commits (thesis §4.2.2),
        then hands over (TIMEOUT_NOW to an up-to-date voter, if there is one) and steps down."""
        if self.role != Role.LEADER or self.id in self.voters or self.conf_pending():
            return
        last = self.log.last_index()
        ready = [v for v in sorted(self.voters) if v in self.prs and self.prs[v].match == last]
        if ready:
            self._send_timeout_now(ready[0])
        self.become_follower(self.term, NONE)

    def _become_leader(self) -> None:
        self._reset(self.term)
        self.lead = self.id
        self.role = Role.LEADER
        if self.id not in self.prs:  # leading a configuration that leaves us out (removed_pending)
            self.prs[self.id] = Progress(self.log.last_index() + 1, self.config.max_inflight_msgs)
            self.prs[self.id].match = self.log.stabled  # as _reset: only what is durable counts
        self.prs[self.id].become_replicate()
        # A no-op in the new term lets the leader commit (and learn the commit of) earlier entries.
        self._append([Entry(0, 0, EntryType.NOOP)])

    # ---- sending --------------------------------------------------------------------------------
    def _send(self, m: Message) -> None:
        self.msgs.append(m)

    def _send_append(self, to: int, send_if_empty: bool = True) -> bool:
        pr = self.prs[to]
        if pr.is_paused():
            return False
        prev = pr.next - 1
        if prev < self.log.offset:
            return self._send_snapshot(to, pr)  # the entries it needs are compacted away
        prev_term = self.log.term(prev)
        if prev_term is None:
            return False
        last = self.log.last_index()
        ents = self.log.slice(pr.next, last + 1, self.config.max_size_per_msg) if pr.next <= last else []
        if not ents and not send_if_empty:
            return False
        self._send(Message(MT.APP, to=to, frm=self.id, term=self.term, log_term=prev_term, index=prev,
                           entries=tuple(ents), commit=self.log.committed))
        pr.sent(ents[-1].index if ents else 0)
        return True

    def _send_snapshot(self, to: int, pr: Progress) -> bool:
        """Send our newest snapshot; the follower's progress waits (paused) until the driver
        reports how the transfer went or the follower acknowledges it."""
        snap = self.log.snapshot
        if snap.meta.index == 0 or not pr.recent_active:
            return False  # no snapshot, or a follower that is not answering: do not ship one
        pr.become_snapshot(snap.meta.index)
        self._send(Message(MT.SNAP, to=to, frm=self.id, term=self.term, snapshot=snap))
        return True

    def _bcast_append(self) -> None:
        for v in self.prs:
            if v != self.id:
                self._send_append(v)

    def _bcast_heartbeat(self, context: bytes = b"") -> None:
        # Echoed back, it says when the lease starts: our tick count plus one (0 means none).
        sent = self.ticks + 1 if self.config.lease_tick else 0
        for v, pr in self.prs.items():
            if v != self.id:
                self._send(Message(MT.HEARTBEAT, to=v, frm=self.id, term=self.term, index=sent,
                                   commit=min(pr.match, self.log.committed), context=context))

    # ---- log ------------------------------------------------------------------------------------
    def _append(self, entries: Sequence[Entry]) -> None:
        last = self.log.last_index()
        stamped = [Entry(self.term, last + 1 + i, e.type, e.data) for i, e in enumerate(entries)]
        self.log.append(stamped)
        if any(e.type == EntryType.CONF_CHANGE for e in stamped):
            self._rebuild_conf(last)  # in force from the moment it is in our log
        # Our own match does not move here: the entries count for us only once the driver reports
        # them durable (`on_persisted`), so a commit always rests on a quorum of durable copies
        # while the leader's write runs in parallel with its followers' (etcd's async storage
        # writes; Raft thesis §10.2.1). (A conf change may shrink the quorum: check anyway.)
        self._maybe_commit()

    def _maybe_commit(self) -> bool:
        matches = sorted((self.prs[v].match for v in self.voters if v in self.prs), reverse=True)
        if len(matches) < self.quorum():
            return False
        candidate = matches[self.quorum() - 1]
        # Raft §5.4.2: only entries of the current term are committed by counting replicas.
        if candidate > self.log.committed and self.log.term(candidate) == self.term:
            self.log.commit_to(candidate)
            if not self.conf_pending():
                for v in [v for v in self.prs if v not in self.voters and v not in self.learners
                          and v != self.id]:
                    del self.prs[v]  # removed, and the removal is committed
            return True
        return False

    def on_persisted(self, index: int, term: int, epoch: int | None = None) -> None:
        """The driver's storage made our log durable up to (index, term), in a write handed out
        at log epoch `epoch`. A leader now counts its own copy of those entries, which may commit
        them. A stale report (the log was truncated since, or no longer holds that entry) changes
        nothing."""
        if not self.log.stable_to(index, term, epoch):
            return
        pr = self.prs.get(self.id)
        if self.role != Role.LEADER or pr is None or not pr.maybe_update(self.log.stabled):
            return
        if self._maybe_commit():
            self._bcast_append()
            self._maybe_step_down_removed()

    def compact(self, index: int, data: bytes, keep: int = 0) -> None:
        """The application holds a durable snapshot `data` of its state as applied through
        `index`: drop the entries it covers but the last `keep`. Followers that need dropped
        entries get the snapshot. One no newer than the snapshot we have changes nothing."""
        if index <= self.log.snapshot.meta.index:
            return
        term = self.log.term(index)
        if term is None:
            raise LogError(f"cannot compact to {index}: not in the log (offset {self.log.offset}, "
                           f"last {self.log.last_index()})")
        voters, learners = self.conf_at(index)
        self.log.compact(Snapshot(SnapshotMeta(index, term, tuple(sorted(voters)), tuple(sorted(learners))), data),
                         keep)
        # Keep the newest configuration at or before the new offset as the base, and all after.
        while len(self.conf_history) > 1 and self.conf_history[1][0] <= self.log.offset:
            self.conf_history.pop(0)

    # ---- time -----------------------------------------------------------------------------------
    def tick(self) -> None:
        self.ticks += 1
        if self.role == Role.LEADER:
            self.heartbeat_elapsed += 1
            self.election_elapsed += 1
            if self.election_elapsed >= self.config.election_tick:
                self.election_elapsed = 0  # a leader's lease never runs out while it leads
            if self.lead_transferee != NONE:
                self.transfer_elapsed += 1
                if self.transfer_elapsed >= self.config.election_tick:
                    self.abort_transfer()  # the target did not take over in time: lead on
            if self.config.check_quorum and not self._quorum_active():
                self.become_follower(self.term, NONE)  # cut off from a quorum: stop leading
                return
            if self.heartbeat_elapsed >= self.config.heartbeat_tick:
                self.heartbeat_elapsed = 0
                self._bcast_heartbeat()
            return
        self.election_elapsed += 1
        if (self.promotable() or self.removed_pending()) and self.election_elapsed >= self.randomized_timeout:
            self.election_elapsed = 0
            self.step(Message(MT.HUP, frm=self.id))

    def _quorum_active(self) -> bool:
        """Count one more tick of silence from each follower. True while a quorum (this node
        included) has answered within the last election_tick ticks: a leader cut off from the
        quorum steps down one election timeout after the last answer, about when the others'
        leases run out and they can elect a new leader."""
        active = 0
        for v, pr in self.prs.items():
            if v != self.id:
                pr.inactive_ticks += 1
                pr.recent_active = pr.inactive_ticks < self.config.election_tick
            if v in self.voters and (v == self.id or pr.recent_active):
                active += 1
        return active >= self.quorum()

    # ---- leadership transfer (Raft thesis §3.10) -----------------------------------------------
    def transfer_leader(self, target: int) -> None:
        """Hand leadership to voter `target`: stop taking proposals, bring it up to date, then tell
        it to campaign at once (TIMEOUT_NOW). Abandoned after an election timeout."""
        if self.role != Role.LEADER:
            raise ProposalDropped(f"not the leader (leader is {self.lead or 'unknown'})")
        if target == self.id or target not in self.voters or target not in self.prs:
            raise ValueError(f"cannot transfer leadership to {target}: not another voter")
        if self.lead_transferee == target:
            return  # already under way
        self.lead_transferee = target
        self.transfer_elapsed = 0
        if self.prs[target].match == self.log.last_index():
            self._send_timeout_now(target)
        else:
            self._send_append(target)

    def abort_transfer(self) -> None:
        self.lead_transferee = NONE
        self.transfer_elapsed = 0

    def _send_timeout_now(self, to: int) -> None:
        self._send(Message(MT.TIMEOUT_NOW, to=to, frm=self.id, term=self.term))

    # ---- elections ------------------------------------------------------------------------------
    def campaign(self, pre_vote: bool, transfer: bool = False) -> None:
        if pre_vote:
            self._become_pre_candidate()
            vote_type, term = MT.PRE_VOTE, self.term + 1
        else:
            self._become_candidate()
            vote_type, term = MT.VOTE, self.term
        if self._poll(self.id, vote_type, granted=True) >= self.quorum():
            if pre_vote:
                self.campaign(False)
            else:
                self._become_leader()
            return
        ctx = CAMPAIGN_TRANSFER if transfer else b""
        for v in sorted(self.voters):
            if v != self.id:
                self._send(Message(vote_type, to=v, frm=self.id, term=term, index=self.log.last_index(),
                                   log_term=self.log.last_term(), context=ctx))

    def _poll(self, frm: int, _kind: MessageType, granted: bool) -> int:
        self.votes.setdefault(frm, granted)
        return sum(1 for v, g in self.votes.items() if g and v in self.voters)

    def _rejections(self) -> int:
        return sum(1 for v, g in self.votes.items() if not g and v in self.voters)

    # ---- the step function ----------------------------------------------------------------------
    def step(self, m: Message) -> None:
        if m.term == 0 and m.type not in (MT.HUP, MT.BEAT, MT.PROP, MT.READ_INDEX, MT.SNAP_STATUS):
            self.dropped["stale_term"] += 1
            return
        if m.term > self.term:
            if m.type in (MT.VOTE, MT.PRE_VOTE):
                in_lease = (self.config.check_quorum and self.lead != NONE
                            and self.election_elapsed < self.config.election_tick
                            and not (m.type == MT.VOTE and m.context == CAMPAIGN_TRANSFER))
                if in_lease:
                    return  # we heard from a live leader recently: do not help depose it
            if m.type == MT.PRE_VOTE or (m.type == MT.PRE_VOTE_RESP and not m.reject):
                pass  # pre-votes never move our term
            elif m.type in (MT.APP, MT.HEARTBEAT, MT.SNAP):
                self.become_follower(m.term, m.frm)
            else:
                self.become_follower(m.term, NONE)
        elif 0 < m.term < self.term:
            self.dropped["stale_term"] += 1
            if (self.config.check_quorum or self.config.pre_vote) and m.type in (MT.HEARTBEAT, MT.APP):
                # A stale leader: our higher term in the reply makes it step down.
                self._send(Message(MT.APP_RESP, to=m.frm, frm=self.id, term=self.term))
            elif m.type == MT.PRE_VOTE:
                self._send(Message(MT.PRE_VOTE_RESP, to=m.frm, frm=self.id, term=self.term, reject=True))
            return

        if m.type == MT.HUP:
            if self.role != Role.LEADER and self.promotable():
                self.campaign(self.config.pre_vote)
            elif self.role != Role.LEADER and self.removed_pending():
                self.campaign(True)
            return
        if m.type in (MT.VOTE, MT.PRE_VOTE):
            self._handle_vote(m)
            return
        if self.role == Role.LEADER:
            self._step_leader(m)
        elif self.role in (Role.CANDIDATE, Role.PRE_CANDIDATE):
            self._step_candidate(m)
        else:
            self._step_follower(m)

    def _handle_vote(self, m: Message) -> None:
        resp = MT.VOTE_RESP if m.type == MT.VOTE else MT.PRE_VOTE_RESP
        can_vote = (self.vote == m.frm or (self.vote == NONE and self.lead == NONE)
                    or (m.type == MT.PRE_VOTE and m.term > self.term))
        if can_vote and self.log.is_up_to_date(m.index, m.log_term):
            self._send(Message(resp, to=m.frm, frm=self.id, term=m.term))
            if m.type == MT.VOTE:
                self.election_elapsed = 0
                self.vote = m.frm
        else:
            self._send(Message(resp, to=m.frm, frm=self.id, term=self.term, reject=True))

    def _step_leader(self, m: Message) -> None:
        if m.type == MT.BEAT:
            self._bcast_heartbeat()
            return
        if m.type == MT.PROP:
            if not m.entries:
                raise ProposalDropped("empty proposal")
            if any(e.type == EntryType.CONF_CHANGE for e in m.entries):
                raise ProposalDropped("configuration changes go through propose_conf_change")
            if self.id not in self.voters:
                raise ProposalDropped("this node was removed from the group")
            if self.lead_transferee != NONE:
                raise ProposalDropped(f"leadership is being transferred to {self.lead_transferee}")
            self._append(m.entries)
            self._bcast_append()
            return
        if m.type == MT.READ_INDEX:
            self._leader_read_index(m)
            return
        pr = self.prs.get(m.frm)
        if pr is None:
            self.dropped["unknown_peer"] += 1
            return
        if m.type == MT.APP_RESP:
            if not m.reject and m.index > self.log.last_index():
                self.dropped["malformed"] += 1  # acks entries we never sent: not from a correct peer
                return
            pr.heard_from()
            if m.reject:
                if pr.maybe_decrease(m.index, m.reject_hint):
                    if pr.state == ProgressState.REPLICATE:
                        pr.become_probe()
                    self._send_append(m.frm)
                return
            was_paused = pr.is_paused()
            if pr.maybe_update(m.index):
                if pr.state == ProgressState.PROBE:
                    pr.become_replicate()
                elif pr.state == ProgressState.SNAPSHOT and pr.match >= self.log.offset:
                    # It installed a snapshot (ours or a newer one): plain appends reach it again.
                    pr.become_probe()
                    pr.become_replicate()
                if self._maybe_commit():
                    self._bcast_append()
                    self._maybe_step_down_removed()
                    if self.role != Role.LEADER:
                        return
                elif was_paused:
                    self._send_append(m.frm)
                for _ in range(self.config.max_inflight_msgs):  # keep the pipeline full
                    if not self._send_append(m.frm, send_if_empty=False):
                        break
                if m.frm == self.lead_transferee and pr.match == self.log.last_index():
                    self._send_timeout_now(m.frm)  # the target has caught up: over to it
        elif m.type == MT.SNAP_STATUS:
            if pr.state != ProgressState.SNAPSHOT:
                return
            if m.reject:
                pr.pending_snapshot = 0  # it did not get there: probe from what it has
            # Either way, wait to hear from the follower (its ack or a heartbeat response)
            # before probing: a failed transfer is not retried in a tight loop.
            pr.become_probe()
            pr.probe_sent = True
        elif m.type == MT.HEARTBEAT_RESP:
            pr.heard_from()
            if m.index and m.index <= self.ticks + 1:  # the send tick (+1) of the heartbeat it answers
                self.heartbeat_acked[m.frm] = max(self.heartbeat_acked.get(m.frm, 0), m.index)
            pr.probe_sent = False
            if pr.state == ProgressState.REPLICATE and pr.is_paused():
                # The window is full, yet the follower is alive: appends may have been lost, and
                # their acks will never come. Free one slot; if the follower did miss entries, it
                # rejects the next append and drops back to probing.
                pr.inflights.popleft()
            if pr.match < self.log.last_index():
                self._send_append(m.frm)
            if m.context:
                self._ack_read(m.context, m.frm)

    def _step_candidate(self, m: Message) -> None:
        my_resp = MT.PRE_VOTE_RESP if self.role == Role.PRE_CANDIDATE else MT.VOTE_RESP
        if m.type == MT.PROP or (m.type == MT.READ_INDEX and m.frm in (NONE, self.id)):
            raise ProposalDropped("no leader (election in progress)")
        if m.type in (MT.APP, MT.HEARTBEAT, MT.SNAP):
            self.become_follower(m.term, m.frm)
            self._step_follower(m)
        elif m.type == my_resp:
            granted = self._poll(m.frm, m.type, not m.reject)
            if granted >= self.quorum():
                if self.role == Role.PRE_CANDIDATE:
                    self.campaign(False)
                else:
                    self._become_leader()
                    self._bcast_append()
            elif self._rejections() >= self.quorum():
                self.become_follower(self.term, NONE)

    def _step_follower(self, m: Message) -> None:
        if m.type == MT.PROP:
            raise ProposalDropped(f"not the leader (leader is {self.lead or 'unknown'})")
        if m.type == MT.APP:
            self.election_elapsed = 0
            self.lead = m.frm
            self._handle_append(m)
        elif m.type == MT.SNAP:
            self.election_elapsed = 0
            self.lead = m.frm
            self._handle_snapshot(m)
        elif m.type == MT.HEARTBEAT:
            self.election_elapsed = 0
            self.lead = m.frm
            self.log.commit_to(min(m.commit, self.log.last_index()))
            self._send(Message(MT.HEARTBEAT_RESP, to=m.frm, frm=self.id, term=self.term, index=m.index,
                               context=m.context))
        elif m.type == MT.TIMEOUT_NOW:
            if self.promotable():
                # A transfer: skip the pre-vote (and the others skip their lease check), the
                # leader asked for this.
                self.campaign(False, transfer=True)
        elif m.type == MT.READ_INDEX:
            if m.frm not in (NONE, self.id):
                # Forwarded to us while we led, arriving after we stopped: the asker retries.
                self.dropped["read_index_not_leader"] += 1
            elif self.lead == NONE:
                raise ProposalDropped("no leader to serve a read index")
            else:
                self._send(Message(MT.READ_INDEX, to=self.lead, frm=self.id, term=self.term, context=m.context,
                                   reject=m.reject))
        elif m.type == MT.READ_INDEX_RESP:
            self.read_states.append(ReadState(m.index, m.context))

    def _handle_append(self, m: Message) -> None:
        if m.index < self.log.committed:
            self._send(Message(MT.APP_RESP, to=m.frm, frm=self.id, term=self.term, index=self.log.committed))
            return
        last_new = self.log.maybe_append(m.index, m.log_term, m.commit, m.entries)
        if last_new is not None and (self.conf_history[-1][0] > m.index
                                     or any(e.type == EntryType.CONF_CHANGE for e in m.entries)):
            self._rebuild_conf(m.index)
        if last_new is not None:
            self._send(Message(MT.APP_RESP, to=m.frm, frm=self.id, term=self.term, index=last_new))
        else:
            self._send(Message(MT.APP_RESP, to=m.frm, frm=self.id, term=self.term, index=m.index, reject=True,
                               reject_hint=min(m.index, self.log.last_index())))

    def _handle_snapshot(self, m: Message) -> None:
        assert m.snapshot is not None  # malformed() refuses a SNAP without one
        meta = m.snapshot.meta
        if meta.index <= self.log.committed:
            # Old news (a duplicate, or we caught up meanwhile): say where we are.
            self._send(Message(MT.APP_RESP, to=m.frm, frm=self.id, term=self.term, index=self.log.committed))
            return
        if self.log.match_term(meta.index, meta.term):
            # Our log already holds the snapshot's last entry, so everything up to it matches
            # the leader's: keep the log, learn the commit index.
            self.log.commit_to(meta.index)
            self._send(Message(MT.APP_RESP, to=m.frm, frm=self.id, term=self.term, index=meta.index))
            return
        self.log.restore(m.snapshot)
        if meta.voters:
            self.conf_history = [(meta.index, frozenset(meta.voters), frozenset(meta.learners))]
            self._set_conf(frozenset(meta.voters), frozenset(meta.learners))
        # Sent after the Ready that carries the snapshot is durable, like any ack.
        self._send(Message(MT.APP_RESP, to=m.frm, frm=self.id, term=self.term, index=self.log.last_index()))

    # ---- linearizable reads (ReadIndex, Raft thesis §6.4) ------------------------------------------
    def _leader_read_index(self, m: Message) -> None:
        local = m.frm in (NONE, self.id)
        if self.log.term(self.log.committed) != self.term:
            # Until an entry of our term commits we do not know the cluster's commit index.
            if local:
                raise ProposalDropped("the leader has not committed an entry in its term yet")
            self.dropped["read_index_not_leader"] += 1  # the follower retries
            return
        index = self.log.committed
        if len(self.voters) == 1:
            self._deliver_read(m.frm, m.context, index)
            return
        if not m.reject and self.lease_valid():
            self.read_stats["lease"] += 1
            self._deliver_read(m.frm, m.context, index)
            return
        self.read_stats["read_index"] += 1
        self.read_seq += 1
        self.pending_reads.append(PendingRead(self.read_seq, index, NONE if local else m.frm, m.context,
                                              {self.id}))
        self._bcast_heartbeat(self.read_seq.to_bytes(8, "big"))

    def lease_valid(self) -> bool:
        """Lease reads are on and we hold the lease: a quorum of voters (us included) acknowledged
        a heartbeat we sent less than lease_tick ticks ago, in this term, and no transfer is under
        way (the transfer's vote skips the followers' lease)."""
        if not self.config.lease_tick or self.role != Role.LEADER or self.lead_transferee != NONE:
            return False
        if self.log.term(self.log.committed) != self.term:
            return False
        acked = sorted((self.ticks + 1 if v == self.id else self.heartbeat_acked.get(v, 0) for v in self.voters),
                       reverse=True)
        start = acked[self.quorum() - 1] - 1  # the tick the quorum's heartbeat went out at
        return start >= 0 and self.ticks < start + self.config.lease_tick

    def _deliver_read(self, origin: int, context: bytes, index: int) -> None:
        if origin in (NONE, self.id):
            self.read_states.append(ReadState(index, context))
        else:
            self._send(Message(MT.READ_INDEX_RESP, to=origin, frm=self.id, term=self.term, index=index,
                               context=context))

    def _ack_read(self, context: bytes, frm: int) -> None:
        if len(context) != 8:
            return
        seq = int.from_bytes(context, "big")
        pos = next((k for k, p in enumerate(self.pending_reads) if p.seq == seq), None)
        if pos is None:
            return  # already served, or from before we became leader
        pending = self.pending_reads[pos]
        pending.acks.add(frm)
        if len(pending.acks & self.voters) < self.quorum():
            return
        # A quorum confirmed our leadership after this read arrived: it and every earlier one may go.
        done, self.pending_reads = self.pending_reads[: pos + 1], self.pending_reads[pos + 1:]
        for p in done:
            self._deliver_read(p.origin, p.context, p.index)
