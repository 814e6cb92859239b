"""checks/probes.py HTTP probes (h11 over a raw socket) against a real HTTP server on loopback: a
fresh connection per run (no keep-alive, as Consul), 2xx/429/other mapping, output = reason and
body truncated to 4 KB, method/headers/body sent, redirects as Go's client (up to 10, 301/302/303
turn a POST into a GET, 307/308 keep it, disable_redirects stops), refused and slow servers, and
HTTPS with tls_skip_verify and tls_server_name."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path
from typing import Any

import h11
import pytest
import trio
from murmur.checks.definitions import from_api
from murmur.checks.probes import BODY_LIMIT, run_probe


class Server:
    """Answers by path; records each request as (method, target, headers, body)."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        self.connections = 0
        self.tls = tls
        self.sni: list[str | None] = []
        if tls is not None:
            tls.sni_callback = lambda sock, name, ctx: self.sni.append(name)  # type: ignore[assignment,misc]

    def answer(self, method: str, target: str, body: bytes) -> tuple[int, list[tuple[str, str]], bytes, bool]:
        """(status, headers, body, chunked)"""
        parts = target.split("/")
        if target.startswith("/status/"):
            code = int(parts[2])
            return code, [], b"" if code == 204 else b"hello", False
        if target == "/big":
            return 200, [], b"x" * (3 * BODY_LIMIT), True
        if target.startswith("/redirect/"):
            n = int(parts[2])
            return (302, [("Location", f"/redirect/{n - 1}")], b"", False) if n else (200, [], b"done", False)
        if target == "/see-other":
            return 303, [("Location", "/echo")], b"", False
        if target == "/temporary":
            return 307, [("Location", "/echo")], b"", False
        if target == "/to-nowhere":
            return 302, [("Location", "/status/503")], b"", False
        return 200, [], method.encode() + b" " + body, False  # /echo

    async def handle(self, stream: trio.abc.Stream) -> None:
        self.connections += 1
        if self.tls is not None:
            stream = trio.SSLStream(stream, self.tls, server_side=True)
        conn = h11.Connection(h11.SERVER)
        req: Any = None
        body = b""
        try:
            for _ in range(1000):
                ev = conn.next_event()
                if ev is h11.NEED_DATA:
                    conn.receive_data(await stream.receive_some(65536))
                elif isinstance(ev, h11.Request):
                    req = ev
                elif isinstance(ev, h11.Data):
                    body += ev.data
                elif isinstance(ev, (h11.EndOfMessage, h11.ConnectionClosed)):
                    break
            method, target = req.method.decode(), req.target.decode()
            self.requests.append((method, target, {k.decode(): v.decode() for k, v in req.headers}, body))
            if target == "/slow":
                await trio.sleep(5)
            status, headers, payload, chunked = self.answer(method, target, body)
            headers = [*headers, ("Transfer-Encoding", "chunked") if chunked else ("Content-Length", str(len(payload)))]
            out = conn.send(h11.Response(status_code=status, headers=headers))
            if payload and method != "HEAD":
                for i in range(0, len(payload), 1000):
                    out += conn.send(h11.Data(data=payload[i:i + 1000]))
            out += conn.send(h11.EndOfMessage())
            await stream.send_all(out)
            with trio.move_on_after(2):  # keep the connection open: a keep-alive client could reuse it
                while await stream.receive_some(4096):
                    pass
        except (trio.BrokenResourceError, h11.ProtocolError):
            pass
        finally:
            await trio.aclose_forcefully(stream)

    async def serve(self, task_status: trio.TaskStatus[int]) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        task_status.started(listeners[0].socket.getsockname()[1])
        await trio.serve_listeners(self.handle, listeners)


def check(url: str, **extra: Any) -> Any:
    return from_api({"name": "c", "http": url, "interval": "10s", "timeout": "2s", **extra})


def with_server(test: Any, tls: ssl.SSLContext | None = None) -> Server:
    server = Server(tls)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(server.serve)
            await test(f"{'https' if tls else 'http'}://127.0.0.1:{port}", server)
            nursery.cancel_scope.cancel()

    trio.run(main)
    return server


