"""User events and queries in the deterministic simulator: 100 real Membership cores with their
UserLayers, GossipConfig.lan(), 5% datagram loss, virtual time. Bounds are exact assertions;
Simulation(100, seed=...) replays any failure.

- an event reaches every member exactly once, within retransmit_limit(N) gossip intervals
  (how long one member goes on gossiping a piece of news), and re-gossip never delivers it twice;
- a ping query with relay factor 3 collects an ack and a response from every member before its
  deadline, which is Serf's default timeout; without relays the same loss loses some responses
  (the positive control that shows the relays are what carried them);
- a node-filtered query is answered by exactly the listed members.
"""

from __future__ import annotations

import collections

import pytest
from murmur.gossip.config import GossipConfig
from murmur.gossip.sim import NetworkModel, Simulation
from murmur.gossip.userevents import PING_QUERY, default_query_timeout

LAN = GossipConfig.lan()
N = 100
LOSS = 0.05


def cluster(seed: int) -> Simulation:
    s = Simulation(N, LAN, seed=seed, net=NetworkModel(loss=LOSS), converged=True)
    s.run_until(5.0)
    return s


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_event_reaches_every_member_once_within_the_gossip_window(seed: int) -> None:
    s = cluster(seed)
    t0 = s.now
    s.fire_event(Simulation.name_of(7), "deploy", b"v42")
    bound = LAN.retransmit_limit(N) * LAN.gossip_interval  # 12 rounds of 200 ms: 2.4 s
    s.run_until(t0 + bound)
    got = {obs: ev for obs, ev in s.user_events}
    assert sorted(got) == sorted(s.nodes), f"seed {seed}: {N - len(got)} members missed the event"
    assert all((ev.name, ev.payload) == ("deploy", b"v42") for ev in got.values())
    assert max(ev.time for ev in got.values()) - t0 <= bound, f"seed {seed}"
    s.run_until(t0 + 30.0)  # long after: still once each, although it was gossiped ~12 times per member
    per_member = collections.Counter(obs for obs, _ in s.user_events)
    assert set(per_member.values()) == {1}, f"seed {seed}"
    dups = sum(nd.user.stats["events_duplicate"] for nd in s.nodes.values())
    assert dups > N, f"seed {seed}: re-gossip happened ({dups} copies dropped)"
    assert 0.04 < s.packets_lost / s.packets < 0.06, f"seed {seed}: the loss was real"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_query_collects_every_member_within_its_timeout(seed: int) -> None:
    s = cluster(seed)
    timeout = default_query_timeout(LAN, N)
    assert timeout == pytest.approx(0.2 * 16 * 3)
    origin = Simulation.name_of(3)
    relayed = s.query(origin, PING_QUERY, want_ack=True, relay_factor=3)
    assert relayed.deadline - relayed.start == pytest.approx(timeout)  # Serf's default timeout
    s.run_until(relayed.deadline)
    assert sorted(relayed.responses) == sorted(s.nodes), f"seed {seed}: missing {set(s.nodes) - set(relayed.responses)}"
    assert sorted(relayed.acks) == sorted(s.nodes), f"seed {seed}"
    assert all(payload == name.encode() for name, (payload, _) in relayed.responses.items())
    assert all(t <= relayed.deadline for _, t in relayed.responses.values())
    assert relayed.duplicates > 0  # relayed copies arrived, and were kept once per member
    # Positive control: the same loss without relays loses answers.
    direct = s.query(origin, PING_QUERY, want_ack=True, relay_factor=0)
    s.run_until(direct.deadline + 1.0)
    assert len(direct.responses) < N, f"seed {seed}: loss never hit a direct answer; the control proves nothing"


def test_node_filtered_query_is_answered_by_exactly_the_listed_members() -> None:
    seed = 1
    s = cluster(seed)
    wanted = [Simulation.name_of(i) for i in range(0, N, 10)]
    st = s.query(Simulation.name_of(5), PING_QUERY, filter_nodes=wanted, relay_factor=3)
    s.run_until(st.deadline + 1.0)
    assert sorted(st.responses) == wanted, f"seed {seed}"
    reached = sum(1 for nd in s.nodes.values() if nd.user.stats["queries"] + nd.user.stats["queries_filtered"] == 1)
    assert reached == N  # everyone heard it; only the listed answered


def test_member_cut_off_during_an_event_gets_it_from_the_next_push_pull() -> None:
    """Gossip sends an event a fixed number of times; a member unreachable for those seconds
    misses every copy. Push-pull shares the recent events, so it has the event within one
    push-pull period (plus one TCP exchange) of the network healing."""
    seed = 1
    n = 20
    s = Simulation(n, LAN, seed=seed, converged=True)
    s.run_until(5.0)
    victim = Simulation.name_of(11)
    s.partition([[victim], [x for x in s.nodes if x != victim]])
    s.fire_event(Simulation.name_of(2), "deploy", b"v7")
    s.run_until(8.0)  # shorter than the suspicion timeout (5.2 s at N=20): nobody is declared dead
    got = {obs for obs, _ in s.user_events}
    assert got == set(s.nodes) - {victim}, f"seed {seed}: gossip alone should have missed only the victim"
    healed = s.now
    s.heal()
    bound = LAN.push_pull_scaled(n) + LAN.tcp_timeout
    s.run_until(healed + bound)
    late = [ev for obs, ev in s.user_events if obs == victim]
    assert [(ev.name, ev.payload) for ev in late] == [("deploy", b"v7")], f"seed {seed}"
    assert late[0].time - healed <= bound
    print(f"victim got the event {late[0].time - healed:.1f}s after the heal")
