"""The HTTP ACL guard (agent/http/acl_guard.py) and the server side of RPC enforcement, without
sockets: every route has a rule, tokens are read from the three places, refused writes never reach
the log, and RPC writes and reads carry the token that the server checks."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from murmur.agent.acl import authorize_command, filter_read, request_secret
from murmur.agent.agent import Agent
from murmur.agent.config import load
from murmur.agent.http.acl_guard import ACL_ROUTE_PREFIXES, RULES
from murmur.agent.http.api import build_router
from murmur.catalog import commands as cmds
from murmur.catalog.acl import Authorizer, parse_rules
from murmur.catalog.commands import ACL, KV, ACLOp, ACLTokenSpec, KVOp, Register, ServiceSpec


def agent(acl: bool) -> Agent:
    overrides: dict[str, Any] = {"acl.enabled": acl, "acl.default_policy": "deny"} if acl else {}
    return Agent(load([], overrides=overrides, dev=True))


def test_every_route_has_an_acl_rule() -> None:
    router = build_router(agent(acl=True))
    assert router.guard is not None
    missing = [(m, p) for m, p in router.registered if (m, p) not in RULES and not p.startswith(ACL_ROUTE_PREFIXES)]
    assert missing == []
    stale = [k for k in RULES if k not in router.registered]
    assert stale == []  # a rule for a route that no longer exists is a typo waiting to happen
    assert build_router(agent(acl=False)).guard is None


def test_token_sources_in_order() -> None:
    assert request_secret({"x-consul-token": "a", "authorization": "Bearer b"}, {"token": ["c"]}) == "a"
    assert request_secret({"authorization": "Bearer b"}, {"token": ["c"]}) == "b"
    assert request_secret({"authorization": "bearer  b "}, {}) == "b"
    assert request_secret({"authorization": "Basic xyz"}, {"token": ["c"]}) == "c"
    assert request_secret({}, {}) == ""


def test_commands_need_their_permissions() -> None:
    from murmur.catalog.store import StateStore

    st = StateStore()
    authz = Authorizer([parse_rules('key_prefix "app/" { policy = "write" }\nservice "web" { policy = "write" }\n'
                                    'node "n1" { policy = "write" }')])
    assert authorize_command(authz, KV(KVOp.SET, "app/x"), st) is None
    assert authorize_command(authz, KV(KVOp.SET, "other"), st) == "key:write on 'other'"
    assert authorize_command(authz, KV(KVOp.DELETE_TREE, "app/"), st) is None
    assert authorize_command(authz, KV(KVOp.DELETE_TREE, ""), st) is not None
    web = Register("n1", "10.0.0.1", service=ServiceSpec("web1", "web"))
    assert authorize_command(authz, web, st) is None
    assert authorize_command(authz, Register("n2", "10.0.0.2", service=ServiceSpec("web1", "web")), st) is not None
    assert authorize_command(authz, Register("n1", "10.0.0.1", service=ServiceSpec("db1", "db")), st) is not None
    assert authorize_command(authz, ACL(ACLOp.TOKEN_DELETE, id="x"), st) == "acl:write"
    assert authorize_command(authz, ACL(ACLOp.BOOTSTRAP, token=ACLTokenSpec("a", "b")), st) is None
    assert authorize_command(authz, cmds.Restore(b""), st) == "management"
    assert authorize_command(Authorizer(management=True), cmds.Restore(b""), st) is None


def test_reads_are_filtered_and_say_so() -> None:
    authz = Authorizer([parse_rules('service_prefix "w" { policy = "read" }\nnode_prefix "" { policy = "read" }')])
    data, cut = filter_read(authz, "catalog.services", {}, {"web": [], "db": []})
    assert (data, cut) == ({"web": []}, True)
    data, cut = filter_read(authz, "catalog.services", {}, {"web": []})
    assert (data, cut) == ({"web": []}, False)
    entries = [{"Service": {"Service": "web"}, "Node": {"Node": "n1"}}, {"Service": {"Service": "db"}, "Node": {"Node": "n1"}}]
    assert filter_read(authz, "health.service", {}, entries) == (entries[:1], True)
    kv = Authorizer([parse_rules('key_prefix "a/" { policy = "read" }')])
    assert filter_read(kv, "kv.get", {"recurse": True}, [["a/1"], ["b"]]) == ([["a/1"]], True)
    with pytest.raises(Exception, match="acl:read"):
        filter_read(kv, "acl.list", {"kind": "token"}, [])
    with pytest.raises(Exception, match="no ACL rule"):
        filter_read(kv, "some.new.read", {}, [])  # fail closed


async def _rpc(ag: Agent, request: dict[str, Any]) -> dict[str, Any]:
    from murmur.agent.rpc import endpoint
    from murmur.agent.rpc.protocol import VERSION

    assert ag.server is not None
    reply = await endpoint.handle_payload(ag.server, msgpack.packb({"v": VERSION, **request}))
    return msgpack.unpackb(msgpack.packb(reply), raw=False, strict_map_key=False)  # type: ignore[no-any-return]


async def test_rpc_carries_the_token_and_the_server_checks_it() -> None:
    """A client's write over RPC (hops 0) is checked against its `tk`; its reads are filtered by it."""
    ag = agent(acl=True)
    st = ag.store
    st.apply(1, cmds.encode(ACL(ACLOp.INIT, token=ACLTokenSpec("root-a", "root-s"), id="t")))
    st.apply(2, cmds.encode(ACL(ACLOp.POLICY_SET, policy=cmds.ACLPolicySpec(
        "p1", "app", rules='key_prefix "app/" { policy = "write" }'))))
    st.apply(3, cmds.encode(ACL(ACLOp.TOKEN_SET, token=ACLTokenSpec("lim-a", "lim-s", policies=(cmds.Link("p1"),)),
                                create=True)))
    for i, key in enumerate(("app/1", "other"), start=4):
        st.apply(i, cmds.encode(KV(KVOp.SET, key, b"v")))
    assert ag.server is not None
    ag.server.driver = None  # no Raft here: a write that passes the check stops at "no leader"

    def apply(key: str, tk: str | None) -> dict[str, Any]:
        req: dict[str, Any] = {"op": "apply", "d": cmds.encode(KV(KVOp.SET, key, b"x")), "rid": "", "hops": 0}
        if tk is not None:
            req["tk"] = tk
        return req

    denied = await _rpc(ag, apply("other", "lim-s"))
    assert denied["kind"] == "permission_denied" and "key:write" in denied["err"]
    assert (await _rpc(ag, apply("other", None)))["kind"] == "permission_denied"  # anonymous
    assert (await _rpc(ag, apply("other", "nope")))["kind"] == "acl_not_found"
    passed = await _rpc(ag, apply("app/2", "lim-s"))  # positive control: checked, then no leader
    assert passed["kind"] == "no_leader"
    assert (await _rpc(ag, apply("other", "root-s")))["kind"] == "no_leader"
    read = {"op": "read", "name": "kv.get", "args": {"key": "", "recurse": True}, "mode": "stale"}
    lim = await _rpc(ag, {**read, "tk": "lim-s"})
    assert [r[0] for r in lim["data"]] == ["app/1"] and lim["f"] is True
    root = await _rpc(ag, {**read, "tk": "root-s"})
    assert [r[0] for r in root["data"]] == ["app/1", "other"] and "f" not in root
    assert (await _rpc(ag, {**read, "tk": "nope"}))["kind"] == "acl_not_found"


