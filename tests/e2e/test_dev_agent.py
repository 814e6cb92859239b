"""`murmur agent --dev` as a real process: registration, DNS, checks, bad input, signals."""

from __future__ import annotations

import json
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path

import consul
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import httpx
import pytest
from support.procs import MURMUR, ROOT, Backend, free_port, wait_for

pytestmark = pytest.mark.e2e


def dig(agent, name: str, rdtype: str = "A", *extra: str) -> str:  # type: ignore[no-untyped-def]
    out = subprocess.run(["dig", "@127.0.0.1", "-p", str(agent.dns_port), name, rdtype, "+time=2", "+tries=2",
                          *extra], capture_output=True, text=True, timeout=30)
    return out.stdout


def resolve(agent, name: str, rdtype: str = "A") -> dns.message.Message:  # type: ignore[no-untyped-def]
    q = dns.message.make_query(name, rdtype)
    return dns.query.udp(q, "127.0.0.1", port=agent.dns_port, timeout=5)


def write(dirpath: Path, name: str, text: str) -> Path:
    dirpath.mkdir(parents=True, exist_ok=True)
    p = dirpath / name
    p.write_text(text)
    return p


def test_config_files_toml_and_json_register_and_resolve(tmp_path, start_agent) -> None:  # type: ignore[no-untyped-def]
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    db_port = listener.getsockname()[1]
    conf = tmp_path / "conf"
    write(conf, "web.toml", """
[[services]]
name = "web"
port = 8080
tags = ["v1", "primary"]
address = "127.0.0.10"
""")
    write(conf, "db.json", json.dumps({"service": {"Name": "db", "Port": db_port, "Tags": ["pg"],
                                                   "Check": {"TCP": f"127.0.0.1:{db_port}", "Interval": "1s"}}}))
    agent = start_agent(conf)
    try:
        assert agent.get("/v1/catalog/services").json() == {"consul": [], "db": ["pg"], "web": ["v1", "primary"]}
        assert set(agent.get("/v1/agent/services").json()) == {"web", "db"}
        # dig: SRV with the address target and its glue; A for the tag lookup.
        out = dig(agent, "web.service.murmur", "SRV")
        assert "status: NOERROR" in out
        assert "1 1 8080 7f00000a.addr.dc1.murmur." in out
        assert "127.0.0.10" in out
        assert dig(agent, "primary.web.service.murmur", "A", "+short").split() == ["127.0.0.10"]
        assert "NXDOMAIN" in dig(agent, "nope.web.service.murmur")
        assert dig(agent, "_web._tcp.service.murmur", "SRV", "+short").split() == [
            "1", "1", "8080", "7f00000a.addr.dc1.murmur."]
        # The TCP check passes once it has probed; then db resolves (dnspython, and dig over TCP).
        wait_for(lambda: agent.get("/v1/health/checks/db").json()[0]["Status"] == "passing", 20,
                 what="db TCP check passing")
        ans = resolve(agent, "db.service.murmur", "SRV")
        assert ans.rcode() == dns.rcode.NOERROR
        assert [rd.port for rr in ans.answer for rd in rr] == [db_port]
        assert "e2e.node.dc1.murmur." in dig(agent, "db.service.murmur", "SRV", "+tcp")
        assert dig(agent, "e2e.node.murmur", "A", "+short").split() == ["127.0.0.1"]
    finally:
        listener.close()


