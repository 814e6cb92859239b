"""The gossip driver with encryption on, over real loopback sockets: clear, forged, wrong-label,
unknown-format and truncated packets are dropped and counted before the core sees them, and
sealed ones work (UDP ping/ack, TCP join)."""

from __future__ import annotations

import errno
import random
import socket
import struct

import trio
from murmur.agent.drivers.gossip import GossipDriver
from murmur.gossip import keyring as kr
from murmur.gossip import wire
from murmur.gossip.config import GossipConfig
from murmur.gossip.keyring import Keyring
from murmur.gossip.membership import Membership

RNG = random.Random(11)
KEY, OTHER = RNG.randbytes(32), RNG.randbytes(32)
RING = Keyring([KEY])
BOUND = 10  # seconds; everything here takes milliseconds on loopback


def nonce() -> bytes:
    return RNG.randbytes(kr.NONCE_SIZE)


async def start(nursery: trio.Nursery, name: str, ring: Keyring | None, verify_incoming: bool = True,
                verify_outgoing: bool = True) -> GossipDriver:
    for attempt in range(5):
        d = GossipDriver("127.0.0.1", 0)
        port = d.bind()
        d.attach(Membership(GossipConfig.local(), name, "127.0.0.1", port, random.Random(name), trio.current_time()))
        if ring is not None:
            d.enable_encryption(ring, verify_incoming, verify_outgoing)
        try:
            await nursery.start(d.serve)
        except OSError as exc:  # the UDP port the OS picked is taken for TCP (a busy shared box): again
            if exc.errno != errno.EADDRINUSE or attempt == 4:
                raise
            continue
        return d
    raise AssertionError("unreachable")


def ping(seq: int, target: str = "a") -> bytes:
    return wire.packet(wire.Ping(seq, target, "tester", "127.0.0.1", 1))


async def exchange(sock: trio.socket.SocketType, d: GossipDriver, data: bytes) -> bytes:
    await sock.sendto(data, ("127.0.0.1", d.port))
    reply, _ = await sock.recvfrom(65536)
    return bytes(reply)


def crypto_counters(d: GossipDriver) -> dict[str, int]:
    return {k: v for k, v in d.stats.items() if k.startswith("encrypt_")}


async def test_bad_datagrams_are_dropped_and_counted_good_ones_answered() -> None:
    with trio.fail_after(BOUND):
        async with trio.open_nursery() as nursery:
            d = await start(nursery, "a", RING)
            sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            await sock.bind(("127.0.0.1", 0))
            good = RING.seal(ping(1), nonce())
            tampered = bytearray(good)
            tampered[-1] ^= 0x40
            bad = [
                ping(2),  # clear
                b"",  # empty: clear too
                Keyring([OTHER]).seal(ping(3), nonce()),  # another key
                bytes(tampered),  # bad MAC
                good[:30],  # truncated
                Keyring([KEY], label="other-cluster").seal(ping(4), nonce()),  # wrong label
                bytes([0x82]) + good[1:],  # a format this version does not know
                bytes([0xFF]) * 3,  # junk with the flag bit
            ]
            for data in bad:
                await sock.sendto(data, ("127.0.0.1", d.port))
            # Positive control, sent last: loopback keeps order, so once it is answered every
            # packet above has been handled.
            reply = await exchange(sock, d, good)
            assert reply[0] == kr.SealFormat.SECRETBOX_V1  # the answer is sealed too
            assert wire.decode_packet(RING.open(reply))[0][0] == wire.Ack(1)
            assert crypto_counters(d) == {"encrypt_clear_dropped": 2, "encrypt_forged": 3,
                                          "encrypt_label_mismatch": 1, "encrypt_unknown_format": 2,
                                          "encrypt_clear_accepted": 0}
            assert d.m.stats["packets_in"] == 1 and d.m.stats["bad_packets"] == 0  # the core saw one
            nursery.cancel_scope.cancel()


