"""DNS answers from the catalog (pure): a parsed question in, a response message out.

Names follow Consul's, under our domain (default `murmur.`):
  <node>.node[.<dc>].murmur                 A/AAAA/TXT/ANY
  [<tag>.]<service>.service[.<dc>].murmur   A/AAAA/SRV/ANY   (healthy instances only)
  _<service>._<tag|tcp|udp>[.service][.<dc>].murmur  SRV (RFC 2782)
  <hex-ip>.addr[.<dc>].murmur               A/AAAA
  <reversed-ip>.in-addr.arpa / .ip6.arpa     PTR for node addresses and service addresses
  <domain> (the apex)                        SOA, NS (with the NS host's A glue), ANY
The same names answer under `alt_domain` when one is set (answers carry the name asked).
Anything else inside the domain is NXDOMAIN with an SOA; a name that exists without data of the
asked type is NOERROR with an SOA (NODATA); both SOAs carry `soa.min_ttl` as their TTL and
minimum (RFC 2308 negative caching). Names outside the domain are REFUSED here; the agent's DNS
server forwards them to its recursors first when it has some. Sockets, caching and truncation
limits live in the agent's DNS server.
"""

from __future__ import annotations

import ipaddress
import random
from dataclasses import dataclass, field

import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from .queries import WARNING, aggregate_status, healthy_instances, instance_checks
from .store import NodeRecord, ServiceRecord, StateStore

A, AAAA, SRV, TXT, ANY, PTR, SOA = (dns.rdatatype.A, dns.rdatatype.AAAA, dns.rdatatype.SRV,
                                    dns.rdatatype.TXT, dns.rdatatype.ANY, dns.rdatatype.PTR,
                                    dns.rdatatype.SOA)
ARPA4 = dns.name.from_text("in-addr.arpa.")
ARPA6 = dns.name.from_text("ip6.arpa.")
NS = dns.rdatatype.NS


@dataclass(frozen=True)
class DNSSettings:
    """What shapes answers (dns_config of the agent config)."""

    domain: str = "murmur"
    datacenter: str = "dc1"
    node_ttl: int = 0  # seconds; 0 (Consul's default) means clients re-ask every time: fresh, more load
    service_ttl: dict[str, int] = field(default_factory=dict)  # by service name, "*" for the rest
    only_passing: bool = False  # also drop instances whose worst check is warning
    a_record_limit: int = 0  # 0 = no limit beyond what fits the transport
    soa_min_ttl: int = 0  # negative-caching TTL in the SOA
    soa_refresh: int = 3600
    soa_retry: int = 600
    soa_expire: int = 86400
    alt_domain: str = ""  # a second domain answered like `domain`; "" = none
    ns_address: str = "127.0.0.1"  # A/AAAA glue for ns.<domain> (the agent's advertised address)


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


