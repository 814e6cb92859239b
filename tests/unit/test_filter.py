"""catalog/filter.py: Consul's ?filter= language, parsed, checked against a schema, evaluated."""

from __future__ import annotations

import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from murmur.catalog import filter as flt
from murmur.catalog.filter import FilterError, compile_filter

SVC = flt.NODE_SERVICE
CHK = flt.HEALTH_CHECK
CSN = flt.CHECK_SERVICE_NODE

WEB1 = {"ID": "web1", "Service": "web", "Tags": ["primary", "v2"], "Meta": {"env": "prod", "team-x": "a"},
        "Port": 8080, "Address": "10.0.0.1", "EnableTagOverride": False, "Weights": {"Passing": 3, "Warning": 1},
        "TaggedAddresses": {"lan": {"Address": "10.0.0.1", "Port": 8080}}}
WEB2 = {"ID": "web2", "Service": "web", "Tags": [], "Meta": {}, "Port": 9090, "Address": "",
        "EnableTagOverride": True, "Weights": {"Passing": 1, "Warning": 1}, "Connect": {"Native": True}}
DB = {"ID": "db", "Service": "db", "Tags": ["primary"], "Meta": {"env": "qa"}, "Port": 5432, "Address": "10.0.0.9"}
SERVICES = {"web1": WEB1, "web2": WEB2, "db": DB}


def ids(expr: str, schema: flt.Schema = SVC, items: dict[str, Any] = SERVICES) -> set[str]:
    return set(compile_filter(expr, schema).apply_map(items))


# ---- every operator ---------------------------------------------------------------------------------
@pytest.mark.parametrize("expr, want", [
    ('Service == "web"', {"web1", "web2"}),
    ("Service == web", {"web1", "web2"}),                 # a bare word is a string
    ("Service == `db`", {"db"}),                          # backtick raw string
    ('Service != "web"', {"db"}),
    ("Port == 8080", {"web1"}),                           # numbers compare as the field's type
    ('Port == "9090"', {"web2"}),
    ('Port == "0x1f90"', {"web1"}),                       # Go's base prefixes (0x1f90 = 8080)
    ("Port != 8080", {"web2", "db"}),
    ("EnableTagOverride == true", {"web2"}),
    ("EnableTagOverride == false", {"web1", "db"}),       # absent field = its zero value
    ("EnableTagOverride == T", {"web2"}),                 # Go's ParseBool spellings
    ("Weights.Passing == 3", {"web1"}),
    ("Connect.Native == true", {"web2"}),
    ('"primary" in Tags', {"web1", "db"}),
    ('"primary" not in Tags', {"web2"}),
    ('Tags contains "v2"', {"web1"}),
    ('Tags not contains "v2"', {"web2", "db"}),
    ("Tags is empty", {"web2"}),
    ("Tags is not empty", {"web1", "db"}),
    ('"10.0" in Address', {"web1", "db"}),                # `in` on a string: substring
    ('Address contains ".9"', {"db"}),
    ("Address is empty", {"web2"}),
    ('Service matches "^w.b$"', {"web1", "web2"}),
    ('Service not matches "^w"', {"db"}),
    ('Address matches "\\\\.9$"', {"db"}),                # Go escapes in double quotes
    ("Address matches `\\.9$`", {"db"}),                  # raw: the backslash stays
])
def test_operators(expr: str, want: set[str]) -> None:
    assert ids(expr) == want


@pytest.mark.parametrize("expr, want", [
    ("Meta.env == prod", {"web1"}),
    ('Meta["env"] == "qa"', {"db"}),
    ('Meta["team-x"] == a', {"web1"}),                    # a key that is no identifier
    ("Meta.env != prod", {"web2", "db"}),                 # absent key: != holds
    ("Meta.env is empty", {"web2"}),
    ("Meta.env is not empty", {"web1", "db"}),
    ('"env" in Meta', {"web1", "db"}),                    # `in` on a map: key membership
    ('"env" not in Meta', {"web2"}),
    ("Meta is empty", {"web2", "db"} - {"db"}),
    ("Meta is not empty", {"web1", "db"}),
    ('Meta.env matches "^p"', {"web1"}),
    ('Meta.env not matches "^p"', {"web2", "db"}),
    ("TaggedAddresses.lan.Port == 8080", {"web1"}),
    ('TaggedAddresses.lan.Address == "10.0.0.1"', {"web1"}),
    ('TaggedAddresses.wan.Address != "x"', {"web1", "web2", "db"}),
])
def test_maps(expr: str, want: set[str]) -> None:
    assert ids(expr) == want


