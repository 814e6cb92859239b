"""The async probes: one attempt at an HTTP, TCP or script check, as a (status, output) pair.

This is the one module of checks/ that does I/O (the layering test exempts it). Each probe
bounds its own time with the check's timeout and turns every failure into a critical result
with an explanation; a probe never raises for a failing target.
"""

from __future__ import annotations

import errno
import functools
import ipaddress
import os
import socket
import ssl
import subprocess
import urllib.parse
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import trio

from .definitions import CheckDefinition
from .status import CRITICAL, PASSING, WARNING

BODY_LIMIT = 4096  # bytes of response body kept as output


REDIRECT_LIMIT = 10  # as Go's http.Client: the 11th redirect is an error
REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})
ACCEPT = "text/plain, text/*, */*"  # Consul's Accept header for HTTP checks
USER_AGENT = "murmur health check"
RECV_SIZE = 65536


@dataclass(frozen=True)
class _URL:
    scheme: str
    host: str  # without brackets
    port: int
    target: str  # path and query, as sent in the request line
    authority: str  # the Host header


@functools.lru_cache(maxsize=4096)
def _parse_url(url: str) -> _URL:
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"unsupported protocol scheme {parts.scheme!r}")
    host = parts.hostname or ""
    if not host:
        raise ValueError("no host in URL")
    port = parts.port or (443 if scheme == "https" else 80)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    netloc = parts.netloc.rpartition("@")[2]
    return _URL(scheme, host, port, target, netloc)


@functools.lru_cache(maxsize=4096)
def _numeric(host: str, port: int) -> tuple[int, tuple[Any, ...]] | None:
    """(family, sockaddr) of an IP literal; None for a name, which needs resolving."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    return (socket.AF_INET6, (host, port, 0, 0)) if ip.version == 6 else (socket.AF_INET, (host, port))


def _close(sock: socket.socket) -> None:
    trio.lowlevel.notify_closing(sock)
    sock.close()


class ConnectError(OSError):
    def __str__(self) -> str:
        return str(self.strerror)


async def _connect(host: str, port: int) -> socket.socket:
    """A connected non-blocking stdlib socket, without trio's stream objects (a check run is mostly
    connection cost, so this is the hot path). Names are resolved in a thread, IP literals not at all."""
    numeric = _numeric(host, port)
    if numeric is not None:
        addrs = [numeric]
    else:
        infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        addrs = [(fam, sa) for fam, _, _, _, sa in infos]
        if not addrs:
            raise OSError(f"no address for {host}")
    last: OSError | None = None
    for family, sockaddr in addrs:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            err = sock.connect_ex(sockaddr)
            if err == errno.EINPROGRESS:
                await trio.lowlevel.wait_writable(sock)
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                raise OSError(err, os.strerror(err))
        except OSError as exc:
            _close(sock)
            last = exc
            continue
        except BaseException:
            _close(sock)
            raise
        return sock
    assert last is not None
    if last.strerror:  # Go's wording: "dial tcp 127.0.0.1:1: connect: connection refused"
        addr = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        raise ConnectError(last.errno, f"dial tcp {addr}: connect: {last.strerror.lower()}")
    raise last


class _Plain:
    """send_all / receive_some on a raw non-blocking socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    async def send_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                n = self.sock.send(view)
            except BlockingIOError:
                await trio.lowlevel.wait_writable(self.sock)
                continue
            view = view[n:]

    async def receive_some(self) -> bytes:
        while True:
            try:
                return self.sock.recv(RECV_SIZE)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(self.sock)

    async def aclose(self) -> None:
        _close(self.sock)


class _TLS:
    def __init__(self, stream: trio.SSLStream[trio.SocketStream]) -> None:
        self.stream = stream

    async def send_all(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def receive_some(self) -> bytes:
        return bytes(await self.stream.receive_some(RECV_SIZE))

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)


async def _open(url: _URL, defn: CheckDefinition) -> _Plain | _TLS:
    sock = await _connect(url.host, url.port)
    if url.scheme == "http":
        return _Plain(sock)
    stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
    tls = trio.SSLStream(stream, tls_context(defn.tls_skip_verify), server_hostname=defn.tls_server_name or url.host)
    try:
        await tls.do_handshake()
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return _TLS(tls)


class _Answer:
    __slots__ = ("status", "reason", "location", "body")

    def __init__(self) -> None:
        self.status = 0
        self.reason = ""
        self.location = ""
        self.body = b""


