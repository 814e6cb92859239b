"""catalog/dns.py: the pure DNS Answerer over a real StateStore, queried with dnspython messages."""

from __future__ import annotations

import random

import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdatatype
import dns.reversename
import dns.rrset
import pytest
from murmur.catalog import commands as cmds
from murmur.catalog.commands import CheckSpec, Register, ServiceSpec
from murmur.catalog.dns import Answerer, DNSSettings
from murmur.catalog.store import StateStore

SERIAL = 1_700_000_000


class World:
    """A catalog to ask: n1..n3 run `web` (n3's instance is critical), n1 also runs `db`
    with its own service address."""

    def __init__(self) -> None:
        self.store = StateStore()
        self.index = 0
        self.reg("n1", "10.0.0.1", ServiceSpec(id="web1", name="web", tags=("v1", "primary"), port=8080),
                 CheckSpec("service:web1", "c", "passing", service_id="web1"),
                 CheckSpec("serfHealth", "s", "passing"), meta=(("rack", "r1"), ("rfc1035-raw", "plain")))
        self.reg("n2", "10.0.0.2", ServiceSpec(id="web2", name="web", tags=("v2",), port=8081),
                 CheckSpec("service:web2", "c", "warning", service_id="web2"))
        self.reg("n3", "10.0.0.3", ServiceSpec(id="web3", name="web", tags=("v1",), port=8082),
                 CheckSpec("service:web3", "c", "critical", service_id="web3"))
        self.reg("n1", "10.0.0.1", ServiceSpec(id="db1", name="db", address="192.168.1.7", port=5432),
                 meta=(("rack", "r1"), ("rfc1035-raw", "plain")))
        self.reg("n4", "10.0.0.4", ServiceSpec(id="down", name="down"),
                 CheckSpec("service:down", "c", "critical", service_id="down"))

    def reg(self, node: str, address: str, service: ServiceSpec | None, *checks: CheckSpec,
            meta: tuple[tuple[str, str], ...] = ()) -> None:
        self.index += 1
        cmd = Register(node=node, address=address, datacenter="dc1", service=service, checks=checks,
                       node_meta=meta)
        assert self.store.apply(self.index, cmds.encode(cmd)) is True


@pytest.fixture
def world() -> World:
    return World()


def ask(world: World, name: str, rdtype: str = "A", seed: int = 1, **settings: object) -> dns.message.Message:
    answerer = Answerer(DNSSettings(**settings), random.Random(seed))  # type: ignore[arg-type]
    return answerer.answer(dns.message.make_query(name, rdtype), world.store, SERIAL)


def rdatas(resp: dns.message.Message, section: str = "answer") -> list[str]:
    return sorted(rd.to_text() for rrset in getattr(resp, section) for rd in rrset)


def assert_soa_authority(resp: dns.message.Message) -> None:
    assert resp.answer == []
    assert len(resp.authority) == 1
    soa = resp.authority[0]
    assert soa.rdtype == dns.rdatatype.SOA and soa.name == dns.name.from_text("murmur.")
    rd = soa[0]
    assert (rd.mname.to_text(), rd.rname.to_text(), rd.serial, rd.refresh, rd.retry, rd.expire) == (
        "ns.murmur.", "hostmaster.murmur.", SERIAL, 3600, 600, 86400)


# ---- services ------------------------------------------------------------------------------------
def test_service_a_healthy_instances_only(world: World) -> None:
    resp = ask(world, "web.service.murmur")
    assert resp.rcode() == dns.rcode.NOERROR
    assert resp.flags & dns.flags.AA
    assert rdatas(resp) == ["10.0.0.1", "10.0.0.2"]  # n3 is critical; n2 (warning) stays
    assert all(rrset.name == dns.name.from_text("web.service.murmur.") for rrset in resp.answer)


def test_only_passing_drops_warning(world: World) -> None:
    assert rdatas(ask(world, "web.service.murmur", only_passing=True)) == ["10.0.0.1"]


