"""Protocol N and N-1 in one cluster: a server pinned to the older protocol (hidden --protocol 2)
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
    # A protocol-3 write (a session) is refused with a clear error while s2 speaks 2, not
    # written to a log s2 could not apply.
    refused = client.put("/v1/session/create", json={"Name": "early"})
    assert refused.status_code == 500 and "cluster protocol" in refused.text, refused.text
    assert servers[0].get("/v1/session/list").json() == []

    # Upgrade in place: the same data dir, the newest protocol.
    old.stop()
    old.args = [a for a in old.args if a not in ("--protocol", str(OLD))]
    old.wait_leader = False
    old.restart()
    wait_for(lambda: vsn_of(servers[0], "s2") == str(PROTOCOL_MAX), 60, what="s2 advertising the new protocol")
    want_after = write_through(client, "upgraded", 20)
    sid = wait_for(lambda: client.put("/v1/session/create", json={"Name": "late"}).json().get("ID"), 60,
                   what="a session once every server speaks the new protocol")
    assert client.put(f"/v1/kv/upgraded/lock?acquire={sid}", content="me").json() is True
    for s in servers:
        wait_for(lambda s=s: kv(s, "upgraded") == {**want_after, "upgraded/lock": "me"} and kv(s, "mixed") == want, 60,
                 what=f"all writes on {s.node} after the upgrade")
    assert old.proc is not None and old.proc.poll() is None
