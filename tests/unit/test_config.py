"""The agent config loader (agent/config.py) and Go durations (checks/durations.py)."""

from __future__ import annotations

import base64
import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from murmur.agent import config as config_mod
from murmur.agent.config import ConfigError, RuntimeConfig, load, validate_paths
from murmur.checks.durations import (
    format_duration,
    format_duration_ns,
    parse_duration,
    parse_duration_ns,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "dev"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    path.chmod(0o600)
    return path


def errors_of(paths: list[Path], **kwargs: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(paths, **kwargs)
    assert str(info.value)  # the message is the list of errors
    return info.value.errors


def one_error(paths: list[Path], **kwargs: Any) -> str:
    errs = errors_of(paths, **kwargs)
    assert len(errs) == 1, errs
    return errs[0]


# ---------------------------------------------------------------------------------------------
# Durations


@pytest.mark.parametrize(("text", "seconds"), [
    ("0", 0.0), ("0s", 0.0), ("10s", 10.0), ("100ms", 0.1), ("1m30s", 90.0), ("1h", 3600.0),
    ("2us", 2e-6), ("2µs", 2e-6), ("2μs", 2e-6), ("5ns", 5e-9), ("1.5h", 5400.0), (".5s", 0.5),
    ("1h2m3.25s", 3723.25), ("87600h", 87600 * 3600.0), ("+3s", 3.0), ("-1.5s", -1.5),
])
def test_parse_duration_go_strings(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


def test_parse_duration_numbers_are_nanoseconds() -> None:
    assert parse_duration(1_500_000_000) == 1.5
    assert parse_duration(0) == 0.0
    assert parse_duration(10.0) == pytest.approx(1e-8)
    assert parse_duration_ns(90_000_000_000) == 90 * 10**9
    assert parse_duration_ns("1.000000001s") == 1_000_000_001
    assert parse_duration_ns("1.0000000019s") == 1_000_000_001  # below 1ns truncates, as Go does


@pytest.mark.parametrize("bad", ["", "1", "10", "s", "1x", "1 s", " 1s", "1s ", "1.s5", ".s", "--1s",
                                 "1sm", "٣s", "1e3s", "nan", True, None, [1], float("inf")])
def test_parse_duration_rejects_bad_input(bad: Any) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(bad)


def test_parse_duration_message_says_what_is_expected() -> None:
    with pytest.raises(ValueError) as info:
        parse_duration("30")
    assert "'30'" in str(info.value) and "missing unit" in str(info.value) and '"10s"' in str(info.value)


@pytest.mark.parametrize(("ns", "text"), [
    (0, "0s"), (1, "1ns"), (1500, "1.5us"), (1_500_000, "1.5ms"), (10**9, "1s"), (90 * 10**9, "1m30s"),
    (3600 * 10**9, "1h0m0s"), (3723_500_000_000, "1h2m3.5s"), (-2_000_000, "-2ms"),
])
def test_format_duration_is_gos(ns: int, text: str) -> None:
    assert format_duration_ns(ns) == text


@given(st.integers(min_value=-(10**19), max_value=10**19))
def test_format_then_parse_round_trips(ns: int) -> None:
    """Within Go's int64 nanoseconds; beyond it parsing refuses, as Go's does."""
    if abs(ns) <= 2**63 - 1:
        assert parse_duration_ns(format_duration_ns(ns)) == ns
    else:
        with pytest.raises(ValueError, match="out of range"):
            parse_duration_ns(format_duration_ns(ns))


@given(st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from(["ns", "us", "ms", "s", "m", "h"])),
                min_size=1, max_size=5))
def test_parse_sums_the_terms(terms: list[tuple[int, str]]) -> None:
    scale = {"ns": 1, "us": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}
    text = "".join(f"{n}{unit}" for n, unit in terms)
    total = sum(n * scale[unit] for n, unit in terms)
    if total >= 2**63:  # past Go's int64 nanoseconds: refused, as ParseDuration does
        with pytest.raises(ValueError, match="out of range"):
            parse_duration_ns(text)
        return
    assert parse_duration_ns(text) == total


@given(st.floats(min_value=0, max_value=10**6, allow_nan=False))
def test_format_duration_seconds(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds, abs=1e-9)


# ---------------------------------------------------------------------------------------------
# Defaults, TOML, JSON


def test_defaults_are_consuls() -> None:
    cfg = load([])
    assert (cfg.datacenter, cfg.node_name, cfg.server, cfg.bootstrap_expect) == ("dc1", "", False, 0)
    assert (cfg.bind_addr, cfg.client_addr, cfg.domain, cfg.log_level) == ("0.0.0.0", "127.0.0.1", "murmur", "INFO")
    p = cfg.ports
    assert (p.http, p.https, p.dns, p.serf_lan, p.serf_wan, p.server, p.grpc) == (8500, -1, 8600, 8301, 8302, 8300, -1)
    d = cfg.dns_config
    assert (d.node_ttl, d.service_ttl, d.allow_stale, d.max_stale) == ("0s", {}, True, "87600h")
    assert (d.only_passing, d.enable_truncate, d.udp_answer_limit, d.a_record_limit) == (False, False, 3, 0)
    assert d.recursor_timeout == "2s"
    assert (cfg.acl.enabled, cfg.acl.default_policy, cfg.acl.tokens.agent) == (False, "allow", "")
    assert cfg.tls.defaults.verify_incoming is False and cfg.tls.internal_rpc.verify_server_hostname is False
    assert cfg.limits.http_max_conns_per_client == 200
    assert (cfg.encrypt_verify_incoming, cfg.encrypt_verify_outgoing) == (True, True)
    assert (cfg.leave_on_terminate, cfg.skip_leave_on_interrupt) == (None, None)
    assert (cfg.retry_interval, cfg.retry_max, cfg.dev) == ("30s", 0, False)
    assert cfg.services == [] and cfg.checks == [] and cfg.warnings == [] and cfg.sources == []


def test_toml_agent_keys(tmp_path: Path) -> None:
    f = write(tmp_path, "a.toml", """
datacenter = "east-1"
node_name = "n1"
node_id = "adf4238a-882b-9ddc-4a9d-5b6758e4159e"
data_dir = "/var/lib/murmur"
server = true
bind_addr = "10.0.0.5"
client_addr = "127.0.0.1 10.0.0.5"
log_level = "debug"
leave_on_terminate = true
node_meta = { rack = "r1" }
[ports]
http = 18500
dns = -1
[addresses]
http = "0.0.0.0"
[dns_config]
node_ttl = "10s"
service_ttl = { "*" = "5s", web = "30s" }
only_passing = true
udp_answer_limit = 5
""")
    cfg = load([f])
    assert (cfg.datacenter, cfg.node_name, cfg.data_dir, cfg.server) == ("east-1", "n1", "/var/lib/murmur", True)
    assert cfg.node_id == "adf4238a-882b-9ddc-4a9d-5b6758e4159e"
    assert (cfg.bind_addr, cfg.client_addr, cfg.addresses.http) == ("10.0.0.5", "127.0.0.1 10.0.0.5", "0.0.0.0")
    assert cfg.log_level == "DEBUG" and cfg.leave_on_terminate is True
    assert (cfg.ports.http, cfg.ports.dns, cfg.ports.serf_lan) == (18500, -1, 8301)
    assert cfg.dns_config.service_ttl == {"*": "5s", "web": "30s"}
    assert (cfg.dns_config.node_ttl, cfg.dns_config.only_passing, cfg.dns_config.udp_answer_limit) == ("10s", True, 5)
    assert cfg.node_meta == {"rack": "r1"} and cfg.sources == [str(f)] and cfg.warnings == []


def test_toml_services_and_checks_come_out_in_api_shape(tmp_path: Path) -> None:
    f = write(tmp_path, "s.toml", """
enable_local_script_checks = true
[[services]]
id = "web-1"
name = "web"
tags = ["v1"]
address = "10.0.0.1"
port = 80
meta = { version = "2" }
enable_tag_override = true
weights = { passing = 3, warning = 1 }
tagged_addresses = { lan = { address = "10.0.0.1", port = 80 } }
[services.check]
http = "https://10.0.0.1/health"
method = "HEAD"
header = { X-A = ["1", "2"] }
interval = "5s"
timeout = "1s"
tls_skip_verify = true
tls_server_name = "web"
disable_redirects = true
deregister_critical_service_after = "90m"
success_before_passing = 2
failures_before_warning = 1
failures_before_critical = 3
output_max_size = 100
body = "{}"
status = "warning"

[[services]]
name = "db"
[[services.checks]]
check_id = "db-tcp"
tcp = "[::1]:5432"
interval = "10s"
[[services.checks]]
script_args = ["/bin/check", "-q"]
interval = "1m"
[[services.checks]]
grpc = "127.0.0.1:9000/health.v1"
grpc_use_tls = true
interval = "10s"

[[checks]]
name = "mw"
ttl = "30m"
status = "passing"
notes = "n"
service_id = "web-1"
[[checks]]
name = "alias"
alias_service = "web"
alias_node = "n2"
[[checks]]
name = "ping"
h2ping = "localhost:443"
h2ping_use_tls = false
interval = "3s"
""")
    cfg = load([f])
    web, db = cfg.services
    assert web == {
        "ID": "web-1", "Name": "web", "Tags": ["v1"], "Address": "10.0.0.1", "Port": 80, "Meta": {"version": "2"},
        "EnableTagOverride": True, "Weights": {"Passing": 3, "Warning": 1},
        "TaggedAddresses": {"lan": {"Address": "10.0.0.1", "Port": 80}},
        "Check": {"HTTP": "https://10.0.0.1/health", "Method": "HEAD", "Header": {"X-A": ["1", "2"]},
                  "Interval": "5s", "Timeout": "1s", "TLSSkipVerify": True, "TLSServerName": "web",
                  "DisableRedirects": True, "DeregisterCriticalServiceAfter": "90m", "SuccessBeforePassing": 2,
                  "FailuresBeforeWarning": 1, "FailuresBeforeCritical": 3, "OutputMaxSize": 100, "Body": "{}",
                  "Status": "warning"},
    }
    assert db == {"Name": "db", "Checks": [
        {"CheckID": "db-tcp", "TCP": "[::1]:5432", "Interval": "10s"},
        {"Args": ["/bin/check", "-q"], "Interval": "1m"},
        {"GRPC": "127.0.0.1:9000/health.v1", "GRPCUseTLS": True, "Interval": "10s"},
    ]}
    assert cfg.checks == [
        {"Name": "mw", "TTL": "30m", "Status": "passing", "Notes": "n", "ServiceID": "web-1"},
        {"Name": "alias", "AliasService": "web", "AliasNode": "n2"},
        {"Name": "ping", "H2PING": "localhost:443", "H2PingUseTLS": False, "Interval": "3s"},
    ]


def test_json_is_consuls_format_with_consuls_casing(tmp_path: Path) -> None:
    f = write(tmp_path, "c.json", json.dumps({
        "datacenter": "dc2",
        "enable_script_checks": True,
        "service": {"Name": "redis", "ID": "redis-1", "Port": 6379, "Tags": ["cache"],
                    "Check": {"TCP": "127.0.0.1:6379", "Interval": "10s", "DeregisterCriticalServiceAfter": "1h"}},
        "services": [{"name": "a", "checks": [{"ScriptArgs": ["/bin/true"], "interval": "5s"},
                                              {"CheckID": "a-http", "HTTP": "http://a/", "Interval": "5s",
                                               "TLSSkipVerify": True, "Header": {"H": ["v"]}}]}],
        "check": {"ID": "c1", "Name": "c", "TTL": "5s"},
        "checks": [{"name": "d", "ttl": "5s", "ServiceID": "redis-1"},
                   {"name": "e", "ttl": "5s", "service_id": "a"},
                   {"name": "f", "ttl": "5s", "serviceid": "a"}],
    }, indent=2))
    cfg = load([f])
    assert cfg.datacenter == "dc2"
    assert cfg.services[0] == {"Name": "redis", "ID": "redis-1", "Port": 6379, "Tags": ["cache"],
                               "Check": {"TCP": "127.0.0.1:6379", "Interval": "10s",
                                         "DeregisterCriticalServiceAfter": "1h"}}
    assert cfg.services[1]["Checks"] == [
        {"Args": ["/bin/true"], "Interval": "5s"},
        {"CheckID": "a-http", "HTTP": "http://a/", "Interval": "5s", "TLSSkipVerify": True, "Header": {"H": ["v"]}},
    ]
    assert cfg.checks[0] == {"CheckID": "c1", "Name": "c", "TTL": "5s"}
    assert [c["ServiceID"] for c in cfg.checks[1:]] == ["redis-1", "a", "a"]  # one key, three spellings


def test_json_key_given_twice_in_one_definition(tmp_path: Path) -> None:
    f = write(tmp_path, "c.json", '{"service": {"name": "a",\n "Name": "b"}}')
    err = one_error([f])
    assert err.startswith(f"{f}:2: service.Name: given twice")


# ---------------------------------------------------------------------------------------------
# Merging and precedence


def test_later_files_win_tables_merge_lists_append(tmp_path: Path) -> None:
    a = write(tmp_path, "a.toml", """
node_name = "a"
retry_join = ["10.0.0.1"]
node_meta = { rack = "r1", zone = "z1" }
[ports]
http = 1111
dns = 2222
[dns_config]
node_ttl = "1s"
service_ttl = { "*" = "1s" }
[[services]]
name = "one"
""")
    b = write(tmp_path, "b.json", json.dumps({
        "node_name": "b", "retry_join": ["10.0.0.2"], "node_meta": {"zone": "z2"},
        "ports": {"http": 3333}, "dns_config": {"service_ttl": {"web": "2s"}},
        "services": [{"name": "two"}],
    }))
    cfg = load([a, b])
    assert cfg.node_name == "b"
    assert (cfg.ports.http, cfg.ports.dns) == (3333, 2222)
    assert cfg.node_meta == {"rack": "r1", "zone": "z2"}
    assert cfg.dns_config.node_ttl == "1s" and cfg.dns_config.service_ttl == {"*": "1s", "web": "2s"}
    assert cfg.retry_join == ["10.0.0.1", "10.0.0.2"]
    assert [s["Name"] for s in cfg.services] == ["one", "two"]
    assert cfg.sources == [str(a), str(b)]
    # The order is the caller's: reversed, a wins.
    assert load([b, a]).node_name == "a"


def test_overrides_win_over_files_and_defaults(tmp_path: Path) -> None:
    f = write(tmp_path, "a.toml", 'node_name = "file"\n[ports]\nhttp = 1111\ndns = 2222\n')
    cfg = load([f], overrides={"node_name": "flag", "ports.http": 18500, "server": True,
                               "datacenter": None, "log_level": "warn", "retry_join": ["x"]})
    assert (cfg.node_name, cfg.ports.http, cfg.ports.dns, cfg.server) == ("flag", 18500, 2222, True)
    assert cfg.datacenter == "dc1"  # None means "flag not given"
    assert cfg.log_level == "WARN" and cfg.retry_join == ["x"]


def test_override_strings_are_converted_like_flags() -> None:
    cfg = load([], overrides={"ports.http": "0", "server": "true", "dns_config.allow_stale": "false",
                              "start_join": "10.0.0.9"})
    assert (cfg.ports.http, cfg.server, cfg.dns_config.allow_stale) == (0, True, False)
    assert cfg.start_join == ["10.0.0.9"]


def test_bad_overrides_are_errors_naming_the_command_line() -> None:
    with pytest.raises(ConfigError) as info:
        load([], overrides={"ports.htp": 1, "ports.dns": "many", "node-name": "x"})
    errs = info.value.errors
    assert "command line: ports.htp: unknown key; did you mean 'http'?" in errs
    assert "command line: ports.dns: expected integer, got string" in errs
    assert "command line: node-name: unknown key; did you mean 'node_name'?" in errs


def test_dev_mode() -> None:
    cfg = load([], dev=True)
    assert cfg.dev and cfg.server and cfg.bind_addr == "127.0.0.1"
    assert cfg.node_name == "" and cfg.data_dir == "" and cfg.bootstrap_expect == 0
    assert load([], dev=True, overrides={"bind_addr": "10.1.1.1"}).bind_addr == "10.1.1.1"
    assert not load([]).dev


# ---------------------------------------------------------------------------------------------
# Directories


def test_directory_files_in_lexical_order_others_skipped(tmp_path: Path) -> None:
    write(tmp_path, "20-b.toml", 'node_name = "b"\n[[services]]\nname = "b"\n')
    write(tmp_path, "10-a.json", '{"node_name": "a", "service": {"name": "a"}}')
    write(tmp_path, "30-c.toml", '[[services]]\nname = "c"\n')
    write(tmp_path, ".hidden.toml", 'node_name = "hidden"\n')
    write(tmp_path, "notes.txt", "not config")
    write(tmp_path, "old.hcl", 'node_name = "hcl"')
    (tmp_path / "sub.toml").mkdir()
    (tmp_path / "sub.toml" / "x.toml").write_text('node_name = "sub"\n')
    cfg = load([tmp_path])
    assert cfg.node_name == "b"
    assert [s["Name"] for s in cfg.services] == ["a", "b", "c"]
    assert [Path(s).name for s in cfg.sources] == ["10-a.json", "20-b.toml", "30-c.toml"]
    assert any("old.hcl" in w and "HCL" in w for w in cfg.warnings)


def test_files_and_directories_mix(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    write(d, "a.toml", 'node_name = "dir"\n')
    f = write(tmp_path, "last.toml", 'node_name = "file"\n')
    assert load([d, f]).node_name == "file"
    assert load([str(f), str(d)]).node_name == "dir"


def test_missing_paths_and_wrong_file_types(tmp_path: Path) -> None:
    txt = write(tmp_path, "c.yaml", "a: 1")
    errs = errors_of([tmp_path / "nope", txt])
    assert errs == [f"{tmp_path / 'nope'}: no such file or directory",
                    f"{txt}: unsupported file type '.yaml'; use .toml or .json"]


# ---------------------------------------------------------------------------------------------
# Errors: file, key, line, reason


def test_unknown_key_suggests_and_names_line(tmp_path: Path) -> None:
    f = write(tmp_path, "a.toml", '\ndatacenter = "dc1"\nnode_nme = "x"\n')
    assert one_error([f]) == f"{f}:3: node_nme: unknown key; did you mean 'node_name'?"


def test_unknown_nested_key(tmp_path: Path) -> None:
    f = write(tmp_path, "a.toml", '[dns_config]\nnode_ttl = "1s"\nnodettl = "1s"\nfrobnicate = 1\n')
    errs = errors_of([f])
    assert errs == [f"{f}:3: dns_config.nodettl: unknown key; did you mean 'node_ttl'?",
                    f"{f}:4: dns_config.frobnicate: unknown key"]


def test_toml_service_keys_are_snake_case(tmp_path: Path) -> None:
    f = write(tmp_path, "a.toml", '[[services]]\nName = "web"\n')
    errs = errors_of([f])
    assert f"{f}:2: services[0].Name: unknown key; did you mean 'name'?" in errs


@pytest.mark.parametrize(("body", "key", "reason"), [
    ('server = "yes"', "server", "expected boolean, got string"),
    ("datacenter = 5", "datacenter", "expected string, got integer"),
    ('bootstrap_expect = "3"', "bootstrap_expect", "expected integer, got string"),
    ("retry_join = \"10.0.0.1\"", "retry_join", "expected array of strings, got string"),
    ("node_meta = [1]", "node_meta", "expected table, got array"),
    ("ports = 8500", "ports", "expected table, got integer"),
    ("[ports]\nhttp = 70000", "ports.http", "port 70000 out of range"),
    ("[ports]\ndns = -2", "ports.dns", "port -2 out of range"),
    ("[ports]\nhttp = true", "ports.http", "expected integer, got boolean"),
    ('[dns_config]\nnode_ttl = "10"', "dns_config.node_ttl", "missing unit"),
    ('[dns_config]\nmax_stale = "-1s"', "dns_config.max_stale", "must not be negative"),
    ("[dns_config]\nudp_answer_limit = 0", "dns_config.udp_answer_limit", "must be at least 1, got 0"),
    ('log_level = "loud"', "log_level", "'loud' is not one of trace, debug, info, warn, error"),
    ('[acl]\ndefault_policy = "maybe"', "acl.default_policy", "not one of allow, deny"),
    ('bind_addr = "{{ GetPrivateIP }}"', "bind_addr", "go-sockaddr templates are not supported"),
    ('node_id = "not-a-uuid"', "node_id", "is not a UUID"),
    ('datacenter = "dc 1"', "datacenter", "letters, digits"),
    ('node_meta = { "consul-x" = "y" }', "node_meta.consul-x", "reserved"),
    ('recursors = ["8.8.8.8", "dns.example"]', "recursors[1]", "not an IP address"),
    ("created = 1979-05-27", "created", "unknown key"),
])
def test_wrong_values_name_file_key_line_reason(tmp_path: Path, body: str, key: str, reason: str) -> None:
    f = write(tmp_path, "a.toml", "# a comment line\n" + body + "\n")
    err = one_error([f])
    line = 2 if "\n" not in body else 3
    assert err.startswith(f"{f}:{line}: {key}: "), err
    assert reason in err


def test_datetime_values_are_named(tmp_path: Path) -> None:
    f = write(tmp_path, "a.toml", "node_name = 1979-05-27\n")
    assert one_error([f]) == f"{f}:1: node_name: expected string, got date"


@pytest.mark.parametrize(("definition", "key", "reason"), [
    ('[[services]]\nport = 80', "services[0].name", "a service needs a name"),
    ('[[services]]\nname = "w"\nport = 70000', "services[0].port", "out of range 0..65535"),
    ('[[services]]\nname = "w"\ntags = "v1"', "services[0].tags", "expected array of strings, got string"),
    ('[[services]]\nname = "w"\nweights = { passing = 0 }', "services[0].weights.passing", "at least 1"),
    ('[[services]]\nname = "w"\ncheck = { interval = "1s" }', "services[0].check", "needs one of http, tcp"),
    ('[[services]]\nname = "w"\ncheck = { http = "http://x/" }', "services[0].check.interval", "required"),
    ('[[services]]\nname = "w"\ncheck = { http = "ftp://x/", interval = "1s" }', "services[0].check.http",
     "not an http:// or https:// URL"),
    ('[[services]]\nname = "w"\ncheck = { tcp = "x", interval = "1s" }', "services[0].check.tcp", "not host:port"),
    ('[[services]]\nname = "w"\ncheck = { ttl = "1s", tcp = "x:1", interval = "1s" }', "services[0].check",
     "got tcp and ttl"),
    ('[[services]]\nname = "w"\ncheck = { ttl = "soon" }', "services[0].check.ttl", "invalid duration"),
    ('[[services]]\nname = "w"\ncheck = { ttl = "1s", status = "ok" }', "services[0].check.status",
     "not one of passing, warning, critical"),
    ('[[services]]\nname = "w"\ncheck = { ttl = "1s", header = { a = "b" } }', "services[0].check.header.a",
     "expected an array of strings"),
    ('[[checks]]\nttl = "1s"', "checks[0].name", "a check needs a name"),
    ('[[checks]]\nname = "c"\nttl = "1s"\nhttp_method = "GET"', "checks[0].http_method", "unknown key"),
    ('[[checks]]\nname = "c"\nttl = "1s"\nid = "a"\ncheck_id = "b"', "checks[0].check_id", "given twice"),
    ('services = { name = "w" }', "services", "expected array of tables, got table"),
])
def test_definition_errors(tmp_path: Path, definition: str, key: str, reason: str) -> None:
    f = write(tmp_path, "s.toml", definition + "\n")
    err = one_error([f])
    assert re.match(rf"{re.escape(str(f))}:\d+: {re.escape(key)}: ", err), err
    assert reason in err


def test_script_checks_need_to_be_enabled(tmp_path: Path) -> None:
    svc = write(tmp_path, "20-svc.toml", """
[[services]]
name = "w"
[[services.checks]]
ttl = "5s"
[[services.checks]]
args = ["/bin/true"]
interval = "5s"
""")
    err = one_error([svc])
    assert err.startswith(f"{svc}:7: services[0].checks[1].args: script checks are off"), err
    assert "enable_local_script_checks" in err
    # Positive control: enabled in another file, in either spelling, the same check loads.
    on = write(tmp_path, "10-on.toml", "enable_local_script_checks = true\n")
    assert load([on, svc]).services[0]["Checks"][1]["Args"] == ["/bin/true"]
    assert load([svc], overrides={"enable_script_checks": True}).services[0]["Checks"][1]["Args"]


def test_docker_checks_need_args(tmp_path: Path) -> None:
    f = write(tmp_path, "a.toml", '[[checks]]\nname = "d"\ndocker_container_id = "abc"\ninterval = "5s"\n')
    errs = errors_of([f])
    assert any("checks[0].docker_container_id: a Docker check also needs args" in e for e in errs)


def test_bootstrap_expect_needs_server(tmp_path: Path) -> None:
    f = write(tmp_path, "a.toml", "bootstrap_expect = 3\n")
    assert "bootstrap_expect = 3 needs server = true" in one_error([f])
    assert load([f], overrides={"server": True}).bootstrap_expect == 3


def test_all_errors_are_reported_together(tmp_path: Path) -> None:
    a = write(tmp_path, "a.toml", 'node_nme = "x"\nserver = 1\n')
    b = write(tmp_path, "b.json", '{"ports": {"http": "80"}}')
    with pytest.raises(ConfigError) as info:
        load([a, b])
    e = info.value
    assert len(e.errors) == 3
    text = str(e)
    assert text.startswith("3 configuration errors:")
    for needle in ("a.toml:1: node_nme", "a.toml:2: server", "b.json:1: ports.http"):
        assert needle in text


def test_malformed_toml_names_file_and_line(tmp_path: Path) -> None:
    f = write(tmp_path, "a.toml", 'node_name = "x"\nserver = \n')
    err = one_error([f])
    assert err.startswith(f"{f}:2: invalid TOML: ") and "line 2, column" in err


def test_malformed_json_names_file_line_and_column(tmp_path: Path) -> None:
    f = write(tmp_path, "a.json", '{\n  "node_name": "x"\n  "server": true\n}\n')
    err = one_error([f])
    assert err.startswith(f"{f}:3: invalid JSON: ") and "line 3, column 3" in err
    g = write(tmp_path, "b.json", "[1, 2]")
    assert one_error([g]) == f"{g}: expected a JSON object at the top, got array"


def test_json_duplicate_keys_are_errors(tmp_path: Path) -> None:
    f = write(tmp_path, "a.json", '{\n"node_name": "a",\n"node_name": "b"\n}')
    assert one_error([f]) == f"{f}:3: node_name: given twice in one object"


def test_json_lines_are_found_in_pretty_files(tmp_path: Path) -> None:
    f = write(tmp_path, "a.json", json.dumps({
        "services": [
            {"name": "a", "port": 1},
            {"name": "b", "checks": [{"ttl": "1s"}, {"http": "http://x/", "interval": "soon"}]},
        ],
    }, indent=2))
    err = one_error([f])
    lines = f.read_text().splitlines()
    line = int(err.split(":")[1])
    assert '"interval": "soon"' in lines[line - 1], (err, lines)
    assert ": services[1].checks[1].interval: invalid duration 'soon'" in err


def test_toml_lines_are_found_across_tables(tmp_path: Path) -> None:
    f = write(tmp_path, "a.toml", """# interval = "x" in a comment
[[services]]
name = "a"
check = { ttl = "1s" }

[[services]]
name = "b"
[[services.checks]]
ttl = "1s"
[[services.checks]]
tcp = "h:1"
interval = "bad"
""")
    err = one_error([f])
    assert err.startswith(f"{f}:12: services[1].checks[1].interval: "), err


def test_secrets_never_appear_in_messages(tmp_path: Path) -> None:
    secret = base64.b64encode(b"k" * 16).decode()  # valid base64, wrong length
    f = write(tmp_path, "a.toml", f'encrypt = "{secret}"\n')
    err = one_error([f])
    assert "encrypt: the key decodes to 16 bytes" in err and secret not in err
    g = write(tmp_path, "b.toml", 'encrypt = "not base64!"\n')
    assert "not base64!" not in one_error([g])


# ---------------------------------------------------------------------------------------------
# Warnings


def test_unimplemented_consul_keys_warn(tmp_path: Path) -> None:
    f = write(tmp_path, "a.toml", """
disable_update_check = true
ui = true
ca_file = "/etc/ca.pem"
[telemetry]
statsite_address = "127.0.0.1:2180"
[performance]
raft_multiplier = 1
[ports]
grpc_tls = 8503
[dns_config]
use_cache = true
[[services]]
name = "w"
connect = { sidecar_service = {} }
check = { ttl = "1s", os_service = "x" }
""")
    cfg = load([f])
    msg = "Consul option not implemented by murmur, ignored"
    for key, line in [("disable_update_check", 2), ("ui", 3), ("telemetry", 5), ("performance", 7),
                      ("ports.grpc_tls", 10), ("dns_config.use_cache", 12), ("services[0].connect", 15),
                      ("services[0].check.os_service", 16)]:
        assert f"{f}:{line}: {key}: {msg}" in cfg.warnings, (key, cfg.warnings)
    assert f"{f}:4: ca_file: {msg} (murmur reads tls.defaults.ca_file)" in cfg.warnings
    assert len(cfg.warnings) == 9


def test_json_unimplemented_definition_keys_match_any_casing(tmp_path: Path) -> None:
    f = write(tmp_path, "a.json", '{"service": {"Name": "w", "Connect": {}}}')
    assert load([f]).warnings == [f"{f}:1: service.Connect: Consul option not implemented by murmur, ignored"]


def test_features_not_built_yet_warn(tmp_path: Path) -> None:
    key = base64.b64encode(b"k" * 32).decode()
    f = write(tmp_path, "a.toml", f"""
server = true
bootstrap_expect = 3
retry_join = ["10.0.0.1"]
encrypt = "{key}"
recursors = ["1.1.1.1", "[::1]:53", "9.9.9.9:53"]
alt_domain = "consul"
[acl]
enabled = true
[tls.defaults]
verify_incoming = true
[limits]
http_max_conns_per_client = 10
[ports]
https = 8501
serf_wan = -1
grpc = 8502
""")
    cfg = load([f])
    expect = {"ports.grpc": "the gRPC API"}  # tls.*, ports.https (issue 12) and acl (issue 13) work now
    for k, feature in expect.items():
        assert any(w.endswith(f": {k}: accepted; {feature} does not work yet") for w in cfg.warnings), (k, cfg.warnings)
    assert len(cfg.warnings) == len(expect)  # ports.serf_wan = -1 disables: nothing to warn about
    assert cfg.encrypt == key and cfg.acl.enabled and cfg.tls.defaults.verify_incoming  # still accepted
    assert cfg.recursors == ["1.1.1.1", "[::1]:53", "9.9.9.9:53"] and cfg.alt_domain == "consul"


def test_dns_soa_settings(tmp_path: Path) -> None:
    f = write(tmp_path, "a.json", '{"dns_config": {"soa": {"min_ttl": 30, "expire": 99}}}')
    soa = load([f]).dns_config.soa
    assert (soa.min_ttl, soa.expire, soa.refresh, soa.retry) == (30, 99, 3600, 600)
    f = write(tmp_path, "b.json", '{"dns_config": {"soa": {"min_ttl": -1}}}')
    with pytest.raises(ConfigError, match="dns_config.soa.min_ttl: must be at least 0"):
        load([f])


def test_secret_files_readable_by_others_warn(tmp_path: Path) -> None:
    f = write(tmp_path, "a.toml", '[acl.tokens]\nagent = "s3cret"\n')
    assert not any("mode" in w for w in load([f]).warnings)  # 0600: fine
    f.chmod(0o644)
    warnings = load([f]).warnings
    assert any(w.startswith(f"{f}:2: acl.tokens.agent: this file holds a secret but its mode is 0644")
               for w in warnings), warnings
    assert not any("s3cret" in w for w in warnings)


def test_node_name_that_dns_cannot_serve_warns(tmp_path: Path) -> None:
    f = write(tmp_path, "a.toml", 'node_name = "my_node.local"\n')
    assert any("node_name: not a valid DNS label" in w for w in load([f]).warnings)


def test_validate_paths_returns_without_raising(tmp_path: Path) -> None:
    good = write(tmp_path, "good.toml", "ui = true\n")
    assert validate_paths([good]) == ([], [f"{good}:1: ui: Consul option not implemented by murmur, ignored"])
    bad = write(tmp_path, "bad.toml", "ui = true\nnode_nme = 1\n")
    errors, warnings = validate_paths([bad])
    assert errors == [f"{bad}:2: node_nme: unknown key; did you mean 'node_name'?"]
    assert warnings == [f"{bad}:1: ui: Consul option not implemented by murmur, ignored"]


# ---------------------------------------------------------------------------------------------
# The key lists stay consistent with the schema


def _schema_paths(cls: type, prefix: str = "") -> set[str]:
    out = set()
    for f in dataclasses.fields(cls):
        if not f.metadata.get("in_files", True):
            continue
        hint = config_mod._hints(cls)[f.name]
        path = prefix + f.name
        out.add(path)
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            out |= _schema_paths(hint, path + ".")
    return out


def test_key_lists_agree_with_the_schema() -> None:
    paths = _schema_paths(RuntimeConfig)
    assert set(config_mod.NOT_YET_WORKING) <= paths
    assert not (config_mod.UNIMPLEMENTED_CONSUL_KEYS & paths)
    assert set(config_mod._RENAMED) <= config_mod.UNIMPLEMENTED_CONSUL_KEYS
    assert set(config_mod._RENAMED.values()) <= paths
    # every conventions-page key is known
    for key in ["datacenter", "node_name", "data_dir", "server", "bootstrap_expect", "bind_addr", "advertise_addr",
                "client_addr", "retry_join", "ports.http", "ports.https", "ports.dns", "ports.serf_lan",
                "ports.server", "addresses.http", "addresses.dns", "node_meta", "encrypt", "enable_script_checks",
                "enable_local_script_checks", "leave_on_terminate", "dns_config.node_ttl", "dns_config.service_ttl",
                "dns_config.allow_stale", "dns_config.max_stale", "dns_config.only_passing",
                "dns_config.enable_truncate", "dns_config.udp_answer_limit", "dns_config.a_record_limit",
                "dns_config.recursor_timeout", "recursors", "domain", "alt_domain", "acl.enabled",
                "acl.default_policy", "acl.tokens.initial_management", "acl.tokens.default", "acl.tokens.agent",
                "tls.defaults.ca_file", "tls.defaults.cert_file", "tls.defaults.key_file",
                "tls.defaults.verify_incoming", "tls.defaults.verify_outgoing",
                "tls.internal_rpc.verify_server_hostname", "limits.http_max_conns_per_client"]:
        assert key in paths, key


# ---------------------------------------------------------------------------------------------
# examples/dev


def test_examples_dev_loads_clean() -> None:
    errors, warnings = validate_paths([EXAMPLES])
    assert errors == [] and warnings == []
    cfg = load([EXAMPLES], dev=True)
    assert cfg.node_name == "dev" and cfg.server and cfg.dev
    assert [Path(s).name for s in cfg.sources] == ["agent.toml", "redis.json", "services.toml"]
    by_name = {s["Name"]: s for s in cfg.services}
    web, db, redis = by_name["web"], by_name["db"], by_name["redis"]
    assert (web["Port"], web["Tags"]) == (18080, ["v1", "primary"])
    assert web["Check"]["HTTP"] == "http://127.0.0.1:18080/"
    assert (web["Check"]["Interval"], web["Check"]["Timeout"]) == ("5s", "1s")
    assert db["Port"] == 15432 and db["Checks"][0]["TCP"] == "127.0.0.1:15432" and db["Checks"][0]["Interval"] == "10s"
    assert (redis["Port"], redis["Tags"], redis["Check"]["TCP"]) == (16379, ["cache"], "127.0.0.1:16379")
    assert cfg.checks == [{"CheckID": "agent-http", "Name": "agent HTTP port", "TCP": "127.0.0.1:8500",
                           "Interval": "10s", "Timeout": "1s", "Status": "passing",
                           "Notes": "the node's agent answers on 8500"}]


def test_examples_dev_document_every_key() -> None:
    text = "\n".join(p.read_text() for p in sorted(EXAMPLES.glob("*.toml")))
    for path in _schema_paths(RuntimeConfig):
        assert re.search(rf"(^|[\s\[.]){re.escape(path.rsplit('.', 1)[-1])}\b", text, re.M), path
    for name in [*config_mod._SERVICE_FIELDS, *config_mod._CHECK_FIELDS]:
        assert re.search(rf"(^|[\s{{,.\[]){name}\s*(=|\])", text, re.M), name


def test_examples_commented_out_lines_are_valid_config(tmp_path: Path) -> None:
    """Uncommenting the documented defaults must still load: the comments are not lies."""
    agent = (EXAMPLES / "agent.toml").read_text()
    lines = []
    for line in agent.splitlines():
        m = re.match(r"# ((\[[a-z_.]+\](\s+#.*)?)|([a-z_]+ = .*))$", line)
        lines.append(m.group(1) if m else line)
    f = write(tmp_path, "agent.toml", "\n".join(lines))
    cfg = load([f], dev=True)
    assert cfg.ports.http == 8500 and cfg.acl.default_policy == "allow"
    assert cfg.limits.http_max_conns_per_client == 200