def test_node_critical_check_excludes_instance(world: World) -> None:
    world.reg("n1", "10.0.0.1", None, CheckSpec("serfHealth", "s", "critical"))
    assert rdatas(ask(world, "web.service.murmur")) == ["10.0.0.2"]


def test_service_srv_targets_and_glue(world: World) -> None:
    resp = ask(world, "web.service.murmur", "SRV")
    assert rdatas(resp) == ["1 1 8080 n1.node.dc1.murmur.", "1 1 8081 n2.node.dc1.murmur."]
    glue = {rrset.name.to_text(): [rd.to_text() for rd in rrset] for rrset in resp.additional}
    assert glue == {"n1.node.dc1.murmur.": ["10.0.0.1"], "n2.node.dc1.murmur.": ["10.0.0.2"]}
    assert all(rrset.rdtype == dns.rdatatype.A for rrset in resp.additional)


def test_srv_target_is_addr_name_with_a_service_address(world: World) -> None:
    resp = ask(world, "db.service.murmur", "SRV")
    target = "c0a80107.addr.dc1.murmur."  # 192.168.1.7
    assert rdatas(resp) == [f"1 1 5432 {target}"]
    assert [(r.name.to_text(), rdatas_of(r)) for r in resp.additional] == [(target, ["192.168.1.7"])]
    # and the A query answers the service address, not the node's
    assert rdatas(ask(world, "db.service.murmur")) == ["192.168.1.7"]


def rdatas_of(rrset: dns.rrset.RRset) -> list[str]:
    return [rd.to_text() for rd in rrset]


def test_srv_weight_from_passing_weight(world: World) -> None:
    world.reg("n5", "10.0.0.5", ServiceSpec(id="w", name="weighted", port=1, weights=(7, 1)))
    world.reg("n6", "10.0.0.6", ServiceSpec(id="z", name="weighted", port=2, weights=(0, 1)))
    assert rdatas(ask(world, "weighted.service.murmur", "SRV")) == [
        "1 1 2 n6.node.dc1.murmur.", "1 7 1 n5.node.dc1.murmur."]  # weight never below 1


def test_tag_lookup(world: World) -> None:
    assert rdatas(ask(world, "v1.web.service.murmur")) == ["10.0.0.1"]  # n3 has v1 but is critical
    assert rdatas(ask(world, "v2.web.service.murmur")) == ["10.0.0.2"]
    resp = ask(world, "nope.web.service.murmur")
    assert resp.rcode() == dns.rcode.NXDOMAIN
    assert_soa_authority(resp)


def test_rfc2782_forms(world: World) -> None:
    both = ["1 1 8080 n1.node.dc1.murmur.", "1 1 8081 n2.node.dc1.murmur."]
    assert rdatas(ask(world, "_web._tcp.service.murmur", "SRV")) == both
    assert rdatas(ask(world, "_web._udp.service.murmur", "SRV")) == both
    assert rdatas(ask(world, "_web._v1.service.murmur", "SRV")) == ["1 1 8080 n1.node.dc1.murmur."]
    assert rdatas(ask(world, "_web._tcp.murmur", "SRV")) == both  # without the `service` label
    assert rdatas(ask(world, "_web._tcp.service.dc1.murmur", "SRV")) == both
    assert ask(world, "_web._v9.service.murmur", "SRV").rcode() == dns.rcode.NXDOMAIN


def test_datacenter_forms(world: World) -> None:
    want = ["10.0.0.1", "10.0.0.2"]
    assert rdatas(ask(world, "web.service.dc1.murmur")) == want
    assert rdatas(ask(world, "web.service.dc1.dc.murmur")) == want
    assert rdatas(ask(world, "v1.web.service.dc1.murmur")) == ["10.0.0.1"]
    assert rdatas(ask(world, "n1.node.dc1.murmur")) == ["10.0.0.1"]
    for name in ("web.service.dc2.murmur", "web.service.dc2.dc.murmur", "n1.node.dc2.murmur"):
        resp = ask(world, name)
        assert resp.rcode() == dns.rcode.NXDOMAIN, name
        assert_soa_authority(resp)


