"""Raft messages between servers: one outgoing TCP connection per peer, pipelined frames.

Each peer has a bounded queue and a sender task that (re)connects with backoff. Raft tolerates
loss, so a full queue or a broken connection drops messages (counted) rather than blocking the
Raft loop. Incoming connections (first byte 0x02 on the server port) are decoded frame by frame;
a malformed frame ends that connection and is counted, never reaching the core.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio
from murmur.raft import codec
from murmur.raft.messages import Message

from ..rpc.mux import RAFT, FramedStream, FrameError

log = logging.getLogger("murmur.raft.transport")

QUEUE_DEPTH = 8192  # messages queued per peer before new ones are dropped
BACKOFF_MIN, BACKOFF_MAX = 0.05, 1.0


class TCPTransport:
    def __init__(self, deliver: Callable[[Message], None]) -> None:
        self.deliver = deliver
        self.peers: dict[int, tuple[str, int]] = {}
        self.queues: dict[int, trio.MemorySendChannel[bytes]] = {}
        self.nursery: trio.Nursery | None = None
        self.stats = {"dropped_full": 0, "dropped_unreachable": 0, "bad_frames": 0, "sent": 0, "received": 0}

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
                    stream = await trio.open_tcp_stream(*addr)
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
                    await stream.send_all(bytes([RAFT]))
                    while True:
                        batch = [await queue.receive()]
                        for _ in range(255):  # coalesce what is already queued into one write
                            try:
                                batch.append(queue.receive_nowait())
                            except trio.WouldBlock:
                                break
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
