"""Consul's `?filter=` expressions (the go-bexpr language), for our JSON answers.

Pure: an expression and a schema in, a `Filter` out; `Filter.matches(item)` on one JSON item.

Language (Consul's api-docs/features/filtering):

    expr   := or
    or     := and ("or" and)*
    and    := not ("and" not)*
    not    := "not" not | "(" or ")" | match
    match  := Selector ("==" | "!=") Value
            | Selector ["not"] ("contains" | "matches") Value
            | Selector "is" ["not"] "empty"
            | Value ["not"] "in" Selector

A selector is dotted names (`Service.Meta.env`), a map key may also be written `Meta["a-b"]`.
A value is a double-quoted string (Go escapes), a backtick raw string, a number, or a bare
selector-like word (`Status == passing`).

As in Consul, an expression is checked against the shape of the data before it runs (a
`Schema`, one per endpoint, with Consul's field names): an unknown selector, an operator the
field does not support (`Port contains 1`), a value that does not convert to the field's type
(`Port == abc`) or a regular expression that does not compile is an error, never a silent
no-match. Values are converted to the field's type once, at compile time.

Evaluation follows bexpr: a selector through a list of structs (`Checks.Status == passing`) is
true when any element matches; a map key that is absent makes `==`, `in` and `is not empty`
false and `!=`, `not in` and `is empty` true; a struct field absent from the JSON counts as its
zero value. Regular expressions are RE2 (Go's syntax, linear time), so a hostile pattern cannot
stall the agent.

Bounds: the expression at most MAX_EXPRESSION bytes, nesting at most MAX_DEPTH, at most
MAX_MATCHES match expressions, a value (a pattern included) at most MAX_VALUE bytes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import re2

MAX_EXPRESSION = 8192
MAX_DEPTH = 64
MAX_MATCHES = 128
MAX_VALUE = 1024


class FilterError(ValueError):
    """A filter that cannot be built: malformed, an unknown selector, a bad value."""


# ---- schemas ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Prim:
    """A scalar field: kind is "string", "bool", "int" or "float"."""

    kind: str


@dataclass(frozen=True)
class ListOf:
    elem: Schema


@dataclass(frozen=True)
class MapOf:
    """A map with string keys; any key selects an element."""

    elem: Schema


@dataclass(frozen=True)
class Struct:
    fields: Mapping[str, Schema]


Schema = Prim | ListOf | MapOf | Struct

STR, BOOL, INT, FLOAT = Prim("string"), Prim("bool"), Prim("int"), Prim("float")

EQ, NE, IN, NOT_IN, EMPTY, NOT_EMPTY, MATCHES, NOT_MATCHES = (
    "Equal", "Not Equal", "In", "Not In", "Is Empty", "Is Not Empty", "Matches", "Not Matches")
_NEGATED = {NE: EQ, NOT_IN: IN, NOT_EMPTY: EMPTY, NOT_MATCHES: MATCHES}


def supported_ops(schema: Schema) -> frozenset[str]:
    """The match operators a field supports (Consul's "Supported Operations" columns; `is empty`
    also on strings, as newer go-bexpr allows)."""
    if isinstance(schema, Prim):
        if schema.kind == "string":
            return frozenset({EQ, NE, IN, NOT_IN, MATCHES, NOT_MATCHES, EMPTY, NOT_EMPTY})
        return frozenset({EQ, NE})
    if isinstance(schema, ListOf):
        if isinstance(schema.elem, Prim):
            return frozenset({IN, NOT_IN, EMPTY, NOT_EMPTY})
        return frozenset({EMPTY, NOT_EMPTY})
    if isinstance(schema, MapOf):
        return frozenset({IN, NOT_IN, EMPTY, NOT_EMPTY})
    return frozenset()


# ---- tokens ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Tok:
    kind: str  # "sel" (a selector: path), "str", "num", "op" (== !=), "(", ")", "kw", "eof"
    text: str  # the source text (a keyword in lower case)
    pos: int
    path: tuple[str, ...] = ()
    value: str = ""


KEYWORDS = frozenset({"and", "or", "not", "in", "is", "empty", "contains", "matches"})
_SPACE = " \t\r\n"
_DEC = "0123456789"


def _q(text: str) -> str:
    """A string quoted as Go's %q would (double quotes), for error messages."""
    return json.dumps(text, ensure_ascii=False)