def test_http_registration_with_httpx_and_py_consul(start_agent) -> None:  # type: ignore[no-untyped-def]
    agent = start_agent()
    # httpx, Consul's casing
    r = agent.put("/v1/agent/service/register", json={"Name": "api", "ID": "api-1", "Port": 9000,
                                                       "Address": "127.0.0.20", "Tags": ["blue"]})
    assert r.status_code == 200, r.text
    # py-consul, its own lowercase casing
    c = consul.Consul(host="127.0.0.1", port=agent.http_port)
    assert c.agent.service.register("cache", service_id="cache-1", port=6379, address="127.0.0.21", tags=["x"])
    services = c.agent.services()
    assert services["cache-1"] == {"ID": "cache-1", "Service": "cache", "Tags": ["x"], "Meta": {}, "Port": 6379,
                                   "Address": "127.0.0.21", "Weights": {"Passing": 1, "Warning": 1},
                                   "EnableTagOverride": False, "Datacenter": "dc1"}
    index, nodes = c.health.service("api", passing=True)
    assert index and [n["Service"]["ID"] for n in nodes] == ["api-1"]
    assert [ch["CheckID"] for ch in nodes[0]["Checks"]] == ["serfHealth"]
    _, catalog = c.catalog.services()
    assert catalog == {"api": ["blue"], "cache": ["x"], "consul": []}
    assert resolve(agent, "api.service.murmur").answer[0][0].address == "127.0.0.20"
    assert resolve(agent, "x.cache.service.murmur").answer[0][0].address == "127.0.0.21"
    # A TTL check via py-consul turns the instance unhealthy until it is marked passing.
    assert c.agent.check.register("cache-ttl", consul.Check.ttl("30s"), service_id="cache-1")
    assert resolve(agent, "cache.service.murmur").rcode() == dns.rcode.NXDOMAIN
    assert c.agent.check.ttl_pass("cache-ttl", notes="fine")
    assert resolve(agent, "cache.service.murmur").rcode() == dns.rcode.NOERROR
    assert c.health.checks("cache")[1][0]["Output"] == "fine"
    # Deregistration removes it from the catalog and DNS.
    assert c.agent.service.deregister("cache-1")
    assert resolve(agent, "cache.service.murmur").rcode() == dns.rcode.NXDOMAIN
    assert "cache" not in c.catalog.services()[1]
    # Blocking query: a read at the current index waits for the next write.
    idx = int(agent.get("/v1/catalog/services").headers["X-Consul-Index"])
    t0 = time.monotonic()
    r = agent.get(f"/v1/catalog/services?index={idx}&wait=200ms")
    assert r.headers["X-Consul-Index"] == str(idx)
    assert time.monotonic() - t0 >= 0.19


def test_http_check_critical_leaves_dns_and_comes_back(start_agent, backend: Backend) -> None:  # type: ignore[no-untyped-def]
    backend.start()
    agent = start_agent()
    r = agent.put("/v1/agent/service/register", json={
        "Name": "web", "Port": backend.port, "Address": "127.0.0.1",
        "Check": {"HTTP": f"http://127.0.0.1:{backend.port}/", "Interval": "200ms", "Timeout": "1s"}})
    assert r.status_code == 200, r.text

    def status() -> str:
        return agent.get("/v1/health/checks/web").json()[0]["Status"]

    wait_for(lambda: status() == "passing", 20, what="web check passing")
    assert resolve(agent, "web.service.murmur").rcode() == dns.rcode.NOERROR
    backend.stop()
    wait_for(lambda: status() == "critical", 20, what="web check critical")
    ans = resolve(agent, "web.service.murmur")
    assert ans.rcode() == dns.rcode.NXDOMAIN
    assert ans.authority and ans.authority[0].rdtype == dns.rdatatype.SOA
    assert agent.get("/v1/health/service/web?passing").json() == []
    assert "connection" in agent.get("/v1/health/checks/web").json()[0]["Output"].lower()
    backend.start()
    wait_for(lambda: status() == "passing", 20, what="web check passing again")
    assert [rd.address for rr in resolve(agent, "web.service.murmur").answer for rd in rr] == ["127.0.0.1"]


