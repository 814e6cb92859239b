"""The snapshot stream (first byte 0x03) between two TCPTransports on loopback: chunks, flow
control, the outcome reported to the sender, refusals and cut-short transfers."""

from __future__ import annotations

import msgpack
import pytest
import trio
from murmur.agent.drivers import raft_transport
from murmur.agent.drivers.raft_transport import TCPTransport
from murmur.agent.rpc.mux import SNAPSHOT, FramedStream, ServerPort
from murmur.raft.messages import Message, MessageType, Snapshot, SnapshotMeta


def snap_msg(size: int) -> Message:
    data = bytes((i * 7) % 251 for i in range(size))
    return Message(MessageType.SNAP, to=2, frm=1, term=3, snapshot=Snapshot(SnapshotMeta(40, 3, (1, 2, 3)), data))


async def start_receiver(nursery: trio.Nursery, got: list[Message],
                         handler: object = None) -> tuple[TCPTransport, int]:
    rx = TCPTransport(got.append)
    port = ServerPort()
    port.register(SNAPSHOT, handler or rx.handle_snapshot)  # type: ignore[arg-type]
    bound = await nursery.start(port.serve, "127.0.0.1", 0)
    return rx, bound


async def start_sender(nursery: trio.Nursery, reports: list[tuple[int, bool]], to_port: int) -> TCPTransport:
    tx = TCPTransport(lambda m: None, lambda to, failed: reports.append((to, failed)))
    await nursery.start(tx.serve)
    tx.set_peer(2, ("127.0.0.1", to_port))
    return tx


async def wait_for(cond: object, seconds: float = 10.0) -> None:
    with trio.fail_after(seconds):
        while not cond():  # type: ignore[operator]
            await trio.sleep(0.01)


@pytest.mark.parametrize("size", [0, 1, raft_transport.CHUNK, 5 * raft_transport.CHUNK + 17])
async def test_a_snapshot_arrives_whole_in_chunks_and_success_is_reported(size: int) -> None:
    got: list[Message] = []
    reports: list[tuple[int, bool]] = []
    async with trio.open_nursery() as nursery:
        rx, port = await start_receiver(nursery, got)
        tx = await start_sender(nursery, reports, port)
        m = snap_msg(size)
        tx.send(m)
        await wait_for(lambda: reports)
        assert reports == [(2, False)]
        assert got == [m]  # the whole message, data and all
        assert tx.stats["snapshot_chunks"] == -(-size // raft_transport.CHUNK)
        assert rx.stats["snapshots_received"] == 1 and tx.stats["snapshots_sent"] == 1
        nursery.cancel_scope.cancel()


async def test_at_most_window_chunks_are_in_flight_and_a_stalled_receiver_fails_the_transfer(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(raft_transport, "SNAP_STEP_TIMEOUT", 1.0)
    seen: list[int] = []

    async def stalls(framed: FramedStream, peer: tuple[str, int]) -> None:
        await framed.read()  # the header
        while True:  # read chunks, never ack
            payload = await framed.read()
            if payload is None:
                return
            seen.append(msgpack.unpackb(payload)["s"])

    reports: list[tuple[int, bool]] = []
    async with trio.open_nursery() as nursery:
        _, port = await start_receiver(nursery, [], stalls)
        tx = await start_sender(nursery, reports, port)
        tx.send(snap_msg(10 * raft_transport.CHUNK))
        await wait_for(lambda: reports)
        assert reports == [(2, True)]
        assert seen == list(range(raft_transport.WINDOW))  # it stopped at the window and waited
        assert tx.stats["snapshots_failed"] == 1
        # Positive control: a receiver that acks gets all ten chunks.
        got: list[Message] = []
        _, port2 = await start_receiver(nursery, got)
        tx.set_peer(2, ("127.0.0.1", port2))
        tx.send(snap_msg(10 * raft_transport.CHUNK))
        await wait_for(lambda: len(reports) == 2)
        assert reports[1] == (2, False) and len(got) == 1
        nursery.cancel_scope.cancel()


async def test_a_refused_or_unreachable_transfer_is_reported_as_failed(monkeypatch: pytest.MonkeyPatch) -> None:
    got: list[Message] = []
    reports: list[tuple[int, bool]] = []
    async with trio.open_nursery() as nursery:
        rx, port = await start_receiver(nursery, got)
        tx = await start_sender(nursery, reports, port)
        monkeypatch.setattr(raft_transport, "MAX_SNAPSHOT", 1000)  # the receiver refuses anything bigger
        tx.send(snap_msg(5000))
        await wait_for(lambda: reports)
        assert reports == [(2, True)] and got == []
        tx.send(snap_msg(500))  # positive control: within the limit it goes through
        await wait_for(lambda: len(reports) == 2)
        assert reports[1] == (2, False) and len(got) == 1
        # Nobody listening: a failure, not a hang.
        with trio.socket.socket() as s:
            await s.bind(("127.0.0.1", 0))
            dead = s.getsockname()[1]
        tx.set_peer(2, ("127.0.0.1", dead))
        tx.send(snap_msg(500))
        await wait_for(lambda: len(reports) == 3)
        assert reports[2] == (2, True)
        nursery.cancel_scope.cancel()


async def test_a_corrupted_chunk_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    got: list[Message] = []
    reports: list[tuple[int, bool]] = []
    async with trio.open_nursery() as nursery:
        rx, port = await start_receiver(nursery, got)
        tx = await start_sender(nursery, reports, port)
        real_write = FramedStream.write

        async def flip(self: FramedStream, payload: bytes) -> None:
            frame = msgpack.unpackb(payload)
            if isinstance(frame, dict) and frame.get("s") == 1:
                frame["d"] = b"\x00" + frame["d"][1:]  # one byte changed in transit
                payload = msgpack.packb(frame)
            await real_write(self, payload)

        monkeypatch.setattr(FramedStream, "write", flip)
        tx.send(snap_msg(3 * raft_transport.CHUNK))
        await wait_for(lambda: reports)
        assert reports == [(2, True)] and got == []
        assert rx.stats["bad_frames"] == 1
        nursery.cancel_scope.cancel()
