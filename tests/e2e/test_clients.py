"""Three servers and three client agents, real processes on loopback (each on its own 127.0.0.x
when the box lets us bind those; else all on 127.0.0.1 with distinct ports).

Clients keep no catalog: their services reach the servers over RPC, their reads and DNS answers
come from the servers. Asserts what a user sees on every agent: catalog, ?passing, DNS; kill -9 of
a client (serfHealth critical, its instance leaves ?passing and DNS everywhere); kill -9 of the Raft
leader while clients write (a new registration through a client lands, nothing acknowledged is
lost); the killed server, restarted, catches up.
"""

from __future__ import annotations

import base64
import os
import socket
import threading
import time
from pathlib import Path

import dns.message
import dns.query
import dns.rdatatype
import httpx
import pytest
from murmur.gossip.config import GossipConfig
from support.procs import AgentProc, wait_for
from support.servers import leader_of

pytestmark = pytest.mark.e2e

LOCAL = GossipConfig.local()
SLACK = 10
HOSTS = [f"127.0.0.{i}" for i in range(11, 17)]


def can_bind(host: str) -> bool:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((host, 0))
        return True
    except OSError:
        return False


def srv_ports(a: AgentProc, name: str) -> set[int]:
    q = dns.message.make_query(f"{name}.service.murmur", dns.rdatatype.SRV)
    r = dns.query.udp(q, a.host, port=a.dns_port, timeout=3)
    return {rd.port for rrset in r.answer for rd in rrset if rrset.rdtype == dns.rdatatype.SRV}


def catalog_ids(a: AgentProc, name: str, stale: bool = False) -> set[str]:
    r = a.get(f"/v1/catalog/service/{name}" + ("?stale" if stale else ""))
    r.raise_for_status()
    return {e["ServiceID"] for e in r.json()}


def passing_ids(a: AgentProc, name: str) -> set[str]:
    r = a.get(f"/v1/health/service/{name}?passing")
    r.raise_for_status()
    return {e["Service"]["ID"] for e in r.json()}


def serf_status(a: AgentProc, node: str) -> str:
    r = a.get(f"/v1/health/node/{node}")
    r.raise_for_status()
    return next((c["Status"] for c in r.json() if c["CheckID"] == "serfHealth"), "")


class KVWriter:
    """PUTs k<i> through the live clients, round-robin; remembers what was acknowledged."""

    def __init__(self, clients: list[AgentProc]) -> None:
        self.clients = clients
        self.acked: dict[str, str] = {}
        self.failed = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        with httpx.Client(timeout=30) as http:
            for i in range(100_000):
                if self.stop.is_set():
                    return
                live = [c for c in self.clients if c.proc is not None and c.proc.poll() is None]
                c = live[i % len(live)]
                try:
                    r = http.put(f"{c.url}/v1/kv/k{i}", content=f"v{i}")
                    if r.status_code == 200 and r.json() is True:
                        self.acked[f"k{i}"] = f"v{i}"
                    else:
                        self.failed += 1
                except httpx.HTTPError:
                    self.failed += 1
                time.sleep(0.01)


def kv_all(a: AgentProc, stale: bool = False) -> dict[str, str]:
    r = a.get("/v1/kv/k?recurse" + ("&stale" if stale else ""))
    if r.status_code == 404:
        return {}
    r.raise_for_status()
    return {e["Key"]: base64.b64decode(e["Value"]).decode() for e in r.json()}


