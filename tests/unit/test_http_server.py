"""agent/http/server.py: the h11 server driven over trio memory streams with a small Router.

Every test runs on MockClock with autojump, so timeouts cost no wall time and a hang fails fast.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import trio
import trio.testing
from murmur.agent.http import server as http_server
from murmur.agent.http.server import HTTPError, HTTPServer, Request, Response, Router

# ---- a tiny client that parses responses itself (independent of h11) ----------------------------


@dataclass
class Resp:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> object:
        return json.loads(self.body)


class Client:
    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.buf = b""

    async def send(self, raw: bytes) -> None:
        await self.stream.send_all(raw)

    async def _fill(self) -> None:
        data = await self.stream.receive_some(65536)
        if not data:
            raise EOFError("server closed the connection")
        self.buf += data

    async def response(self, head: bool = False) -> Resp:
        while b"\r\n\r\n" not in self.buf:
            await self._fill()
        head_bytes, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head_bytes.decode("latin-1").split("\r\n")
        assert lines[0].startswith("HTTP/1.1 "), lines[0]
        headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
        size = 0 if head else int(headers.get("content-length", "0"))
        while len(self.buf) < size:
            await self._fill()
        body, self.buf = self.buf[:size], self.buf[size:]
        return Resp(int(lines[0].split()[1]), headers, body)

    async def request(self, method: str, target: str, body: bytes = b"", headers: str = "") -> Resp:
        await self.send(f"{method} {target} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n{headers}\r\n"
                        .encode() + body)
        return await self.response(head=method == "HEAD")

    async def closed_by_server(self) -> bool:
        """True once the server has closed its side (and sent nothing more)."""
        while True:
            data = await self.stream.receive_some(65536)
            if not data:
                return self.buf == b""
            self.buf += data


# ---- the router under test -----------------------------------------------------------------------
class App:
    def __init__(self) -> None:
        self.router = Router()
        self.cancelled = 0
        self.finished = 0
        r = self.router
        r.add("GET", r"/v1/echo", self.echo)
        r.add("PUT POST", r"/v1/echo", self.echo)
        r.add("PUT", r"/v1/json", self.body_json)
        r.add("GET DELETE", r"/v1/kv/(?P<key>.+)", self.kv)
        r.add("GET", r"/v1/boom", self.boom)
        r.add("GET", r"/v1/teapot", self.teapot)
        r.add("GET", r"/v1/block", self.block)
        r.add("GET", r"/v1/slow", self.slow)

    async def echo(self, req: Request, m: object) -> Response:
        return Response.json({"method": req.method, "path": req.path, "query": req.query,
                              "passing": req.flag("passing"), "body": req.body.decode()})

    async def body_json(self, req: Request, m: object) -> Response:
        return Response.json({"got": req.json()})

    async def kv(self, req: Request, m: object) -> Response:
        return Response.json({"key": m["key"], "method": req.method})  # type: ignore[index]

    async def boom(self, req: Request, m: object) -> Response:
        raise RuntimeError("handler bug")

    async def teapot(self, req: Request, m: object) -> Response:
        raise HTTPError(418, "short and stout", [("X-Extra", "yes")])

    async def block(self, req: Request, m: object) -> Response:
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            self.cancelled += 1
            raise
        raise AssertionError("unreachable")

    async def slow(self, req: Request, m: object) -> Response:
        await trio.sleep(5)
        self.finished += 1
        return Response.json("done")


@pytest.fixture
def app() -> App:
    return App()


def connect(nursery: trio.Nursery, server: HTTPServer) -> Client:
    client, srv = trio.testing.memory_stream_pair()
    nursery.start_soon(server.handle_connection, srv)
    return Client(client)


# ---- routing -------------------------------------------------------------------------------------
async def test_routing_and_query(app: App, autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            c = connect(nursery, HTTPServer(app.router))
            r = await c.request("GET", "/v1/echo?passing&tag=a&tag=b&x=%20y")
            assert r.status == 200 and r.headers["content-type"] == "application/json"
            assert r.json() == {"method": "GET", "path": "/v1/echo", "query": {"passing": [""], "tag": ["a", "b"],
                                                                               "x": [" y"]},
                                "passing": True, "body": ""}
            assert b'": ' not in r.body and b", " not in r.body  # compact JSON by default
            r = await c.request("GET", "/v1/kv/a/b%2Fc")
            assert r.json() == {"key": "a/b/c", "method": "GET"}
            r = await c.request("DELETE", "/v1/kv/k")
            assert r.json() == {"key": "k", "method": "DELETE"}
            r = await c.request("POST", "/v1/echo", b"payload")
            assert r.json()["body"] == "payload"
            await c.stream.aclose()


async def test_404_and_405(app: App, autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            c = connect(nursery, HTTPServer(app.router))
            r = await c.request("GET", "/v1/nope")
            assert r.status == 404 and b"/v1/nope" in r.body
            r = await c.request("GET", "/v1/echo/extra")  # patterns match the whole path
            assert r.status == 404
            r = await c.request("DELETE", "/v1/echo")
            assert r.status == 405 and b"DELETE" in r.body
            r = await c.request("PUT", "/v1/kv/x")
            assert r.status == 405
            r = await c.request("GET", "/v1/echo")  # positive control on the same connection
            assert r.status == 200
            await c.stream.aclose()


async def test_handler_errors(app: App, autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            c = connect(nursery, HTTPServer(app.router))
            r = await c.request("GET", "/v1/boom")
            assert r.status == 500 and b"handler bug" not in r.body  # no internals leak to clients
            r = await c.request("GET", "/v1/teapot")
            assert (r.status, r.body, r.headers["x-extra"]) == (418, b"short and stout", "yes")
            r = await c.request("GET", "/v1/echo")  # the connection survives both
            assert r.status == 200
            await c.stream.aclose()


async def test_json_body_decode_error_is_400_with_message(app: App, autojump_clock: trio.testing.MockClock
                                                          ) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            c = connect(nursery, HTTPServer(app.router))
            r = await c.request("PUT", "/v1/json", b'{"Name": ')
            assert r.status == 400
            assert r.body.startswith(b"Request decode failed")
            r = await c.request("PUT", "/v1/json", b"\xff\xfe not utf-8")
            assert r.status == 400
            r = await c.request("PUT", "/v1/json", b'{"Name": "x"}')  # positive control
            assert (r.status, r.json()) == (200, {"got": {"Name": "x"}})
            r = await c.request("PUT", "/v1/json", b"  ")  # empty body is None
            assert r.json() == {"got": None}
            await c.stream.aclose()


async def test_head_has_headers_but_no_body(app: App, autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            c = connect(nursery, HTTPServer(app.router))
            get = await c.request("GET", "/v1/echo")
            head = await c.request("HEAD", "/v1/echo")
            assert head.status == 200 and head.body == b""
            assert int(head.headers["content-length"]) == len(get.body.replace(b'"GET"', b'"HEAD"'))
            # nothing else was sent: the next response parses cleanly from the first byte
            r = await c.request("GET", "/v1/kv/after-head")
            assert r.json() == {"key": "after-head", "method": "GET"}
            await c.stream.aclose()


async def test_keep_alive_and_pipelining(app: App, autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            c = connect(nursery, HTTPServer(app.router))
            assert (await c.request("GET", "/v1/kv/one")).json()["key"] == "one"
            assert (await c.request("GET", "/v1/kv/two")).json()["key"] == "two"
            # two requests in one write
            await c.send(b"GET /v1/kv/three HTTP/1.1\r\nHost: x\r\n\r\nGET /v1/kv/four HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await c.response()).json()["key"] == "three"
            assert (await c.response()).json()["key"] == "four"
            # Connection: close is honoured
            r = await c.request("GET", "/v1/kv/last", headers="Connection: close\r\n")
            assert r.json()["key"] == "last"
            assert await c.closed_by_server()


async def test_http10_closes_after_response(app: App, autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            c = connect(nursery, HTTPServer(app.router))
            await c.send(b"GET /v1/kv/old HTTP/1.0\r\n\r\n")
            r = await c.response()
            assert r.json() == {"key": "old", "method": "GET"}
            assert await c.closed_by_server()


async def test_oversized_body_is_413(app: App, autojump_clock: trio.testing.MockClock,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http_server, "MAX_BODY_BYTES", 100)
    server = HTTPServer(app.router)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            c = connect(nursery, server)
            r = await c.request("PUT", "/v1/echo", b"x" * 100)  # positive control: at the limit
            assert r.status == 200 and len(r.json()["body"]) == 100  # type: ignore[index]
            # a declared length over the limit is refused before the body is read
            await c.send(b"PUT /v1/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 101\r\n\r\n")
            r = await c.response()
            assert r.status == 413
            assert await c.closed_by_server()

            # a chunked body that grows past the limit
            c = connect(nursery, server)
            await c.send(b"PUT /v1/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
            for _ in range(3):
                await c.send(b"40\r\n" + b"y" * 64 + b"\r\n")
            r = await c.response()
            assert r.status == 413
            await c.stream.aclose()


async def test_garbage_request_line_is_400_and_others_are_served(app: App,
                                                                autojump_clock: trio.testing.MockClock) -> None:
    server = HTTPServer(app.router)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            good = connect(nursery, server)
            assert (await good.request("GET", "/v1/kv/a")).status == 200
            for garbage in (b"\x16\x03\x01\x02\x00\x01\x00\r\n\r\n", b"HELLO\r\n\r\n", b"GET / HTTP/9.9 x\r\n\r\n"):
                bad = connect(nursery, server)
                await bad.send(garbage)
                r = await bad.response()
                assert r.status == 400, garbage
                assert await bad.closed_by_server()
            # the earlier connection and new ones still work
            assert (await good.request("GET", "/v1/kv/b")).json()["key"] == "b"
            fresh = connect(nursery, server)
            assert (await fresh.request("GET", "/v1/kv/c")).json()["key"] == "c"
            await good.stream.aclose()
            await fresh.stream.aclose()
    assert server.conns == {}


async def test_blocked_handler_is_cancelled_when_client_closes(app: App,
                                                               autojump_clock: trio.testing.MockClock) -> None:
    server = HTTPServer(app.router)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            c = connect(nursery, server)
            await c.send(b"GET /v1/block HTTP/1.1\r\nHost: x\r\n\r\n")
            await trio.sleep(30)
            assert app.cancelled == 0  # still waiting while the client is there
            await c.stream.aclose()
        # the nursery only exits once handle_connection has returned
    assert app.cancelled == 1
    assert server.conns == {}


async def test_slow_handler_answers_while_client_waits(app: App, autojump_clock: trio.testing.MockClock) -> None:
    """Positive control for the cancellation test: the EOF watcher does not cut live clients short."""
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            c = connect(nursery, HTTPServer(app.router))
            t0 = trio.current_time()
            r = await c.request("GET", "/v1/slow")
            assert (r.status, r.json(), app.finished) == (200, "done", 1)
            assert trio.current_time() - t0 == pytest.approx(5)
            await c.stream.aclose()


async def test_pretty(app: App, autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            c = connect(nursery, HTTPServer(app.router))
            compact = await c.request("GET", "/v1/kv/p")
            pretty = await c.request("GET", "/v1/kv/p?pretty")
            assert compact.body == b'{"key":"p","method":"GET"}'
            assert pretty.body == json.dumps({"key": "p", "method": "GET"}, indent=4).encode()
            assert int(pretty.headers["content-length"]) == len(pretty.body)
            text = await c.request("GET", "/v1/teapot?pretty")  # non-JSON bodies are left alone
            assert text.body == b"short and stout"
            await c.stream.aclose()


async def test_idle_connection_is_closed(app: App, autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            c = connect(nursery, HTTPServer(app.router))
            assert (await c.request("GET", "/v1/kv/a")).status == 200
            t0 = trio.current_time()
            assert await c.closed_by_server()
            assert trio.current_time() - t0 == pytest.approx(http_server.IDLE_TIMEOUT)


async def test_slow_request_body_times_out_with_408(app: App, autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            c = connect(nursery, HTTPServer(app.router))
            t0 = trio.current_time()
            await c.send(b"PUT /v1/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
            r = await c.response()
            assert r.status == 408
            assert trio.current_time() - t0 == pytest.approx(http_server.READ_TIMEOUT)
            assert await c.closed_by_server()


async def test_connection_cap_per_client(app: App, autojump_clock: trio.testing.MockClock) -> None:
    server = HTTPServer(app.router, max_conns_per_client=1)  # memory streams all count as client ""
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            first = connect(nursery, server)
            assert (await first.request("GET", "/v1/kv/a")).status == 200
            second = connect(nursery, server)
            r = await second.response()
            assert r.status == 429
            assert await second.closed_by_server()
            await first.stream.aclose()
            await trio.sleep(1)
            third = connect(nursery, server)  # a slot is free again
            assert (await third.request("GET", "/v1/kv/b")).status == 200
            await third.stream.aclose()
    assert server.conns == {}


async def test_real_loopback_socket(app: App) -> None:
    """The same server on a real socket, as the agent runs it."""
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(HTTPServer(app.router).serve, "127.0.0.1", 0)
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            c = Client(stream)
            r = await c.request("GET", "/v1/kv/sock")
            assert r.json() == {"key": "sock", "method": "GET"}
            await stream.aclose()
            nursery.cancel_scope.cancel()


async def test_huge_request_head_is_431(app: App, autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            c = connect(nursery, HTTPServer(app.router))
            r = await c.request("GET", "/v1/echo", headers="X-Big: " + "a" * 1000 + "\r\n")
            assert r.status == 200  # positive control: a large but sane header
            await c.send(b"GET /v1/echo HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (3 * http_server.MAX_HEADER_BYTES)
                         + b"\r\n\r\n")
            r = await c.response()
            assert r.status == 431
            assert await c.closed_by_server()


async def test_slowloris_head_is_cut_off_after_read_timeout(app: App, autojump_clock: trio.testing.MockClock) -> None:
    """A client trickling its request head one byte a second keeps the connection only for
    read_timeout after its first byte (not idle_timeout, not forever); a normal client is served
    meanwhile, and an idle keep-alive connection still gets the whole idle_timeout."""
    server = HTTPServer(app.router)
    server.read_timeout, server.idle_timeout = 5.0, 90.0
    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            slow = connect(nursery, server)
            t0 = trio.current_time()
            head = b"GET /v1/echo HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 100
            sent = 0
            with trio.move_on_after(60):
                for byte in head:
                    try:
                        await slow.send(bytes([byte]))
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        break
                    sent += 1
                    if server.stats["slow_requests"]:
                        break
                    await trio.sleep(1)
            assert server.stats["slow_requests"] == 1
            assert sent < len(head)
            r = await slow.response()
            assert r.status == 408
            assert trio.current_time() - t0 == pytest.approx(5.0, abs=1.01)
            # Positive control: a client that sends its request at once is served.
            fast = connect(nursery, server)
            assert (await fast.request("GET", "/v1/echo")).status == 200
            t1 = trio.current_time()
            assert await fast.closed_by_server()  # idle: closed after idle_timeout, not read_timeout
            assert trio.current_time() - t1 == pytest.approx(90.0)


async def test_a_request_target_urlsplit_refuses_is_a_400_not_the_end_of_the_server(
        app: App, autojump_clock: trio.testing.MockClock) -> None:
    """Found while fuzzing (tests/fuzz): `GET //[x` made urlsplit raise ValueError ("Invalid IPv6
    URL") out of the connection handler, which ended trio.serve_listeners and the agent."""
    server = HTTPServer(app.router)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for target in ("//[x", "http://[::1/v1/kv/a"):
                bad = connect(nursery, server)
                await bad.send(f"GET {target} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
                r = await bad.response()
                assert r.status == 400 and b"bad request target" in r.body, target
            fresh = connect(nursery, server)  # positive control: the server still answers
            assert (await fresh.request("GET", "/v1/kv/c")).json()["key"] == "c"
            await fresh.stream.aclose()
    assert server.conns == {}
