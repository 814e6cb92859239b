"""The gossip driver: owns a Membership core and connects it to UDP, TCP and trio's clock.

One task receives datagrams (draining the socket per wake-up), one runs the core's timers, and
TCP exchanges run as short tasks with the core's deadline. After every input the driver flushes
the core's outputs: datagrams are sent at once (a send error such as EPERM or ECONNREFUSED is
packet loss, never a crash), streams are started, and member events go to subscribers through
bounded channels: a slow subscriber loses events (counted), it never stalls the protocol.
"""

from __future__ import annotations

import errno
import logging
import socket
import time
from collections.abc import Callable

import trio
from murmur.gossip import wire
from murmur.gossip.keyring import Keyring
from murmur.gossip.membership import Address, MemberEvent, Membership, State, StreamKind, StreamRequest

from ..failpoints import FAILPOINTS
from ..labdelay import DELAY
from .gossip_crypto import GossipCrypto

log = logging.getLogger("murmur.gossip")

EVENT_BUFFER = 1024  # events a subscriber may fall behind before it starts losing them
RECV_BURST = 256  # datagrams handled per wake-up before yielding to other tasks
SEND_ERRORS = (errno.EPERM, errno.ENETUNREACH, errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.EAGAIN,
               errno.ENOBUFS, errno.EINVAL, errno.EACCES, errno.EADDRNOTAVAIL)