async def _exchange(url: _URL, method: str, headers: list[tuple[str, str]], body: bytes,
                    defn: CheckDefinition) -> _Answer:
    """One request on a fresh connection: the status, reason, Location and up to BODY_LIMIT bytes of body."""
    import h11

    conn = await _open(url, defn)
    try:
        h = h11.Connection(h11.CLIENT)
        data = h.send(h11.Request(method=method, target=url.target, headers=headers))
        if body:
            data += h.send(h11.Data(data=body))
        data += h.send(h11.EndOfMessage())
        await conn.send_all(data)
        ans = _Answer()
        chunks: list[bytes] = []
        size = 0
        for _ in range(100_000):  # bounded: each turn takes an event or RECV_SIZE bytes
            event = h.next_event()
            if event is h11.NEED_DATA:
                h.receive_data(await conn.receive_some())
            elif isinstance(event, h11.Response):
                ans.status, ans.reason = event.status_code, event.reason.decode("latin-1") or _phrase(event.status_code)
                for name, value in event.headers:
                    if name == b"location":
                        ans.location = value.decode("latin-1")
            elif isinstance(event, h11.Data):
                chunks.append(event.data)
                size += len(event.data)
                if size >= BODY_LIMIT:
                    break  # enough for the output: no need to read the rest
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                break
        ans.body = b"".join(chunks)[:BODY_LIMIT]
        return ans
    finally:
        await conn.aclose()


def _phrase(code: int) -> str:
    """The standard reason phrase, for a server that sent none."""
    try:
        return HTTPStatus(code).phrase
    except ValueError:
        return ""


def _request_headers(defn: CheckDefinition, url: _URL, body: bytes) -> list[tuple[str, str]]:
    given = {k.lower() for k in defn.header}
    headers: list[tuple[str, str]] = []
    if "host" not in given:
        headers.append(("Host", url.authority))
    headers += [(k, v) for k, vals in defn.header.items() for v in vals]
    if "user-agent" not in given:
        headers.append(("User-Agent", USER_AGENT))
    if "accept" not in given:
        headers.append(("Accept", ACCEPT))
    headers.append(("Connection", "close"))
    if body or defn.method.upper() in ("POST", "PUT", "PATCH"):
        headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
        headers.append(("Content-Length", str(len(body))))
    return headers


async def http_probe(defn: CheckDefinition) -> tuple[str, str]:
    """2xx passing, 429 warning (Too Many Requests), anything else or no answer critical. Redirects
    are followed (up to 10) unless disable_redirects; 301/302/303 turn the request into a GET without
    a body (except for a GET or HEAD), as Go's client does. h11 over a raw socket: no client object,
    a few hundred microseconds of CPU per run (httpx took several milliseconds)."""
    import h11

    label = f"{defn.method} {defn.http}"
    method, body = defn.method, defn.body.encode() if defn.body else b""
    current = defn.http
    try:
        with trio.move_on_after(defn.timeout) as scope:
            for redirects in range(REDIRECT_LIMIT + 1):
                url = _parse_url(current)
                ans = await _exchange(url, method, _request_headers(defn, url, body), body, defn)
                if defn.disable_redirects or ans.status not in REDIRECT_CODES or not ans.location:
                    break
                if redirects == REDIRECT_LIMIT:
                    return CRITICAL, f"{label}: stopped after {REDIRECT_LIMIT} redirects"
                current = urllib.parse.urljoin(current, ans.location)
                if ans.status in (301, 302, 303) and method.upper() not in ("GET", "HEAD"):
                    method, body = "GET", b""
        if scope.cancelled_caught:
            return CRITICAL, f"{label}: timed out after {defn.timeout:g}s"
    except OSError as exc:
        return CRITICAL, f"{label}: {exc}"
    except trio.BrokenResourceError as exc:  # a TLS handshake or stream failure
        return CRITICAL, f"{label}: {exc.__cause__ or exc}"
    except (h11.ProtocolError, ValueError) as exc:
        return CRITICAL, f"{label}: {type(exc).__name__}: {exc}"
    status = PASSING if 200 <= ans.status < 300 else WARNING if ans.status == 429 else CRITICAL
    text = ans.body.decode("utf-8", "replace")
    return status, f"HTTP {defn.method} {defn.http}: {ans.status} {ans.reason} Output: {text}"