NODES = [
    {"Node": {"Node": "n1", "Meta": {"rack": "r1"}}, "Service": {"ID": "a", "Tags": ["x"]},
     "Checks": [{"CheckID": "serfHealth", "Status": "passing", "ServiceTags": []},
                {"CheckID": "service:a", "Status": "critical", "ServiceTags": ["x"]}]},
    {"Node": {"Node": "n2", "Meta": {}}, "Service": {"ID": "b", "Tags": []},
     "Checks": [{"CheckID": "serfHealth", "Status": "passing", "ServiceTags": []}]},
    {"Node": {"Node": "n3"}, "Service": {"ID": "c"}, "Checks": []},
]


@pytest.mark.parametrize("expr, want", [
    ("Checks.Status == passing", {"a", "b"}),             # any element
    ("Checks.Status == critical", {"a"}),
    ("Checks.Status != passing", {"a"}),                  # any element that is not passing
    ("not Checks.Status != passing", {"b", "c"}),         # Consul's own spelling of "all passing"
    ('"x" in Checks.ServiceTags', {"a"}),
    ("Checks is empty", {"c"}),
    ("Checks is not empty", {"a", "b"}),
    ("Node.Node == n2", {"b"}),
    ("Node.Meta.rack == r1", {"a"}),
    ('"x" in Service.Tags', {"a"}),
    ("Service.Tags is empty", {"b", "c"}),
])
def test_lists_of_structs(expr: str, want: set[str]) -> None:
    got = {e["Service"]["ID"] for e in compile_filter(expr, CSN).apply(NODES)}
    assert got == want


# ---- logic and precedence ---------------------------------------------------------------------------
@pytest.mark.parametrize("expr, want", [
    ('Service == web and Port == 8080', {"web1"}),
    ('Service == web or Service == db', {"web1", "web2", "db"}),
    ("not Service == web", {"db"}),
    ("not not Service == web", {"web1", "web2"}),
    # and binds tighter than or: a or (b and c)
    ("Service == db or Service == web and Port == 8080", {"db", "web1"}),
    ("(Service == db or Service == web) and Port == 8080", {"web1"}),
    # not binds tighter than and: (not a) and b
    ("not Service == db and Port == 9090", {"web2"}),
    ("not (Service == db and Port == 5432)", {"web1", "web2"}),
    ("(((Service == db)))", {"db"}),
    ("  Service==db  ", {"db"}),                          # whitespace around == is optional
    ("Service == web and\n\tPort == 9090", {"web2"}),
])
def test_logic(expr: str, want: set[str]) -> None:
    assert ids(expr) == want


def test_precedence_matches_docs() -> None:
    """The docs: `A and not B or C` is `(A and (not B)) or C`, on every combination."""
    items = {f"{a}{b}{c}": {"Service": a, "ID": b, "Address": c} for a in "01" for b in "01" for c in "01"}
    left = ids("Service == 1 and not ID == 1 or Address == 1", items=items)
    right = ids("(Service == 1 and (not ID == 1)) or Address == 1", items=items)
    assert left == right == {k for k in items if (k[0] == "1" and k[1] != "1") or k[2] == "1"}