def test_all_unhealthy_is_nxdomain_with_soa(world: World) -> None:
    resp = ask(world, "down.service.murmur")
    assert resp.rcode() == dns.rcode.NXDOMAIN
    assert_soa_authority(resp)
    # positive control: once its check passes, the same name answers
    world.reg("n4", "10.0.0.4", None, CheckSpec("service:down", "c", "passing", service_id="down"))
    resp = ask(world, "down.service.murmur")
    assert resp.rcode() == dns.rcode.NOERROR and rdatas(resp) == ["10.0.0.4"]


def test_unknown_names_are_nxdomain(world: World) -> None:
    for name in ("missing.service.murmur", "ghost.node.murmur", "foo.murmur", "a.b.c.d.murmur",
                 "zz.addr.dc1.murmur", "0a0000.addr.dc1.murmur"):
        resp = ask(world, name)
        assert resp.rcode() == dns.rcode.NXDOMAIN, name
        assert_soa_authority(resp)


def test_existing_name_without_data_of_the_type_is_noerror_with_soa(world: World) -> None:
    for name, rdtype in (("web.service.murmur", "AAAA"), ("web.service.murmur", "TXT"),
                         ("n2.node.murmur", "AAAA"), ("n2.node.murmur", "TXT"),
                         ("0a000001.addr.dc1.murmur", "AAAA")):
        resp = ask(world, name, rdtype)
        assert resp.rcode() == dns.rcode.NOERROR, (name, rdtype)
        assert_soa_authority(resp)
    # positive control: the same names with the type they have
    assert rdatas(ask(world, "n2.node.murmur", "A")) == ["10.0.0.2"]


def test_apex_exists(world: World) -> None:
    resp = ask(world, "murmur", "SOA")
    assert resp.rcode() == dns.rcode.NOERROR
    assert [r.rdtype for r in resp.answer] == [dns.rdatatype.SOA]
    other = ask(world, "murmur", "A")  # exists, no data of that type: NOERROR + SOA in authority
    assert other.rcode() == dns.rcode.NOERROR and not other.answer
    assert [r.rdtype for r in other.authority] == [dns.rdatatype.SOA]


def test_rfc2782_with_datacenter_without_service_label(world: World) -> None:
    assert rdatas(ask(world, "_web._v1.dc1.murmur", "SRV")) == ["1 1 8080 n1.node.dc1.murmur."]
    assert ask(world, "_web._v1.dc2.murmur", "SRV").rcode() == dns.rcode.NXDOMAIN  # another datacenter


def test_ipv6_service_address(world: World) -> None:
    world.reg("n7", "10.0.0.7", ServiceSpec(id="v6", name="six", address="2001:db8::1", port=9))
    assert rdatas(ask(world, "six.service.murmur", "AAAA")) == ["2001:db8::1"]
    resp = ask(world, "six.service.murmur", "SRV")
    target = "20010db8000000000000000000000001.addr.dc1.murmur."
    assert rdatas(resp) == [f"1 1 9 {target}"]
    assert [(r.name.to_text(), r.rdtype) for r in resp.additional] == [(target, dns.rdatatype.AAAA)]
    assert rdatas(ask(world, "20010db8000000000000000000000001.addr.dc1.murmur", "AAAA")) == ["2001:db8::1"]
    assert_soa_authority(ask(world, "six.service.murmur", "A"))


def test_any_gives_a_records(world: World) -> None:
    assert rdatas(ask(world, "web.service.murmur", "ANY")) == ["10.0.0.1", "10.0.0.2"]


# ---- nodes, addr, PTR ----------------------------------------------------------------------------
def test_node_a_and_txt(world: World) -> None:
    assert rdatas(ask(world, "n1.node.murmur")) == ["10.0.0.1"]
    assert rdatas(ask(world, "n1.node.murmur", "TXT")) == ['"plain"', '"rack=r1"']  # rfc1035- gives value only
    assert rdatas(ask(world, "n1.node.murmur", "ANY")) == ['"plain"', '"rack=r1"', "10.0.0.1"]


