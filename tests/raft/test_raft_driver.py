"""The Raft driver on trio with an in-memory transport and a mock clock: Ready loop, group commit,
proposals resolved on apply, failover, ReadIndex."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
import trio
import trio.testing
from murmur.agent.drivers.raft import MemorySnapshots, MemoryStorage, NotLeader, OutcomeUnknown, RaftDriver
from murmur.agent.storage.raft_log import StorageError
from murmur.raft.config import RaftConfig
from murmur.raft.messages import Entry, HardState, Message, MessageType
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

    def snapshot(self) -> bytes:
        return json.dumps(self.data).encode()

    def restore(self, data: bytes) -> None:
        self.data = json.loads(data)


class CountingStorage(MemoryStorage):
    def __init__(self) -> None:
        super().__init__()
        self.saves = 0

    def save(self, hard: HardState | None, entries: list[Entry], reset_to: int = 0) -> None:
        self.saves += 1
        super().save(hard, entries, reset_to)


class MemNet:
    """Delivers messages between drivers after a short virtual delay; links can be cut."""

    def __init__(self) -> None:
        self.drivers: dict[int, RaftDriver] = {}
        self.cut: set[int] = set()
        self.nursery: trio.Nursery | None = None
        self.snapshots: list[tuple[int, int, bool]] = []  # (from, to, failed) as reported

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
        delivered = m.frm not in self.cut and m.to not in self.cut
        if delivered:
            self.drivers[m.to].receive(m)
        if m.type == MessageType.SNAP:  # a transport reports how each snapshot transfer went
            self.snapshots.append((m.frm, m.to, not delivered))
            self.drivers[m.frm].snapshot_status(m.to, not delivered)


async def cluster(nursery: trio.Nursery, n: int = 3, snapshot_threshold: int = 0,
                  storage: Any = None, tick_interval: float = 0.05, **raft: Any,
                  ) -> tuple[MemNet, dict[int, RaftDriver], dict[int, KV]]:
    """n drivers on a MemNet; `storage(i)` gives node i's storage (CountingStorage), `raft` adds
    RaftConfig fields."""
    net = MemNet()
    net.nursery = nursery
    ids = list(range(1, n + 1))
    fsms = {i: KV() for i in ids}
    for i in ids:
        node = RawNode(RaftConfig(id=i, election_tick=10, heartbeat_tick=1, **raft), ids, random.Random(i))
        store = storage(i) if storage is not None else CountingStorage()
        net.drivers[i] = RaftDriver(node, store, fsms[i], net.transport(i), tick_interval=tick_interval,
                                    snapshots=MemorySnapshots(), snapshot_threshold=snapshot_threshold)
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


async def test_a_follower_behind_the_compacted_log_catches_up_by_snapshot(
        mock_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        net, drivers, fsms = await cluster(nursery, snapshot_threshold=10)
        lead = await wait_leader(drivers)
        lagging = next(i for i in drivers if i != lead)
        assert await drivers[lead].propose(b"a=1")
        net.cut.add(lagging)
        for i in range(40):
            await drivers[lead].propose(f"k{i}={i}".encode())
        leader_log = drivers[lead].node.raft.log
        assert drivers[lead].stats["snapshots_taken"] >= 3
        assert leader_log.offset > drivers[lagging].node.raft.log.last_index()  # its next entries are gone
        storage = drivers[lead].storage
        assert isinstance(storage, CountingStorage) and storage.offset == leader_log.offset
        net.cut.clear()
        with trio.fail_after(30):
            while fsms[lagging].data != fsms[lead].data:
                await trio.sleep(0.05)
        assert drivers[lagging].stats["snapshots_installed"] >= 1
        assert (lead, lagging, False) in net.snapshots
        assert drivers[lagging].node.raft.log.offset >= leader_log.offset
        # Later entries reach it by ordinary appends, on top of the restored state.
        assert await drivers[lead].propose(b"after=1")
        with trio.fail_after(30):
            while fsms[lagging].data.get("after") != "1":
                await trio.sleep(0.05)
        assert fsms[lagging].data == fsms[lead].data and len(fsms[lead].data) == 42
        nursery.cancel_scope.cancel()


async def test_a_lost_snapshot_is_reported_and_sent_again(mock_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        net, drivers, fsms = await cluster(nursery, snapshot_threshold=5)
        lead = await wait_leader(drivers)
        lagging = next(i for i in drivers if i != lead)
        net.cut.add(lagging)
        for i in range(20):
            await drivers[lead].propose(f"k{i}={i}".encode())
        # Let it answer heartbeats again but lose every snapshot for a while.
        real = net._deliver

        async def lossy(m: Message) -> None:
            if m.type == MessageType.SNAP and sum(1 for s in net.snapshots if s[2]) < 3:
                await trio.sleep(0.001)
                net.snapshots.append((m.frm, m.to, True))
                drivers[m.frm].snapshot_status(m.to, True)
                return
            await real(m)

        net._deliver = lossy  # type: ignore[method-assign]
        net.cut.clear()
        with trio.fail_after(60):
            while fsms[lagging].data != fsms[lead].data:
                await trio.sleep(0.05)
        failures = [s for s in net.snapshots if s[2]]
        assert len(failures) == 3 and (lead, lagging, False) in net.snapshots
        nursery.cancel_scope.cancel()


class BlockingSnapshots:
    """A snapshot sink whose writes (in a worker thread) wait until the test releases them."""

    def __init__(self) -> None:
        import threading

        self.release = threading.Event()
        self.written: list[int] = []

    def write(self, snap: Any) -> None:
        assert self.release.wait(timeout=30), "never released"
        self.written.append(snap.meta.index)


async def test_a_slow_snapshot_write_does_not_stall_the_raft_loop(mock_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        net, drivers, fsms = await cluster(nursery, snapshot_threshold=5)
        lead = await wait_leader(drivers)
        sink = BlockingSnapshots()
        drivers[lead].snapshots = sink
        for i in range(10):
            await drivers[lead].propose(f"k{i}={i}".encode())
        # The first snapshot is being written (blocked); the loop commits and applies meanwhile.
        assert drivers[lead].snapshot_in_flight and sink.written == []
        assert drivers[lead].node.raft.log.offset < 5  # nothing compacted before the file is durable
        for i in range(10, 30):
            assert await drivers[lead].propose(f"k{i}={i}".encode())
        assert len(fsms[lead].data) == 30
        sink.release.set()
        # The write finishes on a real thread: wait in real time (bounded), not on the mock clock,
        # which autojumps through any virtual deadline while the thread is still writing.
        import time
        for _ in range(3000):
            if drivers[lead].node.raft.log.offset > 0 and not drivers[lead].snapshot_in_flight:
                break
            await trio.to_thread.run_sync(time.sleep, 0.01)
        assert sink.written and drivers[lead].node.raft.log.offset >= sink.written[0]
        nursery.cancel_scope.cancel()


class ThreadedStorage(CountingStorage):
    """Saved on the driver's storage writer thread (not inline); records where each save ran."""

    inline = False

    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.fail = fail
        self.threads: set[str] = set()

    def save(self, hard: HardState | None, entries: list[Entry], reset_to: int = 0) -> None:
        import threading
        self.threads.add(threading.current_thread().name)
        if self.fail:
            raise StorageError("disk on fire")
        if entries and self.entries:  # in order: each save continues or overwrites the log, no gap
            assert entries[0].index <= self.offset + len(self.entries) + 1
        super().save(hard, entries, reset_to)


