"""The async probes: one attempt at an HTTP, TCP or script check, as a (status, output) pair.

This is the one module of checks/ that does I/O (the layering test exempts it). Each probe
bounds its own time with the check's timeout and turns every failure into a critical result
with an explanation; a probe never raises for a failing target.
"""

from __future__ import annotations

import ssl
import subprocess
from typing import TYPE_CHECKING

import trio

from .definitions import CheckDefinition
from .status import CRITICAL, PASSING, WARNING

if TYPE_CHECKING:
    import httpx

BODY_LIMIT = 4096  # bytes of response body kept as output


class HTTPClients:
    """One HTTP client (and so one SSL context) per TLS and redirect setting, shared by every HTTP
    check of an agent: building an SSL context costs milliseconds of CPU, a check run should not.
    Keep-alive is off, as in Consul's HTTP checks: every run opens a fresh connection, so a check
    sees a server that stopped accepting connections."""

    def __init__(self) -> None:
        self.clients: dict[tuple[bool, bool], httpx.AsyncClient] = {}

    def get(self, defn: CheckDefinition) -> httpx.AsyncClient:
        import httpx

        key = (defn.tls_skip_verify, defn.disable_redirects)
        client = self.clients.get(key)
        if client is None:
            client = self.clients[key] = httpx.AsyncClient(
                verify=not defn.tls_skip_verify, follow_redirects=not defn.disable_redirects,
                limits=httpx.Limits(max_keepalive_connections=0))
        return client

    async def aclose(self) -> None:
        clients, self.clients = list(self.clients.values()), {}
        for c in clients:
            await c.aclose()


async def http_probe(defn: CheckDefinition, client: httpx.AsyncClient | None = None) -> tuple[str, str]:
    """2xx passing, 429 warning (Too Many Requests), anything else or no answer critical."""
    import httpx  # lazily: an agent without HTTP checks is spared ~4 MiB of imports

    headers = [(k, v) for k, vals in defn.header.items() for v in vals]
    headers.append(("User-Agent", "murmur health check"))
    own = client is None
    if client is None:
        client = httpx.AsyncClient(verify=not defn.tls_skip_verify, follow_redirects=not defn.disable_redirects)
    extensions = {"sni_hostname": defn.tls_server_name} if defn.tls_server_name else None
    try:
        with trio.move_on_after(defn.timeout) as scope:
            resp = await client.request(defn.method, defn.http, headers=headers,
                                        content=defn.body.encode() if defn.body else None, timeout=defn.timeout,
                                        extensions=extensions)
            body = resp.content[:BODY_LIMIT].decode("utf-8", "replace")
        if scope.cancelled_caught:
            return CRITICAL, f"{defn.method} {defn.http}: timed out after {defn.timeout:g}s"
    except httpx.HTTPError as exc:
        return CRITICAL, f"{defn.method} {defn.http}: {type(exc).__name__}: {exc}{_root_cause(exc)}"
    except OSError as exc:
        return CRITICAL, f"{defn.method} {defn.http}: {exc}"
    finally:
        if own:
            await client.aclose()
    status = PASSING if 200 <= resp.status_code < 300 else WARNING if resp.status_code == 429 else CRITICAL
    return status, f"HTTP {defn.method} {defn.http}: {resp.status_code} {resp.reason_phrase} Output: {body}"


def _root_cause(exc: BaseException) -> str:
    """The OS error underneath a client error ("Connection refused"), which says the most."""
    seen = 0
    cur: BaseException | None = exc
    while cur is not None and seen < 10:
        if isinstance(cur, OSError) and cur.strerror:
            return f" ({cur.strerror})"
        if isinstance(cur, BaseExceptionGroup) and cur.exceptions:
            cur = cur.exceptions[0]
        else:
            cur = cur.__cause__ or cur.__context__
        seen += 1
    return ""


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
            stream: trio.abc.Stream = await trio.open_tcp_stream(host, int(port))
            if defn.tcp_use_tls:
                tls = trio.SSLStream(stream, tls_context(defn.tls_skip_verify),
                                     server_hostname=defn.tls_server_name or host)
                try:
                    await tls.do_handshake()
                except trio.BrokenResourceError as exc:
                    await stream.aclose()
                    cause = exc.__cause__ or exc
                    return CRITICAL, f"TCP connect {defn.tcp}: TLS handshake failed: {cause}"
                stream = tls
        await trio.aclose_forcefully(stream)
    except trio.TooSlowError:
        return CRITICAL, f"TCP connect {defn.tcp}: timed out after {defn.timeout:g}s"
    except (OSError, ValueError) as exc:
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


async def run_probe(defn: CheckDefinition, http: HTTPClients | None = None) -> tuple[str, str]:
    """Dispatch on the check's kind; kinds without a probe yet say so as critical output."""
    if defn.kind == "http":
        return await http_probe(defn, http.get(defn) if http is not None else None)
    if defn.kind == "tcp":
        return await tcp_probe(defn)
    if defn.kind == "script":
        return await script_probe(defn)
    if defn.kind == "grpc":
        return await grpc_probe(defn)
    return CRITICAL, f"{defn.kind} checks are not supported yet"