def test_addr_lookup(world: World) -> None:
    assert rdatas(ask(world, "0a000001.addr.dc1.murmur")) == ["10.0.0.1"]
    assert rdatas(ask(world, "c0a80107.addr.murmur")) == ["192.168.1.7"]


def test_ptr(world: World) -> None:
    resp = ask(world, "2.0.0.10.in-addr.arpa", "PTR")
    assert resp.rcode() == dns.rcode.NOERROR
    assert rdatas(resp) == ["n2.node.dc1.murmur."]
    resp = ask(world, "9.9.9.10.in-addr.arpa", "PTR")
    assert resp.rcode() == dns.rcode.NXDOMAIN
    assert_soa_authority(resp)
    assert ask(world, "x.0.0.10.in-addr.arpa", "PTR").rcode() == dns.rcode.NXDOMAIN


# ---- protocol edges ------------------------------------------------------------------------------
def test_outside_domain_refused(world: World) -> None:
    resp = ask(world, "example.com")
    assert resp.rcode() == dns.rcode.REFUSED
    assert not resp.flags & dns.flags.AA
    assert resp.answer == [] and resp.authority == []
    assert ask(world, "web.service.consul").rcode() == dns.rcode.REFUSED  # not our domain
    assert rdatas(ask(world, "web.service.consul", domain="consul")) == ["10.0.0.1", "10.0.0.2"]


def test_other_domain_setting(world: World) -> None:
    resp = ask(world, "nothing.consul", domain="consul.")
    assert resp.rcode() == dns.rcode.NXDOMAIN
    assert resp.authority[0].name == dns.name.from_text("consul.")


def test_case_insensitive(world: World) -> None:
    assert rdatas(ask(world, "WEB.Service.MURMUR")) == ["10.0.0.1", "10.0.0.2"]
    assert rdatas(ask(world, "V1.Web.SERVICE.DC1.murmur")) == ["10.0.0.1"]
    assert rdatas(ask(world, "N1.NODE.murmur")) == ["10.0.0.1"]
    world.reg("Mixed", "10.0.0.8", ServiceSpec(id="m", name="MixedCase", tags=("Tag",)))
    assert rdatas(ask(world, "mixed.node.murmur")) == ["10.0.0.8"]
    assert rdatas(ask(world, "tag.mixedcase.service.murmur")) == ["10.0.0.8"]
    assert rdatas(ask(world, "_MIXEDCASE._TAG.service.murmur", "SRV")) == ["1 1 0 Mixed.node.dc1.murmur."]  # the node name as registered


def test_response_echoes_id_and_question(world: World) -> None:
    query = dns.message.make_query("web.service.murmur", "A")
    resp = Answerer(DNSSettings(), random.Random(0)).answer(query, world.store, SERIAL)
    assert resp.id == query.id and resp.question == query.question
    assert resp.flags & dns.flags.QR and not resp.flags & dns.flags.RA


def test_non_query_opcode_not_implemented(world: World) -> None:
    query = dns.message.make_query("web.service.murmur", "A")
    query.set_opcode(dns.opcode.NOTIFY)
    resp = Answerer(DNSSettings(), random.Random(0)).answer(query, world.store, SERIAL)
    assert resp.rcode() == dns.rcode.NOTIMP


def test_ttls(world: World) -> None:
    resp = ask(world, "web.service.murmur", service_ttl={"web": 30, "*": 5}, node_ttl=7)
    assert {r.ttl for r in resp.answer} == {30}
    assert {r.ttl for r in ask(world, "db.service.murmur", service_ttl={"web": 30, "*": 5}).answer} == {5}
    assert {r.ttl for r in ask(world, "db.service.murmur").answer} == {0}
    assert {r.ttl for r in ask(world, "n1.node.murmur", node_ttl=7).answer} == {7}
    soa = ask(world, "nothing.murmur", soa_min_ttl=60).authority[0]
    assert soa.ttl == 60 and soa[0].minimum == 60


# ---- limits and shuffling ------------------------------------------------------------------------
@pytest.fixture
def many() -> World:
    w = World()
    for i in range(10, 30):
        w.reg(f"m{i}", f"10.1.0.{i}", ServiceSpec(id="big", name="big", port=i))
    return w