# ---- errors: clear, positioned, never a crash -----------------------------------------------------------
@pytest.mark.parametrize("expr, fragment", [
    ("not a valid expression((", "expected a match operator"),
    ("Service ==", "expected a value"),
    ("== web", "expected a selector"),
    ("(Service == web", "Unmatched parentheses"),
    ("Service == web)", "Unmatched parentheses"),
    ("Service == web and", "expected a selector"),
    ("Service == web or or Port == 1", "expected a selector"),
    ('Service == "web', "Unterminated string literal"),
    ("Service == `web", "Unterminated string literal"),
    ('Service == "a\\qb"', "invalid escape"),
    ("Address == 10.0.0.1", "Invalid number literal"),
    ("Port == 08", "Invalid number literal"),
    ("Service == web#", "unexpected character"),
    ("Service is", "expected 'empty'"),
    ("Service is not full", "expected 'empty'"),
    ('"web" == Service', "expected a selector"),
    ('"x" in "y"', "Invalid selector"),
    ("Meta[env] == x", "Invalid index"),
    ('Meta["env" == x', "Unclosed index"),
    ("Service. == x", "expected a field name"),
    ("Nope == 1", 'Selector "Nope" is not valid'),
    ("Service.Sub == 1", 'Selector "Service.Sub" is not valid'),
    ("Tags == x", 'Invalid match operator "Equal" for selector "Tags"'),
    ("Port contains 1", 'Invalid match operator "In"'),
    ("Port matches 1", 'Invalid match operator "Matches"'),
    ("Meta == x", 'Invalid match operator "Equal"'),
    ("Weights is empty", 'Invalid match operator "Is Empty"'),
    ("Port == abc", 'Failed to coerce value "abc" for selector "Port"'),
    ("Port == 99999999999999999999", "out of range"),
    ("EnableTagOverride == yes", "not a boolean"),
    ('Service matches "("', "Failed to compile regular expression"),
    ('Service matches "(a)\\\\1"', "Failed to compile regular expression"),  # no backreferences in RE2
    ("", "empty expression"),
    ("   ", "empty expression"),
])
def test_errors(expr: str, fragment: str) -> None:
    with pytest.raises(FilterError) as info:
        compile_filter(expr, SVC)
    assert fragment in str(info.value)


def test_error_names_line_and_column() -> None:
    with pytest.raises(FilterError) as info:
        compile_filter("Service == web and\n  Nope == 1", SVC)
    assert str(info.value).startswith("2:3 (21): ")


@pytest.mark.parametrize("expr, fragment", [
    ("(" * 3000 + "Service == web" + ")" * 3000, "nested deeper"),
    ("not " * 2000 + "Service == web", "nested deeper"),
    (" or ".join(["Service == web"] * 200), "more than 128 match expressions"),
    ("Service == " + "a" * 20000, "limit is 8192"),
    ('Service matches "' + "a" * 2000 + '"', "limit is 1024"),
    ("Service == web and " * 2000, "limit is 8192"),
])
def test_huge_inputs_are_errors(expr: str, fragment: str) -> None:
    with pytest.raises(FilterError) as info:
        compile_filter(expr, SVC)
    assert fragment in str(info.value)


def test_limits_are_inclusive_and_nesting_below_the_bound_works() -> None:
    expr = "(" * 60 + "Service == db" + ")" * 60
    assert ids(expr) == {"db"}
    assert ids(" or ".join(["Service == nope"] * 127 + ["Service == db"])) == {"db"}


def test_regex_is_linear_time() -> None:
    """A pattern that backtracks exponentially in Python's re runs in RE2's linear time."""
    items = {"x": {"Service": "a" * 4000 + "!"}}
    start = time.perf_counter()
    assert ids('Service matches "^(a+)+$"', items=items) == set()
    assert ids('Service matches "^(a|aa)*!$"', items=items) == {"x"}
    assert time.perf_counter() - start < 5.0  # exponential backtracking would take ages


def test_odd_data_does_not_crash() -> None:
    """Items whose fields are missing or of the wrong JSON type evaluate, they do not raise."""
    items = {"a": {}, "b": {"Tags": None, "Meta": None, "Port": "80", "Weights": 5},
             "c": {"Tags": "primary", "Meta": ["env"], "Port": None, "EnableTagOverride": "true"}, "d": None}
    for expr in ['"primary" in Tags', "Meta.env == x", "Meta.env != x", "Port == 80", "Weights.Passing == 1",
                 "Tags is empty", '"env" in Meta', "EnableTagOverride == true", 'Service matches "."']:
        compile_filter(expr, SVC).apply_map(items)
    assert ids("Port == 80", items=items) == {"b"}  # a number held as a string still compares


