"""`/v1/acl/...`: bootstrap, tokens (with self and clone), policies and roles (with by-name), and
`/v1/agent/token/<type>`.

Writes become ACL commands (catalog/commands.py) with IDs, times and hashes chosen here, so every
server applies the same record; links by name are resolved to IDs by the store when applied.
Reads are named reads (`acl.list`, `acl.get`) that need `acl:read`, except `token/self`, which
any valid token may do for itself. With ACLs off every route answers 401 "ACL support disabled",
as Consul's.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import uuid
from typing import TYPE_CHECKING, Any

from murmur.catalog import commands as cmds
from murmur.catalog.acl import RuleError, parse_rules
from murmur.catalog.commands import ACL, ACLOp, ACLPolicySpec, ACLRoleSpec, ACLTokenSpec, ApplyError, Link
from murmur.catalog.store import MANAGEMENT_POLICY_ID
from murmur.checks.definitions import folded
from murmur.checks.durations import parse_duration

from ..acl import AGENT_TOKEN_ALIASES, AGENT_TOKEN_TYPES, now_rfc3339
from .common import check_dc, named_read, result_headers
from .server import HTTPError, Request, Response, Router

if TYPE_CHECKING:
    from ..agent import Agent

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z")
MAX_ACL_TEXT = 128 * 1024  # rules, descriptions: far above any real policy


def _is_uuid(s: str) -> bool:
    return bool(_UUID.match(s))


def _links_json(links: list[list[str]], names: dict[str, str]) -> list[dict[str, str]]:
    return [{"ID": i, "Name": names.get(i, "")} for i, _ in links if i in names]


def _json_text(text: str) -> Any:
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def token_json(row: list[Any], policy_names: dict[str, str], role_names: dict[str, str]) -> dict[str, Any]:
    t, ci, mi = row
    out: dict[str, Any] = {"AccessorID": t["a"], "SecretID": t["s"], "Description": t["d"]}
    policies = _links_json(t["p"], policy_names)
    if policies:
        out["Policies"] = policies
    roles = _links_json(t["r"], role_names)
    if roles:
        out["Roles"] = roles
    for key, field in (("ServiceIdentities", "si"), ("NodeIdentities", "ni"), ("TemplatedPolicies", "tp")):
        value = _json_text(t.get(field, ""))
        if value:
            out[key] = value
    out["Local"] = bool(t["l"])
    if t.get("et"):
        out["ExpirationTime"] = t["et"]
    out.update({"CreateTime": t["ct"], "Hash": t["h"], "CreateIndex": ci, "ModifyIndex": mi})
    return out


def policy_json(row: list[Any]) -> dict[str, Any]:
    p, ci, mi = row
    out: dict[str, Any] = {"ID": p["i"], "Name": p["n"], "Description": p["d"], "Rules": p["r"]}
    if p.get("dc"):
        out["Datacenters"] = list(p["dc"])
    out.update({"Hash": p["h"], "CreateIndex": ci, "ModifyIndex": mi})
    return out


def role_json(row: list[Any], policy_names: dict[str, str]) -> dict[str, Any]:
    r, ci, mi = row
    out: dict[str, Any] = {"ID": r["i"], "Name": r["n"], "Description": r["d"]}
    policies = _links_json(r["p"], policy_names)
    if policies:
        out["Policies"] = policies
    for key, field in (("ServiceIdentities", "si"), ("NodeIdentities", "ni")):
        value = _json_text(r.get(field, ""))
        if value:
            out[key] = value
    out.update({"Hash": r["h"], "CreateIndex": ci, "ModifyIndex": mi})
    return out


def _hash(*parts: Any) -> str:
    return base64.b64encode(hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).digest()).decode()


def _body(req: Request) -> dict[str, Any]:
    data = req.json()
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise HTTPError(400, "Request decode failed: the body must be a JSON object")
    return folded(data)


def _text(d: dict[str, Any], key: str, label: str) -> str:
    value = d.get(key, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise HTTPError(400, f"{label} must be a string")
    if len(value) > MAX_ACL_TEXT:
        raise HTTPError(400, f"{label} is longer than {MAX_ACL_TEXT} characters")
    return value


def _links(d: dict[str, Any], key: str, label: str) -> tuple[Link, ...]:
    value = d.get(key) or []
    if not isinstance(value, list):
        raise HTTPError(400, f"{label} must be a list of {{\"ID\"}} or {{\"Name\"}} objects")
    out = []
    for item in value:
        if not isinstance(item, dict):
            raise HTTPError(400, f"{label} must be a list of {{\"ID\"}} or {{\"Name\"}} objects")
        f = folded(item)
        lid, name = f.get("id") or "", f.get("name") or ""
        if not isinstance(lid, str) or not isinstance(name, str) or not (lid or name):
            raise HTTPError(400, f"{label}: each link needs an ID or a Name")
        out.append(Link(lid, "" if lid else name))
    return tuple(out)


def _service_identities(d: dict[str, Any]) -> str:
    value = d.get("serviceidentities")
    if not value:
        return ""
    if not isinstance(value, list):
        raise HTTPError(400, "ServiceIdentities must be a list")
    out = []
    for item in value:
        f = folded(item) if isinstance(item, dict) else {}
        name = f.get("servicename")
        if not isinstance(name, str) or not name:
            raise HTTPError(400, "Invalid ServiceIdentity: missing ServiceName")
        entry: dict[str, Any] = {"ServiceName": name}
        dcs = f.get("datacenters")
        if dcs:
            if not isinstance(dcs, list) or not all(isinstance(x, str) for x in dcs):
                raise HTTPError(400, "ServiceIdentity Datacenters must be a list of strings")
            entry["Datacenters"] = dcs
        out.append(entry)
    return json.dumps(out, separators=(",", ":"))


def _node_identities(d: dict[str, Any]) -> str:
    value = d.get("nodeidentities")
    if not value:
        return ""
    if not isinstance(value, list):
        raise HTTPError(400, "NodeIdentities must be a list")
    out = []
    for item in value:
        f = folded(item) if isinstance(item, dict) else {}
        name, dc = f.get("nodename"), f.get("datacenter")
        if not isinstance(name, str) or not name or not isinstance(dc, str) or not dc:
            raise HTTPError(400, "Invalid NodeIdentity: needs NodeName and Datacenter")
        out.append({"NodeName": name, "Datacenter": dc})
    return json.dumps(out, separators=(",", ":"))


TEMPLATES = ("builtin/service", "builtin/node", "builtin/dns")
# What each built-in template grants ({{name}}: its TemplateVariables' name); catalog/acl.py grants
# the same for tokens that carry them.
TEMPLATE_RULES = {
    "builtin/service": ('service "{{name}}" {\n  policy = "write"\n}\nservice "{{name}}-sidecar-proxy" {\n'
                        '  policy = "write"\n}\nservice_prefix "" {\n  policy = "read"\n}\n'
                        'node_prefix "" {\n  policy = "read"\n}', "Gives the token or role permissions to "
                        "register a service and discover services in the catalog."),
    "builtin/node": ('node "{{name}}" {\n  policy = "write"\n}\nservice_prefix "" {\n  policy = "read"\n}',
                     "Gives the token or role permissions to register an agent/node into the catalog."),
    "builtin/dns": ('node_prefix "" {\n  policy = "read"\n}\nservice_prefix "" {\n  policy = "read"\n}\n'
                    'query_prefix "" {\n  policy = "read"\n}', "Gives the token or role permissions for the DNS "
                    "interface."),
}
NAME_SCHEMA = ('{\n  "type": "object",\n  "properties": {\n    "name": { "type": "string", "$ref": "#/definitions/min-length-one" }\n'
               '  },\n  "required": ["name"]\n}')


def templated_json(name: str) -> dict[str, Any]:
    template, description = TEMPLATE_RULES[name]
    return {"TemplateName": name, "Schema": "" if name == "builtin/dns" else NAME_SCHEMA, "Template": template,
            "Description": description}


def _templated(d: dict[str, Any]) -> str:
    value = d.get("templatedpolicies")
    if not value:
        return ""
    if not isinstance(value, list):
        raise HTTPError(400, "TemplatedPolicies must be a list")
    out = []
    for item in value:
        f = folded(item) if isinstance(item, dict) else {}
        name = f.get("templatename")
        if name not in TEMPLATES:
            raise HTTPError(400, f"Invalid TemplatedPolicy: unknown template {name!r} (known: {', '.join(TEMPLATES)})")
        variables = f.get("templatevariables") or {}
        if not isinstance(variables, dict):
            raise HTTPError(400, "TemplateVariables must be an object")
        if name != "builtin/dns" and not isinstance(folded(variables).get("name"), str):
            raise HTTPError(400, f"Invalid TemplatedPolicy {name}: TemplateVariables needs a name")
        out.append({"TemplateName": name, "TemplateVariables": {k.lower(): v for k, v in variables.items()}})
    return json.dumps(out, separators=(",", ":"))


def _expiration(d: dict[str, Any]) -> str:
    ttl = d.get("expirationttl")
    at = d.get("expirationtime")
    if ttl and at:
        raise HTTPError(400, "Expiration TTL and Expiration Time cannot both be set")
    if ttl:
        try:
            seconds = parse_duration(str(ttl)) if isinstance(ttl, str) else float(ttl) / 1e9
        except ValueError as exc:
            raise HTTPError(400, f"Invalid ExpirationTTL: {exc}") from exc
        if not 60 <= seconds <= 24 * 3600:
            raise HTTPError(400, "Token Expiration TTL must be between 1 minute and 24 hours")
        import datetime

        when = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=seconds)
        return when.isoformat(timespec="microseconds").replace("+00:00", "Z")
    if at:
        if not isinstance(at, str):
            raise HTTPError(400, "ExpirationTime must be an RFC 3339 time")
        import datetime

        try:
            when = datetime.datetime.fromisoformat(at.replace("Z", "+00:00"))
        except ValueError as exc:
            raise HTTPError(400, f"ExpirationTime {at!r} is not an RFC 3339 time") from exc
        if when.tzinfo is None:
            raise HTTPError(400, f"ExpirationTime {at!r} needs a time zone")
        return at
    return ""


def add_routes(router: Router, agent: Agent) -> None:
    def enabled() -> None:
        if not agent.acl.enabled:
            raise HTTPError(401, "ACL support disabled")

    async def write(req: Request, cmd: ACL) -> Any:
        check_dc(agent, req)
        result = await agent.writer.apply(cmd)
        if isinstance(result, ApplyError):
            msg = result.message
            if "bootstrap no longer allowed" in msg:
                raise HTTPError(403, f"Permission denied: {msg}")
            raise HTTPError(400, msg)  # a missing link, a name taken, a built-in protected
        return result

    async def names(req: Request) -> tuple[dict[str, str], dict[str, str]]:
        pols = await named_read(agent, req, "acl.list", {"kind": "policy"})
        roles = await named_read(agent, req, "acl.list", {"kind": "role"})
        return ({r[0]["i"]: r[0]["n"] for r in pols.data}, {r[0]["i"]: r[0]["n"] for r in roles.data})

    def guard(handler: Any, level: str | None = None) -> Any:
        async def wrapped(req: Request, m: re.Match[str]) -> Response:
            enabled()
            if level is not None and req.authz is not None and not req.authz.scalar("acl", level):
                raise HTTPError(403, f"Permission denied: token lacks permission 'acl:{level}'")
            return await handler(req, m)  # type: ignore[no-any-return]
        return wrapped

    # ---- bootstrap ----------------------------------------------------------------------------------
    async def bootstrap(req: Request, m: re.Match[str]) -> Response:
        d = _body(req)
        secret = _text(d, "bootstrapsecret", "BootstrapSecret") or str(uuid.uuid4())
        if not _is_uuid(secret):
            raise HTTPError(400, "BootstrapSecret must be a UUID")
        tok = ACLTokenSpec(str(uuid.uuid4()), secret, "Bootstrap Token (Global Management)",
                           create_time=now_rfc3339(), hash=_hash("bootstrap", secret))
        row = await write(req, ACL(ACLOp.BOOTSTRAP, token=tok))
        return Response.json(token_json(row, {MANAGEMENT_POLICY_ID: "global-management"}, {}))

    # ---- tokens -------------------------------------------------------------------------------------
    def token_spec(d: dict[str, Any], accessor: str, secret: str, create_time: str) -> ACLTokenSpec:
        policies, roles = _links(d, "policies", "Policies"), _links(d, "roles", "Roles")
        si, ni, tp = _service_identities(d), _node_identities(d), _templated(d)
        local = bool(d.get("local", False))
        if local and si and any(entry.get("Datacenters") for entry in json.loads(si)):
            raise HTTPError(400, "cannot specify a list of datacenters on a local token")
        description = _text(d, "description", "Description")
        return ACLTokenSpec(accessor, secret, description, policies, roles, si, ni, tp, local, create_time,
                            _expiration(d), _hash(description, [lk.id or lk.name for lk in policies],
                                                  [lk.id or lk.name for lk in roles], si, ni, tp, local))

    async def token_create(req: Request, m: re.Match[str]) -> Response:
        d = _body(req)
        accessor = _text(d, "accessorid", "AccessorID") or str(uuid.uuid4())
        secret = _text(d, "secretid", "SecretID") or str(uuid.uuid4())
        for value, label in ((accessor, "AccessorID"), (secret, "SecretID")):
            if not _is_uuid(value):
                raise HTTPError(400, f"Invalid Token: {label} must be a UUID")
        row = await write(req, ACL(ACLOp.TOKEN_SET, token=token_spec(d, accessor, secret, now_rfc3339()),
                                   create=True))
        return Response.json(token_json(row, *await names(req)))

    async def token_read(req: Request, m: re.Match[str]) -> Response:
        accessor = m["id"]
        res = await named_read(agent, req, "acl.get", {"kind": "token", "id": accessor})
        if res.data is None:
            raise HTTPError(403, "ACL not found")
        row, pn, rn = res.data
        return Response.json(token_json(row, pn, rn), headers=result_headers(res))

    async def token_self(req: Request, m: re.Match[str]) -> Response:
        secret = agent.acl.effective(req.token)
        res = await named_read(agent, req, "acl.token_slice", {"secret": secret})
        if not res.data:
            raise HTTPError(403, "ACL not found")
        from murmur.catalog.store import StateStore, acl_token_wire

        st = StateStore.restore(bytes(res.data))
        tok = st.acl_token_by_secret(secret or "anonymous")
        if tok is None:
            raise HTTPError(403, "ACL not found")
        pn = {i: r.spec.name for i, r in st.acl_policies.items()}
        rn = {i: r.spec.name for i, r in st.acl_roles.items()}
        return Response.json(token_json(acl_token_wire(tok), pn, rn))

    async def token_update(req: Request, m: re.Match[str]) -> Response:
        d = _body(req)
        accessor = m["id"]
        body_id = _text(d, "accessorid", "AccessorID")
        if body_id and body_id != accessor:
            raise HTTPError(400, "Token AccessorID in URL and payload do not match")
        secret = _text(d, "secretid", "SecretID")
        row = await write(req, ACL(ACLOp.TOKEN_SET, token=token_spec(d, accessor, secret, "")))
        return Response.json(token_json(row, *await names(req)))

    async def token_clone(req: Request, m: re.Match[str]) -> Response:
        d = _body(req)
        res = await named_read(agent, req, "acl.get", {"kind": "token", "id": m["id"]})
        if res.data is None:
            raise HTTPError(403, "ACL not found")
        t = res.data[0][0]
        src = cmds.token_from_map(t)
        description = _text(d, "description", "Description") or src.description
        spec = ACLTokenSpec(str(uuid.uuid4()), str(uuid.uuid4()), description, src.policies, src.roles,
                            src.service_identities, src.node_identities, src.templated_policies, src.local,
                            now_rfc3339(), src.expiration_time, src.hash)
        row = await write(req, ACL(ACLOp.TOKEN_SET, token=spec, create=True))
        return Response.json(token_json(row, *await names(req)))

    async def token_delete(req: Request, m: re.Match[str]) -> Response:
        await write(req, ACL(ACLOp.TOKEN_DELETE, id=m["id"]))
        return Response.json(True)

    async def token_list(req: Request, m: re.Match[str]) -> Response:
        res = await named_read(agent, req, "acl.list", {"kind": "token"})
        pn, rn = await names(req)
        policy, role = req.arg("policy"), req.arg("role")
        service, method = req.arg("servicename"), req.arg("authmethod")
        out = []
        for row in res.data:
            t = row[0]
            if policy and policy not in [i for i, _ in t["p"]]:
                continue
            if role and role not in [i for i, _ in t["r"]]:
                continue
            if service and service not in [s.get("ServiceName") for s in (_json_text(t.get("si", "")) or [])]:
                continue
            if method:  # no auth methods here: no token was made by one
                continue
            out.append(token_json(row, pn, rn))
        return Response.json(out, headers=result_headers(res))

    # ---- policies -----------------------------------------------------------------------------------
    def policy_spec(d: dict[str, Any], pid: str) -> ACLPolicySpec:
        name = _text(d, "name", "Name")
        if not name:
            raise HTTPError(400, "Invalid Policy: no Name is set")
        if not re.fullmatch(r"[A-Za-z0-9\-_]{1,128}", name):
            raise HTTPError(400, f"Invalid Policy: invalid Name {name!r} (letters, digits, '-' and '_', "
                                 "up to 128)")
        rules = _text(d, "rules", "Rules")
        try:
            parse_rules(rules)
        except RuleError as exc:
            raise HTTPError(400, f"Invalid Policy: failed to parse rules: {exc}") from exc
        dcs = d.get("datacenters") or []
        if not isinstance(dcs, list) or not all(isinstance(x, str) for x in dcs):
            raise HTTPError(400, "Datacenters must be a list of strings")
        description = _text(d, "description", "Description")
        return ACLPolicySpec(pid, name, description, rules, tuple(dcs), _hash(name, description, rules, dcs))

    async def policy_create(req: Request, m: re.Match[str]) -> Response:
        d = _body(req)
        if d.get("id"):
            raise HTTPError(400, "Cannot specify an ID when creating a policy")
        row = await write(req, ACL(ACLOp.POLICY_SET, policy=policy_spec(d, str(uuid.uuid4()))))
        return Response.json(policy_json(row))

    async def policy_update(req: Request, m: re.Match[str]) -> Response:
        d = _body(req)
        pid = m["id"]
        if not _is_uuid(pid):
            raise HTTPError(400, f"Policy ID {pid!r} is not a UUID")
        body_id = _text(d, "id", "ID")
        if body_id and body_id != pid:
            raise HTTPError(400, "Policy ID in URL and payload do not match")
        res = await named_read(agent, req, "acl.get", {"kind": "policy", "id": pid})
        if res.data is None:
            raise HTTPError(400, f"Cannot find policy {pid!r}")
        row = await write(req, ACL(ACLOp.POLICY_SET, policy=policy_spec(d, pid)))
        return Response.json(policy_json(row))

    async def policy_read(req: Request, m: re.Match[str]) -> Response:
        args: dict[str, Any] = {"kind": "policy"}
        if m.groupdict().get("name") is not None:
            args["name"] = m["name"]
        else:
            if not _is_uuid(m["id"]):
                raise HTTPError(400, f"Policy ID {m['id']!r} is not a UUID")
            args["id"] = m["id"]
        res = await named_read(agent, req, "acl.get", args)
        if res.data is None:
            raise HTTPError(404, "ACL policy not found")
        return Response.json(policy_json(res.data[0]), headers=result_headers(res))

    async def policy_delete(req: Request, m: re.Match[str]) -> Response:
        await write(req, ACL(ACLOp.POLICY_DELETE, id=m["id"]))
        return Response.json(True)

    async def policy_list(req: Request, m: re.Match[str]) -> Response:
        res = await named_read(agent, req, "acl.list", {"kind": "policy"})
        out = []
        for row in res.data:
            p = policy_json(row)
            p.pop("Rules", None)  # the list shows stubs, as Consul's
            out.append(p)
        return Response.json(out, headers=result_headers(res))

    # ---- roles --------------------------------------------------------------------------------------
    def role_spec(d: dict[str, Any], rid: str) -> ACLRoleSpec:
        name = _text(d, "name", "Name")
        if not name:
            raise HTTPError(400, "Invalid Role: no Name is set")
        if not re.fullmatch(r"[A-Za-z0-9\-_]{1,256}", name):
            raise HTTPError(400, f"Invalid Role: invalid Name {name!r}")
        policies = _links(d, "policies", "Policies")
        si, ni = _service_identities(d), _node_identities(d)
        description = _text(d, "description", "Description")
        return ACLRoleSpec(rid, name, description, policies, si, ni,
                           _hash(name, description, [lk.id or lk.name for lk in policies], si, ni))

    async def role_create(req: Request, m: re.Match[str]) -> Response:
        d = _body(req)
        if d.get("id"):
            raise HTTPError(400, "Cannot specify an ID when creating a role")
        row = await write(req, ACL(ACLOp.ROLE_SET, role=role_spec(d, str(uuid.uuid4()))))
        return Response.json(role_json(row, (await names(req))[0]))

    async def role_update(req: Request, m: re.Match[str]) -> Response:
        d = _body(req)
        rid = m["id"]
        body_id = _text(d, "id", "ID")
        if body_id and body_id != rid:
            raise HTTPError(400, "Role ID in URL and payload do not match")
        res = await named_read(agent, req, "acl.get", {"kind": "role", "id": rid})
        if res.data is None:
            raise HTTPError(400, f"Cannot find role {rid!r}")
        row = await write(req, ACL(ACLOp.ROLE_SET, role=role_spec(d, rid)))
        return Response.json(role_json(row, (await names(req))[0]))

    async def role_read(req: Request, m: re.Match[str]) -> Response:
        args: dict[str, Any] = {"kind": "role"}
        if m.groupdict().get("name") is not None:
            args["name"] = m["name"]
        else:
            if not _is_uuid(m["id"]):
                raise HTTPError(400, f"Role ID {m['id']!r} is not a UUID")
            args["id"] = m["id"]
        res = await named_read(agent, req, "acl.get", args)
        if res.data is None:
            raise HTTPError(404, "ACL role not found")
        return Response.json(role_json(res.data[0], res.data[1]), headers=result_headers(res))

    async def role_delete(req: Request, m: re.Match[str]) -> Response:
        await write(req, ACL(ACLOp.ROLE_DELETE, id=m["id"]))
        return Response.json(True)

    async def role_list(req: Request, m: re.Match[str]) -> Response:
        res = await named_read(agent, req, "acl.list", {"kind": "role"})
        pn = (await names(req))[0]
        policy = req.arg("policy")
        out = [role_json(row, pn) for row in res.data if not policy or policy in [i for i, _ in row[0]["p"]]]
        return Response.json(out, headers=result_headers(res))

    # ---- agent tokens -------------------------------------------------------------------------------
    async def agent_token(req: Request, m: re.Match[str]) -> Response:
        node = agent.local.node.name
        if req.authz is not None and not req.authz.allowed("agent", node, "write"):  # Consul: agent:write
            raise HTTPError(403, f"Permission denied: token lacks permission 'agent:write' on \"{node}\"")
        kind = AGENT_TOKEN_ALIASES.get(m["type"], m["type"])
        if kind not in AGENT_TOKEN_TYPES:
            raise HTTPError(404, f"Token {m['type']!r} is unknown")
        d = _body(req)
        secret = _text(d, "token", "Token")
        try:
            agent.acl.set_token(kind, secret)
        except OSError as exc:  # persistence on and the data dir unwritable: not acknowledged
            raise HTTPError(500, f"cannot persist the {kind} token: {exc.strerror}") from exc
        dns_server = getattr(agent, "dns", None)
        if kind == "default" and dns_server is not None:
            dns_server.forget_answers()
        return Response.json(True)

    # ---- login / logout: no auth methods exist here, so no login succeeds ---------------------------
    async def login(req: Request, m: re.Match[str]) -> Response:
        d = _body(req)
        method = _text(d, "authmethod", "AuthMethod")
        if not method:
            raise HTTPError(400, "AuthMethod field is required")
        raise HTTPError(403, "ACL not found")  # the auth method does not exist (none can, yet)

    async def logout(req: Request, m: re.Match[str]) -> Response:
        if req.authz is None or not agent.acl.effective(req.token):
            raise HTTPError(403, "ACL not found")
        raise HTTPError(403, "Permission denied: token wasn't created via login")

    # ---- templated policies (the built-in templates; read-only) -------------------------------------
    async def templated_list(req: Request, m: re.Match[str]) -> Response:
        return Response.json({name: templated_json(name) for name in TEMPLATES})

    async def templated_read(req: Request, m: re.Match[str]) -> Response:
        if m["name"] not in TEMPLATES:
            raise HTTPError(404, f"Templated policy {m['name']!r} not found")
        return Response.json(templated_json(m["name"]))

    async def templated_preview(req: Request, m: re.Match[str]) -> Response:
        name = m["name"]
        if name not in TEMPLATES:
            raise HTTPError(404, f"Templated policy {name!r} not found")
        variables = _body(req)
        target = variables.get("name")
        if name != "builtin/dns" and (not isinstance(target, str) or not target):
            raise HTTPError(400, f"Invalid TemplatedPolicy {name}: TemplateVariables needs a name")
        rules = TEMPLATE_RULES[name][0].replace("{{name}}", str(target or ""))
        digest = hashlib.sha256(f"{name}\x00{target}".encode()).hexdigest()
        return Response.json({"ID": str(uuid.UUID(digest[:32])), "Name": f"synthetic-policy-{digest[:16]}",
                              "Description": f"synthetic policy generated from templated policy: {name}",
                              "Rules": rules, "Hash": _hash(rules), "CreateIndex": 0, "ModifyIndex": 0})

    ID = r"(?P<id>[^/]+)"
    router.add("GET", r"/v1/acl/templated-policies", guard(templated_list, "read"))
    router.add("GET", r"/v1/acl/templated-policy/name/(?P<name>.+)", guard(templated_read, "read"))
    router.add("POST", r"/v1/acl/templated-policy/preview/(?P<name>.+)", guard(templated_preview, "read"))
    router.add("POST", r"/v1/acl/login", guard(login))
    router.add("POST", r"/v1/acl/logout", guard(logout))
    router.add("PUT", r"/v1/acl/bootstrap", guard(bootstrap))
    router.add("PUT", r"/v1/acl/token", guard(token_create, "write"))
    router.add("GET", r"/v1/acl/token/self", guard(token_self))
    router.add("GET", r"/v1/acl/tokens", guard(token_list, "read"))
    router.add("PUT", rf"/v1/acl/token/{ID}/clone", guard(token_clone, "write"))
    router.add("GET", rf"/v1/acl/token/{ID}", guard(token_read, "read"))
    router.add("PUT", rf"/v1/acl/token/{ID}", guard(token_update, "write"))
    router.add("DELETE", rf"/v1/acl/token/{ID}", guard(token_delete, "write"))
    router.add("PUT", r"/v1/acl/policy", guard(policy_create, "write"))
    router.add("GET", r"/v1/acl/policies", guard(policy_list, "read"))
    router.add("GET", r"/v1/acl/policy/name/(?P<name>[^/]+)", guard(policy_read, "read"))
    router.add("GET", rf"/v1/acl/policy/{ID}", guard(policy_read, "read"))
    router.add("PUT", rf"/v1/acl/policy/{ID}", guard(policy_update, "write"))
    router.add("DELETE", rf"/v1/acl/policy/{ID}", guard(policy_delete, "write"))
    router.add("PUT", r"/v1/acl/role", guard(role_create, "write"))
    router.add("GET", r"/v1/acl/roles", guard(role_list, "read"))
    router.add("GET", r"/v1/acl/role/name/(?P<name>[^/]+)", guard(role_read, "read"))
    router.add("GET", rf"/v1/acl/role/{ID}", guard(role_read, "read"))
    router.add("PUT", rf"/v1/acl/role/{ID}", guard(role_update, "write"))
    router.add("DELETE", rf"/v1/acl/role/{ID}", guard(role_delete, "write"))
    router.add("PUT", r"/v1/agent/token/(?P<type>[^/]+)", guard(agent_token))
