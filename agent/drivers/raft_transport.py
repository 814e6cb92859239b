"""Raft messages between servers: one outgoing TCP connection per peer, pipelined frames.

Each peer has a bounded queue and a sender task that (re)connects with backoff. Raft tolerates
loss, so a full queue or a broken connection drops messages (counted) rather than blocking the
Raft loop. Incoming connections (first byte 0x02 on the server port) are decoded frame by frame;
a malformed frame ends that connection and is counted, never reaching the core.

Snapshots (SNAP messages) do not ride the Raft stream: each transfer opens its own connection
whose first byte is 0x03 (the conventions' "snapshot stream"), so a large snapshot never holds up
heartbeats and appends. On it the sender writes a header frame (the SNAP message without its data,
the data's length and CRC32, the chunk size), then the data in CHUNK-byte chunk frames, at most
WINDOW of them unacknowledged: the receiver acks each chunk by its sequence number. Once the
whole body is in and its checksum matches, the receiver hands the complete message to Raft and
answers a final frame. The sender then reports the outcome to its driver (`on_snapshot_status`):
any error, timeout or refusal is a failure, after which the core probes the follower again and,
if it still needs one, the next snapshot goes out from the start (no resume mid-transfer).
The follower's Raft ack (an AppendEntries response) is sent only once the snapshot is durable.
"""

from __future__ import annotations

import dataclasses
import logging
import zlib
from collections.abc import Callable
from typing import Any

import msgpack
import trio
from murmur.raft import codec
from murmur.raft.messages import Message, MessageType, Snapshot

from ..labdelay import DELAY
from ..rpc.mux import RAFT, SNAPSHOT, FramedStream, FrameError
from ..tls import open_server_stream

log = logging.getLogger("murmur.raft.transport")

QUEUE_DEPTH = 8192  # messages queued per peer before new ones are dropped
BACKOFF_MIN, BACKOFF_MAX = 0.05, 1.0
SNAP_VERSION = 1  # of the snapshot stream's header
CHUNK = 256 * 1024  # bytes of snapshot per chunk frame
WINDOW = 4  # chunks in flight before the sender waits for an ack
SNAP_STEP_TIMEOUT = 30.0  # seconds for any one step of a transfer (connect, an ack, the final answer)
MAX_SNAPSHOT = 4 << 30  # a header announcing more is refused


