"""agent/dns/recursor.py: upstream parsing, SERVFAIL shape, failover order over real loopback sockets."""

from __future__ import annotations

import random
import socket

import dns.message
import dns.rcode
import pytest
import trio
from murmur.agent.dns.recursor import Recursor, parse_upstream, servfail_for


@pytest.mark.parametrize(("text", "want"), [("1.2.3.4", ("1.2.3.4", 53)), ("1.2.3.4:5353", ("1.2.3.4", 5353)),
                                            ("::1", ("::1", 53)), ("[::1]:5353", ("::1", 5353)),
                                            ("[::1]", ("::1", 53))])
def test_parse_upstream(text: str, want: tuple[str, int]) -> None:
    assert parse_upstream(text) == want


def test_servfail_echoes_id_rd_and_question() -> None:
    q = dns.message.make_query("www.example.test", "A")
    reply = servfail_for(q.to_wire())
    assert reply is not None
    msg = dns.message.from_wire(reply)
    assert msg.id == q.id and msg.rcode() == dns.rcode.SERVFAIL and msg.question == q.question
    assert servfail_for(b"\x00" * 5) is None


async def test_failover_to_the_next_upstream_and_servfail_when_all_fail() -> None:
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    good = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await good.bind(("127.0.0.1", 0))

    async def answer_once() -> None:
        data, addr = await good.recvfrom(65535)
        r = dns.message.make_response(dns.message.from_wire(data))
        await good.sendto(r.to_wire(), addr)

    q = dns.message.make_query("www.example.test", "A")
    stats: dict[str, int] = {}
    rec = Recursor([f"127.0.0.1:{silent.getsockname()[1]}", f"127.0.0.1:{good.getsockname()[1]}"], 0.2,
                   random.Random(1), stats)
    with trio.fail_after(5):
        async with trio.open_nursery() as n:
            n.start_soon(answer_once)
            reply = await rec.forward(q.to_wire(), tcp=False)
    assert reply is not None and dns.message.from_wire(reply).id == q.id  # the client's ID back
    assert stats == {"dns_recursed": 1, "dns_recursor_failures": 1, "dns_recursor_servfail": 0}
    only_silent = Recursor([f"127.0.0.1:{silent.getsockname()[1]}"], 0.1, random.Random(1), stats)
    with trio.fail_after(5):
        reply = await only_silent.forward(q.to_wire(), tcp=False)
    assert reply is not None and dns.message.from_wire(reply).rcode() == dns.rcode.SERVFAIL
    assert stats["dns_recursor_servfail"] == 1
    silent.close()
    good.close()
