"""The ACL tables of the state store: built-ins, bootstrap once, tokens, policies, roles, snapshots."""

from __future__ import annotations

import pytest
from murmur.agent.protocol import ACLS, REQUEST_IDS, required_protocol
from murmur.agent.server import CatalogFSM
from murmur.catalog import commands as cmds
from murmur.catalog.commands import ACL, ACLOp, ACLPolicySpec, ACLRoleSpec, ACLTokenSpec, ApplyError, Link
from murmur.catalog.store import ANONYMOUS_TOKEN_ID, MANAGEMENT_POLICY_ID, StateStore

enc = cmds.encode
ROOT = ACLTokenSpec("11111111-1111-1111-1111-111111111111", "s3cret", "Initial Management Token",
                    create_time="2026-11-25T07:00:00Z")


def test_acl_commands_round_trip_through_the_codec() -> None:
    tok = ACLTokenSpec("a", "s", "d", (Link("p1"), Link("", "pn")), (Link("", "r"),), "[]", "[]", "", True,
                       "t0", "t1", "h")
    for cmd in (ACL(ACLOp.TOKEN_SET, token=tok, create=True), ACL(ACLOp.TOKEN_DELETE, id="a"),
                ACL(ACLOp.POLICY_SET, policy=ACLPolicySpec("p", "n", "d", 'key "" { policy = "read" }', ("dc1",))),
                ACL(ACLOp.ROLE_SET, role=ACLRoleSpec("r", "n", "", (Link("p"),))), ACL(ACLOp.INIT, id="now")):
        assert cmds.decode(enc(cmd)) == cmd


def test_malformed_acl_command_is_a_command_error() -> None:
    import msgpack

    bad = bytes([cmds.CommandType.ACL]) + bytes(msgpack.packb({"o": 2, "t": {"a": 5}}))
    with pytest.raises(cmds.CommandError):
        cmds.decode(bad)
    with pytest.raises(cmds.CommandError):
        cmds.decode(bytes([cmds.CommandType.ACL]) + bytes(msgpack.packb({"o": 99})))


def test_init_makes_the_builtins_and_the_initial_management_token_once() -> None:
    st = StateStore()
    assert st.apply(1, enc(ACL(ACLOp.INIT, token=ROOT, id="now"))) is True
    assert set(st.acl_tokens) == {ANONYMOUS_TOKEN_ID, ROOT.accessor_id}
    assert st.acl_tokens[ANONYMOUS_TOKEN_ID].spec.secret_id == "anonymous"
    assert st.acl_policies[MANAGEMENT_POLICY_ID].spec.name == "global-management"
    assert st.acl_tokens[ROOT.accessor_id].spec.policies == (Link(MANAGEMENT_POLICY_ID),)
    assert st.acl_bootstrap == 1 and st.table_index["acls"] == 1
    assert st.apply(2, enc(ACL(ACLOp.INIT, token=ROOT, id="later"))) is True  # again: nothing changes
    assert st.table_index["acls"] == 1
    # bootstrap is over: the initial management token counts as the bootstrap
    other = ACLTokenSpec("22222222-2222-2222-2222-222222222222", "s2")
    res = st.apply(3, enc(ACL(ACLOp.BOOTSTRAP, token=other)))
    assert isinstance(res, ApplyError) and "ACL bootstrap no longer allowed" in res.message


def test_bootstrap_happens_once() -> None:
    st = StateStore()
    first = ACLTokenSpec("22222222-2222-2222-2222-222222222222", "s2", "Bootstrap Token (Global Management)")
    res = st.apply(1, enc(ACL(ACLOp.BOOTSTRAP, token=first)))
    assert isinstance(res, list) and res[0]["a"] == first.accessor_id
    assert st.acl_tokens[first.accessor_id].spec.policies == (Link(MANAGEMENT_POLICY_ID),)
    again = st.apply(2, enc(ACL(ACLOp.BOOTSTRAP, token=ACLTokenSpec("x", "y"))))
    assert isinstance(again, ApplyError) and "reset index: 1" in again.message
    assert "x" not in st.acl_tokens