def _where(src: str, pos: int) -> str:
    line = src.count("\n", 0, pos) + 1
    col = pos - (src.rfind("\n", 0, pos) + 1) + 1
    return f"{line}:{col} ({pos})"


def _fail(src: str, pos: int, message: str) -> FilterError:
    return FilterError(f"{_where(src, pos)}: {message}")


def _ident_at(src: str, i: int) -> int:
    """End of an identifier starting at i ([A-Za-z][A-Za-z0-9_]*), or i if there is none."""
    if i < len(src) and src[i].isascii() and src[i].isalpha():
        j = i + 1
        while j < len(src) and src[j].isascii() and (src[j].isalnum() or src[j] == "_"):
            j += 1
        return j
    return i


_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\", '"': '"'}


def _string_at(src: str, i: int) -> tuple[str, int]:
    """A string literal starting at src[i] (a double quote or a backtick): (value, end)."""
    quote = src[i]
    j = i + 1
    if quote == "`":  # raw: no escapes; carriage returns dropped, as Go does
        end = src.find("`", j)
        if end < 0:
            raise _fail(src, i, "Unterminated string literal")
        return src[j:end].replace("\r", ""), end + 1
    out: list[str] = []
    while j < len(src):
        c = src[j]
        if c == '"':
            return "".join(out), j + 1
        if c == "\n":
            raise _fail(src, j, "newline in string literal")
        if c != "\\":
            out.append(c)
            j += 1
            continue
        if j + 1 >= len(src):
            break
        e = src[j + 1]
        if e in _ESCAPES:
            out.append(_ESCAPES[e])
            j += 2
        elif e in "xuU":
            width = {"x": 2, "u": 4, "U": 8}[e]
            digits = src[j + 2:j + 2 + width]
            if len(digits) != width or any(d not in "0123456789abcdefABCDEF" for d in digits):
                raise _fail(src, j, f"invalid escape \\{e}{digits} in string literal")
            code = int(digits, 16)
            if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
                raise _fail(src, j, f"invalid code point in escape \\{e}{digits}")
            out.append(chr(code))
            j += 2 + width
        elif e in "01234567":
            digits = src[j + 1:j + 4]
            if len(digits) != 3 or any(d not in "01234567" for d in digits) or int(digits, 8) > 255:
                raise _fail(src, j, f"invalid octal escape \\{digits} in string literal")
            out.append(chr(int(digits, 8)))
            j += 4
        else:
            raise _fail(src, j, f"invalid escape \\{e} in string literal")
    raise _fail(src, i, "Unterminated string literal")


def tokenize(src: str) -> list[Tok]:
    toks: list[Tok] = []
    i, n = 0, len(src)
    while True:
        while i < n and src[i] in _SPACE:
            i += 1
        if i >= n:
            toks.append(Tok("eof", "", n))
            return toks
        c = src[i]
        start = i
        if c in "()":
            toks.append(Tok(c, c, i))
            i += 1
        elif src.startswith("==", i) or src.startswith("!=", i):
            toks.append(Tok("op", src[i:i + 2], i))
            i += 2
        elif c in '"`':
            value, i = _string_at(src, i)
            toks.append(Tok("str", src[start:i], start, value=value))
        elif c == "-" or c in _DEC:
            j = i + 1 if c == "-" else i
            k = j
            while k < n and src[k] in _DEC:
                k += 1
            if k == j:
                raise _fail(src, i, "Invalid number literal")
            if k < n and src[k] == "." and k + 1 < n and src[k + 1] in _DEC:
                k += 1
                while k < n and src[k] in _DEC:
                    k += 1
            text = src[i:k]
            digits = text.lstrip("-").split(".")[0]
            if (len(digits) > 1 and digits[0] == "0") or (k < n and src[k] not in _SPACE + ")"):
                raise _fail(src, i, "Invalid number literal")
            toks.append(Tok("num", text, i, value=text))
            i = k
        elif _ident_at(src, i) > i:
            i = _ident_at(src, i)
            word = src[start:i]
            if word in KEYWORDS:
                toks.append(Tok("kw", word, start))
                continue
            path = [word]
            while i < n and src[i] in ".[":
                if src[i] == ".":
                    j = _ident_at(src, i + 1)
                    if j == i + 1:
                        raise _fail(src, i + 1, "expected a field name after '.'")
                    path.append(src[i + 1:j])
                    i = j
                else:
                    j = i + 1
                    while j < n and src[j] in _SPACE:
                        j += 1
                    if j >= n or src[j] not in '"`':
                        raise _fail(src, i, "Invalid index: expected a quoted map key in [...]")
                    key, j = _string_at(src, j)
                    while j < n and src[j] in _SPACE:
                        j += 1
                    if j >= n or src[j] != "]":
                        raise _fail(src, i, "Unclosed index expression")
                    path.append(key)
                    i = j + 1
            toks.append(Tok("sel", src[start:i], start, path=tuple(path), value=".".join(path)))
        else:
            raise _fail(src, i, f"unexpected character {c!r}")