# ---- property-ish: the evaluator agrees with a direct Python reading --------------------------------
names = st.sampled_from(["web", "db", "cache", ""])
tags = st.lists(st.sampled_from(["a", "b", "c"]), max_size=3)
metas = st.dictionaries(st.sampled_from(["env", "zone"]), st.sampled_from(["x", "y"]), max_size=2)
services = st.fixed_dictionaries({"Service": names, "Tags": tags, "Meta": metas,
                                  "Port": st.integers(min_value=0, max_value=3)})


@settings(max_examples=200, deadline=None)
@given(st.lists(services, max_size=6), names, st.sampled_from(["a", "b", "c"]), st.integers(0, 3))
def test_agrees_with_python(items: list[dict[str, Any]], name: str, tag: str, port: int) -> None:
    data = {str(i): s for i, s in enumerate(items)}
    cases = {
        f'Service == "{name}"': lambda s: s["Service"] == name,
        f'Service != "{name}" and Port == {port}': lambda s: s["Service"] != name and s["Port"] == port,
        f'"{tag}" in Tags or Meta.env == x': lambda s: tag in s["Tags"] or s["Meta"].get("env") == "x",
        f'not ("{tag}" not in Tags) and Meta is not empty': lambda s: tag in s["Tags"] and bool(s["Meta"]),
        "Meta.zone != y": lambda s: s["Meta"].get("zone") != "y",
        f'Service matches "^{name}" or Tags is empty': lambda s: s["Service"].startswith(name) or not s["Tags"],
    }
    for expr, want in cases.items():
        assert ids(expr, items=data) == {k for k, s in data.items() if want(s)}, expr


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_arbitrary_text_is_a_filter_or_a_filter_error(text: str) -> None:
    try:
        f = compile_filter(text, SVC)
    except FilterError:
        return
    f.apply_map(SERVICES)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["(", ")", "not", "and", "or", "Service", "==", "!=", "web", '"x"', "in",
                                 "Tags", "is", "empty", "contains", "matches", "Meta.env", "8080", "Port"]),
                max_size=12))
def test_token_soup_never_crashes(words: list[str]) -> None:
    try:
        f = compile_filter(" ".join(words), SVC)
    except FilterError:
        return
    f.apply_map(SERVICES)


def test_schemas_cover_our_json_shapes() -> None:
    """Every key our health/catalog JSON writes that Consul documents as filterable resolves."""
    for path in ["Node", "CheckID", "Name", "Status", "Notes", "Output", "ServiceID", "ServiceName",
                 "ServiceTags", "Type"]:
        assert flt.resolve(CHK, (path,)) is not None
    for path in [("Node", "Meta", "k"), ("Service", "Proxy", "Upstreams", "DestinationName"),
                 ("Checks", "Status"), ("Service", "TaggedAddresses", "lan", "Port")]:
        assert flt.resolve(CSN, path) is not None
    for path in [("NodeMeta", "k"), ("ServiceTags",), ("ServiceMeta", "k"), ("ServicePort",), ("Node",)]:
        assert flt.resolve(flt.SERVICE_NODE, path) is not None
    assert flt.resolve(flt.NODE, ("Meta",)) == flt.MapOf(flt.STR)
    assert flt.resolve(CSN, ("Checks", "Nope")) is None


@pytest.mark.parametrize("literal, value", [
    ('"plain"', "plain"), ('"a\\tb"', "a\tb"), ('"\\x41\\u00e9\\U0001F600"', "A\u00e9\U0001F600"),
    ('"\\101"', "A"), ('"say \\"hi\\""', 'say "hi"'), ("`raw \\n stays`", "raw \\n stays"),
    ("`a\r\nb`", "a\nb"), ('""', ""),
])
def test_string_literals(literal: str, value: str) -> None:
    items = {"hit": {"Service": value}, "miss": {"Service": value + "x"}}
    assert ids(f"Service == {literal}", items=items) == {"hit"}


def test_index_keys_may_hold_any_character() -> None:
    items = {"a": {"Meta": {"a.b c": "1"}}, "b": {"Meta": {"a": {"b c": "1"}}}}
    assert ids('Meta["a.b c"] == "1"', items=items) == {"a"}
    assert ids('Meta[ `a.b c` ] is not empty', items=items) == {"a"}