_TLS_CONTEXTS: dict[bool, ssl.SSLContext] = {}


def tls_context(skip_verify: bool) -> ssl.SSLContext:
    """One client SSL context per verify setting, shared by every TLS probe (building one costs
    milliseconds: the system CA bundle is parsed each time)."""
    ctx = _TLS_CONTEXTS.get(skip_verify)
    if ctx is None:
        ctx = ssl.create_default_context()
        if skip_verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        _TLS_CONTEXTS[skip_verify] = ctx
    return ctx


async def tcp_probe(defn: CheckDefinition) -> tuple[str, str]:
    """Passing when a TCP connection opens within the timeout (and with tcp_use_tls, when the TLS
    handshake succeeds, certificate checked unless tls_skip_verify)."""
    host, _, port = defn.tcp.rpartition(":")
    host = host.strip("[]")
    try:
        with trio.fail_after(defn.timeout):
            sock = await _connect(host, int(port))
            if not defn.tcp_use_tls:
                _close(sock)
                return PASSING, f"TCP connect {defn.tcp}: Success"
            stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
            tls = trio.SSLStream(stream, tls_context(defn.tls_skip_verify), server_hostname=defn.tls_server_name or host)
            try:
                await tls.do_handshake()
            except trio.BrokenResourceError as exc:
                await trio.aclose_forcefully(stream)
                cause = exc.__cause__ or exc
                return CRITICAL, f"TCP connect {defn.tcp}: TLS handshake failed: {cause}"
            except BaseException:
                await trio.aclose_forcefully(stream)
                raise
        await trio.aclose_forcefully(tls)
    except trio.TooSlowError:
        return CRITICAL, f"TCP connect {defn.tcp}: timed out after {defn.timeout:g}s"
    except OSError as exc:
        return CRITICAL, f"TCP connect {defn.tcp}: {exc}"
    except ValueError as exc:
        return CRITICAL, f"TCP connect {defn.tcp}: {exc}"
    return PASSING, f"TCP connect {defn.tcp}: Success"


async def script_probe(defn: CheckDefinition) -> tuple[str, str]:
    """Exit 0 passing, 1 warning, anything else (or a timeout) critical, as Consul's script checks."""
    try:
        with trio.fail_after(defn.timeout):
            proc = await trio.run_process(list(defn.args), capture_stdout=True, stderr=subprocess.STDOUT,
                                          check=False, stdin=subprocess.DEVNULL)
    except trio.TooSlowError:
        return CRITICAL, f"Timed out ({defn.timeout:g}s) running check"
    except OSError as exc:
        return CRITICAL, f"could not run {defn.args[0]!r}: {exc}"
    out = proc.stdout[:BODY_LIMIT].decode("utf-8", "replace")
    status = PASSING if proc.returncode == 0 else WARNING if proc.returncode == 1 else CRITICAL
    return status, out


GRPC_SERVING = 1  # grpc.health.v1.HealthCheckResponse.ServingStatus
GRPC_STATUS_NAMES = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}
_GRPC_TLS_CONTEXTS: dict[bool, ssl.SSLContext] = {}


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def grpc_health_request(service: str) -> bytes:
    """A length-prefixed gRPC message: HealthCheckRequest{service = 1}."""
    raw = service.encode()
    msg = b"\x0a" + _varint(len(raw)) + raw if raw else b""
    return b"\x00" + len(msg).to_bytes(4, "big") + msg


def grpc_serving_status(body: bytes) -> int:
    """HealthCheckResponse.status (field 1, varint) from a length-prefixed gRPC message; 0 if absent."""
    if len(body) < 5:
        raise ValueError("short gRPC message")
    msg = body[5:5 + int.from_bytes(body[1:5], "big")]
    i = 0
    while i < len(msg):
        key = msg[i]
        i += 1
        shift = value = 0
        while True:  # every field of this message is a varint; others are skipped by wire type below
            b = msg[i]
            i += 1
            value |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        if key == 0x08:
            return value
        if key & 7 == 2:  # a length-delimited field we do not know: skip it
            i += value
    return 0


def _grpc_tls_context(skip_verify: bool) -> ssl.SSLContext:
    ctx = _GRPC_TLS_CONTEXTS.get(skip_verify)
    if ctx is None:
        ctx = ssl.create_default_context()
        if skip_verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(["h2"])
        _GRPC_TLS_CONTEXTS[skip_verify] = ctx
    return ctx


