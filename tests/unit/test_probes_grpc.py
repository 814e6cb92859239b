"""gRPC health checks against a loopback gRPC health server (HTTP/2 via h2, server side here):
SERVING passes; NOT_SERVING, an unknown service (gRPC NOT_FOUND), a non-HTTP/2 peer and a closed
port are critical."""

from __future__ import annotations

import h2.config
import h2.connection
import h2.events
import trio
from murmur.checks.definitions import from_api
from murmur.checks.probes import grpc_health_request, grpc_serving_status, run_probe

STATUSES = {"": 1, "web": 1, "db": 2}  # "" is the server as a whole


def parse_request(body: bytes) -> str:
    msg = body[5:]
    return msg[2:2 + msg[1]].decode() if msg else ""


async def grpc_server(stream: trio.SocketStream) -> None:
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
    conn.initiate_connection()
    await stream.send_all(conn.data_to_send())
    bodies: dict[int, bytes] = {}
    while True:
        data = await stream.receive_some(65536)
        if not data:
            return
        for ev in conn.receive_data(data):
            if isinstance(ev, h2.events.RequestReceived):
                bodies[ev.stream_id] = b""
            elif isinstance(ev, h2.events.DataReceived):
                bodies[ev.stream_id] += ev.data
                conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded):
                service = parse_request(bodies[ev.stream_id])
                if service not in STATUSES:  # trailers-only: NOT_FOUND
                    conn.send_headers(ev.stream_id, [(":status", "200"), ("content-type", "application/grpc"),
                                                     ("grpc-status", "5"), ("grpc-message", "unknown service")],
                                      end_stream=True)
                else:
                    msg = b"\x08" + bytes([STATUSES[service]])
                    conn.send_headers(ev.stream_id, [(":status", "200"), ("content-type", "application/grpc")])
                    conn.send_data(ev.stream_id, b"\x00" + len(msg).to_bytes(4, "big") + msg)
                    conn.send_headers(ev.stream_id, [("grpc-status", "0")], end_stream=True)
        await stream.send_all(conn.data_to_send())


async def http1_server(stream: trio.SocketStream) -> None:
    with trio.move_on_after(2):
        await stream.receive_some(65536)
        await stream.send_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
    await stream.aclose()


def test_message_codec() -> None:
    assert grpc_health_request("") == b"\x00\x00\x00\x00\x00"
    assert grpc_health_request("web") == b"\x00\x00\x00\x00\x05\x0a\x03web"
    assert grpc_serving_status(b"\x00\x00\x00\x00\x02\x08\x02") == 2
    assert grpc_serving_status(b"\x00\x00\x00\x00\x00") == 0  # proto3 default: UNKNOWN


def test_grpc_probe_statuses() -> None:
    async def main() -> None:
        async with trio.open_nursery() as nursery:
            g = (await nursery.start(trio.serve_tcp, grpc_server, 0))[0].socket.getsockname()[1]
            h = (await nursery.start(trio.serve_tcp, http1_server, 0))[0].socket.getsockname()[1]

            async def probe(target: str) -> tuple[str, str]:
                return await run_probe(from_api({"name": "g", "grpc": target, "interval": "10s", "timeout": "5s"}))

            assert (await probe(f"127.0.0.1:{g}"))[0] == "passing"
            ok = await probe(f"127.0.0.1:{g}/web")
            assert ok == ("passing", f"gRPC check 127.0.0.1:{g}/web: SERVING")
            bad = await probe(f"127.0.0.1:{g}/db")
            assert bad[0] == "critical" and "NOT_SERVING" in bad[1]
            unknown = await probe(f"127.0.0.1:{g}/nope")
            assert unknown[0] == "critical" and "gRPC status 5" in unknown[1]
            assert (await probe(f"127.0.0.1:{h}/web"))[0] == "critical"  # an HTTP/1.1 server
            with trio.socket.socket() as s:
                await s.bind(("127.0.0.1", 0))
                closed = s.getsockname()[1]
            assert (await probe(f"127.0.0.1:{closed}"))[0] == "critical"
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_grpc_use_tls(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import shutil

    import pytest

    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl CLI")
    from test_probes_tcp_tls import self_signed

    server_ctx = self_signed(tmp_path)
    server_ctx.set_alpn_protocols(["h2"])

    async def tls_grpc(stream: trio.SocketStream) -> None:
        tls = trio.SSLStream(stream, server_ctx, server_side=True)
        try:
            await tls.do_handshake()
            await grpc_server(tls)  # type: ignore[arg-type]
        except trio.BrokenResourceError:
            pass

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            port = (await nursery.start(trio.serve_tcp, tls_grpc, 0))[0].socket.getsockname()[1]

            async def probe(**kw: object) -> tuple[str, str]:
                return await run_probe(from_api({"name": "g", "grpc": f"127.0.0.1:{port}/web", "interval": "10s",
                                                 "timeout": "5s", "grpc_use_tls": True, **kw}))

            ok = await probe(tls_skip_verify=True)
            assert ok[0] == "passing", ok
            untrusted = await probe()  # self-signed: refused unless tls_skip_verify
            assert untrusted[0] == "critical", untrusted
            nursery.cancel_scope.cancel()

    trio.run(main)