class GossipDriver:
    def __init__(self, bind_host: str, bind_port: int) -> None:
        self._m: Membership | None = None
        self.bind_host = bind_host
        self.bind_port = bind_port
        self.port = 0
        self.sock: socket.socket | None = None
        self.nursery: trio.Nursery | None = None
        self.wakeup = trio.Event()
        self.subscribers: list[trio.MemorySendChannel[MemberEvent]] = []
        self.results: dict[int, tuple[trio.Event, list[bool]]] = {}
        self.stats: dict[str, int] = {"send_errors": 0, "events_dropped": 0, "stream_errors": 0}
        self.on_event: Callable[[MemberEvent], None] | None = None
        self.crypto: GossipCrypto | None = None  # gossip encryption; None sends and accepts clear text
        self.on_user: Callable[[], None] | None = None  # user events and queries (agent/events.py)
        self._told = (0, 0, 0)  # the core's (suspects_started, refutes, suspicions_extended) when last logged

    # ---- life cycle -----------------------------------------------------------------------------
    @property
    def m(self) -> Membership:
        assert self._m is not None, "attach() a Membership first"
        return self._m

    def bind(self) -> int:
        """Bind the UDP socket now, so the core can advertise the port (port 0 picks one)."""
        family = socket.AF_INET6 if ":" in self.bind_host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.setblocking(False)
        sock.bind((self.bind_host, self.bind_port))
        self.port = sock.getsockname()[1]
        self.sock = sock
        return self.port

    def attach(self, m: Membership) -> None:
        self._m = m

    def enable_encryption(self, keyring: Keyring, verify_incoming: bool = True, verify_outgoing: bool = True) -> None:
        """Seal outgoing and open incoming datagrams and stream frames (see gossip_crypto)."""
        self.crypto = GossipCrypto(keyring, self.stats, verify_incoming, verify_outgoing)

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        sock = self.sock
        assert sock is not None, "bind() first"
        listeners = await trio.open_tcp_listeners(self.port, host=self.bind_host)
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                nursery.start_soon(self._udp_loop, sock)
                nursery.start_soon(self._timer_loop)
                nursery.start_soon(trio.serve_listeners, self._tcp_conn, listeners)
                task_status.started(self.port)
        finally:
            sock.close()

    def subscribe(self) -> trio.MemoryReceiveChannel[MemberEvent]:
        send, recv = trio.open_memory_channel[MemberEvent](EVENT_BUFFER)
        self.subscribers.append(send)
        return recv

    # ---- flushing the core's outputs ------------------------------------------------------------
    def _log_suspicions(self) -> None:
        """Suspicions we started and refutations we sent, at INFO as memberlist logs them: the
        trail that explains a later "member failed" (or a flap). The member scan runs only when
        the core's counters moved, so a quiet cluster pays nothing."""
        stats = self.m.stats
        told = (stats.get("suspects_started", 0), stats.get("refutes", 0), stats.get("suspicions_extended", 0))
        if told == self._told:
            return
        if told[0] > self._told[0]:
            names = sorted(m.name for m in self.m.members.values() if m.state == State.SUSPECT)
            log.info("gossip: suspecting %s (no ack, direct or indirect)", ", ".join(names) or "a member")
        if told[1] > self._told[1]:
            log.warning("gossip: refuting a suspicion or death verdict about us (incarnation %d)",
                        self.m.me.incarnation)
        if told[2] > self._told[2]:
            log.info("gossip: a suspect talked to us since we began suspecting it: told it again, verdict deferred")
        self._told = told

    async def _send_later(self, data: bytes, addr: Address, wait: float) -> None:
        await trio.sleep(wait)
        try:
            assert self.sock is not None
            self.sock.sendto(data, addr)
        except OSError:
            self.stats["send_errors"] += 1

    def flush(self) -> None:
        assert self.sock is not None
        if self.on_user is not None:
            self.on_user()  # first: what it handles may add datagrams and broadcasts
        for addr, data in self.m.packets_to_send():
            if self.crypto is not None:
                data = self.crypto.outgoing(data)
            if DELAY.path and self.nursery is not None and (wait := DELAY.seconds()) > 0:
                self.nursery.start_soon(self._send_later, data, addr, wait)  # the lab's delay fault
                continue
            try:
                self.sock.sendto(data, addr)
            except BlockingIOError:
                self.stats["send_errors"] += 1
            except OSError as exc:
                self.stats["send_errors"] += 1
                if exc.errno not in SEND_ERRORS:
                    log.debug("gossip: sendto %s: %s", addr, exc)
        for req in self.m.streams_to_open():
            assert self.nursery is not None
            self.nursery.start_soon(self._stream, req)
        self._log_suspicions()
        for ev in self.m.events():
            log.info("member %s: %s (%s:%d)", ev.kind.value, ev.name, ev.addr, ev.port)
            if self.on_event is not None:
                self.on_event(ev)
            for ch in self.subscribers:
                try:
                    ch.send_nowait(ev)
                except trio.WouldBlock:
                    self.stats["events_dropped"] += 1
                except trio.BrokenResourceError:
                    self.subscribers.remove(ch)
        self.wakeup.set()

    # ---- loops ----------------------------------------------------------------------------------
    async def _udp_loop(self, sock: socket.socket) -> None:
        while True:
            await trio.lowlevel.wait_readable(sock)
            got = False
            for _ in range(RECV_BURST):
                try:
                    data, src = sock.recvfrom(65536)
                except BlockingIOError:
                    break
                except OSError:  # ICMP errors surface here on some kernels; they are loss
                    continue
                if self.crypto is not None:
                    opened = self.crypto.incoming(data)
                    if opened is None:
                        continue  # clear, forged or for another cluster: counted by crypto
                    data = opened
                if FAILPOINTS.bugs and FAILPOINTS.bug("gossip.ignore_refute"):
                    data = self._planted_drop_refutes(data)
                self.m.receive(data, (src[0], src[1]), trio.current_time())
                got = True
            if got:
                self.flush()
            await trio.lowlevel.checkpoint()

    def _planted_drop_refutes(self, data: bytes) -> bytes:
        """Planted bug gossip.ignore_refute (fault-lab tests only, agent/failpoints.py): drop every
        alive message that refutes a suspicion or a death verdict we hold, so any failed probe
        ends in a dead verdict that sticks until the next push-pull."""
        try:
            msgs, _ = wire.decode_packet(data)
        except wire.WireError:
            return data
        kept = []
        for msg in msgs:
            if isinstance(msg, wire.Alive):
                held = self.m.members.get(msg.node)
                if held is not None and held is not self.m.me and msg.incarnation > held.incarnation \
                        and held.state in (wire.MemberStateCode.SUSPECT, wire.MemberStateCode.DEAD):
                    continue
            kept.append(msg)
        return wire.packet(*kept) if len(kept) != len(msgs) else data

    async def _timer_loop(self) -> None:
        while True:
            self.wakeup = trio.Event()
            deadline = self.m.next_deadline()
            if deadline > trio.current_time():
                with trio.move_on_at(deadline):
                    await self.wakeup.wait()
                    continue  # an input changed things: recompute the deadline
            now = trio.current_time()
            self.m.wall_offset = time.time() - now  # the probe rotation ticks on wall-clock seconds
            self.m.handle_timer(now)
            self.flush()
            await trio.lowlevel.checkpoint()

    async def _read_frame(self, stream: trio.abc.ReceiveStream) -> bytes | None:
        buf = b""
        need = 4
        length: int | None = None
        while len(buf) < need:
            chunk = await stream.receive_some(max(4096, need - len(buf)))
            if not chunk:
                return None
            buf += chunk
            if length is None and len(buf) >= 4:
                length = wire.frame_length(buf[:4])
                need = 4 + length
        return buf[4:need]

    async def _tcp_conn(self, stream: trio.SocketStream) -> None:
        try:
            peer = stream.socket.getpeername()
            with trio.move_on_after(self.m.config.tcp_timeout):
                payload = await self._read_frame(stream)
                if payload is None:
                    return
                if self.crypto is not None and (payload := self.crypto.incoming(payload)) is None:
                    return
                reply = self.m.handle_stream(payload, (peer[0], peer[1]), trio.current_time())
                self.flush()
                if reply is not None:
                    if self.crypto is not None:
                        reply = self.crypto.outgoing_frame(reply)
                    await stream.send_all(reply)
        except (wire.WireError, OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            self.stats["stream_errors"] += 1
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await stream.aclose()

    async def _stream(self, req: StreamRequest) -> None:
        reply: bytes | None = None
        try:
            with trio.move_on_at(req.deadline):
                stream = await trio.open_tcp_stream(req.addr[0], req.addr[1])
                try:
                    await stream.send_all(req.payload if self.crypto is None else self.crypto.outgoing_frame(req.payload))
                    reply = await self._read_frame(stream)
                    if reply is not None and self.crypto is not None:
                        reply = self.crypto.incoming(reply)
                finally:
                    await stream.aclose()
        except (OSError, wire.WireError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            if req.kind != StreamKind.PING:
                log.debug("gossip: %s with %s:%d failed: %s", req.kind.value, req.addr[0], req.addr[1], exc)
            self.stats["stream_errors"] += 1
        ok = self.m.stream_result(req.token, reply, trio.current_time())
        self.flush()
        waiter = self.results.get(req.token)
        if waiter is not None:
            waiter[1].append(ok)
            waiter[0].set()

    # ---- operations -----------------------------------------------------------------------------
    async def join(self, addrs: list[str], default_port: int) -> tuple[int, list[str]]:
        """Push-pull with each address (host, host:port, [v6]:port, or a DNS name).
        Returns (how many answered, errors)."""
        errors: list[str] = []
        targets: list[Address] = []
        for text in addrs:
            try:
                host, port = split_host_port(text, default_port)
                infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except (OSError, ValueError) as exc:
                errors.append(f"{text}: {exc}")
                continue
            for info in infos[:1]:
                targets.append((str(info[4][0]), int(info[4][1])))
        if not targets:
            return 0, errors
        tokens = self.m.join(targets, trio.current_time())
        waiters: dict[int, tuple[trio.Event, list[bool]]] = {t: (trio.Event(), []) for t in tokens}
        self.results.update(waiters)
        self.flush()
        ok = 0
        try:
            for token, (event, result) in waiters.items():
                await event.wait()
                if result and result[0]:
                    ok += 1
                else:
                    errors.append(f"no answer from {targets[tokens.index(token)][0]}:{targets[tokens.index(token)][1]}")
        finally:
            for t in tokens:
                self.results.pop(t, None)
        return ok, errors

    async def leave(self, timeout: float) -> None:
        """Broadcast our leave and wait (bounded) until it has been sent around."""
        self.m.leave(trio.current_time())
        self.flush()
        with trio.move_on_after(timeout):
            for _ in range(int(timeout / 0.05) + 1):
                if self.m.leave_sent():
                    return
                await trio.sleep(0.05)


def split_host_port(text: str, default_port: int) -> tuple[str, int]:
    """"host", "host:port", "[v6]:port" or a bare IPv6 address."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default_port
    if text.count(":") == 1:
        host, port = text.split(":")
        return host, int(port)
    return text, default_port


