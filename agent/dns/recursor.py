"""Forwarding names outside our domains to the configured upstream resolvers (`recursors`).

Upstreams are tried in the configured order (Consul's default "sequential" strategy): each gets
`dns_config.recursor_timeout`; a timeout, a socket error, an unreadable reply or a SERVFAIL moves
on to the next. The client's query bytes are sent as they are, under a fresh random ID (so an
off-path reply cannot be matched by guessing the client's), and the upstream's reply goes back
with the client's ID patched in. UDP clients are forwarded over UDP, TCP clients over TCP. When
every upstream fails the client gets SERVFAIL; with no recursors at all the Answerer's REFUSED
stands (the DNS server never calls this then).
"""

from __future__ import annotations

import errno
import ipaddress
import random
import socket
import struct

import trio

SERVFAIL = 2
MAX_REPLY = 65535


def parse_upstream(text: str) -> tuple[str, int]:
    """"1.2.3.4", "1.2.3.4:5353", "::1", "[::1]:5353" -> (host, port); port 53 by default."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else 53
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        return host, int(port)
    return text, 53


def servfail_for(data: bytes) -> bytes | None:
    """SERVFAIL echoing the client's header flags and first question, or None if unreadable."""
    if len(data) < 12:
        return None
    qid, flags, qdcount = struct.unpack("!HHH", data[:6])
    end = _question_end(data) if qdcount else 12
    if end is None:
        return None
    out_flags = 0x8000 | (flags & 0x7900) | 0x0080 | SERVFAIL  # QR, opcode, RD kept, RA
    return struct.pack("!HHHHHH", qid, out_flags, 1 if qdcount else 0, 0, 0, 0) + data[12:end]


def _question_end(data: bytes) -> int | None:
    i = 12
    for _ in range(128):
        if i >= len(data):
            return None
        n = data[i]
        if n == 0:
            return i + 5 if i + 5 <= len(data) else None
        if n & 0xC0:
            return None  # a pointer in a query's first name: not worth following here
        i += 1 + n
    return None


class Recursor:
    def __init__(self, upstreams: list[str], timeout: float, rng: random.Random,
                 stats: dict[str, int] | None = None) -> None:
        self.upstreams = [parse_upstream(u) for u in upstreams]
        self.timeout = timeout
        self.rng = rng
        self.stats = stats if stats is not None else {}
        for k in ("dns_recursed", "dns_recursor_failures", "dns_recursor_servfail"):
            self.stats.setdefault(k, 0)

    async def forward(self, data: bytes, tcp: bool) -> bytes | None:
        """The upstream's reply to `data` with the client's ID, or SERVFAIL when all fail."""
        self.stats["dns_recursed"] += 1
        for host, port in self.upstreams:
            qid = self.rng.getrandbits(16)
            out = struct.pack("!H", qid) + data[2:]
            reply: bytes | None = None
            try:
                with trio.move_on_after(self.timeout):
                    reply = await (self._tcp(host, port, out) if tcp else self._udp(host, port, out, qid))
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, ValueError):
                reply = None
            if reply is None or len(reply) < 12 or reply[:2] != out[:2]:
                self.stats["dns_recursor_failures"] += 1
                continue
            if reply[3] & 0x0F == SERVFAIL:
                self.stats["dns_recursor_failures"] += 1
                continue
            return data[:2] + reply[2:]
        self.stats["dns_recursor_servfail"] += 1
        return servfail_for(data)

    @staticmethod
    async def _udp(host: str, port: int, out: bytes, qid: int) -> bytes | None:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
        sock = trio.socket.socket(family, socket.SOCK_DGRAM)
        with sock:
            await sock.connect((host, port))
            await sock.send(out)
            for _ in range(64):  # ignore stray datagrams with another ID
                try:
                    reply = await sock.recv(MAX_REPLY)
                except OSError as exc:
                    if exc.errno == errno.ECONNREFUSED:
                        return None
                    raise
                if len(reply) >= 2 and struct.unpack("!H", reply[:2])[0] == qid:
                    return reply
        return None

    @staticmethod
    async def _tcp(host: str, port: int, out: bytes) -> bytes | None:
        stream = await trio.open_tcp_stream(host, port)
        async with stream:
            await stream.send_all(struct.pack("!H", len(out)) + out)
            buf = b""
            while len(buf) < 2 or len(buf) < 2 + struct.unpack("!H", buf[:2])[0]:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    return None
                buf += chunk
            size = struct.unpack("!H", buf[:2])[0]
            return buf[2:2 + size]
