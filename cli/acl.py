"""`murmur acl ...` (Consul's `consul acl`): bootstrap, token, policy, role, set-agent-token.

Every command talks to the local agent's /v1/acl routes with the token from -token or the
environment (MURMUR_HTTP_TOKEN / CONSUL_HTTP_TOKEN). `-format=json` prints the API's JSON; the
default is Consul's "Key: value" text. Rules for `policy create/update -rules` may be given
inline, as `@file`, or as `-` for standard input.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from .client import APIError, Client, fail, http_options

F = TypeVar("F", bound=Callable[..., Any])


def _opt(*names: str, **kw: Any) -> Callable[[F], F]:
    """An option with Consul's single-dash spelling too (-policy-name as --policy-name)."""
    long = [n for n in names if n.startswith("--")]
    return click.option(*names, *[n[1:] for n in long], **kw)


def _fmt(f: F) -> F:
    return click.option("-format", "--format", "fmt", type=click.Choice(["pretty", "json"]), default="pretty",
                        help="Output format.")(f)


def _call(http_addr: str | None, token: str | None, method: str, path: str, **kw: Any) -> Any:
    try:
        return Client(http_addr, token).call(method, path, **kw)
    except APIError as exc:
        fail(str(exc))
        raise SystemExit(1) from exc  # fail() exits; this keeps the type checker sure of it


def _links(ids: tuple[str, ...], names: tuple[str, ...]) -> list[dict[str, str]]:
    return [{"ID": i} for i in ids] + [{"Name": n} for n in names]


def _service_identities(values: tuple[str, ...]) -> list[dict[str, Any]]:
    out = []
    for v in values:  # "name" or "name:dc1,dc2", as Consul's -service-identity
        name, _, dcs = v.partition(":")
        entry: dict[str, Any] = {"ServiceName": name}
        if dcs:
            entry["Datacenters"] = [d for d in dcs.split(",") if d]
        out.append(entry)
    return out


def _node_identities(values: tuple[str, ...]) -> list[dict[str, str]]:
    out = []
    for v in values:  # "node:dc"
        name, _, dc = v.partition(":")
        if not name or not dc:
            fail(f"-node-identity {v!r}: expected NODENAME:DATACENTER")
        out.append({"NodeName": name, "Datacenter": dc})
    return out


def _print(data: Any, fmt: str, fields: list[tuple[str, str]]) -> None:
    if fmt == "json":
        click.echo(json.dumps(data, indent=4))
        return
    items = data if isinstance(data, list) else [data]
    for n, item in enumerate(items):
        if n:
            click.echo("")
        for key, label in fields:
            if key not in item:
                continue
            value = item[key]
            if key in ("Policies", "Roles"):
                click.echo(f"{label}:")
                for link in value:
                    click.echo(f"   {link.get('ID', '')} - {link.get('Name', '')}")
            elif isinstance(value, (list, dict)):
                click.echo(f"{label}: {json.dumps(value)}")
            else:
                click.echo(f"{label}:{' ' * max(1, 18 - len(label))}{value}")


TOKEN_FIELDS = [("AccessorID", "AccessorID"), ("SecretID", "SecretID"), ("Description", "Description"),
                ("Local", "Local"), ("CreateTime", "Create Time"), ("ExpirationTime", "Expiration Time"),
                ("Policies", "Policies"), ("Roles", "Roles"), ("ServiceIdentities", "Service Identities"),
                ("NodeIdentities", "Node Identities")]
POLICY_FIELDS = [("ID", "ID"), ("Name", "Name"), ("Description", "Description"), ("Datacenters", "Datacenters"),
                 ("Rules", "Rules")]
ROLE_FIELDS = [("ID", "ID"), ("Name", "Name"), ("Description", "Description"), ("Policies", "Policies"),
               ("ServiceIdentities", "Service Identities"), ("NodeIdentities", "Node Identities")]


@click.group()
def acl() -> None:
    """Manage ACL tokens, policies and roles."""


@acl.command()
@_fmt
@http_options
def bootstrap(fmt: str, http_addr: str | None, token: str | None) -> None:
    """Create the first management token (once per cluster)."""
    _print(_call(http_addr, token, "PUT", "/v1/acl/bootstrap"), fmt, TOKEN_FIELDS)


@acl.command("set-agent-token")
@click.argument("kind", type=click.Choice(["default", "agent", "agent_recovery", "replication",
                                           "config_file_service_registration"]))
