"""The Raft driver on trio with an in-memory transport and a mock clock: Ready loop, group commit,
proposals resolved on apply, failover, ReadIndex."""

from __future__ import annotations

import random
from typing import Any

import pytest
import trio
import trio.testing
from murmur.agent.drivers.raft import MemoryStorage, NotLeader, OutcomeUnknown, RaftDriver
from murmur.raft.config import RaftConfig
from murmur.raft.messages import Entry, HardState, Message
from murmur.raft.rawnode import RawNode


class KV:
    def __init__(self) -> None:
        self.data: dict[str, str] = {}
        self.log: list[tuple[int, bytes]] = []

    def apply(self, index: int, data: bytes) -> Any:
        self.log.append((index, data))
        k, _, v = data.decode().partition("=")
        self.data[k] = v
        return index


class CountingStorage(MemoryStorage):
    def __init__(self) -> None:
        super().__init__()
        self.saves = 0

    def save(self, hard: HardState | None, entries: list[Entry]) -> None:
        self.saves += 1
        super().save(hard, entries)


class MemNet:
    """Delivers messages between drivers after a short virtual delay; links can be cut."""

    def __init__(self) -> None:
        self.drivers: dict[int, RaftDriver] = {}
        self.cut: set[int] = set()
        self.nursery: trio.Nursery | None = None

    def transport(self, me: int) -> Any:
        net = self

        class T:
            def send(self, m: Message) -> None:
                if me in net.cut or m.to in net.cut or m.to not in net.drivers:
                    return
                assert net.nursery is not None
                net.nursery.start_soon(net._deliver, m)

        return T()

    async def _deliver(self, m: Message) -> None:
        await trio.sleep(0.001)
        if m.frm not in self.cut and m.to not in self.cut:
            self.drivers[m.to].receive(m)


async def cluster(nursery: trio.Nursery, n: int = 3) -> tuple[MemNet, dict[int, RaftDriver], dict[int, KV]]:
    net = MemNet()
    net.nursery = nursery
    ids = list(range(1, n + 1))
    fsms = {i: KV() for i in ids}
    for i in ids:
        node = RawNode(RaftConfig(id=i, election_tick=10, heartbeat_tick=1), ids, random.Random(i))
        net.drivers[i] = RaftDriver(node, CountingStorage(), fsms[i], net.transport(i), tick_interval=0.05)
    for d in net.drivers.values():
        await nursery.start(d.serve)
    return net, net.drivers, fsms


async def wait_leader(drivers: dict[int, RaftDriver], exclude: set[int] = frozenset()) -> int:  # type: ignore[assignment]
    with trio.fail_after(30):
        while True:
            leaders = [i for i, d in drivers.items() if d.is_leader and i not in exclude]
            if len(leaders) == 1:
                return leaders[0]
            await trio.sleep(0.05)


@pytest.fixture
def mock_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


async def test_proposals_commit_everywhere_and_batch_into_few_writes(mock_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        net, drivers, fsms = await cluster(nursery)
        lead = await wait_leader(drivers)
        follower = next(i for i in drivers if i != lead)
        with pytest.raises(NotLeader):
            await drivers[follower].propose(b"x=1")
        storage = drivers[lead].storage
        assert isinstance(storage, CountingStorage)
        before = storage.saves
        results: list[int] = []

        async def put(i: int) -> None:
            results.append(await drivers[lead].propose(f"k{i}={i}".encode()))

        async with trio.open_nursery() as clients:
            for i in range(50):
                clients.start_soon(put, i)
        assert len(results) == 50 and len(set(results)) == 50
        # Group commit: 50 concurrent proposals took far fewer than 50 durable writes on the leader.
        assert storage.saves - before < 25
        with trio.fail_after(5):
            while any(len(f.data) < 50 for f in fsms.values()):
                await trio.sleep(0.05)
        assert all(f.data == fsms[lead].data for f in fsms.values())
        index = await drivers[lead].read_index()
        assert index >= max(results)
        nursery.cancel_scope.cancel()


async def test_leader_loss_fails_pending_writes_and_a_new_leader_takes_over(
        mock_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        net, drivers, fsms = await cluster(nursery)
        lead = await wait_leader(drivers)
        assert await drivers[lead].propose(b"a=1")
        net.cut.add(lead)  # the leader is partitioned away
        with trio.fail_after(30), pytest.raises((OutcomeUnknown, NotLeader)):
            await drivers[lead].propose(b"b=2")  # cannot commit; fails when it steps down (check-quorum)
        new = await wait_leader(drivers, exclude={lead})
        assert new != lead
        assert await drivers[new].propose(b"c=3")
        assert fsms[new].data == {"a": "1", "c": "3"}
        net.cut.clear()
        with trio.fail_after(30):
            while fsms[lead].data.get("c") != "3":
                await trio.sleep(0.05)
        assert "b" not in fsms[lead].data  # the unacknowledged write never surfaced
        nursery.cancel_scope.cancel()