class TCPTransport:
    def __init__(self, deliver: Callable[[Message], None],
                 on_snapshot_status: Callable[[int, bool], None] | None = None) -> None:
        self.deliver = deliver
        self.on_snapshot_status = on_snapshot_status
        self.peers: dict[int, tuple[str, int]] = {}
        self.queues: dict[int, trio.MemorySendChannel[bytes]] = {}
        self.nursery: trio.Nursery | None = None
        self.sending_snapshot: set[int] = set()
        self.stats = {"dropped_full": 0, "dropped_unreachable": 0, "bad_frames": 0, "sent": 0, "received": 0,
                      "snapshots_sent": 0, "snapshots_failed": 0, "snapshots_received": 0, "snapshot_chunks": 0}

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    def set_peer(self, node_id: int, addr: tuple[str, int]) -> None:
        if self.peers.get(node_id) == addr:
            return
        self.peers[node_id] = addr
        old = self.queues.pop(node_id, None)
        if old is not None:
            old.close()
        send, recv = trio.open_memory_channel[bytes](QUEUE_DEPTH)
        self.queues[node_id] = send
        assert self.nursery is not None
        self.nursery.start_soon(self._sender, node_id, addr, recv)

    def send(self, m: Message) -> None:
        if m.type == MessageType.SNAP:
            self._start_snapshot(m)
            return
        q = self.queues.get(m.to)
        if q is None:
            self.stats["dropped_unreachable"] += 1
            return
        try:
            q.send_nowait(codec.encode_message(m))
        except trio.WouldBlock:
            self.stats["dropped_full"] += 1
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            self.stats["dropped_unreachable"] += 1  # the sender is gone (shutting down or replaced)

    async def _sender(self, node_id: int, addr: tuple[str, int], queue: trio.MemoryReceiveChannel[bytes]) -> None:
        backoff = BACKOFF_MIN
        async with queue:
            while True:
                try:
                    stream = await open_server_stream(addr, RAFT)
                except OSError:
                    # Unreachable: drop what is queued (Raft resends), wait, try again.
                    while True:
                        try:
                            queue.receive_nowait()
                            self.stats["dropped_unreachable"] += 1
                        except (trio.WouldBlock, trio.EndOfChannel):
                            break
                    await trio.sleep(backoff)
                    backoff = min(BACKOFF_MAX, backoff * 2)
                    continue
                backoff = BACKOFF_MIN
                try:
                    while True:
                        batch = [await queue.receive()]
                        for _ in range(255):  # coalesce what is already queued into one write
                            try:
                                batch.append(queue.receive_nowait())
                            except trio.WouldBlock:
                                break
                        if DELAY.path and (wait := DELAY.seconds()) > 0:
                            await trio.sleep(wait)  # the lab's delay fault (in order: one sender per peer)
                        await stream.send_all(b"".join(len(p).to_bytes(4, "big") + p for p in batch))
                        self.stats["sent"] += len(batch)
                except trio.EndOfChannel:
                    await stream.aclose()
                    return
                except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
                    # What was in flight is lost with the connection; Raft resends what matters.
                    with trio.CancelScope(shield=True):
                        await stream.aclose()

    async def handle_incoming(self, framed: FramedStream, peer: tuple[str, int]) -> None:
        while True:
            try:
                payload = await framed.read()
            except FrameError:
                self.stats["bad_frames"] += 1
                return
            if payload is None:
                return
            try:
                m = codec.decode_message(payload)
            except codec.CodecError as exc:
                self.stats["bad_frames"] += 1
                log.debug("raft: bad frame from %s: %s", peer, exc)
                return
            self.stats["received"] += 1
            self.deliver(m)

    # ---- snapshots ------------------------------------------------------------------------------
    def _report(self, to: int, failed: bool) -> None:
        self.stats["snapshots_failed" if failed else "snapshots_sent"] += 1
        if self.on_snapshot_status is not None:
            self.on_snapshot_status(to, failed)

    def _start_snapshot(self, m: Message) -> None:
        addr = self.peers.get(m.to)
        if addr is None or self.nursery is None or m.snapshot is None:
            self._report(m.to, True)
            return
        if m.to in self.sending_snapshot:
            return  # one transfer per peer; the running one reports for both
        self.sending_snapshot.add(m.to)
        self.nursery.start_soon(self._send_snapshot, m, addr)

    async def _send_snapshot(self, m: Message, addr: tuple[str, int]) -> None:
        failed = True
        try:
            await self._transfer(m, addr)
            failed = False
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, FrameError, trio.TooSlowError,
                SnapshotRefused) as exc:
            log.warning("raft: sending a snapshot to %s failed: %s", addr, exc)
        finally:
            self.sending_snapshot.discard(m.to)
            self._report(m.to, failed)

    async def _transfer(self, m: Message, addr: tuple[str, int]) -> None:
        assert m.snapshot is not None
        data = m.snapshot.data
        bare = dataclasses.replace(m, snapshot=Snapshot(m.snapshot.meta, b""))
        header = {"v": SNAP_VERSION, "m": codec.encode_message(bare), "n": len(data), "c": zlib.crc32(data),
                  "k": CHUNK}
        with trio.fail_after(SNAP_STEP_TIMEOUT):
            stream = await open_server_stream(addr, SNAPSHOT)
        async with stream:
            framed = FramedStream(stream)
            await framed.write(bytes(msgpack.packb(header)))
            total = (len(data) + CHUNK - 1) // CHUNK
            sent = acked = 0
            while acked < total:
                while sent < total and sent - acked < WINDOW:
                    await framed.write(bytes(msgpack.packb({"s": sent, "d": data[sent * CHUNK:(sent + 1) * CHUNK]})))
                    sent += 1
                    self.stats["snapshot_chunks"] += 1
                reply = await self._reply(framed)
                if reply.get("a") != acked:
                    raise SnapshotRefused(f"expected the ack of chunk {acked}, got {reply!r}")
                acked += 1
            final = await self._reply(framed)
            if final.get("ok") is not True:
                raise SnapshotRefused(f"the follower refused the snapshot: {final.get('e', final)!r}")

    @staticmethod
    async def _reply(framed: FramedStream) -> dict[str, Any]:
        with trio.fail_after(SNAP_STEP_TIMEOUT):
            payload = await framed.read()
        if payload is None:
            raise SnapshotRefused("the follower closed the snapshot stream")
        try:
            reply = msgpack.unpackb(payload, raw=False)
        except Exception as exc:
            raise SnapshotRefused(f"undecodable reply: {type(exc).__name__}") from exc
        if not isinstance(reply, dict):
            raise SnapshotRefused("a reply that is not a map")
        return reply

    async def handle_snapshot(self, framed: FramedStream, peer: tuple[str, int]) -> None:
        """The receiving end of one snapshot transfer (first byte 0x03)."""
        try:
            m = await self._receive_snapshot(framed)
        except (trio.TooSlowError, FrameError) as exc:
            self.stats["bad_frames"] += 1
            log.warning("raft: a snapshot from %s was cut short: %s", peer, exc or type(exc).__name__)
            return
        except SnapshotRefused as exc:
            self.stats["bad_frames"] += 1
            log.warning("raft: refused a snapshot from %s: %s", peer, exc)
            await framed.write(bytes(msgpack.packb({"ok": False, "e": str(exc)})))
            return
        self.stats["snapshots_received"] += 1
        self.deliver(m)
        await framed.write(bytes(msgpack.packb({"ok": True})))

    async def _receive_snapshot(self, framed: FramedStream) -> Message:
        with trio.fail_after(SNAP_STEP_TIMEOUT):
            payload = await framed.read()
        try:
            h = msgpack.unpackb(payload or b"", raw=False)
            if not isinstance(h, dict) or h.get("v") != SNAP_VERSION:
                raise SnapshotRefused(f"unknown snapshot stream version {h.get('v') if isinstance(h, dict) else h!r}")
            bare = codec.decode_message(h["m"])
            size, crc, chunk = h["n"], h["c"], h["k"]
            if not all(type(x) is int for x in (size, crc, chunk)):  # int(inf) would raise OverflowError
                raise SnapshotRefused(f"bad header: sizes must be integers, got {size!r}, {crc!r}, {chunk!r}"[:200])
        except (codec.CodecError, KeyError, TypeError, ValueError, msgpack.UnpackException) as exc:
            raise SnapshotRefused(f"bad header: {exc}") from exc
        if bare.type != MessageType.SNAP or bare.snapshot is None:
            raise SnapshotRefused("the header is not a snapshot message")
        if not 0 <= size <= MAX_SNAPSHOT or chunk <= 0:
            raise SnapshotRefused(f"a snapshot of {size} bytes in chunks of {chunk}")
        body = bytearray()
        seq = 0
        while len(body) < size:
            with trio.fail_after(SNAP_STEP_TIMEOUT):
                payload = await framed.read()
            if payload is None:
                raise SnapshotRefused(f"stream ended after {len(body)} of {size} bytes")
            try:
                c = msgpack.unpackb(payload, raw=False)
                n, piece = c["s"], c["d"]
            except Exception as exc:
                raise SnapshotRefused(f"bad chunk: {type(exc).__name__}") from exc
            if n != seq or not isinstance(piece, bytes) or not piece or len(body) + len(piece) > size:
                raise SnapshotRefused(f"chunk {n!r} out of order or oversized (expected {seq})")
            body += piece
            await framed.write(bytes(msgpack.packb({"a": seq})))
            seq += 1
        if zlib.crc32(body) != crc:
            raise SnapshotRefused("checksum mismatch")
        return dataclasses.replace(bare, snapshot=Snapshot(bare.snapshot.meta, bytes(body)))


class SnapshotRefused(Exception):
    """A snapshot transfer that cannot go on (refused, malformed, or cut short)."""