@click.argument("secret")
@http_options
def set_agent_token(kind: str, secret: str, http_addr: str | None, token: str | None) -> None:
    """Set one of the agent's own tokens (kept in memory until restart)."""
    _call(http_addr, token, "PUT", f"/v1/agent/token/{kind}", json={"Token": secret})
    click.echo(f"ACL token {kind!r} set successfully")


# ---- tokens ---------------------------------------------------------------------------------------

@acl.group("token")
def token_group() -> None:
    """Create, read, update, clone, delete and list tokens."""


def _token_options(f: F) -> F:
    for opt in reversed([
        _opt("--description", default=None, help="A description of the token."),
        _opt("--policy-id", multiple=True, help="ID of a policy to link (repeatable)."),
        _opt("--policy-name", multiple=True, help="Name of a policy to link (repeatable)."),
        _opt("--role-id", multiple=True, help="ID of a role to link (repeatable)."),
        _opt("--role-name", multiple=True, help="Name of a role to link (repeatable)."),
        _opt("--service-identity", multiple=True, help="NAME[:DC1,DC2] (repeatable)."),
        _opt("--node-identity", multiple=True, help="NODE:DATACENTER (repeatable)."),
    ]):
        f = opt(f)
    return f


def _token_body(description: str | None, policy_id: tuple[str, ...], policy_name: tuple[str, ...],
                role_id: tuple[str, ...], role_name: tuple[str, ...], service_identity: tuple[str, ...],
                node_identity: tuple[str, ...]) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if description is not None:
        body["Description"] = description
    if policy_id or policy_name:
        body["Policies"] = _links(policy_id, policy_name)
    if role_id or role_name:
        body["Roles"] = _links(role_id, role_name)
    if service_identity:
        body["ServiceIdentities"] = _service_identities(service_identity)
    if node_identity:
        body["NodeIdentities"] = _node_identities(node_identity)
    return body


@token_group.command("create")
@_token_options
@_opt("--secret", default=None, help="The SecretID to use (default: a new UUID).")
@_opt("--accessor", default=None, help="The AccessorID to use (default: a new UUID).")
@_opt("--local", is_flag=True, help="A token local to this datacenter.")
@_opt("--expires-ttl", default=None, help="Expire the token after this long (1m to 24h).")
@_fmt
@http_options
def token_create(description: str | None, policy_id: tuple[str, ...], policy_name: tuple[str, ...],
                 role_id: tuple[str, ...], role_name: tuple[str, ...], service_identity: tuple[str, ...],
                 node_identity: tuple[str, ...], secret: str | None, accessor: str | None, local: bool,
                 expires_ttl: str | None, fmt: str, http_addr: str | None, token: str | None) -> None:
    """Create a token."""
    body = _token_body(description, policy_id, policy_name, role_id, role_name, service_identity, node_identity)
    if secret:
        body["SecretID"] = secret
    if accessor:
        body["AccessorID"] = accessor
    if local:
        body["Local"] = True
    if expires_ttl:
        body["ExpirationTTL"] = expires_ttl
    _print(_call(http_addr, token, "PUT", "/v1/acl/token", json=body), fmt, TOKEN_FIELDS)


@token_group.command("read")
@_opt("--id", "accessor", default=None, help="AccessorID of the token.")
@_opt("--self", "self_", is_flag=True, help="Read the token used for this request.")
@_fmt
@http_options
def token_read(accessor: str | None, self_: bool, fmt: str, http_addr: str | None, token: str | None) -> None:
    """Read a token by AccessorID, or the caller's own with -self."""
    if self_:
        path = "/v1/acl/token/self"
    elif accessor:
        path = f"/v1/acl/token/{accessor}"
    else:
        fail("give -id ACCESSOR or -self")
        return
    _print(_call(http_addr, token, "GET", path), fmt, TOKEN_FIELDS)


@token_group.command("update")
@_opt("--id", "accessor", required=True, help="AccessorID of the token.")
@_token_options
@_fmt
@http_options
def token_update(accessor: str, description: str | None, policy_id: tuple[str, ...], policy_name: tuple[str, ...],
                 role_id: tuple[str, ...], role_name: tuple[str, ...], service_identity: tuple[str, ...],
                 node_identity: tuple[str, ...], fmt: str, http_addr: str | None, token: str | None) -> None:
    """Replace a token's description, links and identities (its secret stays)."""
    body = _token_body(description, policy_id, policy_name, role_id, role_name, service_identity, node_identity)
    _print(_call(http_addr, token, "PUT", f"/v1/acl/token/{accessor}", json=body), fmt, TOKEN_FIELDS)


