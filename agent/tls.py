"""TLS for server RPC (port 8300) and the HTTPS API (8501): SSL contexts from the `tls.*` keys,
rebuilt on SIGHUP, and the outgoing side of server RPC.

Keys (conventions page; Consul's meaning):

- `tls.defaults.ca_file`, `cert_file`, `key_file`: PEM files. A cert and key turn TLS on for the
  listeners that can use it (the server port accepts TLS, HTTPS can listen).
- `tls.defaults.verify_incoming`: peers must present a certificate signed by `ca_file`; on the
  server port, plain connections (first byte not 0x16) are refused. Off during a rollout: both.
- `tls.defaults.verify_outgoing`: this agent's own connections to servers use TLS, verifying the
  server's certificate against `ca_file`.
- `tls.internal_rpc.verify_server_hostname`: the server's certificate must also name
  `server.<datacenter>.<domain>`, so a client certificate from the same CA cannot pose as a server.

`reload()` reads the files again: new connections use the new certificates; a file that cannot be
loaded keeps the previous contexts (logged). Nothing here logs key material.
"""

from __future__ import annotations

import logging
import ssl
import time
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from .config import RuntimeConfig

log = logging.getLogger("murmur.tls")

HANDSHAKE_TIMEOUT = 5.0  # seconds (Consul's limits.rpc_handshake_timeout / https_handshake_timeout)


class TLSConfigError(Exception):
    """The tls.* keys or files cannot be used; the message names the file and the reason."""


class TLSHandshakeFailed(ConnectionError):
    """An outgoing TLS handshake failed (the peer's certificate, or plaintext where TLS was due)."""


class PrefixedStream(trio.abc.Stream):
    """A stream whose first bytes were already read (the mux's peek): they are served first."""

    def __init__(self, stream: trio.abc.Stream, prefix: bytes) -> None:
        self.stream = stream
        self.prefix = prefix

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if self.prefix:
            n = len(self.prefix) if max_bytes is None else max_bytes
            out, self.prefix = self.prefix[:n], self.prefix[n:]
            return out
        return await self.stream.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.stream.aclose()


LOG_REPEAT = 30.0  # seconds: the same refusal (peer host and reason) is logged once per this


class _Repeats:
    """Log one line per (peer, reason) per LOG_REPEAT: a misconfigured agent retrying every few
    hundred milliseconds must not flood the log. Suppressed lines are counted."""

    def __init__(self) -> None:
        self.last: dict[tuple[str, str], float] = {}
        self.suppressed = 0

    def should_log(self, peer: str, reason: str) -> bool:
        now = time.monotonic()
        key = (peer, reason)
        if now - self.last.get(key, -LOG_REPEAT) < LOG_REPEAT:
            self.suppressed += 1
            return False
        if len(self.last) > 1024:
            self.last.clear()
        self.last[key] = now
        return True


REPEATS = _Repeats()


def server_name(cfg: RuntimeConfig) -> str:
    return f"server.{cfg.datacenter}.{cfg.domain}"