async def test_saves_run_in_order_on_the_storage_writer_thread() -> None:
    """Real clock and a real thread: the loop hands saves to the writer and waits for each."""
    ids = [1, 2, 3]
    storages = {i: ThreadedStorage() for i in ids}
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            net, _, fsms = await cluster(nursery, storage=storages.__getitem__, tick_interval=0.02)
            lead = await wait_leader(net.drivers)
            results: list[int] = []

            async def put(i: int) -> None:
                results.append(await net.drivers[lead].propose(f"k{i}={i}".encode()))

            async with trio.open_nursery() as clients:
                for i in range(30):
                    clients.start_soon(put, i)
            assert sorted(results) == sorted(set(results)) and len(results) == 30
            while any(len(f.data) < 30 for f in fsms.values()):
                await trio.sleep(0.02)
            for i in ids:
                assert storages[i].threads == {"raft-storage"}
                assert [e.index for e in storages[i].entries] == list(range(1, len(storages[i].entries) + 1))
                assert storages[i].hard.term == net.drivers[i].node.raft.term
            nursery.cancel_scope.cancel()
    for d in net.drivers.values():
        assert d.writer is None  # stopped with the loop


async def test_a_failed_save_stops_the_driver() -> None:
    """A storage error raised on the writer thread ends serve() with that error, never ignored."""
    node = RawNode(RaftConfig(id=1, election_tick=10, heartbeat_tick=1), [1], random.Random(1))
    storage = ThreadedStorage(fail=True)
    driver = RaftDriver(node, storage, KV(), MemNet().transport(1), tick_interval=0.02)
    with trio.fail_after(30), pytest.raises(BaseExceptionGroup) as info:
        async with trio.open_nursery() as nursery:
            await nursery.start(driver.serve)
            node.campaign()  # a vote for itself must be durable: the save fails
            driver.kick.set()
            await trio.sleep_forever()
    failed = info.value.subgroup(StorageError)
    assert failed is not None and "disk on fire" in repr(failed.exceptions)
    assert storage.threads == {"raft-storage"}


