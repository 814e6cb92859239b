"""Raft's knobs, in ticks: the driver decides how long a tick is (Consul's default: 100 ms at
raft_multiplier 1... we use `tick_interval` in the agent)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RaftConfig:
    id: int
    # A follower that hears no leader for a random time in [election_tick, 2*election_tick) ticks
    # campaigns. Larger rides out longer pauses and slow disks; smaller fails over sooner. Must be
    # well above heartbeat_tick (etcd: 10x).
    election_tick: int = 10
    # Ticks between leader heartbeats.
    heartbeat_tick: int = 1
    # Pre-vote (§9.6): a node that cannot win does not disrupt the cluster by bumping the term,
    # e.g. when it rejoins after a partition. Costs one extra round trip per election.
    pre_vote: bool = True
    # A leader that has not heard from a quorum within an election timeout steps down, so a
    # partitioned leader stops serving stale reads and a new one can take over.
    check_quorum: bool = True
    # Bytes of entry data per AppendEntries message; bigger batches, fewer messages.
    max_size_per_msg: int = 1 << 20
    # AppendEntries messages in flight per follower before waiting for acks (pipelining window).
    max_inflight_msgs: int = 256
    # Lease reads (off: 0). With a lease, the leader answers a read at once from its commit index,
    # without a heartbeat round, while a quorum has acknowledged a heartbeat it sent less than
    # lease_tick ticks ago. Safe because, with check_quorum, a follower refuses to vote for
    # election_tick ticks of its own clock after hearing from the leader, so no other leader can
    # exist before then. Clocks that drift by up to rho (as a fraction of the tick) stay safe while
    # lease_tick * (1 + rho) / (1 - rho) + 2 <= election_tick (the 2: tick granularity at both
    # ends). Half the election timeout, as Consul's leader lease, leaves room for rho ~ 0.2 at
    # election_tick 10. A follower that restarts forgets whom it heard from and may vote at once:
    # a lease read can then be stale (measured in tests/sim, documented in docs/operations.md).
    lease_tick: int = 0

    def validate(self) -> None:
        if self.id <= 0:
            raise ValueError("raft node id must be a positive integer")
        if self.heartbeat_tick <= 0 or self.election_tick <= self.heartbeat_tick:
            raise ValueError("need 0 < heartbeat_tick < election_tick")
        if self.max_inflight_msgs <= 0:
            raise ValueError("max_inflight_msgs must be positive")
        if self.lease_tick:
            if not self.check_quorum:
                raise ValueError("lease reads need check_quorum (followers must honour the leader's lease)")
            if not 0 < self.lease_tick < self.election_tick:
                raise ValueError("need 0 < lease_tick < election_tick")
