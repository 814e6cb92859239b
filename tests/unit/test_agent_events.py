"""agent/events.py: Consul's event envelope, the list index, the ring, and UserEvents on trio's
MockClock over a real Membership core (one member: the agent itself), with a stand-in driver."""

from __future__ import annotations

import random
import uuid

import pytest
import trio
import trio.testing
from murmur.agent.events import (
    EVENT_RING,
    ConsulEvent,
    EventError,
    EventRing,
    UserEvents,
    event_index,
)
from murmur.agent.local_state import LocalState, NodeInfo
from murmur.catalog.commands import ServiceSpec
from murmur.gossip.config import GossipConfig
from murmur.gossip.membership import Membership
from murmur.gossip.userevents import UserMessageTooLarge


def test_envelope_round_trip_and_json() -> None:
    ev = ConsulEvent(str(uuid.UUID(int=7)), "deploy", b"\x00v1", "^web", "api", "blue", 1, 0)
    back = ConsulEvent.decode("deploy", ev.encode(), 42)
    assert back == ConsulEvent(ev.id, "deploy", b"\x00v1", "^web", "api", "blue", 1, 42)
    assert back.to_json() == {"ID": ev.id, "Name": "deploy", "Payload": "AHYx", "NodeFilter": "^web",
                              "ServiceFilter": "api", "TagFilter": "blue", "Version": 1, "LTime": 42}
    empty = ConsulEvent.decode("x", ConsulEvent(ev.id, "x", None).encode(), 0)
    assert empty.payload is None and empty.to_json()["Payload"] is None
    for junk in (b"", b"\xc1", b"\x93\x01\x02\x03", ConsulEvent(ev.id, "x", None).encode()[:-1]):
        with pytest.raises(ValueError):
            ConsulEvent.decode("x", junk, 0)


def test_event_index_comes_from_the_last_id() -> None:
    a = ConsulEvent("b54fe110-7af5-cafc-d1fb-afc8ba432b1c", "a", None)
    b = ConsulEvent("00000000-0000-0001-0000-000000000003", "b", None)
    assert event_index([]) == 1
    assert event_index([a]) == 0xB54FE1107AF5CAFC ^ 0xD1FBAFC8BA432B1C
    assert event_index([a, b]) == 1 ^ 3


def test_ring_keeps_the_last_256_and_filters_by_name() -> None:
    ring = EventRing()
    for i in range(EVENT_RING + 10):
        ring.add(ConsulEvent(str(uuid.UUID(int=i)), "even" if i % 2 == 0 else "odd", None))
    all_ = ring.list()
    assert len(all_) == EVENT_RING and all_[0].id == str(uuid.UUID(int=10))
    assert {e.name for e in ring.list("odd")} == {"odd"} and len(ring.list("odd")) == EVENT_RING // 2


class FakeDriver:
    """What UserEvents needs of the gossip driver: flush() pumps the user layer first."""

    def __init__(self) -> None:
        self.ue: UserEvents | None = None
        self.flushes = 0

    def flush(self) -> None:
        self.flushes += 1
        assert self.ue is not None
        self.ue.pump()


def make(services: list[tuple[str, tuple[str, ...]]] | None = None) -> tuple[UserEvents, Membership]:
    m = Membership(GossipConfig.local(), "web-1", "127.0.0.1", 8301, random.Random(1), trio.current_time())
    local = LocalState(NodeInfo(name="web-1", id=str(uuid.UUID(int=1)), address="127.0.0.1", datacenter="dc1"))
    for name, tags in services or []:
        local.add_service(ServiceSpec(id=name, name=name, tags=tags))
    drv = FakeDriver()
    ue = UserEvents(drv, m, local)  # type: ignore[arg-type]
    drv.ue = ue
    return ue, m


async def test_fire_lands_in_the_ring_and_wakes_a_blocking_list(autojump_clock: trio.testing.MockClock) -> None:
    ue, _ = make()
    index = event_index(ue.events())
    woke: list[float] = []

    async def waiter() -> None:
        await ue.wait_change(None, index, 60.0)
        woke.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.sleep(5)
        assert woke == []
        ev = ue.fire("deploy", b"v1")
    assert woke == [pytest.approx(5.0)]
    assert [e.id for e in ue.events()] == [ev.id] and ue.events("other") == []
    assert ev.ltime == 0 and ue.fire("deploy", b"v2").ltime == 1
    with trio.move_on_after(100) as scope:  # nothing new: waits out its timeout
        await ue.wait_change(None, event_index(ue.events()), 3.0)
    assert not scope.cancelled_caught


async def test_receivers_apply_the_filters(autojump_clock: trio.testing.MockClock) -> None:
    ue, _ = make([("web", ("blue",)), ("db", ())])
    keep = [ue.fire("a", b"", node_filter="^web-"), ue.fire("b", b"", service_filter="^web$", tag_filter="blu"),
            ue.fire("c", b"", service_filter="db")]
    drop = [ue.fire("d", b"", node_filter="^db-"), ue.fire("e", b"", service_filter="web", tag_filter="green"),
            ue.fire("f", b"", service_filter="api")]
    assert [e.id for e in ue.events()] == [e.id for e in keep]
    assert ue.stats["consul_events_filtered"] == len(drop)
    with pytest.raises(EventError, match="without service filter"):
        ue.fire("x", b"", tag_filter="blue")
    with pytest.raises(EventError, match="Invalid node filter"):
        ue.fire("x", b"", node_filter="(")
    with pytest.raises(UserMessageTooLarge):
        ue.fire("x", b"p" * 512)


async def test_query_answers_at_its_deadline(autojump_clock: trio.testing.MockClock) -> None:
    ue, _ = make()
    t0 = trio.current_time()
    st = await ue.query("_murmur_ping", b"", want_ack=True, timeout=2.5)
    assert trio.current_time() - t0 == pytest.approx(2.5)
    assert st.responses["web-1"][0] == b"web-1" and list(st.acks) == ["web-1"]
    assert st.id not in ue.layer.pending  # finished
    ue.register_handler("echo", lambda q: q.payload[::-1])
    st = await ue.query("echo", b"abc", timeout=1.0)
    assert st.responses["web-1"][0] == b"cba"


async def test_unhandled_queries_go_to_hooks_and_can_be_answered_later(
        autojump_clock: trio.testing.MockClock) -> None:
    ue, _ = make()
    seen = []
    ue.on_query.append(seen.append)

    async def answer_later() -> None:
        await trio.sleep(0.5)
        assert ue.respond(seen[0], b"later")
        assert not ue.respond(seen[0], b"twice")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(answer_later)
        st = await ue.query("keyring-list", b"", timeout=1.0)
    assert st.responses["web-1"][0] == b"later"


async def test_coalesced_events_reach_hooks_once_per_window(autojump_clock: trio.testing.MockClock) -> None:
    ue, m = make()
    got: list[tuple[float, str, bytes]] = []
    ue.on_event.append(lambda ev: got.append((trio.current_time(), ev.name, ev.payload)))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ue.run)
        await trio.sleep(0)
        for i in range(3):
            ue.layer.fire("reload", f"v{i}".encode(), trio.current_time(), coalesce=True)
            ue.pump()
            await trio.sleep(0.2)
        ue.layer.fire("plain", b"now", trio.current_time())  # no coalesce flag: at once
        ue.pump()
        await trio.sleep(5)
        nursery.cancel_scope.cancel()
    assert got[0][1:] == ("plain", b"now")
    assert [g[1:] for g in got[1:]] == [("reload", b"v2")]
    assert got[1][0] == pytest.approx(0.4 + 1.0)  # the quiet period after the last one
