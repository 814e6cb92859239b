"""The DNS front end: UDP and TCP on one port, answers from the catalog.

Hot path: answers are cached rendered, keyed by the query bytes minus the ID, and the cache is
dropped whenever the catalog index moves, so a cached answer is never staler than a fresh one.
Answers with several records keep a few rendered shuffles and rotate through them, so clients
are still spread over instances. The UDP loop drains the socket without awaiting while
datagrams are waiting (one await per burst, not per packet: ~4 µs vs ~22 µs an answer).

Bad input never escapes: bytes that are not even a header and question are dropped and counted;
a query whose header and question parse but whose rest is malformed gets FORMERR.
"""

from __future__ import annotations

import errno
import logging
import random
import socket
import struct
import time
from typing import TYPE_CHECKING

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import trio
from murmur.catalog.dns import Answerer, DNSSettings, slice_key
from murmur.checks.durations import parse_duration

from ..reads import ReadError
from .remote_cache import SliceCache

if TYPE_CHECKING:
    from ..agent import Agent

log = logging.getLogger("murmur.dns")

VARIANTS = 4  # rendered shuffles kept per multi-record answer
CACHE_MAX = 10_000  # entries; the cache is cleared when full (and on every catalog change)
TCP_IDLE = 10.0  # seconds a TCP client may sit idle between queries
MAX_INFLIGHT = 512  # a client agent's UDP queries waiting on a server; more are dropped


def settings_from(agent: Agent) -> DNSSettings:
    from ..agent import pick_address  # the node's own address: the glue of ns.<domain>

    dc = agent.cfg.dns_config
    return DNSSettings(
        domain=agent.cfg.domain, datacenter=agent.cfg.datacenter, node_ttl=int(parse_duration(dc.node_ttl)),
        service_ttl={k: int(parse_duration(v)) for k, v in dc.service_ttl.items()},
        only_passing=dc.only_passing, a_record_limit=dc.a_record_limit, soa_min_ttl=dc.soa.min_ttl,
        soa_refresh=dc.soa.refresh, soa_retry=dc.soa.retry, soa_expire=dc.soa.expire,
        alt_domain=agent.cfg.alt_domain, ns_address=pick_address(agent.cfg))


def formerr_for(data: bytes) -> bytes | None:
    """A FORMERR reply if the header and first question parse, else None (drop the packet)."""
    if len(data) < 12:
        return None
    qid, flags, qdcount = struct.unpack("!HHH", data[:6])
    if flags & 0x8000 or qdcount < 1:  # a response, or no question to echo
        return None
    try:
        _, used = dns.name.from_wire(data, 12)
    except dns.exception.DNSException:
        return None
    end = 12 + used + 4
    if end > len(data):
        return None
    opcode = flags & 0x7800
    rd = flags & 0x0100
    if opcode:  # NOTIFY, UPDATE, ...: not something we do, whatever the rest says; no question echoed,
        # since other opcodes give the question section other meanings (an UPDATE's is its zone)
        return struct.pack("!HHHHHH", qid, 0x8000 | opcode | int(dns.rcode.NOTIMP), 0, 0, 0, 0)
    header = struct.pack("!HHHHHH", qid, 0x8000 | opcode | rd | int(dns.rcode.FORMERR), 1, 0, 0, 0)
    return header + data[12:end]


