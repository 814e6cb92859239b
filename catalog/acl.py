"""ACL rules and their evaluation (pure).

A policy's rules come as HCL (what the Consul CLI, py-consul and Ansible send) or as the same
structure in JSON:

    key_prefix "app/" { policy = "write" }        {"key_prefix": {"app/": {"policy": "write"}},
    service_prefix "" { policy = "read" }          "service_prefix": {"": {"policy": "read"}},
    operator = "read"                              "operator": "read"}

`parse_hcl` reads the small subset of HCL those rules use (blocks with string labels, attributes,
strings, numbers, booleans, lists and objects, `#`, `//` and `/* */` comments); `parse_rules`
checks the structure and compiles it to `Rules`. An `Authorizer` merges the rules of every policy
a token holds and answers "may this token read/write that resource":

- an exact rule (`key "a/b"`) beats any prefix rule for that name; otherwise the longest matching
  prefix (`key_prefix "a/"`) decides; `""` is the prefix of everything;
- where several policies speak about the same rule, deny beats write, write beats list, list beats
  read (Consul's precedence);
- where no rule speaks, `default_policy` decides, except for managing ACLs themselves (`acl`),
  which always needs an explicit rule (or a management token);
- `write` allows reading and listing, `read` allows listing, `list` (keys only) allows listing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

RESOURCES = ("agent", "event", "key", "node", "query", "service", "session")
SCALARS = ("acl", "keyring", "operator", "mesh", "peering")
ACCESS = ("read", "list", "write", "deny")
PRECEDENCE = {"read": 1, "list": 2, "write": 3, "deny": 4}
MANAGEMENT_POLICY_ID = "00000000-0000-0000-0000-000000000001"


class RuleError(ValueError):
    """Rules that cannot be parsed or that say something unknown; the message says where and what."""


# ---- HCL ----------------------------------------------------------------------------------------

_TOKEN = re.compile(r"""
    (?P<ws>[ \t\r\n]+)
  | (?P<comment>\#[^\n]*|//[^\n]*|/\*.*?\*/)
  | (?P<string>"(?:[^"\\\n]|\\.)*")
  | (?P<number>-?[0-9]+(?:\.[0-9]+)?)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_\-.]*)
  | (?P<punct>[{}\[\]=,:])