async def test_rollout_verify_incoming_off_accepts_clear_and_sealed() -> None:
    with trio.fail_after(BOUND):
        async with trio.open_nursery() as nursery:
            # Consul's first rollout step: the key is installed, nothing is required or sent sealed.
            d = await start(nursery, "a", RING, verify_incoming=False, verify_outgoing=False)
            sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            await sock.bind(("127.0.0.1", 0))
            reply = await exchange(sock, d, ping(1))
            assert wire.decode_packet(reply)[0][0] == wire.Ack(1)  # clear in, clear out
            reply = await exchange(sock, d, RING.seal(ping(2), nonce()))
            assert wire.decode_packet(reply)[0][0] == wire.Ack(2)  # sealed in: opened
            await sock.sendto(Keyring([OTHER]).seal(ping(3), nonce()), ("127.0.0.1", d.port))
            reply = await exchange(sock, d, ping(4))
            assert wire.decode_packet(reply)[0][0] == wire.Ack(4)  # the forged ping 3 got no answer
            assert d.stats["encrypt_clear_accepted"] == 2 and d.stats["encrypt_forged"] == 1
            assert d.stats["encrypt_clear_dropped"] == 0
            nursery.cancel_scope.cancel()


async def test_rollout_verify_outgoing_on_incoming_off_seals_answers_to_clear_packets() -> None:
    with trio.fail_after(BOUND):
        async with trio.open_nursery() as nursery:
            d = await start(nursery, "a", RING, verify_incoming=False, verify_outgoing=True)
            sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            await sock.bind(("127.0.0.1", 0))
            reply = await exchange(sock, d, ping(1))
            assert wire.decode_packet(RING.open(reply))[0][0] == wire.Ack(1)
            nursery.cancel_scope.cancel()


async def test_join_over_tcp_needs_the_key() -> None:
    with trio.fail_after(BOUND):
        async with trio.open_nursery() as nursery:
            a = await start(nursery, "a", RING)
            wrong = await start(nursery, "wrong", Keyring([OTHER]))
            clear = await start(nursery, "clear", None)
            for d in (wrong, clear):
                ok, errors = await d.join([f"127.0.0.1:{a.port}"], 8301)
                assert ok == 0 and errors
            assert set(a.m.members) == {"a"}
            assert a.stats["encrypt_forged"] >= 1 and a.stats["encrypt_clear_dropped"] >= 1
            # Positive control: the right key joins (a push-pull both ways, sealed).
            right = await start(nursery, "right", Keyring([KEY, OTHER]))  # holds another key too
            ok, errors = await right.join([f"127.0.0.1:{a.port}"], 8301)
            assert (ok, errors) == (1, [])
            assert set(a.m.members) == {"a", "right"} and set(right.m.members) == {"a", "right"}
            nursery.cancel_scope.cancel()


async def test_clear_and_forged_stream_frames_get_no_answer() -> None:
    with trio.fail_after(BOUND):
        async with trio.open_nursery() as nursery:
            a = await start(nursery, "a", RING)
            push = wire.PushPull(True, 0, (wire.PushState("x", "127.0.0.1", 9, 1, wire.MemberStateCode.ALIVE,
                                                          {}, wire.COMMON_VSN),))
            clear_payload = wire.frame(push)[4:]
            for payload in (clear_payload, Keyring([OTHER]).seal(clear_payload, nonce()),
                            Keyring([KEY], label="l").seal(clear_payload, nonce())):
                stream = await trio.open_tcp_stream("127.0.0.1", a.port)
                await stream.send_all(struct.pack("!I", len(payload)) + payload)
                assert await stream.receive_some(65536) == b""  # closed without a reply
                await stream.aclose()
            assert "x" not in a.m.members
            assert (a.stats["encrypt_clear_dropped"], a.stats["encrypt_forged"],
                    a.stats["encrypt_label_mismatch"]) == (1, 1, 1)
            # Positive control: the same push-pull sealed with the key is merged and answered.
            sealed = RING.seal(clear_payload, nonce())
            stream = await trio.open_tcp_stream("127.0.0.1", a.port)
            await stream.send_all(struct.pack("!I", len(sealed)) + sealed)
            data = b""
            for _ in range(100):
                chunk = await stream.receive_some(65536)
                if not chunk:
                    break
                data += chunk
            await stream.aclose()
            reply = wire.decode_frame_payload(RING.open(data[4:]))
            assert isinstance(reply, wire.PushPull) and "x" in a.m.members
            nursery.cancel_scope.cancel()