def test_bad_input_gets_clear_errors_and_the_agent_keeps_answering(start_agent) -> None:  # type: ignore[no-untyped-def]
    agent = start_agent()
    r = agent.put("/v1/agent/service/register", content=b"{not json")
    assert r.status_code == 400 and "decode" in r.text.lower()
    r = agent.put("/v1/agent/service/register", json={"Name": "x", "Port": "eighty"})
    assert r.status_code == 400 and "Port" in r.text
    r = agent.put("/v1/agent/check/register", json={"Name": "c", "HTTP": "http://127.0.0.1:1/", "Interval": "soon"})
    assert r.status_code == 400 and "Interval" in r.text
    assert agent.put("/v1/agent/check/deregister/nope").status_code == 404
    # Raw bytes that are no HTTP at all.
    with socket.create_connection(("127.0.0.1", agent.http_port), timeout=5) as s:
        s.sendall(b"\x00\x01garbage\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 400")
    # DNS: unparseable bytes are dropped (no reply), counted; header+question parse -> FORMERR.
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.settimeout(1.0)
    u.sendto(b"\x12\x34\x00", ("127.0.0.1", agent.dns_port))
    with pytest.raises(socket.timeout):
        u.recvfrom(512)
    q = dns.message.make_query("web.service.murmur", "A").to_wire()
    bad = q[:10] + struct.pack("!H", 1) + q[12:] + b"\xff\xff\xff"  # claims an additional record that is junk
    u.sendto(bad, ("127.0.0.1", agent.dns_port))
    reply, _ = u.recvfrom(512)
    assert reply[:2] == bad[:2] and (reply[3] & 0x0F) == dns.rcode.FORMERR
    u.close()
    stats = agent.get("/v1/agent/self").json()["Stats"]["dns"]
    assert int(stats["dns_dropped"]) >= 1 and int(stats["dns_formerr"]) >= 1
    # A valid query and a valid request still answer right after.
    assert resolve(agent, "e2e.node.murmur").answer[0][0].address == "127.0.0.1"
    assert agent.get("/v1/catalog/nodes").json()[0]["Node"] == "e2e"
    assert agent.proc.poll() is None