""", re.VERBOSE | re.DOTALL)

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "/": "/"}


@dataclass(frozen=True)
class _Tok:
    kind: str
    text: str
    line: int
    col: int


def _unquote(raw: str, line: int, col: int) -> str:
    out: list[str] = []
    i, body = 0, raw[1:-1]
    while i < len(body):
        ch = body[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        nxt = body[i + 1] if i + 1 < len(body) else ""
        if nxt in _ESCAPES:
            out.append(_ESCAPES[nxt])
            i += 2
        elif nxt == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", body[i + 2:i + 6]):
            out.append(chr(int(body[i + 2:i + 6], 16)))
            i += 6
        else:
            raise RuleError(f"line {line}, column {col}: invalid escape \\{nxt} in string")
    return "".join(out)


def _tokens(text: str) -> list[_Tok]:
    toks: list[_Tok] = []
    pos, line, line_start = 0, 1, 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        col = pos - line_start + 1
        if m is None:
            if text[pos] == '"':
                raise RuleError(f"line {line}, column {col}: unterminated string")
            if text.startswith("/*", pos):
                raise RuleError(f"line {line}, column {col}: unterminated comment")
            raise RuleError(f"line {line}, column {col}: unexpected character {text[pos]!r}")
        kind = m.lastgroup or ""
        chunk = m.group()
        if kind not in ("ws", "comment"):
            value = _unquote(chunk, line, col) if kind == "string" else chunk
            toks.append(_Tok(kind, value, line, col))
        newlines = chunk.count("\n")
        if newlines:
            line += newlines
            line_start = pos + chunk.rindex("\n") + 1
        pos = m.end()
    toks.append(_Tok("eof", "", line, pos - line_start + 1))
    return toks


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = _tokens(text)
        self.i = 0

    def peek(self) -> _Tok:
        return self.toks[self.i]

    def take(self) -> _Tok:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def fail(self, tok: _Tok, what: str) -> RuleError:
        got = "end of input" if tok.kind == "eof" else repr(tok.text)
        return RuleError(f"line {tok.line}, column {tok.col}: expected {what}, got {got}")

    def expect(self, text: str) -> None:
        tok = self.take()
        if tok.kind != "punct" or tok.text != text:
            raise self.fail(tok, repr(text))

    def body(self, end: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        while True:
            tok = self.peek()
            if tok.kind == "punct" and tok.text == ",":
                self.take()
                continue
            if (end == "eof" and tok.kind == "eof") or (tok.kind == "punct" and tok.text == end):
                self.take()
                return out
            if tok.kind not in ("ident", "string"):
                raise self.fail(tok, "an attribute or block name")
            self.take()
            key, value = self.item(tok)
            _merge_into(out, key, value, tok)

    def item(self, name: _Tok) -> tuple[str, Any]:
        tok = self.peek()
        if tok.kind == "punct" and tok.text in ("=", ":"):
            self.take()
            return name.text, self.value()
        labels: list[str] = []
        while self.peek().kind == "string":
            labels.append(self.take().text)
        tok = self.take()
        if tok.kind != "punct" or tok.text != "{":
            raise self.fail(tok, f"'=' or a block after {name.text!r}")
        value: Any = self.body("}")
        for label in reversed(labels):
            value = {label: value}
        return name.text, value

    def value(self) -> Any:
        tok = self.take()
        if tok.kind == "string":
            return tok.text
        if tok.kind == "number":
            return float(tok.text) if "." in tok.text else int(tok.text)
        if tok.kind == "ident" and tok.text in ("true", "false"):
            return tok.text == "true"
        if tok.kind == "punct" and tok.text == "[":
            items: list[Any] = []
            while True:
                if self.peek().kind == "punct" and self.peek().text == "]":
                    self.take()
                    return items
                items.append(self.value())
                nxt = self.peek()
                if nxt.kind == "punct" and nxt.text == ",":
                    self.take()
                elif not (nxt.kind == "punct" and nxt.text == "]"):
                    raise self.fail(nxt, "',' or ']'")
        if tok.kind == "punct" and tok.text == "{":
            return self.body("}")
        raise self.fail(tok, "a value (string, number, bool, list or object)")


def _merge_into(out: dict[str, Any], key: str, value: Any, where: _Tok) -> None:
    """Repeated blocks merge (`key_prefix "a" {...}` twice); a repeated rule keeps the stronger
    access (deny > write > list > read), as Consul merges rules; other repeats are errors."""
    old = out.get(key)
    if key not in out:
        out[key] = value
    elif isinstance(old, dict) and isinstance(value, dict):
        for k, v in value.items():
            _merge_into(old, k, v, where)
    elif isinstance(old, str) and isinstance(value, str) and old in PRECEDENCE and value in PRECEDENCE:
        out[key] = max(old, value, key=PRECEDENCE.__getitem__)
    else:
        raise RuleError(f"line {where.line}, column {where.col}: {key!r} is set twice")


def parse_hcl(text: str) -> dict[str, Any]:
    """The HCL subset ACL rules use, as nested dicts. Raises RuleError naming line and column."""
    return _Parser(text).body("eof")


def _hcl_string(s: str) -> str:
    out = []
    for ch in s:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ord(ch) < 0x20:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def dump_hcl(rules: dict[str, Any]) -> str:
    """Rules in their canonical HCL form (what `parse_hcl` reads back to the same structure)."""
    lines: list[str] = []
    for kind, value in rules.items():
        if isinstance(value, str):
            lines.append(f"{kind} = {_hcl_string(value)}")
            continue
        for name, attrs in value.items():
            lines.append(f"{kind} {_hcl_string(name)} {{")
            lines.extend(f"  {k} = {_hcl_string(v)}" for k, v in attrs.items())
            lines.append("}")
    return "\n".join(lines) + ("\n" if lines else "")


# ---- rules --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Rules:
    """One policy's rules: per resource, exact names and prefixes to an access; scalar grants."""

    exact: dict[str, dict[str, str]] = field(default_factory=dict)
    prefix: dict[str, dict[str, str]] = field(default_factory=dict)
    scalars: dict[str, str] = field(default_factory=dict)