@token_group.command("clone")
@_opt("--id", "accessor", required=True, help="AccessorID of the token to clone.")
@_opt("--description", default="", help="Description of the clone.")
@_fmt
@http_options
def token_clone(accessor: str, description: str, fmt: str, http_addr: str | None, token: str | None) -> None:
    """Copy a token under new IDs."""
    body = {"Description": description} if description else {}
    _print(_call(http_addr, token, "PUT", f"/v1/acl/token/{accessor}/clone", json=body), fmt, TOKEN_FIELDS)


@token_group.command("delete")
@_opt("--id", "accessor", required=True, help="AccessorID of the token.")
@http_options
def token_delete(accessor: str, http_addr: str | None, token: str | None) -> None:
    """Delete a token."""
    _call(http_addr, token, "DELETE", f"/v1/acl/token/{accessor}")
    click.echo(f"Token {accessor!r} deleted successfully")


@token_group.command("list")
@_fmt
@http_options
def token_list(fmt: str, http_addr: str | None, token: str | None) -> None:
    """List every token."""
    _print(_call(http_addr, token, "GET", "/v1/acl/tokens"), fmt, TOKEN_FIELDS)


# ---- policies -------------------------------------------------------------------------------------

@acl.group("policy")
def policy_group() -> None:
    """Create, read, update, delete and list policies."""


def _rules(value: str | None) -> str | None:
    if value is None:
        return None
    if value == "-":
        return sys.stdin.read()
    if value.startswith("@"):
        try:
            with open(value[1:], encoding="utf-8") as f:
                return f.read()
        except OSError as exc:
            fail(f"cannot read rules from {value[1:]}: {exc.strerror}")
    return value


def _policy_path(pid: str | None, name: str | None) -> str:
    if pid:
        return f"/v1/acl/policy/{pid}"
    if name:
        return f"/v1/acl/policy/name/{name}"
    fail("give -id ID or -name NAME")
    raise SystemExit(1)


@policy_group.command("create")
@_opt("--name", required=True, help="The policy's name.")
@_opt("--description", default="", help="A description.")
@_opt("--rules", default=None, help="Rules (HCL or JSON), @FILE, or - for stdin.")
@_opt("--valid-datacenter", multiple=True, help="Datacenter the policy applies in (repeatable; default all).")
@_fmt
@http_options
def policy_create(name: str, description: str, rules: str | None, valid_datacenter: tuple[str, ...], fmt: str,
                  http_addr: str | None, token: str | None) -> None:
    """Create a policy."""
    body: dict[str, Any] = {"Name": name, "Description": description, "Rules": _rules(rules) or ""}
    if valid_datacenter:
        body["Datacenters"] = list(valid_datacenter)
    _print(_call(http_addr, token, "PUT", "/v1/acl/policy", json=body), fmt, POLICY_FIELDS)


@policy_group.command("read")
@_opt("--id", "pid", default=None, help="ID of the policy.")
@_opt("--name", default=None, help="Name of the policy.")
@_fmt
@http_options
def policy_read(pid: str | None, name: str | None, fmt: str, http_addr: str | None, token: str | None) -> None:
    """Read a policy by ID or name."""
    _print(_call(http_addr, token, "GET", _policy_path(pid, name)), fmt, POLICY_FIELDS)


@policy_group.command("update")
@_opt("--id", "pid", default=None, help="ID of the policy.")
@_opt("--name", default=None, help="Name of the policy (to find it, or its new name with -id).")
@_opt("--description", default=None, help="A new description.")
@_opt("--rules", default=None, help="New rules (HCL or JSON), @FILE, or - for stdin.")
@_opt("--valid-datacenter", multiple=True, help="Datacenters the policy applies in (replaces the list).")
@_fmt
@http_options
def policy_update(pid: str | None, name: str | None, description: str | None, rules: str | None,
                  valid_datacenter: tuple[str, ...], fmt: str, http_addr: str | None, token: str | None) -> None:
    """Change a policy; what is not given stays as it is."""
    current = _call(http_addr, token, "GET", _policy_path(pid, None if pid else name))
    body = {"ID": current["ID"], "Name": name or current["Name"],
            "Description": current.get("Description", "") if description is None else description,
            "Rules": current.get("Rules", "") if rules is None else _rules(rules),
            "Datacenters": list(valid_datacenter) if valid_datacenter else current.get("Datacenters", [])}
    _print(_call(http_addr, token, "PUT", f"/v1/acl/policy/{current['ID']}", json=body), fmt, POLICY_FIELDS)


