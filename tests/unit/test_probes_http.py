"""checks/probes.py HTTP probes on loopback: one shared client per TLS setting, a fresh connection
per run (no keep-alive, as Consul), 2xx/429/other mapping."""

from __future__ import annotations

import trio
from murmur.checks.definitions import from_api
from murmur.checks.probes import HTTPClients, run_probe


async def serve(statuses: list[int], conns: list[int], task_status: trio.TaskStatus[int]) -> None:
    async def handle(stream: trio.SocketStream) -> None:
        conns.append(1)
        buf = b""
        while b"\r\n\r\n" not in buf:
            data = await stream.receive_some(4096)
            if not data:
                return
            buf += data
        code = statuses.pop(0) if statuses else 200
        body = b"hello"
        await stream.send_all(b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n\r\n%s" % (code, len(body), body))
        with trio.move_on_after(2):  # keep the connection open: a keep-alive client could reuse it
            while await stream.receive_some(4096):
                pass

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(handle, listeners)


def test_shared_client_fresh_connection_and_status_mapping() -> None:
    async def main() -> None:
        conns: list[int] = []
        statuses = [200, 429, 503]
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve, statuses, conns)
            clients = HTTPClients()
            d1 = from_api({"name": "a", "http": f"http://127.0.0.1:{port}/", "interval": "10s"})
            d2 = from_api({"name": "b", "http": f"http://127.0.0.1:{port}/x", "interval": "10s"})
            d3 = from_api({"name": "c", "http": f"http://127.0.0.1:{port}/", "interval": "10s",
                           "tls_skip_verify": True})
            assert clients.get(d1) is clients.get(d2) and clients.get(d1) is not clients.get(d3)
            results = [await run_probe(d, clients) for d in (d1, d2, d1)]
            assert [r[0] for r in results] == ["passing", "warning", "critical"]
            assert "Output: hello" in results[0][1]
            assert len(conns) == 3  # one connection per run: no keep-alive reuse
            await clients.aclose()
            nursery.cancel_scope.cancel()

    trio.run(main)