# ---- syntax tree -----------------------------------------------------------------------------------
@dataclass
class Match:
    path: tuple[str, ...]
    op: str
    value: Any = None  # coerced to the field's type; a compiled RE2 pattern for matches
    schema: Schema = field(default=STR)


@dataclass
class Not:
    operand: Node


@dataclass
class BinOp:
    op: str  # "and" | "or"
    left: Node
    right: Node


Node = Match | Not | BinOp


class _Parser:
    def __init__(self, src: str, schema: Schema) -> None:
        self.src = src
        self.schema = schema
        self.toks = tokenize(src)
        self.i = 0
        self.matches = 0

    # helpers
    def peek(self, k: int = 0) -> Tok:
        return self.toks[min(self.i + k, len(self.toks) - 1)]

    def take(self) -> Tok:
        t = self.peek()
        self.i = min(self.i + 1, len(self.toks) - 1)
        return t

    def is_kw(self, word: str, k: int = 0) -> bool:
        t = self.peek(k)
        return t.kind == "kw" and t.text == word

    def fail(self, tok: Tok, message: str) -> FilterError:
        return _fail(self.src, tok.pos, message)

    def describe(self, tok: Tok) -> str:
        return "end of expression" if tok.kind == "eof" else _q(tok.text)

    # grammar
    def parse(self) -> Node:
        node = self.or_expr(0)
        t = self.peek()
        if t.kind == ")":
            raise self.fail(t, "Unmatched parentheses")
        if t.kind != "eof":
            raise self.fail(t, f"unexpected {self.describe(t)}; expected 'and', 'or' or the end")
        return node

    def or_expr(self, depth: int) -> Node:
        node = self.and_expr(depth)
        while self.is_kw("or"):
            self.take()
            node = BinOp("or", node, self.and_expr(depth))
        return node

    def and_expr(self, depth: int) -> Node:
        node = self.not_expr(depth)
        while self.is_kw("and"):
            self.take()
            node = BinOp("and", node, self.not_expr(depth))
        return node

    def not_expr(self, depth: int) -> Node:
        if depth > MAX_DEPTH:
            raise self.fail(self.peek(), f"expression nested deeper than {MAX_DEPTH} levels")
        t = self.peek()
        if t.kind == "kw" and t.text == "not":
            self.take()
            return Not(self.not_expr(depth + 1))
        if t.kind == "(":
            self.take()
            node = self.or_expr(depth + 1)
            close = self.peek()
            if close.kind != ")":
                raise self.fail(close, f"Unmatched parentheses: expected ')', found {self.describe(close)}")
            self.take()
            return node
        return self.match()

    def match(self) -> Node:
        first = self.take()
        if first.kind not in ("sel", "str", "num"):
            raise self.fail(first, f"unexpected {self.describe(first)}; expected a selector, a value, "
                                   "'not' or '('")
        t = self.peek()
        negate = t.kind == "kw" and t.text == "not"
        op_tok = self.peek(1) if negate else t
        if op_tok.kind == "kw" and op_tok.text == "in":  # Value [not] in Selector
            self.i += 2 if negate else 1
            sel = self.take()
            if sel.kind != "sel":
                raise self.fail(sel, f"Invalid selector: expected a selector after 'in', found {self.describe(sel)}")
            return self.build(sel, NOT_IN if negate else IN, first)
        if first.kind != "sel":
            raise self.fail(first, f"expected a selector before {self.describe(t)}; a quoted string or a "
                                   "number can only come before 'in' or 'not in'")
        if t.kind == "op" and not negate:
            self.take()
            value = self.take()
            if value.kind not in ("sel", "str", "num"):
                raise self.fail(value, f"expected a value after {_q(t.text)}, found {self.describe(value)}")
            return self.build(first, EQ if t.text == "==" else NE, value)
        if op_tok.kind == "kw" and op_tok.text in ("contains", "matches"):
            self.i += 2 if negate else 1
            value = self.take()
            if value.kind not in ("sel", "str", "num"):
                raise self.fail(value, f"expected a value after {_q(op_tok.text)}, found {self.describe(value)}")
            if op_tok.text == "contains":
                return self.build(first, NOT_IN if negate else IN, value)
            return self.build(first, NOT_MATCHES if negate else MATCHES, value)
        if t.kind == "kw" and t.text == "is":
            self.take()
            neg = self.is_kw("not")
            if neg:
                self.take()
            empty = self.take()
            if empty.kind != "kw" or empty.text != "empty":
                raise self.fail(empty, f"expected 'empty' after 'is{' not' if neg else ''}', found "
                                       f"{self.describe(empty)}")
            return self.build(first, NOT_EMPTY if neg else EMPTY, None)
        raise self.fail(t, f"expected a match operator (==, !=, is [not] empty, [not] in, [not] contains, "
                           f"[not] matches) after selector {_q(first.text)}, found {self.describe(t)}")

    def build(self, sel: Tok, op: str, value: Tok | None) -> Match:
        self.matches += 1
        if self.matches > MAX_MATCHES:
            raise self.fail(sel, f"more than {MAX_MATCHES} match expressions")
        fschema = resolve(self.schema, sel.path)
        if fschema is None:
            raise self.fail(sel, f"Selector {_q(sel.value)} is not valid")
        if op not in supported_ops(fschema):
            raise self.fail(sel, f"Invalid match operator {_q(op)} for selector {_q(sel.value)}")
        node = Match(sel.path, op, None, fschema)
        if value is None:
            return node
        raw = value.value
        if len(raw.encode()) > MAX_VALUE:
            raise self.fail(value, f"value for selector {_q(sel.value)} is {len(raw.encode())} bytes; "
                                   f"the limit is {MAX_VALUE}")
        if op in (MATCHES, NOT_MATCHES):
            node.value = compile_regex(raw, self.src, value.pos)
            return node
        target = fschema.elem if isinstance(fschema, ListOf) else fschema
        kind = target.kind if isinstance(target, Prim) else "string"  # map keys are strings
        try:
            node.value = coerce(raw, kind)
        except ValueError as exc:
            raise self.fail(value, f"Failed to coerce value {_q(raw)} for selector {_q(sel.value)}: {exc}") from None
        return node


