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

    def validate(self) -> None:
        if self.id <= 0:
            raise ValueError("raft node id must be a positive integer")
        if self.heartbeat_tick <= 0 or self.election_tick <= self.heartbeat_tick:
            raise ValueError("need 0 < heartbeat_tick < election_tick")
        if self.max_inflight_msgs <= 0:
            raise ValueError("max_inflight_msgs must be positive")
