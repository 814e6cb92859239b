"""A tiny upstream DNS server for recursion tests: UDP and TCP on one loopback port, in threads.

Answers `<anything>.example.test` A with a fixed address (TTL 60), NXDOMAIN for the rest, and
counts the queries it saw. Also a "black hole": a bound UDP port that reads and never answers,
so a recursor pointed at it times out (failover tests). Stopped by stop(); every loop is bounded
by a short select timeout and a stop flag.
"""

from __future__ import annotations

import select
import socket
import struct
import threading

import dns.message
import dns.name
import dns.rcode
import dns.rrset

ZONE = dns.name.from_text("example.test.")
ANSWER = "127.0.0.53"


class Upstream:
    def __init__(self, host: str = "127.0.0.1") -> None:
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind((host, 0))
        self.port = self.udp.getsockname()[1]
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind((host, self.port))
        self.tcp.listen(16)
        self.queries = {"udp": 0, "tcp": 0}
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._serve_udp, daemon=True),
                         threading.Thread(target=self._serve_tcp, daemon=True)]
        for t in self._threads:
            t.start()

    @staticmethod
    def reply(data: bytes) -> bytes:
        q = dns.message.from_wire(data)
        r = dns.message.make_response(q)
        name = q.question[0].name
        if name.is_subdomain(ZONE) and name != ZONE:
            r.answer.append(dns.rrset.from_text(name, 60, "IN", "A", ANSWER))
        else:
            r.set_rcode(dns.rcode.NXDOMAIN)
        return r.to_wire()

    def _serve_udp(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.udp], [], [], 0.1)
            if not ready:
                continue
            data, addr = self.udp.recvfrom(65535)
            self.queries["udp"] += 1
            try:
                self.udp.sendto(self.reply(data), addr)
            except Exception:  # noqa: BLE001 - a test upstream ignores what it cannot read
                pass

    def _serve_tcp(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.tcp], [], [], 0.1)
            if not ready:
                continue
            conn, _ = self.tcp.accept()
            with conn:
                conn.settimeout(2)
                try:
                    size = struct.unpack("!H", conn.recv(2))[0]
                    data = b""
                    while len(data) < size:
                        chunk = conn.recv(size - len(data))
                        if not chunk:
                            break
                        data += chunk
                    self.queries["tcp"] += 1
                    out = self.reply(data)
                    conn.sendall(struct.pack("!H", len(out)) + out)
                except Exception:  # noqa: BLE001
                    pass

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=2)
        self.udp.close()
        self.tcp.close()


class BlackHole:
    """A UDP port that swallows queries (and a TCP listener that never answers)."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind((host, 0))
        self.port = self.udp.getsockname()[1]
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.bind((host, self.port))
        self.tcp.listen(16)

    def stop(self) -> None:
        self.udp.close()
        self.tcp.close()
