"""ACLs against real agents: default deny, tokens without the rule, unknown tokens, rules for
another datacenter, DNS with the agent's default token, bootstrap, and secrets kept out of logs.
Every "cannot" has its positive control in the same test."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import httpx
import pytest
from support.procs import MURMUR, AgentProc
from support.procs import ROOT as REPO

pytestmark = pytest.mark.e2e

ROOT = str(uuid.uuid4())


def acl_dir(tmp: Path, name: str, acl: dict[str, object], extra: dict[str, object] | None = None) -> Path:
    d = tmp / name
    d.mkdir()
    f = d / "acl.json"
    f.write_text(json.dumps({"acl": acl, **(extra or {})}))
    f.chmod(0o600)
    return d


@pytest.fixture
def deny_agent(tmp_path: Path, start_agent: Callable[..., AgentProc]) -> AgentProc:
    conf = acl_dir(tmp_path, "acl", {"enabled": True, "default_policy": "deny",
                                     "tokens": {"initial_management": ROOT}})
    return start_agent(conf, node="acl1")


def h(token: str) -> dict[str, str]:
    return {"X-Consul-Token": token}


def make_token(a: AgentProc, rules: str, datacenters: list[str] | None = None) -> tuple[str, str]:
    """A policy with these rules and a token holding it: (policy ID, token secret)."""
    body: dict[str, object] = {"Name": f"p-{uuid.uuid4().hex[:8]}", "Rules": rules}
    if datacenters:
        body["Datacenters"] = datacenters
    r = a.put("/v1/acl/policy", json=body, headers=h(ROOT))
    assert r.status_code == 200, r.text
    pid = r.json()["ID"]
    r = a.put("/v1/acl/token", json={"Description": "t", "Policies": [{"ID": pid}]}, headers=h(ROOT))
    assert r.status_code == 200, r.text
    return pid, r.json()["SecretID"]


def test_no_token_under_default_deny(deny_agent: AgentProc) -> None:
    a = deny_agent
    r = a.put("/v1/kv/app/config", content=b"v1")
    assert r.status_code == 403 and r.text.startswith("Permission denied"), r.text
    assert a.get("/v1/kv/app/config", headers=h(ROOT)).status_code == 404  # the refused write left nothing
    r = a.put("/v1/kv/app/config", content=b"v1", headers=h(ROOT))  # positive control
    assert r.status_code == 200 and r.json() is True
    assert a.get("/v1/kv/app/config").status_code == 403
    assert a.get("/v1/kv/app/config", headers=h(ROOT)).json()[0]["Key"] == "app/config"
    # lists are filtered, and say so
    r = a.get("/v1/catalog/services")
    assert r.status_code == 200 and r.json() == {} and r.headers["X-Consul-Results-Filtered-By-ACLs"] == "true"
    r = a.get("/v1/catalog/services", headers=h(ROOT))
    assert "consul" in r.json() and "X-Consul-Results-Filtered-By-ACLs" not in r.headers
    assert a.get("/v1/agent/self").status_code == 403
    assert a.get("/v1/agent/self", headers=h(ROOT)).status_code == 200
    assert a.get("/v1/acl/tokens").status_code == 403
    assert len(a.get("/v1/acl/tokens", headers=h(ROOT)).json()) == 2  # the anonymous and the initial one


def test_a_token_without_the_needed_rule(deny_agent: AgentProc) -> None:
    a = deny_agent
    _, secret = make_token(a, 'key_prefix "app/" { policy = "write" }\nkey "app/secret" { policy = "deny" }')
    for key in ("app/a", "app/b", "other/c", "app/secret"):
        assert a.put(f"/v1/kv/{key}", content=b"x", headers=h(ROOT)).json() is True
    assert a.put("/v1/kv/app/a", content=b"y", headers=h(secret)).status_code == 200  # has the rule
    r = a.put("/v1/kv/other/c", content=b"y", headers=h(secret))
    assert r.status_code == 403 and "key:write" in r.text and "other/c" in r.text
    assert a.get("/v1/kv/app/secret", headers=h(secret)).status_code == 403  # exact deny wins
    # the three ways of carrying a token are the same token
    assert a.get("/v1/kv/app/a", headers={"Authorization": f"Bearer {secret}"}).status_code == 200
    assert a.get(f"/v1/kv/app/a?token={secret}").status_code == 200
    # recurse shows only what the token may read
    r = a.get("/v1/kv/?recurse", headers=h(secret))
    assert sorted(e["Key"] for e in r.json()) == ["app/a", "app/b"]
    assert r.headers["X-Consul-Results-Filtered-By-ACLs"] == "true"
    assert len(a.get("/v1/kv/?recurse", headers=h(ROOT)).json()) == 4
    # a recursive delete needs write on everything under the prefix
    assert httpx.delete(a.url + "/v1/kv/app/?recurse", headers=h(secret), timeout=10).status_code == 403
    assert httpx.delete(a.url + "/v1/kv/app/a", headers=h(secret), timeout=10).json() is True  # control
    # no acl rule: token management is refused
    assert a.get("/v1/acl/tokens", headers=h(secret)).status_code == 403
    self_ = a.get("/v1/acl/token/self", headers=h(secret))
    assert self_.status_code == 200 and self_.json()["SecretID"] == secret


def test_an_unknown_token(deny_agent: AgentProc) -> None:
    a = deny_agent
    bogus = str(uuid.uuid4())
    for r in (a.get("/v1/kv/x", headers=h(bogus)), a.put("/v1/kv/x", content=b"1", headers=h(bogus)),
              a.get("/v1/catalog/services", headers=h(bogus)), a.get("/v1/acl/token/self", headers=h(bogus))):
        assert r.status_code == 403 and r.text == "ACL not found", r.text
    assert a.put("/v1/kv/x", content=b"1", headers=h(ROOT)).status_code == 200  # positive control
    # a deleted token is unknown from then on
    _, secret = make_token(a, 'key_prefix "" { policy = "read" }')
    assert a.get("/v1/kv/x", headers=h(secret)).status_code == 200
    accessor = a.get("/v1/acl/token/self", headers=h(secret)).json()["AccessorID"]
    assert httpx.delete(a.url + f"/v1/acl/token/{accessor}", headers=h(ROOT), timeout=10).json() is True
    r = a.get("/v1/kv/x", headers=h(secret))
    assert r.status_code == 403 and r.text == "ACL not found"


def test_a_policy_for_another_datacenter(deny_agent: AgentProc) -> None:
    a = deny_agent
    pid, secret = make_token(a, 'key_prefix "" { policy = "write" }', datacenters=["dc2"])
    assert a.put("/v1/kv/k", content=b"1", headers=h(secret)).status_code == 403  # dc2's rules, we are dc1
    r = a.put(f"/v1/acl/policy/{pid}", json={"Name": a.get(f"/v1/acl/policy/{pid}", headers=h(ROOT)).json()["Name"],
                                             "Rules": 'key_prefix "" { policy = "write" }',
                                             "Datacenters": ["dc2", "dc1"]}, headers=h(ROOT))
    assert r.status_code == 200, r.text
    assert a.put("/v1/kv/k", content=b"1", headers=h(secret)).status_code == 200  # positive control


def resolve(a: AgentProc, name: str) -> dns.message.Message:
    return dns.query.udp(dns.message.make_query(name, "A"), "127.0.0.1", port=a.dns_port, timeout=5)


def test_dns_answers_what_the_default_token_may_read(deny_agent: AgentProc) -> None:
    a = deny_agent
    reg = {"Node": "db-host", "Address": "127.0.0.20", "Service": {"ID": "db1", "Service": "db", "Port": 5432}}
    assert a.put("/v1/catalog/register", json=reg, headers=h(ROOT)).status_code == 200
    # The anonymous token (no default set) reads nothing: NXDOMAIN.
    assert resolve(a, "db.service.murmur").rcode() == dns.rcode.NXDOMAIN
    _, reader = make_token(a, 'service_prefix "" { policy = "read" }\nnode_prefix "" { policy = "read" }')
    assert a.put("/v1/agent/token/default", json={"Token": reader}, headers=h(ROOT)).json() is True
    msg = resolve(a, "db.service.murmur")  # positive control
    assert msg.rcode() == dns.rcode.NOERROR and [rd.to_text() for rr in msg.answer for rd in rr] == ["127.0.0.20"]
    # a default token that may read only another service: db is gone again
    _, other = make_token(a, 'service "web" { policy = "read" }\nnode_prefix "" { policy = "read" }')
    assert a.put("/v1/agent/token/default", json={"Token": other}, headers=h(ROOT)).json() is True
    assert resolve(a, "db.service.murmur").rcode() == dns.rcode.NXDOMAIN
    # setting agent tokens needs agent:write
    assert a.put("/v1/agent/token/default", json={"Token": ""}, headers=h(other)).status_code == 403


def test_bootstrap_once_and_secrets_stay_out_of_logs(tmp_path: Path, start_agent: Callable[..., AgentProc]) -> None:
    conf = acl_dir(tmp_path, "boot", {"enabled": True, "default_policy": "deny"})
    a = start_agent(conf, node="boot")
    assert a.get("/v1/acl/tokens").status_code == 403
    r = a.put("/v1/acl/bootstrap")
    assert r.status_code == 200, r.text
    boot = r.json()
    assert boot["Policies"] == [{"ID": "00000000-0000-0000-0000-000000000001", "Name": "global-management"}]
    secret = boot["SecretID"]
    again = a.put("/v1/acl/bootstrap")
    assert again.status_code == 403 and "ACL bootstrap no longer allowed" in again.text
    assert len(a.get("/v1/acl/tokens", headers=h(secret)).json()) == 2  # the bootstrap token works
    made = a.put("/v1/acl/token", json={"Description": "x"}, headers=h(secret)).json()["SecretID"]
    a.get("/v1/kv/x", headers=h(made))
    a.get(f"/v1/kv/x?token={secret}")
    log = a.logs()
    assert secret not in log and made not in log


def test_acls_off_token_routes_say_so(start_agent: Callable[..., AgentProc]) -> None:
    a = start_agent(node="noacl")
    r = a.get("/v1/acl/tokens")
    assert r.status_code == 401 and r.text == "ACL support disabled"
    assert a.put("/v1/kv/k", content=b"1", headers=h(str(uuid.uuid4()))).status_code == 200  # tokens ignored


def cli(a: AgentProc, *args: str, token: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MURMUR_HTTP_TOKEN", "CONSUL_HTTP_TOKEN")}
    if token:
        env["MURMUR_HTTP_TOKEN"] = token  # the lab's way: the token from the environment
    return subprocess.run([*MURMUR, *args, "-http-addr", a.url], capture_output=True, text=True, timeout=60,
                          cwd=REPO, env=env)


def test_cli_bootstrap_policy_role_token(tmp_path: Path, start_agent: Callable[..., AgentProc]) -> None:
    a = start_agent(acl_dir(tmp_path, "cli", {"enabled": True, "default_policy": "deny"}), node="cli")
    boot = cli(a, "acl", "bootstrap", "-format", "json")
    assert boot.returncode == 0, boot.stderr
    root = json.loads(boot.stdout)["SecretID"]
    again = cli(a, "acl", "bootstrap")
    assert again.returncode == 1 and "ACL bootstrap no longer allowed" in again.stderr
    rules = tmp_path / "rules.hcl"
    rules.write_text('key_prefix "lab/" {\n  policy = "write"\n}\n')
    made = cli(a, "acl", "policy", "create", "-name", "lab-kv", "-rules", f"@{rules}", token=root)
    assert made.returncode == 0 and "lab-kv" in made.stdout, made.stderr
    bad = cli(a, "acl", "policy", "create", "-name", "broken", "-rules", 'key_prefix "x" { policy = "maybe" }',
              token=root)
    assert bad.returncode == 1 and "invalid policy 'maybe'" in bad.stderr
    role = cli(a, "acl", "role", "create", "-name", "lab", "-policy-name", "lab-kv", "-format", "json", token=root)
    assert role.returncode == 0, role.stderr
    tok = cli(a, "acl", "token", "create", "-description", "lab", "-role-name", "lab", "-format", "json", token=root)
    assert tok.returncode == 0, tok.stderr
    secret = json.loads(tok.stdout)["SecretID"]
    assert json.loads(tok.stdout)["Roles"][0]["Name"] == "lab"
    assert cli(a, "kv", "put", "lab/x", "1", token=secret).returncode == 0  # the role's policy allows it
    denied = cli(a, "kv", "put", "other", "1", token=secret)
    assert denied.returncode != 0 and "Permission denied" in denied.stderr
    assert cli(a, "kv", "put", "other", "1").returncode != 0  # no token at all
    listed = cli(a, "acl", "token", "list", "-format", "json", token=root)
    assert len(json.loads(listed.stdout)) == 3
    assert cli(a, "acl", "token", "list", token=secret).returncode == 1  # no acl:read
    me = cli(a, "acl", "token", "read", "-self", "-format", "json", token=secret)
    assert json.loads(me.stdout)["SecretID"] == secret


def test_a_client_agent_enforces_through_the_servers(tmp_path: Path, start_agent: Callable[..., AgentProc]) -> None:
    """A client agent resolves tokens through the server, its RPC reads are filtered there, and its
    DNS fetches slices with its default token."""
    gossip = tmp_path / "gossip"
    gossip.mkdir()
    (gossip / "gossip.toml").write_text('[gossip_lan]\npreset = "local"\n')
    server = start_agent(gossip, acl_dir(tmp_path, "srv", {"enabled": True, "default_policy": "deny",
                                                           "tokens": {"initial_management": ROOT}}), node="srv")
    reg = {"Node": "db-host", "Address": "127.0.0.20", "Service": {"ID": "db1", "Service": "db", "Port": 5432}}
    assert server.put("/v1/catalog/register", json=reg, headers=h(ROOT)).status_code == 200
    _, reader = make_token(server, 'service_prefix "" { policy = "read" }\nnode_prefix "" { policy = "read" }')
    _, limited = make_token(server, 'key_prefix "app/" { policy = "write" }')
    _, web_only = make_token(server, 'service "web" { policy = "read" }\nnode_prefix "" { policy = "read" }')
    cdir = acl_dir(tmp_path, "cli-acl", {"enabled": True, "default_policy": "deny",
                                         "tokens": {"agent": ROOT, "default": reader}})
    client = AgentProc(tmp_path, [gossip, cdir], ["--join", f"127.0.0.1:{server.serf_port}"], node="c1", dev=False)
    client.has_servers = True
    try:
        client.start()
        assert client.put("/v1/kv/app/x", content=b"1", headers=h(limited)).status_code == 200
        assert server.get("/v1/kv/app/x", headers=h(ROOT)).json()[0]["Key"] == "app/x"  # went through RPC
        assert server.put("/v1/kv/zzz", content=b"1", headers=h(ROOT)).status_code == 200
        r = client.put("/v1/kv/other", content=b"1", headers=h(limited))
        assert r.status_code == 403 and "Permission denied" in r.text
        r = client.get("/v1/kv/?recurse", headers=h(limited))  # filtered on the server, by the token sent
        assert [e["Key"] for e in r.json()] == ["app/x"] and r.headers["X-Consul-Results-Filtered-By-ACLs"] == "true"
        assert len(client.get("/v1/kv/?recurse", headers=h(ROOT)).json()) == 2
        r = client.get("/v1/kv/app/x", headers=h(str(uuid.uuid4())))
        assert r.status_code == 403 and r.text == "ACL not found"
        msg = resolve(client, "db.service.murmur")
        assert [rd.to_text() for rr in msg.answer for rd in rr] == ["127.0.0.20"]
        assert client.put("/v1/agent/token/default", json={"Token": web_only}, headers=h(ROOT)).json() is True
        assert resolve(client, "db.service.murmur").rcode() == dns.rcode.NXDOMAIN
        log = client.logs() + server.logs()
        assert ROOT not in log and limited not in log and reader not in log
    finally:
        client.stop()


@pytest.mark.slow  # ansible-playbook twice: minutes on a loaded box (make test-full runs it)
@pytest.mark.skipif(shutil.which("ansible-playbook") is None, reason="needs ansible-playbook")
def test_the_roles_acl_tasks_make_the_dns_and_agent_tokens(tmp_path: Path,
                                                           start_agent: Callable[..., AgentProc]) -> None:
    """deploy/ansible's tasks/acl.yml against a real agent (on this host, ansible_connection=local):
    the DNS token it makes is the one the agent's config binds as its default, so `dig` works
    after it ran and not before; a second run changes nothing; no secret reaches the log."""
    dns_secret, agent_secret = str(uuid.uuid4()), str(uuid.uuid4())
    conf = acl_dir(tmp_path, "role", {"enabled": True, "default_policy": "deny",
                                      "tokens": {"initial_management": ROOT, "default": dns_secret,
                                                 "agent": agent_secret}},
                   {"services": [{"name": "web", "port": 80}]})
    a = start_agent(conf, node="role")
    assert resolve(a, "web.service.murmur").rcode() == dns.rcode.NXDOMAIN  # the DNS token does not exist yet
    role = Path(REPO) / "deploy" / "ansible" / "roles" / "murmur"
    (tmp_path / "inv.ini").write_text(f"[servers]\nlocalhost ansible_connection=local "
                                      f"ansible_python_interpreter={shutil.which('python3')}\n")
    play = [{"hosts": "servers", "gather_facts": False,
             # plain HTTP here (the lab runs these tasks over HTTPS with the role's CA); the
             # secrets as secrets.yml leaves them
             "vars": {"murmur_servers_group": "servers", "murmur_client_addr": "127.0.0.1",
                      "murmur_tls": False, "murmur_http_port": a.http_port, "murmur_config_dir": "/nonexistent",
                      "murmur_acl_management_secret": ROOT, "murmur_acl_dns_secret": dns_secret,
                      "murmur_acl_agent_secret": agent_secret},
             "tasks": [{"ansible.builtin.include_vars": str(role / "vars" / "main.yml")},
                       {"ansible.builtin.import_tasks": str(role / "tasks" / "acl.yml")}]}]
    (tmp_path / "play.yml").write_text(json.dumps(play))  # JSON is YAML

    def run() -> str:
        env = {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-tmp")}
        p = subprocess.run(["ansible-playbook", "-i", str(tmp_path / "inv.ini"), str(tmp_path / "play.yml")],
                           capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
        assert p.returncode == 0, p.stdout + p.stderr
        assert dns_secret not in p.stdout and ROOT not in p.stdout  # no_log
        return p.stdout

    assert "changed=2" in run()  # the policies, the tokens
    msg = resolve(a, "web.service.murmur")
    assert msg.rcode() == dns.rcode.NOERROR and [rd.to_text() for rr in msg.answer for rd in rr] == ["127.0.0.1"]
    assert "changed=0" in run()
    r = a.get("/v1/agent/members", headers=h(dns_secret))  # the CLI's view with the DNS token
    assert r.status_code == 200 and [m["Name"] for m in r.json()] == ["role"]
    assert dns_secret not in a.logs() and agent_secret not in a.logs()


def persistent_server(tmp_path: Path, name: str, persist: bool, config_default: str = "") -> AgentProc:
    tokens: dict[str, object] = {"initial_management": ROOT}
    if config_default:
        tokens["default"] = config_default
    conf = acl_dir(tmp_path, name, {"enabled": True, "default_policy": "deny", "enable_token_persistence": persist,
                                    "tokens": tokens})
    return AgentProc(tmp_path, [conf], ["--server", "--bootstrap-expect", "1"], node=name, dev=False)


def test_agent_tokens_persist_across_a_restart(tmp_path: Path) -> None:
    """enable_token_persistence: a token set through the API is in the data dir (0600), comes back
    after a restart and wins over the config file's; without persistence the config's is back."""
    reader = reader_b = ""
    agents = [persistent_server(tmp_path, "tp1", True), persistent_server(tmp_path, "tp2", False)]
    try:
        for a in agents:
            a.start()
        a, b = agents
        reg = {"Node": "db-host", "Address": "127.0.0.21", "Service": {"ID": "db1", "Service": "db", "Port": 5432}}
        rules = 'service_prefix "" { policy = "read" }\nnode_prefix "" { policy = "read" }'
        for x in agents:
            assert x.put("/v1/catalog/register", json=reg, headers=h(ROOT)).status_code == 200
            assert resolve(x, "db.service.murmur").rcode() == dns.rcode.NXDOMAIN  # anonymous reads nothing
        _, reader = make_token(a, rules)
        _, reader_b = make_token(b, rules)
        assert a.put("/v1/agent/token/default", json={"Token": reader}, headers=h(ROOT)).json() is True
        assert b.put("/v1/agent/token/default", json={"Token": reader_b}, headers=h(ROOT)).json() is True
        for x in agents:
            assert resolve(x, "db.service.murmur").rcode() == dns.rcode.NOERROR
        path = tmp_path / "data-tp1" / "acl-tokens.json"
        assert path.stat().st_mode & 0o777 == 0o600
        assert json.loads(path.read_text()) == {"default": reader}
        assert not (tmp_path / "data-tp2" / "acl-tokens.json").exists()  # persistence off: nothing on disk
        for x in agents:
            x.stop()
            x.restart()
        # persisted: still the reader; not persisted: back to the anonymous token (the control)
        assert resolve(a, "db.service.murmur").rcode() == dns.rcode.NOERROR
        assert a.get("/v1/catalog/service/db").json()[0]["ServiceID"] == "db1"
        assert resolve(b, "db.service.murmur").rcode() == dns.rcode.NXDOMAIN
        assert b.get("/v1/catalog/service/db").json() == []
        assert reader not in a.logs() and reader_b not in b.logs()
    finally:
        for x in agents:
            x.stop()


def test_a_persisted_token_wins_over_the_config_file(tmp_path: Path) -> None:
    # First life: the config file has no default token; one is set through the API and persisted.
    a = persistent_server(tmp_path, "tp3", True)
    try:
        a.start()
        reg = {"Node": "db-host", "Address": "127.0.0.22", "Service": {"ID": "db1", "Service": "db", "Port": 5432}}
        assert a.put("/v1/catalog/register", json=reg, headers=h(ROOT)).status_code == 200
        _, reader = make_token(a, 'service_prefix "" { policy = "read" }\nnode_prefix "" { policy = "read" }')
        _, nothing = make_token(a, 'node_prefix "" { policy = "read" }')
        assert a.put("/v1/agent/token/default", json={"Token": reader}, headers=h(ROOT)).json() is True
        a.stop()
        # Second life: the config now names a token that may not read the service; the persisted one wins.
        conf = tmp_path / "tp3" / "acl.json"
        doc = json.loads(conf.read_text())
        doc["acl"]["tokens"]["default"] = nothing
        conf.write_text(json.dumps(doc))
        a.restart()
        assert resolve(a, "db.service.murmur").rcode() == dns.rcode.NOERROR
        # Control: with the persisted file damaged, the config file's token applies (and the agent starts).
        a.stop()
        (tmp_path / "data-tp3" / "acl-tokens.json").write_text("{not json")
        a.restart()
        assert resolve(a, "db.service.murmur").rcode() == dns.rcode.NXDOMAIN
        assert "ignoring the damaged persisted agent tokens" in a.logs()
        assert reader not in a.logs() and nothing not in a.logs()
    finally:
        a.stop()


def test_writes_through_a_follower_are_checked_on_the_leader_and_forged_forwards_are_refused(
        tmp_path: Path, start_agent: Callable[..., AgentProc]) -> None:
    """Three servers, default deny. A follower forwards a write with the token it was made under,
    and the leader checks it; a write sent straight to the leader's RPC port claiming to be
    forwarded (hops 1) gets no pass: without a token it is refused, with the management token it
    is applied (the positive control)."""
    import trio
    from murmur.agent.rpc.protocol import RPCError, call_apply
    from murmur.catalog import commands as cmds
    from support.servers import leader_of

    gossip = tmp_path / "gossip"
    gossip.mkdir()
    (gossip / "gossip.toml").write_text('[gossip_lan]\npreset = "local"\n')
    acl = {"enabled": True, "default_policy": "deny", "tokens": {"initial_management": ROOT, "agent": ROOT}}
    servers: list[AgentProc] = []
    for i in range(3):
        extra = ["--server", "--bootstrap-expect", "3"]
        if servers:
            extra += ["--join", f"127.0.0.1:{servers[0].serf_port}"]
        servers.append(start_agent(gossip, acl_dir(tmp_path, f"acl{i}", acl), node=f"s{i}", dev=False,
                                   wait_leader=False, extra=extra))
    from support.procs import wait_for

    wait_for(lambda: len({leader_of(s) for s in servers}) == 1 and leader_of(servers[0]), 60,
             what="one leader known to all three servers")
    lead_addr = leader_of(servers[0])
    leader = next(s for s in servers if lead_addr.endswith(f":{s.server_port}"))
    follower = next(s for s in servers if s is not leader)
    wait_for(lambda: follower.get("/v1/acl/token/self", headers=h(ROOT)).status_code == 200, 60,
             what="the management token replicated to the follower")
    _, limited = make_token(follower, 'key_prefix "app/" { policy = "write" }')  # ACL writes forwarded too
    wait_for(lambda: follower.get("/v1/acl/token/self", headers=h(limited)).status_code == 200, 60,
             what="the new token on the follower")
    assert follower.put("/v1/kv/app/x", content=b"1", headers=h(limited)).status_code == 200
    assert leader.get("/v1/kv/app/x?consistent", headers=h(ROOT)).json()[0]["Key"] == "app/x"
    r = follower.put("/v1/kv/other", content=b"1", headers=h(limited))
    assert r.status_code == 403 and "Permission denied" in r.text

    data = cmds.encode(cmds.KV(cmds.KVOp.SET, "forged", b"x"))
    addr = ("127.0.0.1", leader.server_port)

    async def forged(tk: str | None) -> str:
        try:
            await call_apply(addr, data, "", hops=1, tk=tk)
        except RPCError as exc:
            return exc.kind
        return "applied"

    assert trio.run(forged, None) == "permission_denied"
    assert leader.get("/v1/kv/forged?consistent", headers=h(ROOT)).status_code == 404
    assert trio.run(forged, ROOT) == "applied"
    assert leader.get("/v1/kv/forged?consistent", headers=h(ROOT)).status_code == 200