def test_a_record_limit(many: World) -> None:
    everyone = sorted(f"10.1.0.{i}" for i in range(10, 30))
    assert rdatas(ask(many, "big.service.murmur")) == everyone  # positive control: no limit
    for limit in (1, 3, 5):
        got = rdatas(ask(many, "big.service.murmur", a_record_limit=limit))
        assert len(got) == limit and set(got) <= set(everyone)
        srv = rdatas(ask(many, "big.service.murmur", "SRV", a_record_limit=limit))
        assert len(srv) == limit


def test_shuffle_is_deterministic_given_the_seed(many: World) -> None:
    def order(seed: int) -> list[str]:
        return [rd.to_text() for rd in ask(many, "big.service.murmur", seed=seed).answer[0]]

    assert order(7) == order(7)
    orders = {tuple(order(seed)) for seed in range(8)}
    assert len(orders) > 1  # it does shuffle
    assert all(sorted(o) == sorted(f"10.1.0.{i}" for i in range(10, 30)) for o in orders)
    # one Answerer's successive answers come from its own rng stream
    answerer = Answerer(DNSSettings(), random.Random(3))
    again = Answerer(DNSSettings(), random.Random(3))
    for _ in range(3):
        query = dns.message.make_query("big.service.murmur", "A")
        a = answerer.answer(query, many.store, SERIAL)
        b = again.answer(query, many.store, SERIAL)
        assert [rd.to_text() for rd in a.answer[0]] == [rd.to_text() for rd in b.answer[0]]


def test_a_record_limit_picks_different_instances_with_different_seeds(many: World) -> None:
    picks = {tuple(rdatas(ask(many, "big.service.murmur", seed=s, a_record_limit=2))) for s in range(10)}
    assert len(picks) > 1  # the limit cuts after shuffling, so load is spread


# ---- reverse lookups, apex, alt_domain, SOA settings, TTL prefixes, weights ------------------------
def test_ptr_ipv6_and_service_addresses(world: World) -> None:
    world.reg("v6", "2001:db8::5", None)
    world.reg("n1", "10.0.0.1", ServiceSpec(id="db6", name="db6", address="2001:db8::77", port=1))
    name6 = dns.reversename.from_address("2001:db8::5").to_text()
    assert rdatas(ask(world, name6, "PTR")) == ["v6.node.dc1.murmur."]
    # No node has the address: the services registered with it as their own address.
    assert rdatas(ask(world, "7.1.168.192.in-addr.arpa", "PTR")) == ["db.service.murmur."]
    assert rdatas(ask(world, dns.reversename.from_address("2001:db8::77").to_text(), "PTR")) == [
        "db6.service.murmur."]
    missing = ask(world, dns.reversename.from_address("2001:db8::99").to_text(), "PTR")
    assert missing.rcode() == dns.rcode.NXDOMAIN
    assert_soa_authority(missing)
    # The name exists, the type does not: NODATA with the SOA.
    nodata = ask(world, "2.0.0.10.in-addr.arpa", "A")
    assert nodata.rcode() == dns.rcode.NOERROR
    assert_soa_authority(nodata)
    assert ask(world, "8.ip6.arpa", "PTR").rcode() == dns.rcode.NXDOMAIN  # partial name


def test_apex_ns_with_glue_and_ns_host(world: World) -> None:
    resp = ask(world, "murmur", "NS", ns_address="127.0.0.9")
    assert rdatas(resp) == ["ns.murmur."]
    assert rdatas(resp, "additional") == ["127.0.0.9"]
    assert rdatas(ask(world, "ns.murmur", "A", ns_address="127.0.0.9")) == ["127.0.0.9"]
    any_ = ask(world, "murmur", "ANY")
    assert sorted(r.rdtype for r in any_.answer) == [dns.rdatatype.NS, dns.rdatatype.SOA]
    nodata = ask(world, "murmur", "TXT")
    assert nodata.rcode() == dns.rcode.NOERROR and nodata.answer == [] and nodata.authority[0].rdtype == dns.rdatatype.SOA


