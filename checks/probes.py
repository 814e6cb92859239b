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


async def run_probe(defn: CheckDefinition, http: HTTPClients | None = None) -> tuple[str, str]:
    """Dispatch on the check's kind; kinds without a probe yet say so as critical output."""
    if defn.kind == "http":
        return await http_probe(defn, http.get(defn) if http is not None else None)
    if defn.kind == "tcp":
        return await tcp_probe(defn)
    if defn.kind == "script":
        return await script_probe(defn)
    return CRITICAL, f"{defn.kind} checks are not supported yet"
