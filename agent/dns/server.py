"""The DNS front end: UDP and TCP on one port, answers from the catalog.

Hot path: answers are cached rendered, keyed by the query bytes minus the ID (and UDP/TCP), so
a hit is one dict lookup and an ID patch; dnspython runs only on a miss. On a server the cache is
dropped whenever the catalog index moves, so a cached answer is never staler than a fresh one;
on a client agent each rendering is kept with the catalog slice it came from and is used only
while that slice is current and is still the same store (its watcher swaps the store on a
change). Answers with several records keep up to VARIANTS rendered (weighted) shuffles and
rotate through them, so clients are still spread over instances. The UDP loop drains the socket
without awaiting while datagrams are waiting (one await per burst, not per packet: ~4 µs vs
~22 µs an answer); only a client's miss and a recursion get a task.

Names outside our domains go to the recursors (agent/dns/recursor.py) when some are set, else
REFUSED. Bad input never escapes: bytes that are not even a header and question are dropped and
counted; a query whose header and question parse but whose rest is malformed gets FORMERR (other
opcodes NOTIMP). Any exception outside those planned paths is a bug: it is caught, logged and
counted in `dns_catchall` (/v1/agent/self Stats.dns), which the fuzz tests require to stay 0.
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
from murmur.catalog.acl import Authorizer
from murmur.catalog.dns import Answerer, DNSSettings, SliceKey, slice_key, slice_store
from murmur.catalog.store import StateStore
from murmur.checks.durations import parse_duration

from ..acl import filter_store
from ..metrics import PENDING_MAX
from ..reads import ReadError
from .recursor import Recursor
from .remote_cache import SliceCache

if TYPE_CHECKING:
    from ..agent import Agent

log = logging.getLogger("murmur.dns")

VARIANTS = 8  # rendered shuffles kept per multi-record answer, rotated per reply
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


class RemoteAnswer:
    """A client agent's rendered answers for one query, and the slice store they came from."""

    __slots__ = ("skey", "store", "variants", "single", "turn")

    def __init__(self, skey: SliceKey, store: StateStore) -> None:
        self.skey = skey
        self.store = store
        self.variants: list[bytes] = []
        self.single = False
        self.turn = 0