async def test_a_write_claiming_to_be_forwarded_is_checked_too() -> None:
    """hops >= 1 says "a server forwarded this"; anyone can say so on port 8300, so the token a
    forwarded write carries is checked like a client's (servers forward the token they wrote under)."""
    ag = agent(acl=True)
    st = ag.store
    st.apply(1, cmds.encode(ACL(ACLOp.INIT, token=ACLTokenSpec("root-a", "root-s"), id="t")))
    assert ag.server is not None
    ag.server.driver = None  # no Raft here: a write that passes the check stops at "no leader"
    forged = {"op": "apply", "d": cmds.encode(KV(KVOp.SET, "secret", b"x")), "rid": "", "hops": 1}
    assert (await _rpc(ag, forged))["kind"] == "permission_denied"  # no token: anonymous, default deny
    assert (await _rpc(ag, {**forged, "hops": 3, "tk": "nope"}))["kind"] == "acl_not_found"
    assert (await _rpc(ag, {**forged, "tk": "root-s"}))["kind"] == "no_leader"  # positive control


def test_an_expired_token_is_not_found() -> None:
    from murmur.agent.acl import expired

    assert not expired("", 1e12) and not expired("garbage", 1e12)
    assert expired("2026-01-01T00:00:00Z", 1798761600.0) and not expired("2027-01-01T00:00:00Z", 1767225600.0)
    ag = agent(acl=True)
    st = ag.store
    st.apply(1, cmds.encode(ACL(ACLOp.INIT, token=ACLTokenSpec("root-a", "root-s"), id="t")))
    st.apply(2, cmds.encode(ACL(ACLOp.TOKEN_SET, token=ACLTokenSpec("old-a", "old-s", expiration_time="2001-01-01T00:00:00Z"),
                                create=True)))
    st.apply(3, cmds.encode(ACL(ACLOp.TOKEN_SET, token=ACLTokenSpec("new-a", "new-s", expiration_time="2999-01-01T00:00:00Z"),
                                create=True)))
    assert ag.acl.local("old-s") == (None, "")
    authz, accessor = ag.acl.local("new-s")  # positive control
    assert authz is not None and accessor == "new-a"