def test_clients_register_read_and_survive_kills(tmp_path: Path) -> None:
    # MURMUR_E2E_ONE_ADDR=1 runs the fallback (everything on 127.0.0.1) where 127.0.0.x would work.
    distinct = all(can_bind(h) for h in HOSTS) and not os.environ.get("MURMUR_E2E_ONE_ADDR")
    hosts = HOSTS if distinct else ["127.0.0.1"] * 6
    print(f"addresses: {'distinct 127.0.0.11-16' if distinct else 'all 127.0.0.1 (distinct ports)'}")
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "gossip.toml").write_text('[gossip_lan]\npreset = "local"\n')
    agents: list[AgentProc] = []
    try:
        servers: list[AgentProc] = []
        for i in range(3):
            extra = ["--server", "--bootstrap-expect", "3"]
            if servers:
                extra += ["--join", f"{servers[0].host}:{servers[0].serf_port}"]
            s = AgentProc(tmp_path, [conf], extra, node=f"s{i}", dev=False, host=hosts[i])
            s.wait_leader = False
            agents.append(s)
            servers.append(s.start())
        wait_for(lambda: len({leader_of(s) for s in servers}) == 1 and leader_of(servers[0]), 60,
                 what="one leader known to all three servers")
        clients: list[AgentProc] = []
        for i in range(3):
            cdir = tmp_path / f"client{i}"
            cdir.mkdir()
            (cdir / "web.toml").write_text(f'[[services]]\nname = "web"\nid = "web-c{i}"\nport = {8000 + i}\n')
            c = AgentProc(tmp_path, [conf, cdir], ["--join", f"{servers[0].host}:{servers[0].serf_port}"],
                          node=f"c{i}", dev=False, host=hosts[3 + i])
            c.has_servers = True
            agents.append(c)
            clients.append(c.start())  # start() waits until the client knows the leader (over RPC)
        web = {"web-c0", "web-c1", "web-c2"}
        for a in agents:
            wait_for(lambda a=a: catalog_ids(a, "web") == web, 60, what=f"every web instance in {a.node}'s catalog")
            wait_for(lambda a=a: passing_ids(a, "web") == web, 60, what=f"every web instance passing on {a.node}")
            wait_for(lambda a=a: srv_ports(a, "web") == {8000, 8001, 8002}, 30, what=f"web in {a.node}'s DNS")
        me = clients[0].get("/v1/agent/self").json()["Stats"]["consul"]
        assert me["server"] == "false" and me["known_servers"] == "3" and int(me["rpc_reads"]) > 0
        r = clients[0].get("/v1/catalog/service/web?stale")
        assert r.headers["X-Consul-KnownLeader"] == "true" and int(r.headers["X-Consul-Index"]) > 0
        assert "X-Consul-LastContact" in r.headers
        # A blocking read on a client waits on a server and wakes on a write made through another client.
        r = clients[2].put("/v1/kv/watched", content=b"1")
        assert r.status_code == 200 and r.json() is True
        idx = int(clients[2].get("/v1/kv/watched").headers["X-Consul-Index"])
        woke: dict[str, float] = {}

        def block() -> None:
            t = time.monotonic()
            got = httpx.get(f"{clients[2].url}/v1/kv/watched?index={idx}&wait=60s", timeout=120)
            woke["index"], woke["after"] = float(got.headers["X-Consul-Index"]), time.monotonic() - t

        waiter = threading.Thread(target=block, daemon=True)
        waiter.start()
        time.sleep(1.0)
        assert waiter.is_alive()  # still blocked: nothing changed yet
        assert clients[1].put("/v1/kv/watched", content=b"2").json() is True
        waiter.join(timeout=30)
        assert woke and woke["index"] > idx and woke["after"] < 30
        # A node without an agent, registered through a client, is left alone by anti-entropy.
        r = clients[1].put("/v1/catalog/register", json={"Node": "ext", "Address": "127.0.0.99",
                                                         "Service": {"Name": "extsvc", "Port": 9}})
        assert r.status_code == 200, r.text

        # kill -9 of a client: serfHealth critical, its instance leaves ?passing and DNS everywhere.
        victim = clients[0]
        victim.kill9()
        t0 = time.monotonic()
        bound = SLACK * (LOCAL.suspicion_min(6) + 2 * LOCAL.probe_interval + 1.0)  # + a reconcile pass
        live = [a for a in agents if a is not victim]
        for a in live:
            wait_for(lambda a=a: serf_status(a, "c0") == "critical", max(1.0, bound - (time.monotonic() - t0)),
                     what=f"c0's serfHealth critical on {a.node}")
            wait_for(lambda a=a: passing_ids(a, "web") == {"web-c1", "web-c2"}, 30, what=f"web-c0 gone from ?passing on {a.node}")
            wait_for(lambda a=a: srv_ports(a, "web") == {8001, 8002}, 30, what=f"web-c0 gone from {a.node}'s DNS")
        assert time.monotonic() - t0 < bound
        live_clients = clients[1:]

        # kill -9 of the Raft leader while clients write: nothing acknowledged is lost, and a new
        # registration through a client lands on the new leader.
        writer = KVWriter(live_clients)
        writer.thread.start()
        wait_for(lambda: len(writer.acked) >= 20, 60, what="20 KV writes acknowledged through clients")
        lead = leader_of(servers[0])
        leader = next(s for s in servers if lead == f"{s.host}:{s.server_port}")
        leader.kill9()
        survivors = [s for s in servers if s is not leader]
        wait_for(lambda: (lambda ls: ls[0] and ls[0] == ls[1] and ls[0] != lead)([leader_of(s) for s in survivors]),
                 60, what="a new leader among the surviving servers")
        r = live_clients[0].put("/v1/agent/service/register", json={"Name": "api", "ID": "api-c1", "Port": 9100})
        assert r.status_code == 200, r.text
        mark = len(writer.acked)
        wait_for(lambda: len(writer.acked) >= mark + 20, 60, what="KV writes acknowledged after the leader change")
        writer.stop.set()
        writer.thread.join(timeout=60)
        acked = dict(writer.acked)
        live = [a for a in agents if a is not victim and a is not leader]
        for a in live:
            wait_for(lambda a=a: catalog_ids(a, "api") == {"api-c1"}, 60, what=f"api-c1 registered, seen on {a.node}")
            got = kv_all(a)
            missing = [k for k, v in acked.items() if got.get(k) != v]
            assert missing == [], f"{a.node} lost acknowledged writes: {missing[:10]}"
            assert catalog_ids(a, "web") == web and catalog_ids(a, "extsvc") == {"extsvc"}
        # The killed server comes back from its data dir and catches up.
        leader.wait_leader = False
        leader.restart()
        wait_for(lambda: all(kv_all(leader, stale=True).get(k) == v for k, v in acked.items()), 60,
                 what="the restarted server holds every acknowledged write")
        wait_for(lambda: catalog_ids(leader, "api", stale=True) == {"api-c1"}, 60,
                 what="the restarted server has the registration made while it was down")
        print(f"acked {len(acked)} KV writes through clients, {writer.failed} failed or unknown")
    finally:
        for a in agents:
            a.stop()