RECURSE = object()  # respond()'s verdict for a name outside our domains when recursors are set


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
        for k in ("dns_catchall", "dns_dropped", "dns_formerr"):
            self.stats.setdefault(k, 0)
        # A client agent has no catalog: it answers from slices fetched from the servers. Its
        # rendered answers are kept with the slice store they came from, and are good while that
        # slice is current and unchanged (the slice watcher replaces the store on a change).
        dc = agent.cfg.dns_config
        self.slices: SliceCache | None = None if agent.cfg.server else SliceCache(
            agent.remote, dc.allow_stale, parse_duration(dc.max_stale))
        acl = getattr(agent, "acl", None)
        if self.slices is not None and acl is not None and acl.enabled:
            self.slices.token = acl.default_token
        if self.slices is not None:  # its counters show in /v1/agent/self Stats.dns too
            self.stats.update(self.slices.stats)
            self.slices.stats = self.stats
        self.rcache: dict[bytes, RemoteAnswer] = {}
        self.inflight = 0
        self._caught_up = False  # see caught_up()
        # consul.dns.domain_query: added to directly (this is the hot path; see agent/telemetry.py).
        self.timing = agent.metrics.sample("consul.dns.domain_query", {"node": agent.local.node.name})

        rec = agent.cfg.recursors
        self.recursor = Recursor(rec, parse_duration(agent.cfg.dns_config.recursor_timeout),
                                 random.Random(agent.rng.random()), self.stats) if rec else None

    # ---- answering (synchronous, shared by UDP and TCP) ----------------------------------------
    def _parse(self, data: bytes) -> dns.message.Message | bytes | None:
        """The query, or the reply to send instead (FORMERR/NOTIMP), or None to drop it."""
        try:
            query = dns.message.from_wire(data)
        except dns.exception.DNSException:
            reply = formerr_for(data)
            self.stats["dns_formerr" if reply else "dns_dropped"] += 1
            return reply
        except Exception:  # dnspython raised something unplanned on hostile input: the catch-all
            self.stats["dns_catchall"] += 1
            log.debug("dns: unplanned parse error", exc_info=True)
            reply = formerr_for(data)
            self.stats["dns_formerr" if reply else "dns_dropped"] += 1
            return reply
        if query.flags & dns.flags.QR:
            self.stats["dns_dropped"] += 1
            return None
        return query

    def _wants_recursion(self, query: dns.message.Message) -> bool:
        return (self.recursor is not None and len(query.question) == 1 and query.opcode() == 0
                and not self.answerer.in_zone(query.question[0].name))

    def respond(self, data: bytes, udp: bool) -> bytes | object | None:
        """A server's answer: bytes, None (drop), or RECURSE (forward to the recursors); timed as
        Consul's consul.dns.domain_query."""
        t0 = time.perf_counter()
        try:
            return self._respond(data, udp)
        finally:
            pending = self.timing.pending
            pending.append((time.perf_counter() - t0) * 1000.0)
            if len(pending) >= PENDING_MAX:
                self.timing.fold()

    def caught_up(self) -> bool:
        """Has this server's catalog caught up with the cluster since it started? Until then (a
        restarted server replaying, or not yet told the commit index by a leader) it answers
        REFUSED rather than NXDOMAIN from a catalog that may lack what others hold. REFUSED, not
        SERVFAIL: resolvers with several upstreams (dnsmasq, in either of its modes, and glibc)
        pass a SERVFAIL on to the asker but take REFUSED as "ask another upstream" (measured
        with dnsmasq 2.90: docs/operations.md, the rolling upgrade). Once caught up it answers
        from its own store even without a leader, as Consul's stale reads do."""
        if self._caught_up:
            return True
        server = getattr(self.agent, "server", None)
        if server is None or self.agent.cfg.dev:
            self._caught_up = True
            return True
        driver = server.driver
        if driver is None or not driver.leader:
            return False
        log_ = driver.node.raft.log
        self._caught_up = log_.applied >= log_.committed
        return self._caught_up

    def _respond(self, data: bytes, udp: bool) -> bytes | object | None:
        if not self._caught_up and not self.caught_up():
            query = self._parse(data)
            if not isinstance(query, dns.message.Message):
                return query
            resp = dns.message.make_response(query)
            resp.set_rcode(dns.rcode.REFUSED)
            self.stats["dns_not_caught_up"] = self.stats.get("dns_not_caught_up", 0) + 1
            return resp.to_wire()
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
        query = self._parse(data)
        if not isinstance(query, dns.message.Message):
            return query
        if self._wants_recursion(query):
            return RECURSE
        resp = self.answerer.answer(query, self._acl_view(query, store), int(time.time()))
        if resp.rcode() == dns.rcode.FORMERR:
            self.stats["dns_formerr"] += 1
        wire = self._wire(query, resp, udp)
        entry = self.cache.setdefault(key, [])
        entry.append(wire[2:])
        if sum(len(rrset) for rrset in resp.answer) <= 1:
            self.single.add(key)  # one rendering is all a single-record answer needs
        return wire

    def _acl_view(self, query: dns.message.Message, store: StateStore) -> StateStore:
        """What DNS may show: with ACLs on, the slice of the catalog this question reads, without
        what the agent's `default` token may not read (an unknown token reads nothing)."""
        acl = getattr(self.agent, "acl", None)
        if acl is None or not acl.enabled:
            return store
        authz, _ = acl.local(acl.default_token())
        if authz is None:
            authz = Authorizer((), "deny")
        if authz.management:
            return store
        key = (slice_key(query.question[0].name, self.answerer.origin, self.answerer.alt_origin)
               if len(query.question) == 1 else ("none",))
        return filter_store(authz, slice_store(store, key))

    def forget_answers(self) -> None:
        """Drop every rendered answer (the default token changed: what DNS may show changed)."""
        self.cache.clear()
        self.rcache.clear()
        self.cache_index = -1
        if self.slices is not None:
            self.slices.entries.clear()

    def _wire(self, query: dns.message.Message, resp: dns.message.Message, udp: bool) -> bytes:
        if udp:
            return self._udp_wire(query, resp)
        return resp.to_wire(max_size=65535, prefer_truncation=True, want_shuffle=False)

    def respond_cached_remote(self, data: bytes, udp: bool, now: float) -> bytes | None:
        """A client agent's fast path: a rendered answer for these query bytes whose slice is
        current and unchanged since it was rendered; None on a miss (then respond_remote)."""
        hit = self.rcache.get((b"U" if udp else b"T") + data[2:])
        if hit is None or not (hit.single or len(hit.variants) >= VARIANTS):
            return None
        assert self.slices is not None
        entry = self.slices.entries.get(hit.skey)
        if entry is None or entry.store is not hit.store or not self.slices.current(entry, now):
            return None
        entry.used = now
        hit.turn += 1
        return data[:2] + hit.variants[hit.turn % len(hit.variants)]

    def _remember_remote(self, data: bytes, udp: bool, skey: SliceKey, store: StateStore, wire: bytes,
                         single: bool) -> None:
        if skey == ("none",):
            return  # no slice to tell when it goes stale (the apex, ns.<domain>, addr names)
        key = (b"U" if udp else b"T") + data[2:]
        hit = self.rcache.get(key)
        if hit is None or hit.store is not store:
            if len(self.rcache) >= CACHE_MAX:
                self.rcache.clear()
            hit = self.rcache[key] = RemoteAnswer(skey, store)
        if len(hit.variants) < VARIANTS:
            hit.variants.append(wire[2:])
        hit.single = single

    async def respond_remote(self, data: bytes, udp: bool) -> bytes | object | None:
        """A client agent's answer: the same Answerer, over the slice of the catalog this name
        needs, fetched from a server (agent/dns/remote_cache.py). SERVFAIL when none answers."""
        t0 = time.perf_counter()
        try:
            return await self._respond_remote(data, udp)
        finally:
            pending = self.timing.pending
            pending.append((time.perf_counter() - t0) * 1000.0)
            if len(pending) >= PENDING_MAX:
                self.timing.fold()

    async def _respond_remote(self, data: bytes, udp: bool) -> bytes | object | None:
        assert self.slices is not None
        query = self._parse(data)
        if not isinstance(query, dns.message.Message):
            return query
        if self._wants_recursion(query):
            return RECURSE
        key = (slice_key(query.question[0].name, self.answerer.origin, self.answerer.alt_origin)
               if len(query.question) == 1 else ("none",))
        try:
            store = await self.slices.get(key)
        except ReadError:
            resp = dns.message.make_response(query)
            resp.set_rcode(dns.rcode.SERVFAIL)
            return resp.to_wire()
        resp = self.answerer.answer(query, store, int(time.time()))
        wire = self._wire(query, resp, udp)
        self._remember_remote(data, udp, key, store, wire, sum(len(r) for r in resp.answer) <= 1)
        return wire

    async def _udp_slow(self, sock: socket.socket, data: bytes, addr: tuple[str, int],
                        reply: bytes | object | None) -> None:
        """A UDP query that needs awaiting: a client's miss (reply None yet) or a recursion."""
        try:
            if reply is None:
                reply = await self.respond_remote(data, udp=True)
            if reply is RECURSE:
                assert self.recursor is not None
                reply = await self.recursor.forward(data, tcp=False)
            if isinstance(reply, bytes):
                sock.sendto(reply, addr)
        except Exception:
            log.exception("dns: failed answering a UDP query")
            self.stats["dns_catchall"] += 1
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
        """Drain the socket without awaiting per packet; only misses that must wait (a client's
        slice fetch, a recursion) get a task. Counters move once per drain."""
        client = self.slices is not None
        while True:
            await trio.lowlevel.wait_readable(sock)
            now = trio.current_time()
            errors = dropped = 0
            for _ in range(256):  # drain a burst, then let other tasks run
                try:
                    data, addr = sock.recvfrom(65535)
                except BlockingIOError:
                    break
                except OSError as exc:  # e.g. ECONNREFUSED from an earlier send: not fatal
                    if exc.errno not in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH):
                        log.warning("dns: recvfrom: %s", exc)
                    continue
                reply: bytes | object | None
                try:
                    if client:
                        reply = self.respond_cached_remote(data, True, now)
                    else:
                        reply = self.respond(data, udp=True)
                except Exception:
                    log.exception("dns: failed answering a UDP query")
                    errors += 1
                    continue
                if reply is None and not client:
                    continue
                if not isinstance(reply, bytes):  # a client's miss, or RECURSE: answer in a task
                    if self.inflight >= MAX_INFLIGHT:
                        dropped += 1
                        continue
                    self.inflight += 1
                    nursery.start_soon(self._udp_slow, sock, data, addr, reply)
                    continue
                try:
                    sock.sendto(reply, addr)
                except OSError:
                    dropped += 1
            if errors or dropped:
                self.stats["dns_catchall"] += errors
                self.stats["dns_dropped"] += errors + dropped
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
                    reply: bytes | object | None
                    if self.slices is not None:
                        reply = self.respond_cached_remote(data, False, trio.current_time())
                        if reply is None:
                            reply = await self.respond_remote(data, udp=False)
                    else:
                        reply = self.respond(data, udp=False)
                    if reply is RECURSE:
                        assert self.recursor is not None
                        reply = await self.recursor.forward(data, tcp=True)
                except Exception:
                    log.exception("dns: failed answering a TCP query")
                    self.stats["dns_catchall"] += 1
                    return
                if not isinstance(reply, bytes):
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