class Answerer:
    """Builds responses for one domain. Holds only settings and a seeded RNG for shuffling."""

    def __init__(self, settings: DNSSettings, rng: random.Random) -> None:
        self.settings = settings
        self.rng = rng
        self.origin = dns.name.from_text(settings.domain.strip(".") + ".")
        alt = settings.alt_domain.strip(".")
        self.alt_origin = dns.name.from_text(alt + ".") if alt else None
        self.ns_name = dns.name.from_text("ns", self.origin)

    def in_zone(self, qname: dns.name.Name) -> bool:
        """A name we answer ourselves (our domains and reverse lookups); others go to recursors."""
        return (qname.is_subdomain(self.origin) or qname.is_subdomain(ARPA4) or qname.is_subdomain(ARPA6)
                or (self.alt_origin is not None and qname.is_subdomain(self.alt_origin)))

    # ---- helpers --------------------------------------------------------------------------------
    def _soa(self, serial: int, origin: dns.name.Name | None = None) -> dns.rrset.RRset:
        zone = origin or self.origin
        d = zone.to_text()
        st = self.settings
        return dns.rrset.from_text(zone, st.soa_min_ttl, "IN", "SOA",
                                   f"ns.{d} hostmaster.{d} {serial} {st.soa_refresh} {st.soa_retry} "
                                   f"{st.soa_expire} {st.soa_min_ttl}")

    def _service_ttl(self, name: str) -> int:
        """By exact name, else the longest matching `prefix*` key, else "*", else 0 (Consul's rule)."""
        ttls = self.settings.service_ttl
        if name in ttls:
            return ttls[name]
        lname = name.lower()
        best = -1
        ttl = ttls.get("*", 0)
        for key, value in ttls.items():
            if key.endswith("*") and len(key) > 1 and lname.startswith(key[:-1].lower()) and len(key) > best:
                best, ttl = len(key), value
        return ttl

    def _node_target(self, node: str, zone: dns.name.Name | None = None) -> dns.name.Name:
        return dns.name.from_text(f"{node}.node.{self.settings.datacenter}", zone or self.origin)

    def _addr_target(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address,
                     zone: dns.name.Name | None = None) -> dns.name.Name:
        return dns.name.from_text(f"{ip.packed.hex()}.addr.{self.settings.datacenter}", zone or self.origin)

    @staticmethod
    def _addr_rrset(name: dns.name.Name, ttl: int,
                    ips: list[ipaddress.IPv4Address | ipaddress.IPv6Address], rdtype: int) -> dns.rrset.RRset | None:
        want = 4 if rdtype == A else 6
        texts = [str(ip) for ip in ips if ip.version == want]
        if not texts:
            return None
        return dns.rrset.from_text_list(name, ttl, "IN", dns.rdatatype.RdataType(rdtype).name, texts)

    # ---- entry point ----------------------------------------------------------------------------
    def answer(self, query: dns.message.Message, store: StateStore, serial: int) -> dns.message.Message:
        resp = dns.message.make_response(query)
        resp.flags |= dns.flags.AA
        resp.flags &= ~dns.flags.RA
        if query.opcode() != dns.opcode.QUERY:
            resp.set_rcode(dns.rcode.NOTIMP)
            return resp
        if len(query.question) != 1:
            resp.set_rcode(dns.rcode.FORMERR)
            return resp
        q = query.question[0]
        if q.rdclass not in (dns.rdataclass.IN, dns.rdataclass.ANY):
            resp.set_rcode(dns.rcode.REFUSED)
            return resp
        qname = q.name
        if qname.is_subdomain(ARPA4) or qname.is_subdomain(ARPA6):
            self._ptr(resp, qname, q.rdtype, store, serial)
            return resp
        if qname.is_subdomain(self.origin):
            zone = self.origin
        elif self.alt_origin is not None and qname.is_subdomain(self.alt_origin):
            zone = self.alt_origin
        else:
            resp.flags &= ~dns.flags.AA
            resp.set_rcode(dns.rcode.REFUSED)
            return resp
        labels = [lb.decode("ascii", "replace").lower() for lb in qname.relativize(zone).labels]
        if not labels:  # the zone apex: SOA, NS (with glue), NODATA for anything else
            self._apex(resp, zone, q.rdtype, serial)
            return resp
        if labels == ["ns"]:  # the NS host named in our SOA and NS records
            if not self._addr_answer(resp, qname, q.rdtype, self.settings.ns_address, self.settings.node_ttl):
                resp.authority.append(self._soa(serial, zone))
            return resp
        found = self._lookup(resp, qname, q.rdtype, labels, store, zone)
        if found is None:
            resp.set_rcode(dns.rcode.NXDOMAIN)
            resp.authority.append(self._soa(serial, zone))
        elif not found:
            resp.authority.append(self._soa(serial, zone))
        return resp

    def _apex(self, resp: dns.message.Message, zone: dns.name.Name, rdtype: int, serial: int) -> None:
        added = False
        if rdtype in (SOA, ANY):
            resp.answer.append(self._soa(serial, zone))
            added = True
        if rdtype in (NS, ANY):
            ns_name = dns.name.from_text("ns", zone)
            resp.answer.append(dns.rrset.from_text(zone, self.settings.node_ttl, "IN", "NS", ns_name.to_text()))
            ip = _ip(self.settings.ns_address)
            if ip is not None:
                glue = self._addr_rrset(ns_name, self.settings.node_ttl, [ip], A if ip.version == 4 else AAAA)
                if glue is not None:
                    resp.additional.append(glue)
            added = True
        if not added:
            resp.authority.append(self._soa(serial, zone))

    def _addr_answer(self, resp: dns.message.Message, qname: dns.name.Name, rdtype: int, address: str,
                     ttl: int) -> bool:
        ip = _ip(address)
        if ip is None:
            return False
        added = False
        for t in ((A, AAAA) if rdtype == ANY else (rdtype,)):
            if t in (A, AAAA):
                rrset = self._addr_rrset(qname, ttl, [ip], t)
                if rrset is not None:
                    resp.answer.append(rrset)
                    added = True
        return added

    def _lookup(self, resp: dns.message.Message, qname: dns.name.Name, rdtype: int, labels: list[str],
                store: StateStore, zone: dns.name.Name) -> bool | None:
        """Fill the answer. None: the name does not exist; False: it exists but has no such data."""
        if len(labels) >= 2 and labels[-1] == "dc":  # <...>.<dc>.dc.<domain>
            labels = labels[:-1]
            if len(labels) < 2:
                return None
            dc = labels.pop()
        elif len(labels) >= 2 and labels[-1] not in ("node", "service", "addr") and labels[-2] in (
                "node", "service", "addr"):
            dc = labels.pop()
        elif (len(labels) == 3 and labels[0].startswith("_") and labels[1].startswith("_")
              and labels[2] != "service"):
            dc = labels.pop()  # _<service>._<tag>.<dc>.<domain>
        else:
            dc = self.settings.datacenter
        if dc != self.settings.datacenter.lower() or not labels:
            return None
        kind = labels[-1]
        head = labels[:-1]
        if kind == "node" and len(head) >= 1:
            return self._node(resp, qname, rdtype, ".".join(head), store)
        if kind == "service" and 1 <= len(head) <= 2:
            if len(head) == 2 and head[0].startswith("_") and head[1].startswith("_"):
                tag = head[1][1:]
                return self._service(resp, qname, SRV if rdtype in (SRV, ANY) else rdtype, head[0][1:],
                                     None if tag in ("tcp", "udp") else tag, store, zone)
            return self._service(resp, qname, rdtype, head[-1], head[0] if len(head) == 2 else None, store,
                                 zone)
        if kind == "addr" and len(head) == 1:
            return self._addr(resp, qname, rdtype, head[0])
        if len(labels) == 2 and labels[0].startswith("_") and labels[1].startswith("_"):
            # _name._tag.<domain> without the `service` label
            tag = labels[1][1:]
            return self._service(resp, qname, SRV, labels[0][1:], None if tag in ("tcp", "udp") else tag,
                                 store, zone)
        return None

    def _node(self, resp: dns.message.Message, qname: dns.name.Name, rdtype: int, node: str,
              store: StateStore) -> bool | None:
        rec = next((n for name, n in store.nodes.items() if name.lower() == node), None)
        if rec is None:
            return None
        ttl = self.settings.node_ttl
        ip = _ip(rec.address)
        added = False
        for t in ((A, AAAA) if rdtype == ANY else (rdtype,)):
            if t in (A, AAAA) and ip is not None:
                rrset = self._addr_rrset(qname, ttl, [ip], t)
                if rrset is not None:
                    resp.answer.append(rrset)
                    added = True
        if rdtype in (TXT, ANY) and rec.meta:
            texts = []
            for k, v in rec.meta:
                text = v if k.startswith("rfc1035-") else f"{k}={v}"
                texts.append('"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"')
            resp.answer.append(dns.rrset.from_text_list(qname, ttl, "IN", "TXT", texts))
            added = True
        return added

    def _service(self, resp: dns.message.Message, qname: dns.name.Name, rdtype: int, name: str,
                 tag: str | None, store: StateStore, zone: dns.name.Name) -> bool | None:
        # Service and tag names match case-insensitively, as in DNS.
        real = next((r.spec.name for r in store.all_services() if r.spec.name.lower() == name), None)
        if real is None:
            return None
        found = [(n, r) for n, r in healthy_instances(store, real, None, self.settings.only_passing)
                 if tag is None or any(t.lower() == tag for t in r.spec.tags)]
        if not found:
            return None  # all filtered out: NXDOMAIN, not an empty NOERROR (consul#1142)
        weighted = [(n, r, instance_weight(store, r)) for n, r in found]
        instances = self._weighted_shuffle(weighted)
        if self.settings.a_record_limit > 0:
            instances = instances[: self.settings.a_record_limit]
        ttl = self._service_ttl(real)
        if rdtype == SRV:
            return self._srv(resp, qname, ttl, instances, zone)
        if rdtype in (A, AAAA, ANY):
            ips = [ip for _, r, _ in instances if (ip := _ip(r.spec.address or _node_addr(store, r))) is not None]
            added = False
            for t in ((A, AAAA) if rdtype == ANY else (rdtype,)):
                rrset = self._addr_rrset(qname, ttl, ips, t)
                if rrset is not None:
                    resp.answer.append(rrset)
                    added = True
            return added
        return False

    def _weighted_shuffle(self, items: list[tuple[NodeRecord, ServiceRecord, int]]
                          ) -> list[tuple[NodeRecord, ServiceRecord, int]]:
        """A random order where an instance of weight w comes first w times as often as one of
        weight 1 (order by u**(1/w), u uniform: Efraimidis-Spirakis). Equal weights: a plain shuffle."""
        if len({w for _, _, w in items}) <= 1:
            out = list(items)
            self.rng.shuffle(out)
            return out
        keyed = [(self.rng.random() ** (1.0 / max(w, 1)), i) for i, (_, _, w) in enumerate(items)]
        keyed.sort(reverse=True)
        return [items[i] for _, i in keyed]

    def _srv(self, resp: dns.message.Message, qname: dns.name.Name, ttl: int,
             instances: list[tuple[NodeRecord, ServiceRecord, int]], zone: dns.name.Name) -> bool:
        srv_texts: list[str] = []
        extra: dict[dns.name.Name, ipaddress.IPv4Address | ipaddress.IPv6Address] = {}
        for node, r, weight in instances:
            ip = _ip(r.spec.address) if r.spec.address else None
            if ip is not None:
                target = self._addr_target(ip, zone)
            else:
                target = self._node_target(node.name, zone)
                ip = _ip(node.address)
            weight = min(max(1, weight), 65535)
            srv_texts.append(f"1 {weight} {r.spec.port} {target.to_text()}")
            if ip is not None:
                extra[target] = ip
        resp.answer.append(dns.rrset.from_text_list(qname, ttl, "IN", "SRV", srv_texts))
        for target, ip in extra.items():
            rr = self._addr_rrset(target, ttl, [ip], A if ip.version == 4 else AAAA)
            if rr is not None:
                resp.additional.append(rr)
        return True

    def _addr(self, resp: dns.message.Message, qname: dns.name.Name, rdtype: int, hexip: str) -> bool | None:
        try:
            raw = bytes.fromhex(hexip)
        except ValueError:
            return None
        if len(raw) not in (4, 16):
            return None
        ip = ipaddress.ip_address(raw)
        want = A if ip.version == 4 else AAAA
        if rdtype not in (want, ANY):
            return False
        resp.answer.append(dns.rrset.from_text(qname, 0, "IN", dns.rdatatype.RdataType(want).name, str(ip)))
        return True

    def _ptr(self, resp: dns.message.Message, qname: dns.name.Name, rdtype: int, store: StateStore,
             serial: int) -> None:
        """in-addr.arpa / ip6.arpa: node names for node addresses, then `<service>.service` names for
        service addresses. Partial reverse names (a /24 zone) exist without data: NODATA."""
        v6 = qname.is_subdomain(ARPA6)
        rel = qname.relativize(ARPA6 if v6 else ARPA4).labels
        addr = ""
        try:
            parts = [lb.decode("ascii") for lb in reversed(rel)]
            if v6 and len(parts) == 32 and all(len(p) == 1 for p in parts):
                addr = str(ipaddress.IPv6Address(int("".join(parts), 16)))
            elif not v6 and len(parts) == 4:
                addr = str(ipaddress.IPv4Address(".".join(parts)))
        except (ValueError, UnicodeDecodeError):
            addr = ""
        targets: list[str] = []
        if addr:
            for n in sorted(store.nodes.values(), key=lambda n: n.name):
                if _ip(n.address) is not None and str(_ip(n.address)) == addr:
                    targets.append(self._node_target(n.name).to_text())
            if not targets:
                names = sorted({r.spec.name for r in store.all_services()
                                if r.spec.address and str(_ip(r.spec.address) or "") == addr})
                targets = [dns.name.from_text(f"{n}.service", self.origin).to_text() for n in names]
        if not targets:
            resp.set_rcode(dns.rcode.NXDOMAIN)
            resp.authority.append(self._soa(serial))
            return
        if rdtype not in (PTR, ANY):
            resp.authority.append(self._soa(serial))
            return
        resp.answer.append(dns.rrset.from_text_list(qname, self.settings.node_ttl, "IN", "PTR", targets))


