"""DNS against real agents, with real `dig` and dnspython: every name form and record type,
negative answers and their SOA/TTL, size rules and truncation, recursion with failover.

One dev agent (`rich`) carries the full config: services with tags, weights, a warning instance,
an IPv6 service address, a 12-instance service for truncation, node_meta, TTLs, soa.min_ttl,
alt_domain "consul", enable_truncate, and recursors [black hole, upstream] with a 300 ms timeout.
A second dev agent (`plain`) has the same services, no recursors, only_passing and
a_record_limit = 2. The upstream is a tiny dnspython server started by the test on loopback.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.reversename
import httpx
import pytest
from support.dns_upstream import ANSWER, BlackHole, Upstream
from support.procs import AgentProc, wait_for

pytestmark = pytest.mark.e2e

BIG = 12


def services() -> list[dict[str, object]]:
    out: list[dict[str, object]] = [
        {"ID": "web1", "Name": "web", "Port": 8080, "Tags": ["v1", "primary"], "Address": "127.0.0.10",
         "Weights": {"Passing": 5, "Warning": 1}},
        {"ID": "web2", "Name": "web", "Port": 8081, "Tags": ["v2"], "Address": "127.0.0.11",
         "Weights": {"Passing": 5, "Warning": 2},
         "Check": {"CheckID": "web2-ttl", "TTL": "1h"}},
        {"ID": "v6svc", "Name": "v6svc", "Port": 9000, "Address": "::1"},
        {"ID": "plainsvc", "Name": "plainsvc", "Port": 9001},  # no address: the node's
    ]
    out += [{"ID": f"big{i}", "Name": "big", "Port": 7000 + i, "Address": f"127.0.1.{i + 1}"} for i in range(BIG)]
    return out


def start(tmp: Path, name: str, extra: dict[str, object]) -> AgentProc:
    conf = tmp / f"conf-{name}"
    conf.mkdir()
    (conf / "agent.json").write_text(json.dumps({
        "node_meta": {"rack": "r1", "rfc1035-raw": "plain"}, "services": services(), **extra}))
    a = AgentProc(tmp, [conf], node=name)
    a.start()
    # web2's TTL check starts critical: mark it warning (kept unless only_passing).
    assert httpx.put(a.url + "/v1/agent/check/warn/web2-ttl", timeout=5).status_code == 200
    wait_for(lambda: len(resolve(a, "big.service.murmur", tcp=True).answer[0]) >= 2, 20, what="services in DNS")
    return a


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    u = Upstream()
    yield u
    u.stop()


@pytest.fixture(scope="module")
def blackhole() -> Iterator[BlackHole]:
    b = BlackHole()
    yield b
    b.stop()


@pytest.fixture(scope="module")
def rich(tmp_path_factory: pytest.TempPathFactory, upstream: Upstream, blackhole: BlackHole) -> Iterator[AgentProc]:
    a = start(tmp_path_factory.mktemp("rich"), "rich", {
        "alt_domain": "consul",
        "recursors": [f"127.0.0.1:{blackhole.port}", f"127.0.0.1:{upstream.port}"],
        "dns_config": {"service_ttl": {"web": "30s", "big*": "4s", "*": "5s"}, "node_ttl": "7s",
                       "soa": {"min_ttl": 45}, "enable_truncate": True, "recursor_timeout": "300ms"}})
    yield a
    a.stop()


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProc]:
    a = start(tmp_path_factory.mktemp("plain"), "plain",
              {"dns_config": {"only_passing": True, "a_record_limit": 2}})
    yield a
    a.stop()


def dig(agent: AgentProc, name: str, rdtype: str = "A", *extra: str) -> str:
    out = subprocess.run(["dig", "@127.0.0.1", "-p", str(agent.dns_port), name, rdtype, "+time=3", "+tries=1",
                          *extra], capture_output=True, text=True, timeout=30)
    return out.stdout


def short(agent: AgentProc, name: str, rdtype: str = "A", *extra: str) -> list[str]:
    return sorted(dig(agent, name, rdtype, "+short", *extra).split("\n")[:-1])


def resolve(agent: AgentProc, name: str, rdtype: str = "A", tcp: bool = False, **kw: object) -> dns.message.Message:
    q = dns.message.make_query(name, rdtype, **kw)  # type: ignore[arg-type]
    if tcp:
        return dns.query.tcp(q, "127.0.0.1", port=agent.dns_port, timeout=5)
    return dns.query.udp(q, "127.0.0.1", port=agent.dns_port, timeout=5)


def rdatas(msg: dns.message.Message, section: str = "answer") -> list[str]:
    return sorted(rd.to_text() for rrset in getattr(msg, section) for rd in rrset)


def negative(msg: dns.message.Message, rcode: int, zone: str = "murmur.", ttl: int = 45) -> None:
    assert msg.rcode() == rcode and msg.answer == []
    assert len(msg.authority) == 1 and msg.authority[0].rdtype == dns.rdatatype.SOA
    soa = msg.authority[0]
    assert soa.name.to_text() == zone and soa.ttl == ttl and soa[0].minimum == ttl


# ---- name forms and record types ------------------------------------------------------------------
def test_service_names_tags_and_ttls(rich: AgentProc) -> None:
    assert short(rich, "web.service.murmur") == ["127.0.0.10", "127.0.0.11"]
    assert short(rich, "web.service.dc1.murmur") == ["127.0.0.10", "127.0.0.11"]
    assert short(rich, "primary.web.service.murmur") == ["127.0.0.10"]
    assert short(rich, "v2.web.service.dc1.murmur") == ["127.0.0.11"]
    resp = resolve(rich, "web.service.murmur")
    assert {r.ttl for r in resp.answer} == {30} and resp.flags & dns.flags.AA
    assert {r.ttl for r in resolve(rich, "big.service.murmur", tcp=True).answer} == {4}  # "big*" prefix
    assert {r.ttl for r in resolve(rich, "plainsvc.service.murmur").answer} == {5}  # "*"
    assert short(rich, "v6svc.service.murmur", "AAAA") == ["::1"]
    assert short(rich, "plainsvc.service.murmur") == ["127.0.0.1"]  # the node's address


def test_srv_rfc2782_weights_and_glue(rich: AgentProc) -> None:
    out = dig(rich, "web.service.murmur", "SRV")
    assert "ADDITIONAL SECTION" in out
    resp = resolve(rich, "web.service.murmur", "SRV")
    # web2 is warning: its SRV weight is Weights.Warning.
    assert rdatas(resp) == ["1 2 8081 7f00000b.addr.dc1.murmur.", "1 5 8080 7f00000a.addr.dc1.murmur."]
    assert rdatas(resp, "additional") == ["127.0.0.10", "127.0.0.11"]
    assert short(rich, "_web._tcp.service.murmur", "SRV") == short(rich, "web.service.murmur", "SRV")
    assert short(rich, "_web._primary.service.dc1.murmur", "SRV") == ["1 5 8080 7f00000a.addr.dc1.murmur."]
    assert short(rich, "_web._v2.murmur", "SRV") == ["1 2 8081 7f00000b.addr.dc1.murmur."]
    node_target = resolve(rich, "plainsvc.service.murmur", "SRV")
    assert rdatas(node_target) == ["1 1 9001 rich.node.dc1.murmur."]
    assert rdatas(node_target, "additional") == ["127.0.0.1"]


def test_node_addr_txt_and_ptr(rich: AgentProc) -> None:
    assert short(rich, "rich.node.murmur") == ["127.0.0.1"]
    assert short(rich, "rich.node.dc1.murmur", "TXT") == ['"plain"', '"rack=r1"']
    assert {r.ttl for r in resolve(rich, "rich.node.murmur").answer} == {7}
    assert short(rich, "7f000001.addr.dc1.murmur") == ["127.0.0.1"]
    assert short(rich, "00000000000000000000000000000001.addr.dc1.murmur", "AAAA") == ["::1"]
    assert short(rich, "1.0.0.127.in-addr.arpa", "PTR") == ["rich.node.dc1.murmur."]
    assert short(rich, dns.reversename.from_address("127.0.0.10").to_text(), "PTR") == ["web.service.murmur."]
    assert short(rich, dns.reversename.from_address("::1").to_text(), "PTR") == ["v6svc.service.murmur."]
    negative(resolve(rich, "9.9.9.127.in-addr.arpa", "PTR"), dns.rcode.NXDOMAIN)


def test_apex_soa_ns_any_and_alt_domain(rich: AgentProc) -> None:
    soa = short(rich, "murmur", "SOA")[0].split()
    assert soa[:2] == ["ns.murmur.", "hostmaster.murmur."] and soa[3:] == ["3600", "600", "86400", "45"]
    ns = resolve(rich, "murmur", "NS")
    assert rdatas(ns) == ["ns.murmur."] and rdatas(ns, "additional") == ["127.0.0.1"]
    assert short(rich, "ns.murmur") == ["127.0.0.1"]
    assert sorted(r.rdtype for r in resolve(rich, "murmur", "ANY", tcp=True).answer) == [
        dns.rdatatype.NS, dns.rdatatype.SOA]
    assert short(rich, "web.service.murmur", "ANY") == ["127.0.0.10", "127.0.0.11"]
    assert short(rich, "rich.node.murmur", "ANY") == ['"plain"', '"rack=r1"', "127.0.0.1"]
    # alt_domain: the same answers, names under the domain asked.
    assert short(rich, "web.service.consul") == ["127.0.0.10", "127.0.0.11"]
    assert short(rich, "_web._primary.service.consul", "SRV") == ["1 5 8080 7f00000a.addr.dc1.consul."]
    assert short(rich, "consul", "NS") == ["ns.consul."]
    negative(resolve(rich, "nothing.consul"), dns.rcode.NXDOMAIN, zone="consul.")


def test_only_passing_drops_warning_instances(plain: AgentProc) -> None:
    assert short(plain, "web.service.murmur") == ["127.0.0.10"]
    assert short(plain, "v2.web.service.murmur") == []
    negative(resolve(plain, "v2.web.service.murmur"), dns.rcode.NXDOMAIN, ttl=0)  # nothing healthy left


# ---- negative answers ----------------------------------------------------------------------------
def test_nxdomain_and_nodata_carry_the_soa(rich: AgentProc) -> None:
    for name in ("nothing.murmur", "nope.service.murmur", "nope.web.service.murmur", "ghost.node.murmur",
                 "zz.addr.dc1.murmur", "web.service.dc9.murmur"):
        negative(resolve(rich, name), dns.rcode.NXDOMAIN)
    assert "status: NXDOMAIN" in dig(rich, "nothing.murmur") and "AUTHORITY: 1" in dig(rich, "nothing.murmur")
    for name, rdtype in (("web.service.murmur", "TXT"), ("rich.node.murmur", "AAAA"), ("murmur", "TXT"),
                         ("7f000001.addr.dc1.murmur", "AAAA")):
        negative(resolve(rich, name, rdtype), dns.rcode.NOERROR)


# ---- size rules ----------------------------------------------------------------------------------
def test_udp_limit_tc_and_full_answer_over_tcp(rich: AgentProc) -> None:
    everyone = sorted(f"127.0.1.{i + 1}" for i in range(BIG))
    # Plain UDP (no EDNS): udp_answer_limit = 3 records, and TC since enable_truncate is on.
    udp = resolve(rich, "big.service.murmur")
    assert len(udp.answer[0]) == 3 and udp.flags & dns.flags.TC
    assert "flags: qr aa tc" in dig(rich, "big.service.murmur", "A", "+noedns", "+ignore")
    # dig retries over TCP on TC and gets them all; so does an explicit TCP query.
    assert short(rich, "big.service.murmur", "A", "+noedns") == everyone
    assert rdatas(resolve(rich, "big.service.murmur", tcp=True)) == everyone
    # EDNS0 with a big buffer: everything over UDP, no TC.
    edns = resolve(rich, "big.service.murmur", use_edns=0, payload=4096)
    assert rdatas(edns) == everyone and not edns.flags & dns.flags.TC
    srv = resolve(rich, "big.service.murmur", "SRV")  # trimmed SRV keeps its glue
    assert len(srv.answer[0]) == 3
    assert {rd.target for rd in srv.answer[0]} == {r.name for r in srv.additional}


def test_a_record_limit_applies_to_tcp_too(plain: AgentProc) -> None:
    assert len(resolve(plain, "big.service.murmur", tcp=True).answer[0]) == 2
    udp = resolve(plain, "big.service.murmur")
    assert len(udp.answer[0]) == 2 and not udp.flags & dns.flags.TC  # enable_truncate off, nothing cut


# ---- recursion -----------------------------------------------------------------------------------
def test_recursion_with_failover(rich: AgentProc, upstream: Upstream) -> None:
    before = dict(upstream.queries)
    t0 = time.monotonic()
    resp = resolve(rich, "www.example.test")
    took = time.monotonic() - t0
    assert resp.rcode() == dns.rcode.NOERROR and rdatas(resp) == [ANSWER]
    assert took >= 0.25  # the black hole was asked first and timed out (300 ms)
    assert upstream.queries["udp"] == before["udp"] + 1
    assert short(rich, "api.example.test", "A", "+tcp") == [ANSWER]
    assert upstream.queries["tcp"] >= before["tcp"] + 1
    assert "status: NXDOMAIN" in dig(rich, "other.invalid")  # the upstream's answer, passed through
    stats = httpx.get(rich.url + "/v1/agent/self", timeout=5).json()["Stats"]["dns"]
    assert int(stats["dns_recursed"]) >= 3 and int(stats["dns_recursor_failures"]) >= 3


def test_no_recursors_is_refused(plain: AgentProc) -> None:
    assert resolve(plain, "www.example.test").rcode() == dns.rcode.REFUSED
    assert "status: REFUSED" in dig(plain, "www.example.test", "A", "+tcp")


def test_all_recursors_failing_is_servfail(tmp_path: Path, blackhole: BlackHole) -> None:
    conf = tmp_path / "c"
    conf.mkdir()
    (conf / "a.json").write_text(json.dumps({"recursors": [f"127.0.0.1:{blackhole.port}"],
                                             "dns_config": {"recursor_timeout": "200ms"}}))
    a = AgentProc(tmp_path, [conf], node="lonely").start()
    try:
        resp = resolve(a, "www.example.test")
        assert resp.rcode() == dns.rcode.SERVFAIL and resp.question[0].name.to_text() == "www.example.test."
        assert resolve(a, "lonely.node.murmur").rcode() == dns.rcode.NOERROR  # our own names unaffected
    finally:
        a.stop()
