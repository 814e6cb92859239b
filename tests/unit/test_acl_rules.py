"""ACL rules: the HCL subset, the JSON form, clear errors, and evaluation (catalog/acl.py)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from murmur.catalog import commands as cmds
from murmur.catalog.acl import (
    Authorizer,
    RuleError,
    dump_hcl,
    parse_hcl,
    parse_rules,
    resolve,
    rules_from_structure,
)
from murmur.catalog.commands import ACL, ACLOp, ACLPolicySpec, ACLRoleSpec, ACLTokenSpec, Link
from murmur.catalog.store import StateStore

SAMPLE = '''
# a comment
key_prefix "" {
  policy = "read"
}
key_prefix "app/" { policy = "write" }   // another
key "app/secret" {
  policy = "deny"
}
/* block
   comment */
service_prefix "" { policy = "read" }
service "web" { policy = "write" intentions = "read" }
node_prefix "" { policy = "read" }
session_prefix "" { policy = "write" }
agent_prefix "" { policy = "read" }
query_prefix "" { policy = "read" }
event_prefix "deploy" { policy = "write" }
operator = "read"
keyring = "write"
'''


def test_hcl_sample_parses_to_the_json_structure() -> None:
    doc = parse_hcl(SAMPLE)
    assert doc["key_prefix"] == {"": {"policy": "read"}, "app/": {"policy": "write"}}
    assert doc["key"] == {"app/secret": {"policy": "deny"}}
    assert doc["service"] == {"web": {"policy": "write", "intentions": "read"}}
    assert doc["operator"] == "read" and doc["keyring"] == "write"
    assert parse_rules(SAMPLE) == parse_rules(json.dumps(doc))


def test_evaluation_exact_beats_prefix_longest_prefix_wins() -> None:
    authz = Authorizer([parse_rules(SAMPLE)], "deny")
    assert authz.allowed("key", "other", "read") and not authz.allowed("key", "other", "write")
    assert authz.allowed("key", "app/x", "write")
    assert not authz.allowed("key", "app/secret", "read")  # exact deny beats the longer prefix
    assert authz.allowed("key", "app/secret2", "write")  # exact means exact
    assert authz.allowed("service", "web", "write") and not authz.allowed("service", "db", "write")
    assert authz.allowed("event", "deploy-1", "write") and not authz.allowed("event", "other", "read")
    assert authz.scalar("operator", "read") and not authz.scalar("operator", "write")
    assert authz.scalar("keyring", "write") and not authz.scalar("acl", "read")
    assert not authz.write_prefix("key", "app/")  # app/secret under it is denied
    assert Authorizer([parse_rules('key_prefix "app/" { policy = "write" }')]).write_prefix("key", "app/")


def test_precedence_across_policies_deny_write_read() -> None:
    read = parse_rules('key_prefix "a/" { policy = "read" }')
    write = parse_rules('key_prefix "a/" { policy = "write" }')
    deny = parse_rules('key_prefix "a/" { policy = "deny" }')
    assert Authorizer([read, write]).allowed("key", "a/x", "write")
    assert not Authorizer([read, write, deny]).allowed("key", "a/x", "read")
    assert not Authorizer([write, deny]).allowed("key", "a/x", "write")
    # repeated blocks within one policy merge the same way
    assert parse_rules('key "k" { policy = "read" }\nkey "k" { policy = "deny" }').exact["key"]["k"] == "deny"
    lst = Authorizer([parse_rules('key_prefix "" { policy = "list" }')])
    assert lst.allowed("key", "x", "list") and not lst.allowed("key", "x", "read")


def test_default_policy_fallback() -> None:
    nothing = parse_rules("")
    assert Authorizer([nothing], "allow").allowed("service", "x", "write")
    assert not Authorizer([nothing], "deny").allowed("service", "x", "read")
    assert not Authorizer([nothing], "allow").scalar("acl", "read")  # ACL management needs a rule
    assert Authorizer([nothing], "allow").scalar("operator", "write")
    assert Authorizer(management=True).scalar("acl", "write")


@pytest.mark.parametrize(("text", "fragment"), [
    ('key_prefix "a" { policy = "sometimes" }', "invalid policy 'sometimes'"),
    ('kee_prefix "a" { policy = "read" }', "unknown rule type 'kee_prefix'"),
    ('key_prefix "a" { policy = "read"', "line 1, column 33: expected an attribute or block name, got end"),
    ('key_prefix "a" { polic = "read" }', "unknown attribute 'polic'"),
    ('key_prefix "a" { }', "missing policy"),
    ('key_prefix "a" { policy = "read" }\noperator = "list"', "operator: invalid policy 'list'"),
    ('key_prefix "a', "line 1, column 12: unterminated string"),
    ('key_prefix "a" = { policy = "read" }', "key_prefix"),
    ('key_prefix "a" { policy = "read" } @', "line 1, column 36: unexpected character '@'"),
    ('operator = "read"\noperator = ["write"]', "set twice"),
    ('{"key_prefix": ', "invalid JSON rules"),
    ('{"key_prefix": ["x"]}', "expected blocks"),
    ('service "a" { policy = "list" }', "invalid policy 'list'"),
])
def test_bad_rules_are_clear_errors(text: str, fragment: str) -> None:
    with pytest.raises(RuleError) as err:
        parse_rules(text)
    assert fragment in str(err.value)


NAMES = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
ACCESS = st.sampled_from(["read", "write", "deny"])
RULES = st.dictionaries(
    st.sampled_from(["key", "key_prefix", "service", "service_prefix", "node", "node_prefix", "session",
                     "session_prefix", "agent", "agent_prefix", "query", "query_prefix", "event", "event_prefix"]),
    st.dictionaries(NAMES, st.fixed_dictionaries({"policy": ACCESS}), min_size=1, max_size=3),
    max_size=5,
).flatmap(lambda blocks: st.dictionaries(st.sampled_from(["operator", "keyring", "acl"]), ACCESS, max_size=3)
          .map(lambda scalars: {**blocks, **scalars}))


@settings(max_examples=200, deadline=None)
@given(RULES)
def test_hcl_round_trip(doc: dict) -> None:
    text = dump_hcl(doc)
    assert parse_hcl(text) == doc
    assert parse_rules(text) == rules_from_structure(doc) == parse_rules(json.dumps(doc))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_parser_never_raises_anything_but_rule_error(text: str) -> None:
    try:
        parse_rules(text)
    except RuleError:
        pass


def _store() -> StateStore:
    s = StateStore()
    enc = cmds.encode
    s.apply(1, enc(ACL(ACLOp.INIT, token=ACLTokenSpec("root-a", "root-s"), id="t")))
    s.apply(2, enc(ACL(ACLOp.POLICY_SET, policy=ACLPolicySpec("p-kv", "kv", rules='key_prefix "" { policy = "write" }'))))
    s.apply(3, enc(ACL(ACLOp.POLICY_SET, policy=ACLPolicySpec("p-dc2", "dc2-only", datacenters=("dc2",),
                                                             rules='service_prefix "" { policy = "write" }'))))
    s.apply(4, enc(ACL(ACLOp.ROLE_SET, role=ACLRoleSpec("r-1", "role", policies=(Link("p-kv"),)))))
    s.apply(5, enc(ACL(ACLOp.TOKEN_SET, token=ACLTokenSpec("t-role", "s-role", roles=(Link("r-1"),)), create=True)))
    s.apply(6, enc(ACL(ACLOp.TOKEN_SET, token=ACLTokenSpec("t-dc2", "s-dc2", policies=(Link("p-dc2"),)),
                       create=True)))
    s.apply(7, enc(ACL(ACLOp.TOKEN_SET, token=ACLTokenSpec(
        "t-id", "s-id", service_identities='[{"ServiceName": "web"}]',
        node_identities='[{"NodeName": "n1", "Datacenter": "dc1"}]'), create=True)))
    return s


def test_resolve_tokens_roles_identities_and_datacenters() -> None:
    s = _store()
    assert resolve(s, "no-such-secret", "dc1", "deny") is None
    root = resolve(s, "root-s", "dc1", "deny")
    assert root is not None and root.management
    anon = resolve(s, "", "dc1", "deny")
    assert anon is not None and not anon.allowed("key", "x", "read")
    role = resolve(s, "s-role", "dc1", "deny")
    assert role is not None and role.allowed("key", "x", "write") and not role.allowed("service", "x", "read")
    # a policy written for dc2 grants nothing in dc1, and does in dc2
    in_dc1, in_dc2 = resolve(s, "s-dc2", "dc1", "deny"), resolve(s, "s-dc2", "dc2", "deny")
    assert in_dc1 is not None and not in_dc1.allowed("service", "web", "write")
    assert in_dc2 is not None and in_dc2.allowed("service", "web", "write")
    ident = resolve(s, "s-id", "dc1", "deny")
    assert ident is not None
    assert ident.allowed("service", "web", "write") and ident.allowed("service", "web-sidecar-proxy", "write")
    assert ident.allowed("service", "db", "read") and not ident.allowed("service", "db", "write")
    assert ident.allowed("node", "n1", "write") and not ident.allowed("node", "n2", "write")
    assert not resolve(s, "s-id", "dc2", "deny").allowed("node", "n1", "write")  # type: ignore[union-attr]