def test_bad_config_fails_validate_and_start_naming_file_key_reason(tmp_path) -> None:  # type: ignore[no-untyped-def]
    conf = tmp_path / "bad"
    bad = write(conf, "agent.toml", 'datacenter = "dc1"\nnode_nmae = "x"\n\n[ports]\nhttp = "lots"\n')
    out = subprocess.run([*MURMUR, "validate", str(conf)], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode != 0
    assert str(bad) in out.stderr and "node_nmae" in out.stderr and "unknown" in out.stderr.lower()
    assert "ports.http" in out.stderr
    run = subprocess.run([*MURMUR, "agent", "--dev", "--config-dir", str(conf), "--http-port", str(free_port()),
                          "--dns-port", str(free_port())], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert run.returncode != 0 and "node_nmae" in run.stderr and str(bad) in run.stderr
    # Positive control: the repaired file validates.
    bad.write_text('datacenter = "dc1"\nnode_name = "x"\n\n[ports]\nhttp = 8500\n')
    ok = subprocess.run([*MURMUR, "validate", str(conf)], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert ok.returncode == 0, ok.stderr
    examples = subprocess.run([*MURMUR, "validate", str(ROOT / "examples" / "dev")], capture_output=True,
                              text=True, timeout=60, cwd=ROOT)
    assert examples.returncode == 0, examples.stderr


def test_sighup_reload_keeps_unchanged_checks_and_sigterm_exits_cleanly(tmp_path, start_agent) -> None:  # type: ignore[no-untyped-def]
    conf = tmp_path / "conf"
    write(conf, "a.toml", """
[[services]]
name = "keep"
port = 1000
check = { id = "keep-ttl", ttl = "10m" }

[[services]]
name = "gone"
port = 2000
""")
    agent = start_agent(conf)
    assert agent.put("/v1/agent/check/pass/keep-ttl?note=ok").status_code == 200
    write(conf, "a.toml", """
[[services]]
name = "keep"
port = 1000
check = { id = "keep-ttl", ttl = "10m" }

[[services]]
name = "new"
port = 3000
""")
    agent.signal(signal.SIGHUP)
    wait_for(lambda: set(agent.get("/v1/agent/services").json()) == {"keep", "new"}, 20, what="reload")
    checks = agent.get("/v1/agent/checks").json()
    assert checks["keep-ttl"]["Status"] == "passing" and checks["keep-ttl"]["Output"] == "ok"
    assert "gone" not in agent.get("/v1/catalog/services").json()
    # A broken file on reload keeps the running config.
    write(conf, "b.toml", "bogus_key = 1\n")
    agent.signal(signal.SIGHUP)
    time.sleep(0.5)
    assert agent.proc.poll() is None
    assert set(agent.get("/v1/agent/services").json()) == {"keep", "new"}
    assert "bogus_key" in agent.logs()
    t0 = time.monotonic()
    assert agent.stop() == 0
    assert time.monotonic() - t0 < 15


def test_cli_commands_against_the_agent(start_agent, tmp_path) -> None:  # type: ignore[no-untyped-def]
    agent = start_agent()
    env_addr = ["--http-addr", agent.url]

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*MURMUR, *args], capture_output=True, text=True, timeout=60, cwd=ROOT)

    out = cli("services", "register", "--name", "svc", "--port", "7000", "--tag", "t1", *env_addr)
    assert out.returncode == 0, out.stderr
    out = cli("catalog", "services", "--tags", *env_addr)
    assert "svc" in out.stdout and "t1" in out.stdout
    assert "e2e" in cli("catalog", "nodes", *env_addr).stdout
    assert cli("services", "deregister", "--id", "svc", *env_addr).returncode == 0
    assert "svc" not in httpx.get(agent.url + "/v1/catalog/services").json()
    # No agent there: a clear error and a non-zero exit.
    dead = cli("catalog", "services", "--http-addr", f"127.0.0.1:{free_port()}")
    assert dead.returncode != 0 and "cannot reach the agent" in dead.stderr
    assert "murmur v" in cli("version").stdout


def test_taken_port_is_a_clear_error(start_agent) -> None:  # type: ignore[no-untyped-def]
    agent = start_agent()
    run = subprocess.run([*MURMUR, "agent", "--dev", "--http-port", str(agent.http_port), "--dns-port",
                          str(free_port()), "--serf-port", str(free_port())],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert run.returncode != 0
    assert f"cannot listen for HTTP on 127.0.0.1:{agent.http_port}" in run.stderr
    assert "Traceback" not in run.stderr
    assert agent.get("/v1/status/leader").status_code == 200  # the first agent is untouched


def test_dev_agent_is_a_single_voter_raft_leader(start_agent) -> None:  # type: ignore[no-untyped-def]
    agent = start_agent()
    leader = agent.get("/v1/status/leader").json()
    assert leader and agent.get("/v1/status/peers").json() == [leader]
    me = agent.get("/v1/agent/self").json()
    assert me["Stats"]["consul"]["leader_addr"] == leader and me["Stats"]["raft"]["state"] == "Leader"
    assert me["Member"] in agent.get("/v1/agent/members").json()
    conf = agent.get("/v1/operator/raft/configuration").json()
    assert conf["Index"] == 0 and [(s["Node"], s["Leader"], s["Voter"]) for s in conf["Servers"]] == [
        ("e2e", True, True)]
    # A fresh dev agent: one node, the `consul` service, serfHealth passing.
    assert [n["Node"] for n in agent.get("/v1/catalog/nodes").json()] == ["e2e"]
    assert agent.get("/v1/catalog/services").json() == {"consul": []}
    assert [(c["CheckID"], c["Status"]) for c in agent.get("/v1/health/state/any").json()] == [
        ("serfHealth", "passing")]


def test_blocking_health_query_wakes_for_its_service_only(start_agent) -> None:  # type: ignore[no-untyped-def]
    import threading

    agent = start_agent()
    assert agent.put("/v1/agent/service/register", json={"Name": "x", "Port": 1}).status_code == 200
    idx = int(agent.get("/v1/health/service/x").headers["X-Consul-Index"])
    # Held across wait=5s while 10 writes go to other services: it returns at the end of the wait
    # with an unchanged index.
    result: dict[str, object] = {}

    def hold() -> None:
        t0 = time.monotonic()
        r = httpx.get(f"{agent.url}/v1/health/service/x?index={idx}&wait=5s", timeout=60)
        result.update(elapsed=time.monotonic() - t0, index=int(r.headers["X-Consul-Index"]))

    th = threading.Thread(target=hold)
    th.start()
    for i in range(10):
        assert agent.put("/v1/agent/service/register", json={"Name": f"other{i}", "Port": 100 + i}).status_code == 200
    th.join(timeout=60)
    assert result["index"] == idx and 5.0 <= float(result["elapsed"]) < 50  # type: ignore[arg-type]
    # And a change to x wakes it at once.
    th = threading.Thread(target=hold)
    result.clear()
    th.start()
    time.sleep(0.5)
    assert agent.put("/v1/agent/service/register", json={"Name": "x", "Port": 2}).status_code == 200
    th.join(timeout=60)
    assert int(result["index"]) > idx and float(result["elapsed"]) < 4.5  # type: ignore[arg-type]