async def grpc_probe(defn: CheckDefinition) -> tuple[str, str]:
    """The standard gRPC health protocol (grpc.health.v1.Health/Check) over HTTP/2: SERVING is
    passing; any other status, a gRPC error or no answer is critical. `grpc` is host:port[/service]."""
    import h2.config
    import h2.connection
    import h2.events

    target, _, service = defn.grpc.partition("/")
    host, _, port = target.rpartition(":")
    host = host.strip("[]")
    label = f"gRPC check {defn.grpc}"
    stream: trio.abc.Stream | None = None
    try:
        with trio.fail_after(defn.timeout):
            stream = await trio.open_tcp_stream(host, int(port))
            if defn.grpc_use_tls:
                tls = trio.SSLStream(stream, _grpc_tls_context(defn.tls_skip_verify),
                                     server_hostname=defn.tls_server_name or host)
                stream = tls
                await tls.do_handshake()
            conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
            conn.initiate_connection()
            sid = conn.get_next_available_stream_id()
            conn.send_headers(sid, [(":method", "POST"), (":scheme", "https" if defn.grpc_use_tls else "http"),
                                    (":path", "/grpc.health.v1.Health/Check"), (":authority", target),
                                    ("content-type", "application/grpc"), ("te", "trailers"),
                                    ("user-agent", "murmur health check")])
            conn.send_data(sid, grpc_health_request(service), end_stream=True)
            await stream.send_all(conn.data_to_send())
            body = b""
            grpc_status: str | None = None
            grpc_message = ""
            for _ in range(10_000):  # bounded: a health answer is a handful of frames
                data = await stream.receive_some(65536)
                if not data:
                    return CRITICAL, f"{label}: connection closed before an answer"
                for ev in conn.receive_data(data):
                    if isinstance(ev, (h2.events.ResponseReceived, h2.events.TrailersReceived)) and ev.stream_id == sid:
                        headers = {str(k): str(v) for k, v in ev.headers or []}
                        if isinstance(ev, h2.events.ResponseReceived) and headers.get(":status") != "200":
                            return CRITICAL, f"{label}: HTTP status {headers.get(':status')}"
                        if "grpc-status" in headers:
                            grpc_status, grpc_message = headers["grpc-status"], headers.get("grpc-message", "")
                    elif isinstance(ev, h2.events.DataReceived) and ev.stream_id == sid:
                        body += ev.data
                        conn.acknowledge_received_data(ev.flow_controlled_length, sid)
                    elif isinstance(ev, h2.events.StreamReset) and ev.stream_id == sid:
                        return CRITICAL, f"{label}: stream reset (error code {ev.error_code})"
                    elif isinstance(ev, h2.events.ConnectionTerminated):
                        return CRITICAL, f"{label}: connection terminated (error code {ev.error_code})"
                pending = conn.data_to_send()
                if pending:
                    await stream.send_all(pending)
                if grpc_status is not None:
                    break
    except trio.TooSlowError:
        return CRITICAL, f"{label}: timed out after {defn.timeout:g}s"
    except (OSError, ValueError, trio.BrokenResourceError) as exc:
        return CRITICAL, f"{label}: {exc.__cause__ or exc}"
    except Exception as exc:  # h2 protocol errors from a peer that does not speak HTTP/2
        return CRITICAL, f"{label}: {type(exc).__name__}: {exc}"
    finally:
        if stream is not None:
            await trio.aclose_forcefully(stream)
    if grpc_status != "0":
        return CRITICAL, f"{label}: gRPC status {grpc_status} {grpc_message}".rstrip()
    try:
        status = grpc_serving_status(body)
    except (ValueError, IndexError) as exc:
        return CRITICAL, f"{label}: bad health response: {exc}"
    name = GRPC_STATUS_NAMES.get(status, str(status))
    if status == GRPC_SERVING:
        return PASSING, f"{label}: {name}"
    return CRITICAL, f"{label}: {name}"


async def run_probe(defn: CheckDefinition) -> tuple[str, str]:
    """Dispatch on the check's kind; kinds without a probe yet say so as critical output."""
    if defn.kind == "http":
        return await http_probe(defn)
    if defn.kind == "tcp":
        return await tcp_probe(defn)
    if defn.kind == "script":
        return await script_probe(defn)
    if defn.kind == "grpc":
        return await grpc_probe(defn)
    return CRITICAL, f"{defn.kind} checks are not supported yet"
