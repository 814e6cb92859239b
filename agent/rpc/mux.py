"""One TCP listener for server RPC, Raft and snapshots, told apart by each connection's first byte
(conventions: 0x01 RPC, 0x02 Raft, 0x03 snapshot, 0x16 a TLS ClientHello)."""

from __future__ import annotations

import logging
import struct
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from ..tls import TLSManager

log = logging.getLogger("murmur.rpc")

RPC, RAFT, SNAPSHOT, TLS = 0x01, 0x02, 0x03, 0x16
MAX_FRAME = 64 * 1024 * 1024  # largest frame accepted on the server port
FIRST_BYTE_TIMEOUT = 10.0

Handler = Callable[[trio.SocketStream], Awaitable[None]]


class FrameError(Exception):
    pass


class FramedStream:
    """4-byte big-endian length + payload frames over a stream, with a size limit."""

    def __init__(self, stream: trio.abc.Stream, buffered: bytes = b"") -> None:
        self.stream = stream
        self.buf = bytearray(buffered)

    async def _fill(self, n: int) -> bool:
        while len(self.buf) < n:
            chunk = await self.stream.receive_some(65536)
            if not chunk:
                return False
            self.buf += chunk
        return True

    async def read(self) -> bytes | None:
        """The next frame's payload, or None at a clean end of stream."""
        if not await self._fill(4):
            if self.buf:
                raise FrameError("stream ended inside a frame header")
            return None
        (n,) = struct.unpack("!I", self.buf[:4])
        if n > MAX_FRAME:
            raise FrameError(f"frame of {n} bytes exceeds the {MAX_FRAME}-byte limit")
        if not await self._fill(4 + n):
            raise FrameError("stream ended inside a frame")
        payload = bytes(self.buf[4:4 + n])
        del self.buf[:4 + n]
        return payload

    async def write(self, payload: bytes) -> None:
        await self.stream.send_all(struct.pack("!I", len(payload)) + payload)


class ServerPort:
    """Accepts connections on the server port and hands each to the handler of its first byte."""

    def __init__(self) -> None:
        self.handlers: dict[int, Callable[[FramedStream, tuple[str, int]], Awaitable[None]]] = {}
        self.stats = {"refused": 0}
        self.tls: TLSManager | None = None  # set by the agent: TLS on this port (agent/tls.py)

    def register(self, first_byte: int, handler: Callable[[FramedStream, tuple[str, int]], Awaitable[None]]) -> None:
        self.handlers[first_byte] = handler

    async def serve(self, host: str, port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
                    ) -> None:
        listeners = await trio.open_tcp_listeners(port, host=host)
        task_status.started(listeners[0].socket.getsockname()[1])
        await trio.serve_listeners(self._conn, listeners)

    async def _conn(self, stream: trio.SocketStream) -> None:
        try:
            peer = stream.socket.getpeername()
            with trio.move_on_after(FIRST_BYTE_TIMEOUT) as scope:
                first = await stream.receive_some(65536)
            if scope.cancelled_caught or not first:
                return
            conn: trio.abc.Stream = stream
            if self.tls is not None:
                wrapped = await self.tls.accept(stream, bytes(first), f"{peer[0]}:{peer[1]}")
                if wrapped is None:
                    self.stats["refused"] += 1
                    return
                conn, first = wrapped
            elif first[0] == TLS:
                self.stats["refused"] += 1
                log.warning("server port: %s:%d started TLS, but TLS is not configured", peer[0], peer[1])
                return
            handler = self.handlers.get(first[0])
            if handler is None:
                self.stats["refused"] += 1
                log.debug("server port: refused a connection from %s starting with %#x", peer, first[0])
                return
            await handler(FramedStream(conn, first[1:]), (peer[0], peer[1]))
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError, FrameError) as exc:
            log.debug("server port connection ended: %s", exc)
        except Exception:  # a handler's bug must close this connection, not the agent (as trio would)
            self.stats["handler_failed"] = self.stats.get("handler_failed", 0) + 1
            log.exception("server port: a connection handler failed")
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await stream.aclose()