def _check_access(where: str, value: Any, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise RuleError(f"{where}: invalid policy {value!r} (expected one of {', '.join(allowed)})")
    return value


def rules_from_structure(doc: Any) -> Rules:
    """Check a parsed rules document (from HCL or JSON) and compile it."""
    if not isinstance(doc, dict):
        raise RuleError("rules must be an object of rule blocks")
    rules = Rules()
    for kind, value in doc.items():
        if kind in SCALARS:
            rules.scalars[kind] = _check_access(kind, value, ("read", "write", "deny"))
            continue
        base = kind.removesuffix("_prefix")
        if base not in RESOURCES:
            raise RuleError(f"unknown rule type {kind!r}")
        if not isinstance(value, dict):
            raise RuleError(f"{kind}: expected blocks like {kind} \"name\" {{ policy = \"read\" }}")
        table = (rules.prefix if kind.endswith("_prefix") else rules.exact).setdefault(base, {})
        for name, attrs in value.items():
            where = f'{kind} "{name}"'
            if not isinstance(attrs, dict):
                raise RuleError(f"{where}: expected a block with policy = \"read\", \"write\" or \"deny\"")
            unknown = sorted(set(attrs) - {"policy", "intentions"})
            if unknown:
                raise RuleError(f"{where}: unknown attribute {unknown[0]!r}")
            if "policy" not in attrs:
                raise RuleError(f"{where}: missing policy")
            allowed = ACCESS if base == "key" else ("read", "write", "deny")
            access = _check_access(where, attrs["policy"], allowed)
            if "intentions" in attrs:
                _check_access(where + " intentions", attrs["intentions"], ("read", "write", "deny"))
            old = table.get(name)
            table[name] = access if old is None else max(old, access, key=PRECEDENCE.__getitem__)
    return rules


@lru_cache(maxsize=1024)
def parse_rules(text: str) -> Rules:
    """Rules text, HCL or JSON (an object), compiled. Raises RuleError with a clear message."""
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            doc = json.loads(stripped)
        except ValueError as exc:
            raise RuleError(f"invalid JSON rules: {exc}") from exc
    else:
        doc = parse_hcl(text)
    return rules_from_structure(doc)


# ---- evaluation ---------------------------------------------------------------------------------

def identity_rules(service_identities: Iterable[tuple[str, tuple[str, ...]]],
                   node_identities: Iterable[tuple[str, str]], dc: str) -> Rules:
    """What service and node identities grant in datacenter `dc` (Consul's synthetic policies):
    a service may write itself and its sidecar and read every service and node; a node may write
    itself and read every service."""
    rules = Rules()
    for name, dcs in service_identities:
        if dcs and dc not in dcs:
            continue
        services = rules.exact.setdefault("service", {})
        services[name] = services[f"{name}-sidecar-proxy"] = "write"
        rules.prefix.setdefault("service", {})[""] = "read"
        rules.prefix.setdefault("node", {})[""] = "read"
    for name, node_dc in node_identities:
        if node_dc != dc:
            continue
        rules.exact.setdefault("node", {})[name] = "write"
        rules.prefix.setdefault("service", {})[""] = "read"
    return rules


class Authorizer:
    """The merged rules of one token. `management` allows everything."""

    def __init__(self, rules: Iterable[Rules] = (), default_policy: str = "deny", management: bool = False) -> None:
        self.management = management
        self.default_allow = default_policy == "allow"
        self.exact: dict[str, dict[str, str]] = {}
        self.prefix: dict[str, dict[str, str]] = {}
        self.scalars: dict[str, str] = {}
        for r in rules:
            for mine, theirs in ((self.exact, r.exact), (self.prefix, r.prefix)):
                for kind, table in theirs.items():
                    dest = mine.setdefault(kind, {})
                    for name, access in table.items():
                        old = dest.get(name)
                        dest[name] = access if old is None else max(old, access, key=PRECEDENCE.__getitem__)
            for kind, access in r.scalars.items():
                old = self.scalars.get(kind)
                self.scalars[kind] = access if old is None else max(old, access, key=PRECEDENCE.__getitem__)
        # Longest prefix first, so the first match is the one that decides.
        self._prefixes = {kind: sorted(table.items(), key=lambda kv: -len(kv[0])) for kind, table in self.prefix.items()}

    def access(self, kind: str, name: str) -> str | None:
        """The access the rules give `name` of resource `kind`, or None when no rule speaks."""
        exact = self.exact.get(kind, {}).get(name)
        if exact is not None:
            return exact
        for pfx, access in self._prefixes.get(kind, ()):
            if name.startswith(pfx):
                return access
        return None

    def allowed(self, kind: str, name: str, need: str) -> bool:
        """May this token `need` ("read", "list" or "write") `name` of resource `kind`?"""
        if self.management:
            return True
        access = self.access(kind, name)
        if access is None:
            return self.default_allow
        return _grants(access, need)

    def scalar(self, kind: str, need: str) -> bool:
        """acl, operator, keyring, mesh, peering: read or write."""
        if self.management:
            return True
        access = self.scalars.get(kind)
        if access is None:
            return self.default_allow and kind != "acl"
        return _grants(access, need)

    def write_prefix(self, kind: str, prefix: str) -> bool:
        """Write on `prefix` and on everything under it (a recursive delete): no rule under the
        prefix may deny or give less than write."""
        if self.management:
            return True
        if not self.allowed(kind, prefix, "write"):
            return False
        for table in (self.exact.get(kind, {}), self.prefix.get(kind, {})):
            for name, access in table.items():
                if name.startswith(prefix) and access != "write":
                    return False
        return True


def _grants(access: str, need: str) -> bool:
    if access == "deny":
        return False
    if access == "write":
        return True
    if access == "read":
        return need in ("read", "list")
    return need == "list"  # access "list"


ALLOW_ALL = Authorizer(management=True)


# ---- tokens -------------------------------------------------------------------------------------

def _json_list(text: str) -> list[Any]:
    if not text:
        return []
    try:
        value = json.loads(text)
    except ValueError:
        return []
    return value if isinstance(value, list) else []


def _identities(service_json: str, node_json: str, templated_json: str = "", dc: str = ""
                ) -> tuple[list[tuple[str, tuple[str, ...]]], list[tuple[str, str]], list[Rules]]:
    services: list[tuple[str, tuple[str, ...]]] = []
    nodes: list[tuple[str, str]] = []
    extra: list[Rules] = []
    for si in _json_list(service_json):
        if isinstance(si, dict) and isinstance(si.get("ServiceName"), str):
            dcs = si.get("Datacenters") or []
            services.append((si["ServiceName"], tuple(str(d) for d in dcs) if isinstance(dcs, list) else ()))
    for ni in _json_list(node_json):
        if isinstance(ni, dict) and isinstance(ni.get("NodeName"), str):
            nodes.append((ni["NodeName"], str(ni.get("Datacenter") or "")))
    for tp in _json_list(templated_json):  # builtin/service, builtin/node, builtin/dns
        if not isinstance(tp, dict):
            continue
        name = tp.get("TemplateName")
        variables = tp.get("TemplateVariables") or {}
        target = variables.get("name") if isinstance(variables, dict) else None
        if name == "builtin/service" and isinstance(target, str):
            services.append((target, ()))
        elif name == "builtin/node" and isinstance(target, str):
            nodes.append((target, dc))
        elif name == "builtin/dns":
            extra.append(Rules(prefix={"node": {"": "read"}, "service": {"": "read"}, "query": {"": "read"}}))
    return services, nodes, extra


def token_authorizer(store: Any, token: Any, dc: str, default_policy: str) -> Authorizer:
    """The authorizer of a stored token (catalog.store.ACLTokenRecord): its policies (those that
    apply in `dc`), its roles' policies and identities, its own identities and templated policies."""
    spec = token.spec
    policy_ids = [lk.id for lk in spec.policies]
    rules: list[Rules] = []
    services, nodes, extra = _identities(spec.service_identities, spec.node_identities, spec.templated_policies, dc)
    rules.extend(extra)
    for link in spec.roles:
        role = store.acl_roles.get(link.id)
        if role is None:
            continue
        policy_ids.extend(lk.id for lk in role.spec.policies)
        s2, n2, _ = _identities(role.spec.service_identities, role.spec.node_identities, "", dc)
        services.extend(s2)
        nodes.extend(n2)
    for pid in policy_ids:
        policy = store.acl_policies.get(pid)
        if policy is None or (policy.spec.datacenters and dc not in policy.spec.datacenters):
            continue  # deleted, or written for other datacenters
        if pid == MANAGEMENT_POLICY_ID:
            return Authorizer(management=True)
        try:
            rules.append(parse_rules(policy.spec.rules))
        except RuleError:
            continue  # rules are checked when written; a bad one grants nothing
    if services or nodes:
        rules.append(identity_rules(services, nodes, dc))
    return Authorizer(rules, default_policy)


ANONYMOUS_SECRET = "anonymous"


def resolve(store: Any, secret: str, dc: str, default_policy: str) -> Authorizer | None:
    """The authorizer for a request's token (`""`: the anonymous token); None for a secret no
    token has ("ACL not found")."""
    token = store.acl_token_by_secret(secret or ANONYMOUS_SECRET)
    if token is None:
        if not secret or secret == ANONYMOUS_SECRET:  # ACLs not initialised yet: nothing but the default
            return Authorizer((), default_policy)
        return None
    return token_authorizer(store, token, dc, default_policy)