class DNSServer:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.answerer = Answerer(settings_from(agent), random.Random(agent.rng.random()))
        self.udp_answer_limit = agent.cfg.dns_config.udp_answer_limit
        self.enable_truncate = agent.cfg.dns_config.enable_truncate
        self.cache: dict[bytes, list[bytes]] = {}
        self.turn: dict[bytes, int] = {}
        self.single: set[bytes] = set()
        self.cache_index = -1
        self.stats = agent.stats
        # A client agent has no catalog: it answers from slices fetched from the servers.
        self.slices: SliceCache | None = None if agent.cfg.server else SliceCache(agent.remote)
        self.inflight = 0

    # ---- answering (synchronous, shared by UDP and TCP) ----------------------------------------
    def respond(self, data: bytes, udp: bool) -> bytes | None:
        store = self.agent.store
        if store.last_index != self.cache_index or len(self.cache) > CACHE_MAX:
            self.cache.clear()
            self.turn.clear()
            self.single.clear()
            self.cache_index = store.last_index
        key = (b"U" if udp else b"T") + data[2:]
        variants = self.cache.get(key)
        if variants and (key in self.single or len(variants) >= VARIANTS):
            n = self.turn.get(key, 0)
            self.turn[key] = n + 1
            return data[:2] + variants[n % len(variants)]
        try:
            query = dns.message.from_wire(data)
        except dns.exception.DNSException:
            reply = formerr_for(data)
            self.stats["dns_formerr" if reply else "dns_dropped"] += 1
            return reply
        except Exception:  # dnspython may raise other errors on hostile input; never let them out
            reply = formerr_for(data)
            self.stats["dns_formerr" if reply else "dns_dropped"] += 1
            return reply
        if query.flags & dns.flags.QR:
            self.stats["dns_dropped"] += 1
            return None
        resp = self.answerer.answer(query, store, int(time.time()))
        if resp.rcode() == dns.rcode.FORMERR:
            self.stats["dns_formerr"] += 1
        if udp:
            wire = self._udp_wire(query, resp)
        else:
            wire = resp.to_wire(max_size=65535, prefer_truncation=True, want_shuffle=False)
        records = sum(len(rrset) for rrset in resp.answer)
        entry = self.cache.setdefault(key, [])
        entry.append(wire[2:])
        if records <= 1:
            self.single.add(key)  # one rendering is all a single-record answer needs
        return wire

    async def respond_remote(self, data: bytes, udp: bool) -> bytes | None:
        """A client agent's answer: the same Answerer, over the slice of the catalog this name
        needs, fetched from a server (agent/dns/remote_cache.py). SERVFAIL when none answers."""
        assert self.slices is not None
        try:
            query = dns.message.from_wire(data)
        except Exception:  # dnspython raises DNSException and others on hostile input
            reply = formerr_for(data)
            self.stats["dns_formerr" if reply else "dns_dropped"] += 1
            return reply
        if query.flags & dns.flags.QR:
            self.stats["dns_dropped"] += 1
            return None
        key = slice_key(query.question[0].name, self.answerer.origin,
                                                              self.answerer.alt_origin) if len(query.question) == 1 else ("none",)
        try:
            store = await self.slices.get(key)
        except ReadError:
            resp = dns.message.make_response(query)
            resp.set_rcode(dns.rcode.SERVFAIL)
            return resp.to_wire()
        resp = self.answerer.answer(query, store, int(time.time()))
        if udp:
            return self._udp_wire(query, resp)
        return resp.to_wire(max_size=65535, prefer_truncation=True, want_shuffle=False)

    async def _udp_remote(self, sock: socket.socket, data: bytes, addr: tuple[str, int]) -> None:
        try:
            reply = await self.respond_remote(data, udp=True)
            if reply is not None:
                sock.sendto(reply, addr)
        except Exception:
            log.exception("dns: failed answering a UDP query")
            self.stats["dns_dropped"] += 1
        finally:
            self.inflight -= 1

    def _udp_wire(self, query: dns.message.Message, resp: dns.message.Message) -> bytes:
        """Fit UDP: without EDNS at most `udp_answer_limit` records and 512 bytes; with EDNS
        the advertised size. Trimmed answers set TC when enable_truncate is on or nothing fits."""
        max_size = max(512, query.payload) if query.edns >= 0 else 512
        trimmed = False
        if query.edns < 0 and resp.answer:
            kept = 0
            for rrset in resp.answer:
                room = self.udp_answer_limit - kept
                if len(rrset) > room:
                    for rd in list(rrset)[room:]:
                        rrset.discard(rd)  # type: ignore[no-untyped-call]
                    trimmed = True
                kept += len(rrset)
            resp.answer = [r for r in resp.answer if len(r)]
            if trimmed:
                names = {rd.target for r in resp.answer for rd in r if hasattr(rd, "target")}
                resp.additional = [r for r in resp.additional if r.name in names]
        wire = resp.to_wire(max_size=max_size, prefer_truncation=True, want_shuffle=False)
        if trimmed and self.enable_truncate:
            flags = struct.unpack("!H", wire[2:4])[0] | int(dns.flags.TC)
            wire = wire[:2] + struct.pack("!H", flags) + wire[4:]
        return wire

    # ---- transports ----------------------------------------------------------------------------
    async def serve(self, host: str, port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
                    ) -> None:
        udp, listeners = await bind_udp_and_tcp(host, port)
        bound = udp.getsockname()[1]
        task_status.started(bound)
        try:
            async with trio.open_nursery() as nursery:
                if self.slices is not None:
                    self.slices.nursery = nursery  # slice watchers (client agents)
                nursery.start_soon(self._udp_loop, udp, nursery)
                nursery.start_soon(trio.serve_listeners, self._tcp_conn, listeners)
        finally:
            udp.close()

    async def _udp_loop(self, sock: socket.socket, nursery: trio.Nursery) -> None:
        while True:
            await trio.lowlevel.wait_readable(sock)
            for _ in range(256):  # drain a burst, then let other tasks run
                try:
                    data, addr = sock.recvfrom(65535)
                except BlockingIOError:
                    break
                except OSError as exc:  # e.g. ECONNREFUSED from an earlier send: not fatal
                    if exc.errno not in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH):
                        log.warning("dns: recvfrom: %s", exc)
                    continue
                if self.slices is not None:  # a client: answers may need a server, answer in a task
                    if self.inflight >= MAX_INFLIGHT:
                        self.stats["dns_dropped"] += 1
                        continue
                    self.inflight += 1
                    nursery.start_soon(self._udp_remote, sock, data, addr)
                    continue
                try:
                    reply = self.respond(data, udp=True)
                except Exception:
                    log.exception("dns: failed answering a UDP query")
                    self.stats["dns_dropped"] += 1
                    continue
                if reply is not None:
                    try:
                        sock.sendto(reply, addr)
                    except OSError:
                        self.stats["dns_dropped"] += 1
            await trio.lowlevel.checkpoint()

    async def _tcp_conn(self, stream: trio.SocketStream) -> None:
        buf = b""
        try:
            while True:
                with trio.move_on_after(TCP_IDLE) as idle:
                    while len(buf) < 2 or len(buf) < 2 + struct.unpack("!H", buf[:2])[0]:
                        chunk = await stream.receive_some(65536)
                        if not chunk:
                            return
                        buf += chunk
                if idle.cancelled_caught:
                    return
                size = struct.unpack("!H", buf[:2])[0]
                data, buf = buf[2:2 + size], buf[2 + size:]
                try:
                    if self.slices is not None:
                        reply = await self.respond_remote(data, udp=False)
                    else:
                        reply = self.respond(data, udp=False)
                except Exception:
                    log.exception("dns: failed answering a TCP query")
                    return
                if reply is None:
                    return
                await stream.send_all(struct.pack("!H", len(reply)) + reply)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await stream.aclose()


PORT_TRIES = 20  # with port 0: fresh picks until one is free for both UDP and TCP


async def bind_udp_and_tcp(host: str, port: int) -> tuple[socket.socket, list[trio.SocketListener]]:
    """A UDP socket and TCP listeners on one port. With port 0 the kernel picks the UDP port, and
    another process may hold that number for TCP: pick again rather than fail."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for attempt in range(PORT_TRIES if port == 0 else 1):
        udp = socket.socket(family, socket.SOCK_DGRAM)
        try:
            udp.setblocking(False)
            udp.bind((host, port))
            listeners = await trio.open_tcp_listeners(udp.getsockname()[1], host=host)
        except OSError as exc:
            udp.close()
            if port != 0 or exc.errno != errno.EADDRINUSE or attempt == PORT_TRIES - 1:
                raise
            continue
        return udp, listeners
    raise AssertionError("unreachable")