def test_alt_domain_answers_like_domain(world: World) -> None:
    assert rdatas(ask(world, "web.service.consul", alt_domain="consul")) == ["10.0.0.1", "10.0.0.2"]
    srv = ask(world, "db.service.consul", "SRV", alt_domain="consul")
    assert rdatas(srv) == ["1 1 5432 c0a80107.addr.dc1.consul."]  # targets under the domain asked
    assert rdatas(srv, "additional") == ["192.168.1.7"]
    assert rdatas(ask(world, "n1.node.dc1.consul", alt_domain="consul")) == ["10.0.0.1"]
    resp = ask(world, "nothing.consul", alt_domain="consul")
    assert resp.rcode() == dns.rcode.NXDOMAIN and resp.authority[0].name == dns.name.from_text("consul.")
    assert rdatas(ask(world, "consul", "SOA", alt_domain="consul"))[0].startswith("ns.consul. hostmaster.consul.")
    assert rdatas(ask(world, "web.service.murmur", alt_domain="consul")) == ["10.0.0.1", "10.0.0.2"]
    assert ask(world, "web.service.other", alt_domain="consul").rcode() == dns.rcode.REFUSED


def test_soa_settings_in_negative_answers(world: World) -> None:
    for name, rcode in (("nothing.murmur", dns.rcode.NXDOMAIN), ("n1.node.murmur", dns.rcode.NOERROR)):
        resp = ask(world, name, "SRV" if rcode == dns.rcode.NOERROR else "A", soa_min_ttl=45,
                   soa_refresh=11, soa_retry=12, soa_expire=13)
        assert resp.rcode() == rcode and resp.answer == []
        soa = resp.authority[0]
        assert soa.ttl == 45 and (soa[0].refresh, soa[0].retry, soa[0].expire, soa[0].minimum) == (11, 12, 13, 45)


def test_service_ttl_prefix_and_star(world: World) -> None:
    ttls = {"web": 30, "d*": 9, "db*": 8, "*": 5}
    assert {r.ttl for r in ask(world, "web.service.murmur", service_ttl=ttls).answer} == {30}
    assert {r.ttl for r in ask(world, "db.service.murmur", service_ttl=ttls).answer} == {8}  # longest prefix
    world.reg("n9", "10.0.0.9", ServiceSpec(id="dx", name="dx"))
    assert {r.ttl for r in ask(world, "dx.service.murmur", service_ttl=ttls).answer} == {9}
    world.reg("n9", "10.0.0.9", ServiceSpec(id="zz", name="zz"))
    assert {r.ttl for r in ask(world, "zz.service.murmur", service_ttl=ttls).answer} == {5}


def test_srv_weight_is_warning_weight_for_warning_instances(world: World) -> None:
    world.reg("n5", "10.0.0.5", ServiceSpec(id="p", name="wt", port=1, weights=(10, 2)))
    world.reg("n6", "10.0.0.6", ServiceSpec(id="w", name="wt", port=2, weights=(10, 2)),
              CheckSpec("service:w", "c", "warning", service_id="w"))
    assert rdatas(ask(world, "wt.service.murmur", "SRV")) == ["1 10 1 n5.node.dc1.murmur.",
                                                              "1 2 2 n6.node.dc1.murmur."]


def test_shuffle_honours_weights(world: World) -> None:
    world.reg("h1", "10.2.0.1", ServiceSpec(id="a", name="heavy", port=1, weights=(9, 1)))
    world.reg("h2", "10.2.0.2", ServiceSpec(id="b", name="heavy", port=2, weights=(1, 1)))
    answerer = Answerer(DNSSettings(a_record_limit=1), random.Random(7))
    firsts = [answerer.answer(dns.message.make_query("heavy.service.murmur", "A"), world.store, SERIAL
                              ).answer[0][0].to_text() for _ in range(1000)]
    share = firsts.count("10.2.0.1") / len(firsts)
    assert 0.85 <= share <= 0.95  # 9/10 expected
