"""Pooled server-RPC connections (agent/rpc/protocol.py `call`): reuse, and what happens when the
server has closed a pooled connection meanwhile. A real TCP listener on loopback stands in for a
server: it answers each frame, and counts the connections it accepted."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
import trio
from murmur.agent.rpc import protocol
from murmur.agent.rpc.mux import RPC, FramedStream
from murmur.agent.rpc.protocol import RPCError, call


class FakeServer:
    def __init__(self) -> None:
        self.accepted = 0
        self.requests: list[dict[str, Any]] = []
        self.streams: list[trio.SocketStream] = []
        self.port = 0

    async def handle(self, stream: trio.SocketStream) -> None:
        self.accepted += 1
        self.streams.append(stream)
        first = await stream.receive_some(1)
        assert first == bytes([RPC])
        framed = FramedStream(stream)
        while True:
            try:
                payload = await framed.read()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            if payload is None:
                return
            req = msgpack.unpackb(payload, raw=False)
            self.requests.append(req)
            await framed.write(bytes(msgpack.packb({"v": 1, "r": len(self.requests)})))

    async def close_all(self) -> None:
        for s in self.streams:
            await s.aclose()
        self.streams.clear()


async def start(nursery: trio.Nursery) -> FakeServer:
    srv = FakeServer()
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    nursery.start_soon(trio.serve_listeners, srv.handle, listeners)
    srv.port = listeners[0].socket.getsockname()[1]
    return srv


@pytest.fixture(autouse=True)
def fresh_pool() -> None:
    protocol.POOL = protocol.ConnPool()


async def test_calls_reuse_one_connection() -> None:
    async with trio.open_nursery() as nursery:
        srv = await start(nursery)
        addr = ("127.0.0.1", srv.port)
        for i in range(5):
            reply = await call(addr, {"op": "read", "name": "x", "args": {}})
            assert reply["r"] == i + 1
        assert srv.accepted == 1 and protocol.POOL.stats == {"opened": 1, "reused": 4}
        nursery.cancel_scope.cancel()


async def test_a_read_on_a_connection_the_server_closed_is_sent_again_on_a_fresh_one() -> None:
    async with trio.open_nursery() as nursery:
        srv = await start(nursery)
        addr = ("127.0.0.1", srv.port)
        assert (await call(addr, {"op": "read"}))["r"] == 1
        await srv.close_all()  # a server restart, as the pooled connection sees it
        await trio.sleep(0.05)
        assert (await call(addr, {"op": "read"}))["r"] == 2
        assert srv.accepted == 2 and len(srv.requests) == 2
        # A write under a request ID is safe to send again too.
        await srv.close_all()
        await trio.sleep(0.05)
        assert (await call(addr, {"op": "apply", "d": b"", "rid": "r1"}))["r"] == 3
        nursery.cancel_scope.cancel()


async def test_a_write_without_a_request_id_is_never_sent_twice() -> None:
    async with trio.open_nursery() as nursery:
        srv = await start(nursery)
        addr = ("127.0.0.1", srv.port)
        await call(addr, {"op": "read"})
        await srv.close_all()
        await trio.sleep(0.05)
        with pytest.raises(RPCError) as err:
            await call(addr, {"op": "apply", "d": b""})
        assert err.value.kind == "unknown_outcome"
        assert len(srv.requests) == 1  # not resent
        # Positive control: the next call opens a fresh connection and goes through.
        assert (await call(addr, {"op": "apply", "d": b""}))["r"] == 2
        nursery.cancel_scope.cancel()


async def test_idle_connections_past_their_ttl_are_not_reused(autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        srv = await start(nursery)
        addr = ("127.0.0.1", srv.port)
        await call(addr, {"op": "read"})
        await trio.sleep(protocol.ConnPool.IDLE_TTL + 1)
        await call(addr, {"op": "read"})
        assert srv.accepted == 2
        nursery.cancel_scope.cancel()