@policy_group.command("delete")
@_opt("--id", "pid", default=None, help="ID of the policy.")
@_opt("--name", default=None, help="Name of the policy.")
@http_options
def policy_delete(pid: str | None, name: str | None, http_addr: str | None, token: str | None) -> None:
    """Delete a policy."""
    current = _call(http_addr, token, "GET", _policy_path(pid, name))
    _call(http_addr, token, "DELETE", f"/v1/acl/policy/{current['ID']}")
    click.echo(f"Policy {current['ID']!r} deleted successfully")


@policy_group.command("list")
@_fmt
@http_options
def policy_list(fmt: str, http_addr: str | None, token: str | None) -> None:
    """List every policy."""
    _print(_call(http_addr, token, "GET", "/v1/acl/policies"), fmt, POLICY_FIELDS)


# ---- roles ----------------------------------------------------------------------------------------

@acl.group("role")
def role_group() -> None:
    """Create, read, update, delete and list roles."""


def _role_path(rid: str | None, name: str | None) -> str:
    if rid:
        return f"/v1/acl/role/{rid}"
    if name:
        return f"/v1/acl/role/name/{name}"
    fail("give -id ID or -name NAME")
    raise SystemExit(1)


@role_group.command("create")
@_opt("--name", required=True, help="The role's name.")
@_opt("--description", default="", help="A description.")
@_opt("--policy-id", multiple=True, help="ID of a policy to link (repeatable).")
@_opt("--policy-name", multiple=True, help="Name of a policy to link (repeatable).")
@_opt("--service-identity", multiple=True, help="NAME[:DC1,DC2] (repeatable).")
@_opt("--node-identity", multiple=True, help="NODE:DATACENTER (repeatable).")
@_fmt
@http_options
def role_create(name: str, description: str, policy_id: tuple[str, ...], policy_name: tuple[str, ...],
                service_identity: tuple[str, ...], node_identity: tuple[str, ...], fmt: str,
                http_addr: str | None, token: str | None) -> None:
    """Create a role."""
    body: dict[str, Any] = {"Name": name, "Description": description, "Policies": _links(policy_id, policy_name)}
    if service_identity:
        body["ServiceIdentities"] = _service_identities(service_identity)
    if node_identity:
        body["NodeIdentities"] = _node_identities(node_identity)
    _print(_call(http_addr, token, "PUT", "/v1/acl/role", json=body), fmt, ROLE_FIELDS)


@role_group.command("read")
@_opt("--id", "rid", default=None, help="ID of the role.")
@_opt("--name", default=None, help="Name of the role.")
@_fmt
@http_options
def role_read(rid: str | None, name: str | None, fmt: str, http_addr: str | None, token: str | None) -> None:
    """Read a role by ID or name."""
    _print(_call(http_addr, token, "GET", _role_path(rid, name)), fmt, ROLE_FIELDS)


@role_group.command("update")
@_opt("--id", "rid", required=True, help="ID of the role.")
@_opt("--name", default=None, help="A new name.")
@_opt("--description", default=None, help="A new description.")
@_opt("--policy-id", multiple=True, help="Link this policy too (repeatable).")
@_opt("--policy-name", multiple=True, help="Link this policy too (repeatable).")
@_fmt
@http_options
def role_update(rid: str, name: str | None, description: str | None, policy_id: tuple[str, ...],
                policy_name: tuple[str, ...], fmt: str, http_addr: str | None, token: str | None) -> None:
    """Change a role; new policy links are added to the existing ones."""
    current = _call(http_addr, token, "GET", f"/v1/acl/role/{rid}")
    links = [{"ID": p["ID"]} for p in current.get("Policies", [])] + _links(policy_id, policy_name)
    body = {"ID": rid, "Name": name or current["Name"],
            "Description": current.get("Description", "") if description is None else description,
            "Policies": links, "ServiceIdentities": current.get("ServiceIdentities", []),
            "NodeIdentities": current.get("NodeIdentities", [])}
    _print(_call(http_addr, token, "PUT", f"/v1/acl/role/{rid}", json=body), fmt, ROLE_FIELDS)


@role_group.command("delete")
@_opt("--id", "rid", default=None, help="ID of the role.")
@_opt("--name", default=None, help="Name of the role.")
@http_options
def role_delete(rid: str | None, name: str | None, http_addr: str | None, token: str | None) -> None:
    """Delete a role."""
    current = _call(http_addr, token, "GET", _role_path(rid, name))
    _call(http_addr, token, "DELETE", f"/v1/acl/role/{current['ID']}")
    click.echo(f"Role {current['ID']!r} deleted successfully")


@role_group.command("list")
@_fmt
@http_options
def role_list(fmt: str, http_addr: str | None, token: str | None) -> None:
    """List every role."""
    _print(_call(http_addr, token, "GET", "/v1/acl/roles"), fmt, ROLE_FIELDS)