def test_tokens_policies_and_roles() -> None:
    st = StateStore()
    st.apply(1, enc(ACL(ACLOp.INIT, id="now")))
    pol = ACLPolicySpec("p-1", "kv-read", rules='key_prefix "" { policy = "read" }')
    assert isinstance(st.apply(2, enc(ACL(ACLOp.POLICY_SET, policy=pol))), list)
    dup = st.apply(3, enc(ACL(ACLOp.POLICY_SET, policy=ACLPolicySpec("p-2", "kv-read"))))
    assert isinstance(dup, ApplyError) and "already exists" in dup.message
    role = ACLRoleSpec("r-1", "reader", policies=(Link("", "kv-read"),))
    assert isinstance(st.apply(4, enc(ACL(ACLOp.ROLE_SET, role=role))), list)
    assert st.acl_roles["r-1"].spec.policies == (Link("p-1"),)  # the name became the ID
    tok = ACLTokenSpec("t-1", "sec-1", policies=(Link("", "kv-read"),), roles=(Link("r-1"),))
    res = st.apply(5, enc(ACL(ACLOp.TOKEN_SET, token=tok, create=True)))
    assert isinstance(res, list) and res[1:] == [5, 5]
    assert st.acl_token_by_secret("sec-1") is not None
    # create again with the same accessor: refused; update keeps the secret and CreateIndex
    assert isinstance(st.apply(6, enc(ACL(ACLOp.TOKEN_SET, token=tok, create=True))), ApplyError)
    upd = st.apply(7, enc(ACL(ACLOp.TOKEN_SET, token=ACLTokenSpec("t-1", "", "updated"))))
    assert isinstance(upd, list) and upd[0]["s"] == "sec-1" and upd[0]["d"] == "updated" and upd[1:] == [5, 7]
    # unknown links and stolen secrets are refused, and change nothing
    for bad in (ACLTokenSpec("t-2", "sec-2", policies=(Link("nope"),)), ACLTokenSpec("t-2", "sec-1"),
                ACLTokenSpec("t-2", "sec-2", roles=(Link("", "nope"),))):
        assert isinstance(st.apply(8, enc(ACL(ACLOp.TOKEN_SET, token=bad, create=True))), ApplyError)
        st.last_index = 7
    assert "t-2" not in st.acl_tokens
    assert isinstance(st.apply(9, enc(ACL(ACLOp.TOKEN_SET, token=ACLTokenSpec("zz", ""), create=False))),
                      ApplyError)
    # built-ins cannot go
    assert isinstance(st.apply(10, enc(ACL(ACLOp.TOKEN_DELETE, id=ANONYMOUS_TOKEN_ID))), ApplyError)
    assert isinstance(st.apply(11, enc(ACL(ACLOp.POLICY_DELETE, id=MANAGEMENT_POLICY_ID))), ApplyError)
    assert st.apply(12, enc(ACL(ACLOp.TOKEN_DELETE, id="t-1"))) is True and "t-1" not in st.acl_tokens
    assert st.apply(13, enc(ACL(ACLOp.ROLE_DELETE, id="r-1"))) is True and not st.acl_roles


def test_acl_tables_survive_snapshot_and_restore() -> None:
    st = StateStore()
    st.apply(1, enc(ACL(ACLOp.INIT, token=ROOT, id="now")))
    st.apply(2, enc(ACL(ACLOp.POLICY_SET, policy=ACLPolicySpec("p-1", "n", datacenters=("dc2",)))))
    st.apply(3, enc(ACL(ACLOp.ROLE_SET, role=ACLRoleSpec("r-1", "role", policies=(Link("p-1"),)))))
    copy = StateStore.restore(st.snapshot())
    assert copy.acl_tokens == st.acl_tokens and copy.acl_policies == st.acl_policies
    assert copy.acl_roles == st.acl_roles and copy.acl_bootstrap == 1
    assert copy.snapshot() == st.snapshot()
    # RESTORE of a state without ACLs replaces them, as every other table
    other = StateStore()
    assert st.apply(4, enc(cmds.Restore(other.snapshot()))) is True
    assert not st.acl_tokens and st.acl_bootstrap == 0 and st.table_index["acls"] == 4


def test_acl_commands_need_protocol_4_and_an_older_server_refuses_them() -> None:
    data = enc(ACL(ACLOp.INIT, id="now"))
    assert required_protocol(data) == ACLS
    assert required_protocol(cmds.wrap_request("r1", data)) == ACLS
    with pytest.raises(cmds.UnknownCommand):
        CatalogFSM(StateStore(), protocol=REQUEST_IDS).apply(1, data)
    assert CatalogFSM(StateStore(), protocol=ACLS).apply(1, data) is True