def instance_weight(store: StateStore, r: ServiceRecord) -> int:
    """The SRV weight (and shuffle weight) of a healthy instance: Weights.Warning when its worst
    check is warning, else Weights.Passing, as Consul does."""
    passing, warning = r.spec.weights
    return warning if aggregate_status(instance_checks(store, r)) == WARNING else passing


def _node_addr(store: StateStore, r: ServiceRecord) -> str:
    node = store.nodes.get(r.node)
    return node.address if node else ""


# ---- slices: what one name's answer needs (DNS on client agents) --------------------------------
# A client agent has no catalog. It asks a server for the slice of the catalog that one DNS name's
# answer reads, builds a scratch store from it and runs the same Answerer, so its answers equal a
# server's for the same catalog. Over-inclusion is harmless; the key is coarse on purpose.

SliceKey = tuple[str, ...]


def slice_key(qname: dns.name.Name, origin: dns.name.Name, alt: dns.name.Name | None = None) -> SliceKey:
    """("service", name) / ("node", name) / ("nodes",) for PTR / ("none",) for names needing no data."""
    if qname.is_subdomain(ARPA4) or qname.is_subdomain(ARPA6):
        return ("nodes",)
    if alt is not None and qname.is_subdomain(alt):
        origin = alt
    elif not qname.is_subdomain(origin):
        return ("none",)
    labels = [lb.decode("ascii", "replace").lower() for lb in qname.relativize(origin).labels]
    kinds = [i for i, lb in enumerate(labels) if lb in ("service", "node", "addr")]
    if kinds:
        i = kinds[-1]
        head = labels[:i]
        if labels[i] == "service" and head:
            if len(head) >= 2 and head[-2].startswith("_") and head[-1].startswith("_"):
                return ("service", head[-2][1:])
            return ("service", head[-1])
        if labels[i] == "node" and head:
            return ("node", ".".join(head))
        return ("none",)
    if len(labels) >= 2 and labels[0].startswith("_") and labels[1].startswith("_"):
        return ("service", labels[0][1:])
    return ("none",)


