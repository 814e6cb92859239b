"""TCP checks with tcp_use_tls against loopback servers: a TLS server with a self-signed
certificate passes with tls_skip_verify and fails without; a plain TCP server fails the handshake."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path

import pytest
import trio
from murmur.checks.definitions import from_api
from murmur.checks.probes import run_probe

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")


def self_signed(tmp: Path) -> ssl.SSLContext:
    key, cert = tmp / "key.pem", tmp / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=localhost"], check=True, capture_output=True, timeout=60)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


def test_tcp_use_tls(tmp_path: Path) -> None:
    server_ctx = self_signed(tmp_path)

    async def main() -> None:
        async def tls_handler(stream: trio.SocketStream) -> None:
            tls = trio.SSLStream(stream, server_ctx, server_side=True)
            try:
                await tls.do_handshake()
                await tls.aclose()
            except trio.BrokenResourceError:
                pass

        async def plain_handler(stream: trio.SocketStream) -> None:
            with trio.move_on_after(1):
                await stream.receive_some(10)
            await stream.aclose()

        async with trio.open_nursery() as nursery:
            tls_l = await nursery.start(trio.serve_tcp, tls_handler, 0)
            plain_l = await nursery.start(trio.serve_tcp, plain_handler, 0)
            tls_port = tls_l[0].socket.getsockname()[1]
            plain_port = plain_l[0].socket.getsockname()[1]

            def defn(port: int, **kw: object) -> object:
                return from_api({"name": "t", "tcp": f"127.0.0.1:{port}", "interval": "10s", "timeout": "5s", **kw})

            ok = await run_probe(defn(tls_port, tcp_use_tls=True, tls_skip_verify=True))  # type: ignore[arg-type]
            assert ok[0] == "passing", ok
            bad_cert = await run_probe(defn(tls_port, tcp_use_tls=True))  # type: ignore[arg-type]
            assert bad_cert[0] == "critical" and "TLS handshake failed" in bad_cert[1], bad_cert
            no_tls = await run_probe(defn(plain_port, tcp_use_tls=True, tls_skip_verify=True))  # type: ignore[arg-type]
            assert no_tls[0] == "critical", no_tls
            plain = await run_probe(defn(plain_port))  # type: ignore[arg-type]
            assert plain[0] == "passing"  # control: without tcp_use_tls a plain TCP connect passes
            nursery.cancel_scope.cancel()

    trio.run(main)