async def lease_cluster(nursery: trio.Nursery) -> dict[int, RaftDriver]:
    return (await cluster(nursery, lease_tick=5))[1]


async def lease_read_after_pause(mock_clock: trio.testing.MockClock, clock_ticks: bool) -> tuple[int, int, bool]:
    """(lease reads before, lease reads after, whether the read after the pause failed)."""
    async with trio.open_nursery() as nursery:
        drivers = await lease_cluster(nursery)
        lead = await wait_leader(drivers)
        leader = drivers[lead]
        leader.clock_ticks = clock_ticks
        assert await leader.propose(b"a=1")
        await trio.sleep(0.5)
        stats = leader.node.raft.read_stats
        await leader.read_index(lease=True)
        before = stats["lease"]
        assert before >= 1 and stats["read_index"] == 0  # a lease read: no heartbeat round
        await leader.read_index(lease=False)
        assert stats["read_index"] == 1 and stats["lease"] == before  # `consistent`: a round
        # A pause of 2 s (40 ticks): the ticker wakes once; the others' clocks moved on too.
        mock_clock.jump(2.0)
        failed = False
        try:
            await leader.read_index(lease=True)
        except NotLeader:
            failed = True
        after = stats["lease"]
        nursery.cancel_scope.cancel()
    return before, after, failed


async def test_a_lease_read_after_a_pause_counts_the_ticks_it_missed(mock_clock: trio.testing.MockClock) -> None:
    """After a pause longer than the lease, the leader must not answer from its lease: the driver
    catches up the ticks the monotonic clock owes before it looks. The planted contrast (counting
    one tick per wake-up) answers from the expired lease."""
    before, after, _ = await lease_read_after_pause(mock_clock, clock_ticks=True)
    assert after == before, "a lease read was served after the lease ran out"
    before_bug, after_bug, failed_bug = await lease_read_after_pause(mock_clock, clock_ticks=False)
    assert after_bug == before_bug + 1 and not failed_bug  # the planted bug is visible to this test


class GatedStorage(ThreadedStorage):
    """A disk that can be made to hang: while `gate` is clear, every save waits for it."""

    def __init__(self) -> None:
        super().__init__()
        import threading
        self.gate = threading.Event()
        self.gate.set()

    def save(self, hard: HardState | None, entries: list[Entry], reset_to: int = 0) -> None:
        self.gate.wait(60)
        super().save(hard, entries, reset_to)

    def data(self) -> list[bytes]:
        return [e.data for e in self.entries]


async def test_the_leader_commits_while_its_own_disk_hangs_but_not_without_a_durable_majority() -> None:
    """Async storage writes in the driver: with the leader's disk stuck, a write commits on the two
    followers' disks (and is answered); with one follower cut off too, it waits for the leader's
    disk (a commit needs a majority of durable copies); then it commits."""
    ids = [1, 2, 3]
    storages = {i: GatedStorage() for i in ids}
    try:
        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:
                net, _, fsms = await cluster(nursery, storage=storages.__getitem__)
                lead = await wait_leader(net.drivers)
                await net.drivers[lead].propose(b"warm=1")
                others = [i for i in ids if i != lead]
                storages[lead].gate.clear()  # the leader's disk hangs from here
                index = await net.drivers[lead].propose(b"a=1")
                assert fsms[lead].data["a"] == "1"  # committed and applied on the leader ...
                assert b"a=1" not in storages[lead].data()  # ... which has not written it
                assert all(b"a=1" in storages[i].data() for i in others)
                assert net.drivers[lead].node.raft.log.stabled < index
                # One follower cut off: the leader's copy is needed, and its disk still hangs.
                net.cut.add(others[1])
                done = trio.Event()

                async def put() -> None:
                    await net.drivers[lead].propose(b"b=2")
                    done.set()

                nursery.start_soon(put)
                await trio.sleep(1.0)
                assert not done.is_set() and "b" not in fsms[lead].data
                assert b"b=2" in storages[others[0]].data()  # the other follower has it durably
                storages[lead].gate.set()  # the disk comes back: now a majority is durable
                with trio.fail_after(30):
                    await done.wait()
                assert fsms[lead].data["b"] == "2" and b"b=2" in storages[lead].data()
                nursery.cancel_scope.cancel()
    finally:
        for s in storages.values():
            s.gate.set()