def slice_store(store: StateStore, key: SliceKey) -> StateStore:
    """A scratch store holding the records an answer for `key` reads (indexes kept)."""
    out = StateStore()
    out.last_index = store.last_index
    out.table_index = dict(store.table_index)
    nodes: set[str] = set()
    kind = key[0] if key else "none"
    name = key[1] if len(key) > 1 else ""
    if kind == "service":
        for r in store.all_services():
            if r.spec.name.lower() == name.lower():
                out.services.setdefault(r.node, {})[r.spec.id] = r
                nodes.add(r.node)
                out.service_index[r.spec.name] = store.service_index.get(r.spec.name, 0)
    elif kind == "node":
        nodes = {n for n in store.nodes if n.lower() == name.lower()}
    elif kind == "node-exact":  # one node with all its services and checks (anti-entropy)
        nodes = {name} if name in store.nodes or name in store.services or name in store.checks else set()
        for n in nodes:
            out.services[n] = dict(store.services.get(n, {}))
    elif kind == "nodes":  # PTR: every node, and every instance with its own address
        nodes = set(store.nodes)
        for r in store.all_services():
            if r.spec.address:
                out.services.setdefault(r.node, {})[r.spec.id] = r
    for n in nodes:
        if n in store.nodes:
            out.nodes[n] = store.nodes[n]
        if store.checks.get(n) and kind != "nodes":
            out.checks[n] = dict(store.checks[n])
    return out
