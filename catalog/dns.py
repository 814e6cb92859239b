"""DNS answers from the catalog (pure): a parsed question in, a response message out.

Names follow Consul's, under our domain (default `murmur.`):
  <node>.node[.<dc>].murmur                 A/AAAA/TXT/ANY
  [<tag>.]<service>.service[.<dc>].murmur   A/AAAA/SRV/ANY   (healthy instances only)
  _<service>._<tag|tcp|udp>[.service][.<dc>].murmur  SRV (RFC 2782)
  <hex-ip>.addr[.<dc>].murmur               A/AAAA
  <reversed-ip>.in-addr.arpa                PTR for node addresses
Anything else inside the domain is NXDOMAIN with an SOA; a name that exists without data of the
asked type is NOERROR with an SOA; names outside the domain are REFUSED (no recursors yet).
Sockets, caching and truncation limits live in the agent's DNS server.
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

from .queries import healthy_instances
from .store import NodeRecord, ServiceRecord, StateStore

A, AAAA, SRV, TXT, ANY, PTR, SOA = (dns.rdatatype.A, dns.rdatatype.AAAA, dns.rdatatype.SRV,
                                    dns.rdatatype.TXT, dns.rdatatype.ANY, dns.rdatatype.PTR,
                                    dns.rdatatype.SOA)
ARPA4 = dns.name.from_text("in-addr.arpa.")


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

    # ---- helpers --------------------------------------------------------------------------------
    def _soa(self, serial: int) -> dns.rrset.RRset:
        d = self.origin.to_text()
        return dns.rrset.from_text(self.origin, self.settings.soa_min_ttl, "IN", "SOA",
                                   f"ns.{d} hostmaster.{d} {serial} 3600 600 86400 {self.settings.soa_min_ttl}")

    def _service_ttl(self, name: str) -> int:
        ttls = self.settings.service_ttl
        return ttls.get(name, ttls.get("*", 0))

    def _node_target(self, node: str) -> dns.name.Name:
        return dns.name.from_text(f"{node}.node.{self.settings.datacenter}", self.origin)

    def _addr_target(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> dns.name.Name:
        return dns.name.from_text(f"{ip.packed.hex()}.addr.{self.settings.datacenter}", self.origin)

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
        if qname.is_subdomain(ARPA4) and q.rdtype in (PTR, ANY):
            self._ptr(resp, qname, store, serial)
            return resp
        if not qname.is_subdomain(self.origin):
            resp.flags &= ~dns.flags.AA
            resp.set_rcode(dns.rcode.REFUSED)
            return resp
        labels = [lb.decode("ascii", "replace").lower() for lb in qname.relativize(self.origin).labels]
        if not labels:  # the zone apex exists: its SOA, and NOERROR for anything else
            if q.rdtype in (SOA, ANY):
                resp.answer.append(self._soa(serial))
            else:
                resp.authority.append(self._soa(serial))
            return resp
        found = self._lookup(resp, qname, q.rdtype, labels, store)
        if found is None:
            resp.set_rcode(dns.rcode.NXDOMAIN)
            resp.authority.append(self._soa(serial))
        elif not found:
            resp.authority.append(self._soa(serial))
        return resp

    def _lookup(self, resp: dns.message.Message, qname: dns.name.Name, rdtype: int, labels: list[str],
                store: StateStore) -> bool | None:
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
                                     None if tag in ("tcp", "udp") else tag, store)
            return self._service(resp, qname, rdtype, head[-1], head[0] if len(head) == 2 else None, store)
        if kind == "addr" and len(head) == 1:
            return self._addr(resp, qname, rdtype, head[0])
        if len(labels) == 2 and labels[0].startswith("_") and labels[1].startswith("_"):
            # _name._tag.<domain> without the `service` label
            tag = labels[1][1:]
            return self._service(resp, qname, SRV, labels[0][1:], None if tag in ("tcp", "udp") else tag,
                                 store)
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
                 tag: str | None, store: StateStore) -> bool | None:
        # Service and tag names match case-insensitively, as in DNS.
        real = next((r.spec.name for r in store.all_services() if r.spec.name.lower() == name), None)
        if real is None:
            return None
        instances = [(n, r) for n, r in healthy_instances(store, real, None, self.settings.only_passing)
                     if tag is None or any(t.lower() == tag for t in r.spec.tags)]
        if not instances:
            return None  # all filtered out: NXDOMAIN, not an empty NOERROR (consul#1142)
        self.rng.shuffle(instances)
        if self.settings.a_record_limit > 0:
            instances = instances[: self.settings.a_record_limit]
        ttl = self._service_ttl(real)
        if rdtype == SRV:
            return self._srv(resp, qname, ttl, instances)
        if rdtype in (A, AAAA, ANY):
            ips = [ip for _, r in instances if (ip := _ip(r.spec.address or _node_addr(store, r))) is not None]
            added = False
            for t in ((A, AAAA) if rdtype == ANY else (rdtype,)):
                rrset = self._addr_rrset(qname, ttl, ips, t)
                if rrset is not None:
                    resp.answer.append(rrset)
                    added = True
            return added
        return False

    def _srv(self, resp: dns.message.Message, qname: dns.name.Name, ttl: int,
             instances: list[tuple[NodeRecord, ServiceRecord]]) -> bool:
        srv_texts: list[str] = []
        extra: dict[dns.name.Name, ipaddress.IPv4Address | ipaddress.IPv6Address] = {}
        for node, r in instances:
            ip = _ip(r.spec.address) if r.spec.address else None
            if ip is not None:
                target = self._addr_target(ip)
            else:
                target = self._node_target(node.name)
                ip = _ip(node.address)
            weight = max(1, r.spec.weights[0])
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

    def _ptr(self, resp: dns.message.Message, qname: dns.name.Name, store: StateStore, serial: int) -> None:
        rel = qname.relativize(ARPA4).labels
        try:
            addr = str(ipaddress.IPv4Address(".".join(lb.decode() for lb in reversed(rel))))
        except (ValueError, UnicodeDecodeError):
            resp.set_rcode(dns.rcode.NXDOMAIN)
            resp.authority.append(self._soa(serial))
            return
        targets = sorted(n.name for n in store.nodes.values() if n.address == addr)
        if not targets:
            resp.set_rcode(dns.rcode.NXDOMAIN)
            resp.authority.append(self._soa(serial))
            return
        resp.answer.append(dns.rrset.from_text_list(
            qname, self.settings.node_ttl, "IN", "PTR", [self._node_target(t).to_text() for t in targets]))


def _node_addr(store: StateStore, r: ServiceRecord) -> str:
    node = store.nodes.get(r.node)
    return node.address if node else ""


# ---- slices: what one name's answer needs (DNS on client agents) --------------------------------
# A client agent has no catalog. It asks a server for the slice of the catalog that one DNS name's
# answer reads, builds a scratch store from it and runs the same Answerer, so its answers equal a
# server's for the same catalog. Over-inclusion is harmless; the key is coarse on purpose.

SliceKey = tuple[str, ...]


def slice_key(qname: dns.name.Name, origin: dns.name.Name) -> SliceKey:
    """("service", name) / ("node", name) / ("nodes",) for PTR / ("none",) for names needing no data."""
    if qname.is_subdomain(ARPA4):
        return ("nodes",)
    if not qname.is_subdomain(origin):
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
    elif kind == "nodes":
        nodes = set(store.nodes)
    for n in nodes:
        if n in store.nodes:
            out.nodes[n] = store.nodes[n]
        if store.checks.get(n) and kind != "nodes":
            out.checks[n] = dict(store.checks[n])
    return out