def resolve(schema: Schema, path: tuple[str, ...]) -> Schema | None:
    """The schema a selector path reaches, or None if it is not valid. Lists of structs are
    walked through (their elements' fields), maps take any key."""
    cur = schema
    for name in path:
        while isinstance(cur, ListOf) and isinstance(cur.elem, Struct):
            cur = cur.elem
        if isinstance(cur, Struct):
            nxt = cur.fields.get(name)
            if nxt is None:
                return None
            cur = nxt
        elif isinstance(cur, MapOf):
            cur = cur.elem
        else:
            return None
    return cur


_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


def coerce(raw: str, kind: str) -> Any:
    """A value's text as the field's type (Go's strconv rules: base prefixes for integers)."""
    if kind == "bool":
        if raw in _TRUE:
            return True
        if raw in _FALSE:
            return False
        raise ValueError("not a boolean (true or false)")
    if kind == "int":
        return _go_int(raw)
    if kind == "float":
        if raw.strip() != raw or "_" in raw:
            raise ValueError("not a number")
        try:
            return float(raw)
        except ValueError:
            raise ValueError("not a number") from None
    return raw


_DIGITS = {2: "01", 8: "01234567", 10: "0123456789", 16: "0123456789abcdefABCDEF"}


def _go_int(raw: str) -> int:
    """strconv.ParseInt(raw, 0, 64): an optional sign, then 0x/0o/0b (underscores allowed between
    digits), a leading 0 for octal, or decimal."""
    sign, s = (-1, raw[1:]) if raw[:1] == "-" else (1, raw[1:]) if raw[:1] == "+" else (1, raw)
    base = 10
    if s[:2].lower() in ("0x", "0o", "0b"):
        base = {"x": 16, "o": 8, "b": 2}[s[1].lower()]
        s = s[2:]
        if "__" in s or s.startswith("_") or s.endswith("_"):
            raise ValueError("not an integer")
        s = s.replace("_", "")
    elif len(s) > 1 and s[0] == "0":
        base = 8
    if not s or any(c not in _DIGITS[base] for c in s):
        raise ValueError("not an integer")
    value = sign * int(s, base)
    if not -(2**63) <= value < 2**63:
        raise ValueError("value out of range")
    return value