class TLSManager:
    def __init__(self, cfg: RuntimeConfig) -> None:
        self.cfg = cfg
        self.server_ctx: ssl.SSLContext | None = None  # for our listeners (RPC and HTTPS)
        self.client_ctx: ssl.SSLContext | None = None  # for our connections to servers
        self.stats = {"tls_handshake_failed": 0, "plaintext_refused": 0, "reloads": 0}
        self._build(cfg)

    @property
    def enabled(self) -> bool:
        return self.server_ctx is not None

    @property
    def verify_incoming(self) -> bool:
        return bool(self.cfg.tls.defaults.verify_incoming)

    @property
    def verify_outgoing(self) -> bool:
        return bool(self.cfg.tls.defaults.verify_outgoing)

    def _build(self, cfg: RuntimeConfig) -> None:
        d = cfg.tls.defaults
        if (d.verify_incoming or d.verify_outgoing or cfg.tls.internal_rpc.verify_server_hostname) and not d.ca_file:
            raise TLSConfigError("tls.defaults.ca_file is required with verify_incoming, verify_outgoing or "
                                 "verify_server_hostname")
        if bool(d.cert_file) != bool(d.key_file):
            raise TLSConfigError("tls.defaults.cert_file and tls.defaults.key_file go together")
        if d.verify_incoming and not d.cert_file:
            raise TLSConfigError("tls.defaults.verify_incoming needs cert_file and key_file")
        server_ctx = client_ctx = None
        try:
            if d.cert_file:
                server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
                server_ctx.minimum_version = ssl.TLSVersion.TLSv1_2
                server_ctx.load_cert_chain(d.cert_file, d.key_file)
                if d.ca_file:
                    server_ctx.load_verify_locations(d.ca_file)
                server_ctx.verify_mode = ssl.CERT_REQUIRED if d.verify_incoming else (
                    ssl.CERT_OPTIONAL if d.ca_file else ssl.CERT_NONE)
            if d.verify_outgoing:
                client_ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=d.ca_file)
                client_ctx.minimum_version = ssl.TLSVersion.TLSv1_2
                client_ctx.check_hostname = bool(cfg.tls.internal_rpc.verify_server_hostname)
                client_ctx.verify_mode = ssl.CERT_REQUIRED
                if d.cert_file:
                    client_ctx.load_cert_chain(d.cert_file, d.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise TLSConfigError(f"cannot load the TLS files: {exc}") from None
        self.cfg, self.server_ctx, self.client_ctx = cfg, server_ctx, client_ctx

    def reload(self, cfg: RuntimeConfig) -> bool:
        """Rebuild the contexts from `cfg` (SIGHUP). False, and the old ones kept, on an error."""
        try:
            self._build(cfg)
        except TLSConfigError as exc:
            log.error("TLS reload failed, keeping the previous certificates: %s", exc)
            return False
        self.stats["reloads"] += 1
        log.info("TLS certificates reloaded")
        return True

    # ---- the server port ----------------------------------------------------------------------
    async def accept(self, stream: trio.abc.Stream, first: bytes, peer: str) -> tuple[trio.abc.Stream, bytes] | None:
        """Wrap an incoming server-port connection whose first bytes are `first` (0x16: TLS).
        Returns (stream to use, its first bytes) or None when the connection is refused."""
        if first[0] != 0x16:
            if self.verify_incoming:
                self.stats["plaintext_refused"] += 1
                if REPEATS.should_log(peer.rsplit(":", 1)[0], "plaintext"):
                    log.warning("server port: refused a plaintext connection from %s (TLS is required: "
                                "tls.defaults.verify_incoming)", peer)
                return None
            return stream, first
        if self.server_ctx is None:
            log.warning("server port: %s started TLS, but this agent has no certificate (tls.defaults.cert_file)",
                        peer)
            return None
        tls = trio.SSLStream(PrefixedStream(stream, first), self.server_ctx, server_side=True)
        try:
            with trio.fail_after(HANDSHAKE_TIMEOUT):
                await tls.do_handshake()
                inner = await tls.receive_some(65536)
        except (trio.BrokenResourceError, trio.TooSlowError, ssl.SSLError, OSError) as exc:
            self.stats["tls_handshake_failed"] += 1
            reason = _reason(exc)
            if REPEATS.should_log(peer.rsplit(":", 1)[0], reason):
                log.warning("server port: TLS handshake with %s failed: %s", peer, reason)
            return None
        if not inner:
            return None
        return tls, bytes(inner)

    # ---- our connections to servers -----------------------------------------------------------
    async def wrap_outgoing(self, stream: trio.abc.Stream, addr: tuple[str, int]) -> trio.abc.Stream:
        if self.client_ctx is None:
            return stream
        name = server_name(self.cfg) if self.cfg.tls.internal_rpc.verify_server_hostname else addr[0]
        tls = trio.SSLStream(stream, self.client_ctx, server_hostname=name)
        try:
            with trio.fail_after(HANDSHAKE_TIMEOUT):
                await tls.do_handshake()
        except (trio.BrokenResourceError, trio.TooSlowError, ssl.SSLError, OSError) as exc:
            self.stats["tls_handshake_failed"] += 1
            reason = _reason(exc)
            if REPEATS.should_log(f"{addr[0]}:{addr[1]}", reason):
                log.warning("TLS handshake with server %s:%d failed: %s", addr[0], addr[1], reason)
            with trio.CancelScope(shield=True):
                await stream.aclose()
            raise TLSHandshakeFailed(f"TLS handshake with {addr[0]}:{addr[1]} failed: {reason}") from None
        return tls


def _reason(exc: BaseException) -> str:
    cause = exc.__cause__ or exc.__context__
    inner = cause if isinstance(cause, ssl.SSLError) else exc
    if isinstance(inner, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {inner.verify_message}"
    if isinstance(inner, trio.TooSlowError):
        return "timed out"
    return str(inner) or type(inner).__name__


# The agent's manager, for the outgoing side (rpc/protocol.py, the Raft transport). One agent per
# process; None means plain TCP.
ACTIVE: TLSManager | None = None


async def open_server_stream(addr: tuple[str, int], first_byte: int) -> trio.abc.Stream:
    """A connection to a server's port carrying `first_byte`'s stream: over TLS when
    verify_outgoing is on (the byte then goes inside TLS), plain otherwise. OSError on failure."""
    stream: trio.abc.Stream = await trio.open_tcp_stream(*addr)
    mgr = ACTIVE
    if mgr is not None:
        stream = await mgr.wrap_outgoing(stream, addr)
    try:
        await stream.send_all(bytes([first_byte]))
    except trio.BrokenResourceError as exc:
        with trio.CancelScope(shield=True):
            await stream.aclose()
        raise ConnectionError(f"connection to {addr[0]}:{addr[1]} broke: {exc}") from exc
    return stream