def test_status_mapping_output_and_fresh_connections() -> None:
    async def test(base: str, server: Server) -> None:
        results = [await run_probe(check(f"{base}/status/{code}")) for code in (200, 204, 429, 503, 404, 301)]
        assert [r[0] for r in results] == ["passing", "passing", "warning", "critical", "critical", "critical"]
        assert results[0][1] == f"HTTP GET {base}/status/200: 200 OK Output: hello"
        assert results[2][1].startswith(f"HTTP GET {base}/status/429: 429 Too Many Requests Output:")
        assert server.connections == 6  # one connection per run: no keep-alive reuse

    with_server(test)


def test_body_truncated_to_4kb() -> None:
    async def test(base: str, server: Server) -> None:
        status, output = await run_probe(check(f"{base}/big"))
        assert status == "passing"
        assert output.endswith("Output: " + "x" * BODY_LIMIT)

    with_server(test)


def test_method_headers_and_body_are_sent() -> None:
    async def test(base: str, server: Server) -> None:
        status, output = await run_probe(check(f"{base}/echo?q=1", method="PUT", body='{"a": 1}',
                                               header={"X-Token": ["t1", "t2"], "Accept": ["application/json"]}))
        assert status == "passing" and output.endswith('Output: PUT {"a": 1}')
        method, target, headers, body = server.requests[-1]
        assert (method, target, body) == ("PUT", "/echo?q=1", b'{"a": 1}')
        assert headers["x-token"] == "t2" and headers["accept"] == "application/json"  # dict keeps the last
        assert headers["user-agent"] == "murmur health check" and headers["host"] == base.split("//")[1]
        assert headers["content-length"] == "8"

    server = with_server(test)
    assert len(server.requests) == 1


def test_redirects_followed_as_go() -> None:
    async def test(base: str, server: Server) -> None:
        assert (await run_probe(check(f"{base}/redirect/10")))[0] == "passing"  # 10 redirects: allowed
        status, output = await run_probe(check(f"{base}/redirect/11"))
        assert status == "critical" and "stopped after 10 redirects" in output
        # The final response decides; the output names the configured URL.
        status, output = await run_probe(check(f"{base}/to-nowhere"))
        assert status == "critical" and output.startswith(f"HTTP GET {base}/to-nowhere: 503")
        # 303 turns a POST into a GET without a body; 307 keeps method and body.
        server.requests.clear()
        assert (await run_probe(check(f"{base}/see-other", method="POST", body="b")))[1].endswith("Output: GET ")
        assert (await run_probe(check(f"{base}/temporary", method="POST", body="b")))[1].endswith("Output: POST b")
        assert [r[0] for r in server.requests] == ["POST", "GET", "POST", "POST"]
        # disable_redirects: the 302 itself is the answer (critical: not 2xx).
        status, output = await run_probe(check(f"{base}/redirect/1", disable_redirects=True))
        assert status == "critical" and ": 302 Found" in output

    with_server(test)


def test_refused_and_timeout_are_critical() -> None:
    async def main() -> None:
        s = trio.socket.socket()
        await s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        status, output = await run_probe(check(f"http://127.0.0.1:{port}/"))
        assert status == "critical" and "connection refused" in output
        s.close()

    trio.run(main)

    async def test(base: str, server: Server) -> None:
        t0 = trio.current_time()
        status, output = await run_probe(check(f"{base}/slow", timeout="300ms"))
        assert status == "critical" and "timed out after 0.3s" in output
        assert trio.current_time() - t0 < 3

    with_server(test)


def test_bad_url_and_protocol_errors_are_critical() -> None:
    async def main() -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]

        async def garbage(stream: trio.SocketStream) -> None:
            await stream.send_all(b"NOT HTTP AT ALL\r\n\r\n")
            await trio.aclose_forcefully(stream)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, garbage, listeners)
            status, output = await run_probe(check(f"http://127.0.0.1:{port}/"))
            assert status == "critical" and "ProtocolError" in output
            nursery.cancel_scope.cancel()

    trio.run(main)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")
def test_https_skip_verify_and_server_name(tmp_path: Path) -> None:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=localhost"], check=True, capture_output=True, timeout=60)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(cert), str(key))

    async def test(base: str, server: Server) -> None:
        status, output = await run_probe(check(f"{base}/status/200", tls_skip_verify=True,
                                               tls_server_name="web.example"))
        assert (status, output) == ("passing", f"HTTP GET {base}/status/200: 200 OK Output: hello")
        status, output = await run_probe(check(f"{base}/status/200"))  # self-signed, verified: refused
        assert status == "critical" and "CERTIFICATE_VERIFY_FAILED" in output
        assert server.sni[0] == "web.example"

    with_server(test, ctx)
