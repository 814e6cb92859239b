"""Gossip timing and sizing, with memberlist's presets.

Every field says what it does, its default in the LAN preset, and what moving it trades. The
derived timers (suspicion timeout, retransmit limit, push-pull scaling) are functions here so the
simulator, the tests and the core agree on one formula.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class GossipConfig:
    # How often one member is probed (LAN 1 s). Shorter finds failures sooner and costs more
    # packets; detection time is about 1.5 probe intervals plus the suspicion timeout.
    probe_interval: float = 1.0
    # How long to wait for a direct ack before asking others to probe (LAN 500 ms). It should be
    # above the network's p99 RTT; too low and healthy nodes get indirect probes for nothing.
    probe_timeout: float = 0.5
    # Members asked to ping an unresponsive member for us (LAN 3). More helpers survive more
    # lossy paths at the cost of k extra packets per failed probe.
    indirect_checks: int = 3
    # Suspicion lasts suspicion_mult * max(1, log10 N) * probe_interval at least (LAN 4).
    # Higher tolerates longer pauses and losses; lower declares real failures sooner.
    suspicion_mult: int = 4
    # Lifeguard: a suspicion starts at this multiple of the minimum and shrinks toward the minimum
    # as independent confirmations arrive (LAN 6). Higher means fewer false alarms from a single
    # slow observer, slower detection when nobody else confirms.
    suspicion_max_timeout_mult: int = 6
    # A broadcast is piggybacked retransmit_mult * ceil(log10(N + 1)) times (LAN 4). Higher makes
    # delivery under loss more certain and packets fuller.
    retransmit_mult: int = 4
    # Gossip rounds send queued broadcasts to gossip_nodes members every gossip_interval
    # (LAN 200 ms, 3). Faster rounds spread news sooner and send more packets.
    gossip_interval: float = 0.2
    gossip_nodes: int = 3
    # Dead members still receive gossip this long, so a wrongly declared one hears it and
    # refutes (LAN 30 s).
    gossip_to_the_dead_time: float = 30.0
    # Full state exchange over TCP with one random member (LAN 30 s), scaled up above 32 members.
    # It repairs whatever gossip missed; 0 disables it (not advised).
    push_pull_interval: float = 30.0
    # Deadline for a TCP exchange: push-pull, the fallback ping (LAN 10 s).
    tcp_timeout: float = 10.0
    # Largest UDP payload we build (LAN 1400 bytes: fits a 1500-byte MTU with headroom).
    udp_buffer_size: int = 1400
    # Lifeguard local health: the probe interval and timeout are scaled by up to this factor when
    # this member looks unhealthy itself (missed nacks, refuting suspicions) (LAN 8).
    awareness_max_multiplier: int = 8
    # Probe over TCP too when UDP probes fail, to tell a UDP-blocking firewall from a dead node.
    disable_tcp_pings: bool = False
    # Probe order. True: every member derives the same shuffled order of the live members for each
    # pass (a hash of the pass number and the names) and probes, at wall-clock tick t, the member
    # t steps after itself in it. In each tick every member is then probed by exactly one other,
    # so a dead member is first probed within about one interval (with independent shuffles the
    # wait is exponential: about 1 in 6 waits over two intervals at N=20). It needs agents' wall
    # clocks within a fraction of the interval of each other (NTP); when views or clocks disagree
    # the schedule degrades to the random one's coverage, never below it. False: memberlist's
    # independent shuffle per member.
    probe_rotation: bool = True
    # Serf's reconnect: a random failed member is contacted every reconnect_interval (30 s), which
    # heals partitions; failed members are forgotten after reconnect_timeout (72 h).
    reconnect_interval: float = 30.0
    reconnect_timeout: float = 72 * 3600.0
    # Members that left gracefully are kept as tombstones this long (24 h), so a late rumour of
    # them being alive from an old incarnation cannot bring them back.
    tombstone_timeout: float = 24 * 3600.0

    # ---- presets (memberlist's DefaultLANConfig, DefaultWANConfig, DefaultLocalConfig) ----------
    @classmethod
    def lan(cls) -> GossipConfig:
        return cls()

    @classmethod
    def wan(cls) -> GossipConfig:
        return replace(cls(), probe_interval=5.0, probe_timeout=3.0, suspicion_mult=6, push_pull_interval=60.0,
                       gossip_interval=0.5, gossip_nodes=4, gossip_to_the_dead_time=60.0, tcp_timeout=30.0)

    @classmethod
    def local(cls) -> GossipConfig:
        return replace(cls(), probe_timeout=0.2, indirect_checks=1, retransmit_mult=2, suspicion_mult=3,
                       push_pull_interval=15.0, gossip_interval=0.1, gossip_to_the_dead_time=15.0,
                       tcp_timeout=1.0)

    def validate(self) -> None:
        """Raise ValueError naming the first field that cannot work."""
        positive = ("probe_interval", "probe_timeout", "gossip_interval", "tcp_timeout")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.probe_timeout > self.probe_interval:
            raise ValueError("probe_timeout must not exceed probe_interval")
        if self.suspicion_mult < 1 or self.suspicion_max_timeout_mult < 1 or self.retransmit_mult < 1:
            raise ValueError("suspicion_mult, suspicion_max_timeout_mult and retransmit_mult must be >= 1")
        if self.udp_buffer_size < 512:
            raise ValueError("udp_buffer_size must be at least 512")
        if self.awareness_max_multiplier < 1:
            raise ValueError("awareness_max_multiplier must be >= 1")

    # ---- derived timers -------------------------------------------------------------------------
    def suspicion_min(self, n: int) -> float:
        """suspicion_mult * max(1, log10 N) * probe_interval."""
        return self.suspicion_mult * max(1.0, math.log10(max(1, n))) * self.probe_interval

    def suspicion_max(self, n: int) -> float:
        return self.suspicion_max_timeout_mult * self.suspicion_min(n)

    def retransmit_limit(self, n: int) -> int:
        """retransmit_mult * ceil(log10(N + 1))."""
        return self.retransmit_mult * math.ceil(math.log10(n + 1))

    def push_pull_scaled(self, n: int) -> float:
        """The push-pull interval, scaled by ceil(log2 N - log2 32) + 1 above 32 members."""
        if n <= 32:
            return self.push_pull_interval
        return self.push_pull_interval * (math.ceil(math.log2(n) - math.log2(32)) + 1)
