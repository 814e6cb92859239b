"""Protocol N and N-1 in one cluster: a server pinned to the older protocol (hidden --protocol N-1)
stays up and in step while client writes flow, then is upgraded in place (agent/protocol.py)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from murmur.agent.protocol import PROTOCOL_MAX
from support.procs import AgentProc, wait_for
from support.servers import start_servers

pytestmark = pytest.mark.e2e
OLD = PROTOCOL_MAX - 1


def vsn_of(a: AgentProc, node: str) -> str:
    for m in a.get("/v1/agent/members").json():
        if m["Name"] == node:
            return str(m["Tags"].get("vsn", ""))
    return ""


def kv(a: AgentProc, prefix: str) -> dict[str, str]:
    r = a.get(f"/v1/kv/{prefix}?recurse&stale")
    if r.status_code == 404:
        return {}
    return {e["Key"]: base64.b64decode(e["Value"]).decode() for e in r.json()}


def write_through(client: AgentProc, prefix: str, n: int) -> dict[str, str]:
    want = {f"{prefix}/{i}": f"v{i}" for i in range(n)}
    for k, v in want.items():
        r = client.put(f"/v1/kv/{k}", content=v)
        assert r.status_code == 200 and r.json() is True, r.text
    return want


def test_a_server_pinned_to_the_previous_protocol_keeps_up_then_upgrades(tmp_path: Path, start_agent) -> None:  # type: ignore[no-untyped-def]
    # ACLs on (default allow): their writes are the newest protocol's (4), so they wait for s2.
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "acl.json").write_text('{"acl": {"enabled": true}}')
    servers = start_servers(tmp_path, start_agent, extra_for=lambda i: ["--protocol", str(OLD)] if i == 2 else [])
    conf = tmp_path / "conf"
    old = servers[2]
    assert vsn_of(servers[0], "s2") == str(OLD) and vsn_of(servers[0], "s0") == str(PROTOCOL_MAX)
    # Client writes go over server RPC with request IDs: the newer log format, held back while
    # an old server is in the cluster (an old build stops at an entry it cannot apply).
    client = start_agent(conf, node="c0", dev=False, wait_leader=True,
                         extra=["--join", f"127.0.0.1:{servers[0].serf_port}"])
    want = write_through(client, "mixed", 20)
    for s in servers:
        wait_for(lambda s=s: kv(s, "mixed") == want, 60, what=f"all mixed-protocol writes on {s.node}")
    assert old.proc is not None and old.proc.poll() is None, "the N-1 server stopped"
    # A newest-protocol write (an ACL bootstrap) is refused with a clear error while s2 speaks
    # the previous one, not written to a log s2 could not apply; the previous protocol's writes
    # (a session) go through.
    refused = client.put("/v1/acl/bootstrap")
    assert refused.status_code == 500 and "cluster protocol" in refused.text, refused.text
    assert servers[0].get("/v1/acl/tokens").status_code == 403  # no token exists to ask with
    early = client.put("/v1/session/create", json={"Name": "early"})
    assert early.status_code == 200, early.text

    # Upgrade in place: the same data dir, the newest protocol.
    old.stop()
    at = old.args.index("--protocol")
    old.args = old.args[:at] + old.args[at + 2:]  # the flag and its value, nothing else ("3" is also a count)
    old.wait_leader = False
    old.restart()
    wait_for(lambda: vsn_of(servers[0], "s2") == str(PROTOCOL_MAX), 60, what="s2 advertising the new protocol")
    want_after = write_through(client, "upgraded", 20)
    def bootstrap() -> str | None:
        r = client.put("/v1/acl/bootstrap")
        return r.json()["SecretID"] if r.status_code == 200 else None

    boot = wait_for(bootstrap, 60,
                    what="an ACL bootstrap once every server speaks the new protocol")
    assert len(servers[0].get("/v1/acl/tokens", headers={"X-Consul-Token": boot}).json()) == 2
    sid = client.put("/v1/session/create", json={"Name": "late"}).json()["ID"]
    assert client.put(f"/v1/kv/upgraded/lock?acquire={sid}", content="me").json() is True
    for s in servers:
        wait_for(lambda s=s: kv(s, "upgraded") == {**want_after, "upgraded/lock": "me"} and kv(s, "mixed") == want, 60,
                 what=f"all writes on {s.node} after the upgrade")
    assert old.proc is not None and old.proc.poll() is None