_RE_OPTIONS = re2.Options()
_RE_OPTIONS.log_errors = False  # a bad pattern is the caller's error, not a line on our stderr


def compile_regex(pattern: str, src: str = "", pos: int = 0) -> Any:
    try:
        return re2.compile(pattern, _RE_OPTIONS)
    except Exception as exc:  # re2's error type is not public across versions
        msg = exc.args[0] if exc.args else exc
        if isinstance(msg, bytes):
            msg = msg.decode(errors="replace")
        raise _fail(src, pos, f"Failed to compile regular expression {_q(pattern)}: {msg}") from None


# ---- evaluation ------------------------------------------------------------------------------------
def _zero(schema: Schema) -> Any:
    if isinstance(schema, Prim):
        return {"string": "", "bool": False, "int": 0, "float": 0.0}[schema.kind]
    if isinstance(schema, ListOf):
        return []
    return {}


def _as_text(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    return v if isinstance(v, str) else str(v)


def _leaf(m: Match, schema: Schema, v: Any) -> bool:
    """The operator on the value a selector reached (positive operators; the caller negates)."""
    op = _NEGATED.get(m.op, m.op)
    if op == EMPTY:
        return v is None or (isinstance(v, str | list | dict) and len(v) == 0)
    if op == MATCHES:
        return m.value.search(_as_text(v)) is not None
    if op == IN:
        if isinstance(schema, MapOf):
            return isinstance(v, dict) and m.value in v
        if isinstance(schema, ListOf):
            if not isinstance(v, list):
                return False
            kind = schema.elem.kind if isinstance(schema.elem, Prim) else "string"
            return any(_equal(kind, m.value, x) for x in v)
        return isinstance(m.value, str) and m.value in _as_text(v)
    kind = schema.kind if isinstance(schema, Prim) else "string"
    return _equal(kind, m.value, v)


def _equal(kind: str, want: Any, v: Any) -> bool:
    if kind == "string":
        return bool(want == _as_text(v))
    if kind == "bool":
        return isinstance(v, bool) and v is want
    if isinstance(v, bool) or not isinstance(v, int | float):
        try:
            v = coerce(_as_text(v), kind)
        except ValueError:
            return False
    return bool(want == v)


def _walk(m: Match, schema: Schema, v: Any, depth: int) -> bool:
    """bexpr's walk: structs by field, lists of structs as 'any element', maps by key."""
    if depth == len(m.path):
        result = _leaf(m, schema, v)
        return not result if m.op in _NEGATED else result
    if isinstance(schema, ListOf):
        items = v if isinstance(v, list) else []
        return any(_walk(m, schema.elem, x, depth) for x in items)
    name = m.path[depth]
    if isinstance(schema, Struct):
        sub = schema.fields[name]
        val = v.get(name) if isinstance(v, dict) else None
        return _walk(m, sub, _zero(sub) if val is None else val, depth + 1)
    if isinstance(schema, MapOf):
        if not isinstance(v, dict) or name not in v:
            return m.op not in (EQ, NOT_EMPTY, IN, MATCHES)  # absent key: only the negative ones hold
        return _walk(m, schema.elem, v[name], depth + 1)
    return False


def _eval(node: Node, schema: Schema, item: Any) -> bool:
    if isinstance(node, Match):
        return _walk(node, schema, item, 0)
    if isinstance(node, Not):
        return not _eval(node.operand, schema, item)
    if node.op == "and":
        return _eval(node.left, schema, item) and _eval(node.right, schema, item)
    return _eval(node.left, schema, item) or _eval(node.right, schema, item)


@dataclass(frozen=True)
class Filter:
    expression: str
    schema: Schema
    ast: Node

    def matches(self, item: Any) -> bool:
        return _eval(self.ast, self.schema, item)

    def apply(self, items: Iterable[Any]) -> list[Any]:
        return [x for x in items if self.matches(x)]

    def apply_map(self, items: Mapping[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in items.items() if self.matches(v)}


def compile_filter(expression: str, schema: Schema) -> Filter:
    """Parse and check an expression against a schema. Raises FilterError with a position."""
    if not isinstance(expression, str):
        raise FilterError("the filter must be a string")
    size = len(expression.encode(errors="replace"))
    if size > MAX_EXPRESSION:
        raise FilterError(f"expression is {size} bytes; the limit is {MAX_EXPRESSION}")
    if not expression.strip():
        raise FilterError("1:1 (0): empty expression")
    return Filter(expression, schema, _Parser(expression, schema).parse())


# ---- the shapes our endpoints answer with (Consul's filterable fields) ----------------------------
_UPSTREAM = Struct({"Datacenter": STR, "DestinationName": STR, "DestinationNamespace": STR,
                    "DestinationPartition": STR, "DestinationPeer": STR, "DestinationType": STR,
                    "LocalBindAddress": STR, "LocalBindPort": INT, "LocalBindSocketPath": STR,
                    "MeshGateway": Struct({"Mode": STR})})
PROXY = Struct({"DestinationServiceName": STR, "DestinationServiceID": STR, "LocalServiceAddress": STR,
                "LocalServicePort": INT, "LocalServiceSocketPath": STR, "Mode": STR,
                "TransparentProxy": Struct({"OutboundListenerPort": INT, "DialedDirectly": BOOL}),
                "MeshGateway": Struct({"Mode": STR}), "Upstreams": ListOf(_UPSTREAM)})
CONNECT = Struct({"Native": BOOL})
WEIGHTS = Struct({"Passing": INT, "Warning": INT})
SERVICE_ADDRESS = Struct({"Address": STR, "Port": INT})

#: A node (`/v1/catalog/nodes`, and `Node` of `/v1/health/service`).
NODE = Struct({"ID": STR, "Node": STR, "Address": STR, "Datacenter": STR, "TaggedAddresses": MapOf(STR),
               "Meta": MapOf(STR)})

#: A service as an agent or a node holds it (`/v1/agent/services`, `/v1/catalog/node/:n` Services,
#: `Service` of `/v1/health/service`).
NODE_SERVICE = Struct({"ID": STR, "Service": STR, "Kind": STR, "Tags": ListOf(STR), "Address": STR,
                       "TaggedAddresses": MapOf(SERVICE_ADDRESS), "Meta": MapOf(STR), "Port": INT,
                       "SocketPath": STR, "Weights": WEIGHTS, "EnableTagOverride": BOOL, "Proxy": PROXY,
                       "Connect": CONNECT, "Datacenter": STR})

#: A health check (`/v1/agent/checks`, `/v1/health/{node,checks,state}`, `Checks` of health/service).
HEALTH_CHECK = Struct({"Node": STR, "CheckID": STR, "Name": STR, "Status": STR, "Notes": STR, "Output": STR,
                       "ServiceID": STR, "ServiceName": STR, "ServiceTags": ListOf(STR), "Type": STR,
                       "Interval": STR, "Timeout": STR, "ExposedPort": INT})

#: One instance in `/v1/catalog/service/:s` (Consul's ServiceNode).
SERVICE_NODE = Struct({"ID": STR, "Node": STR, "Address": STR, "Datacenter": STR,
                       "TaggedAddresses": MapOf(STR), "NodeMeta": MapOf(STR), "ServiceKind": STR,
                       "ServiceID": STR, "ServiceName": STR, "ServiceTags": ListOf(STR), "ServiceAddress": STR,
                       "ServiceTaggedAddresses": MapOf(SERVICE_ADDRESS), "ServiceWeights": WEIGHTS,
                       "ServiceMeta": MapOf(STR), "ServicePort": INT, "ServiceSocketPath": STR,
                       "ServiceEnableTagOverride": BOOL, "ServiceProxy": PROXY, "ServiceConnect": CONNECT})

#: One entry of `/v1/health/service/:s` (Consul's CheckServiceNode).
CHECK_SERVICE_NODE = Struct({"Node": NODE, "Service": NODE_SERVICE, "Checks": ListOf(HEALTH_CHECK)})
