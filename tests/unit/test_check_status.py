"""checks/status.py (the debouncing status machine, TTL timer, output limits) and
checks/definitions.py (lenient parsing of Consul check JSON)."""

from __future__ import annotations

import pytest
from murmur.checks.definitions import CheckDefinition, DefinitionError, from_api
from murmur.checks.status import CRITICAL, PASSING, WARNING, StatusMachine, TTLTimer, truncate_output


def feed(m: StatusMachine, *results: str) -> list[str]:
    """Statuses after each result."""
    out = []
    for i, r in enumerate(results):
        m.record(r, f"out {i}")
        out.append(m.status)
    return out


# ---- thresholds ----------------------------------------------------------------------------------
def test_no_thresholds_follow_every_result() -> None:
    m = StatusMachine()
    assert feed(m, PASSING, CRITICAL, WARNING, PASSING) == [PASSING, CRITICAL, WARNING, PASSING]


def test_success_before_passing() -> None:
    m = StatusMachine(status=CRITICAL, success_before_passing=3)
    assert feed(m, PASSING, PASSING, PASSING, PASSING) == [CRITICAL, CRITICAL, PASSING, PASSING]
    assert m.output == "out 3"  # output follows every result, status waits


def test_success_streak_is_broken_by_a_failure() -> None:
    m = StatusMachine(status=CRITICAL, success_before_passing=2)
    assert feed(m, PASSING, CRITICAL, PASSING, PASSING) == [CRITICAL, CRITICAL, CRITICAL, PASSING]


def test_failures_before_critical() -> None:
    m = StatusMachine(status=PASSING, failures_before_critical=3)
    assert feed(m, CRITICAL, CRITICAL, CRITICAL) == [PASSING, PASSING, CRITICAL]
    assert m.output == "out 2"


def test_failure_streak_is_reset_by_a_success() -> None:
    m = StatusMachine(status=PASSING, failures_before_critical=3)
    assert feed(m, CRITICAL, CRITICAL, PASSING, CRITICAL, CRITICAL) == [PASSING] * 5
    assert feed(m, CRITICAL) == [CRITICAL]  # positive control: the third in a row does it


def test_failures_before_warning_then_critical() -> None:
    m = StatusMachine(status=PASSING, failures_before_warning=1, failures_before_critical=3)
    assert feed(m, CRITICAL, CRITICAL, CRITICAL, PASSING) == [WARNING, WARNING, CRITICAL, PASSING]


def test_warning_threshold_defaults_to_critical_threshold() -> None:
    m = StatusMachine(status=PASSING, failures_before_critical=3)
    assert m.failures_before_warning == 3
    assert feed(m, CRITICAL, CRITICAL) == [PASSING, PASSING]  # no warning on the way
    # an explicit warning threshold is kept
    assert StatusMachine(failures_before_warning=2, failures_before_critical=5).failures_before_warning == 2


def test_combined_thresholds_debounce_a_flapping_probe() -> None:
    m = StatusMachine(status=PASSING, success_before_passing=2, failures_before_critical=2)
    flaps = [CRITICAL, PASSING] * 5
    assert set(feed(m, *flaps)) == {PASSING}
    assert feed(m, CRITICAL, CRITICAL, PASSING, PASSING) == [PASSING, CRITICAL, CRITICAL, PASSING]


def test_record_reports_changes() -> None:
    m = StatusMachine(status=CRITICAL)
    assert m.record(PASSING, "ok") is True
    assert m.record(PASSING, "ok") is False
    assert m.record(PASSING, "ok again") is True  # output alone is a change
    m2 = StatusMachine(status=PASSING, failures_before_critical=3)
    assert m2.record(CRITICAL, "") is False  # below threshold, same (empty) output
    with pytest.raises(ValueError):
        m.record("bogus", "")
    with pytest.raises(ValueError):
        StatusMachine(status="bogus")


def test_initial_status_and_output() -> None:
    assert (StatusMachine().status, StatusMachine().output) == (CRITICAL, "")
    assert StatusMachine(status=WARNING).status == WARNING


# ---- force ---------------------------------------------------------------------------------------
def test_force_bypasses_thresholds_and_resets_counters() -> None:
    m = StatusMachine(status=CRITICAL, success_before_passing=3, failures_before_critical=3)
    assert m.force(PASSING, "set by API") is True
    assert (m.status, m.output) == (PASSING, "set by API")
    assert m.force(PASSING, "set by API") is False
    m.record(CRITICAL, "f")
    m.record(CRITICAL, "f")
    m.force(PASSING, "again")  # resets the failure streak
    assert feed(m, CRITICAL, CRITICAL) == [PASSING, PASSING]
    assert m.force(WARNING, "w") is True and m.status == WARNING
    with pytest.raises(ValueError):
        m.force("bogus", "")
    assert m.status == WARNING


# ---- output limits -------------------------------------------------------------------------------
def test_truncate_output() -> None:
    assert truncate_output("short", 10) == "short"
    assert truncate_output("x" * 10, 10) == "x" * 10  # exactly at the limit: untouched
    cut = truncate_output("x" * 11, 10)
    assert cut.startswith("x" * 10) and cut != "x" * 11 and "truncated" in cut
    # the limit is in UTF-8 bytes and never splits a character
    text = "é" * 10  # 20 bytes
    cut = truncate_output(text, 5)
    assert cut.startswith("éé") and not cut.startswith("ééé")
    assert truncate_output("a" * 5000) != "a" * 5000  # the 4 KB default


def test_machine_truncates_output() -> None:
    m = StatusMachine(output_max_size=8)
    m.record(PASSING, "0123456789abcdef")
    assert m.output.startswith("01234567") and "89" not in m.output and "truncated" in m.output
    m.force(CRITICAL, "z" * 100)
    assert m.output.startswith("z" * 8) and "z" * 9 not in m.output


# ---- TTL -----------------------------------------------------------------------------------------
def test_ttl_timer() -> None:
    t = TTLTimer(ttl=10.0, deadline=110.0)
    assert not t.expired(100.0) and not t.expired(109.999)
    assert t.expired(110.0) and t.expired(200.0)
    t.refresh(105.0)
    assert t.deadline == 115.0 and not t.expired(110.0) and t.expired(115.0)
    assert TTLTimer.expiry_output(0.1).startswith("TTL expired")
    assert "0.1s" in TTLTimer.expiry_output(0.1)


# ---- definitions: lenient parsing ----------------------------------------------------------------
@pytest.mark.parametrize("key", ["HTTP", "http", "Http"])
def test_http_any_casing(key: str) -> None:
    d = from_api({key: "http://127.0.0.1:8500/", "interval": "10s", "name": "web"})
    assert (d.kind, d.http, d.interval, d.interval_text, d.id, d.name) == (
        "http", "http://127.0.0.1:8500/", 10.0, "10s", "web", "web")
    assert d.method == "GET" and d.timeout == 10.0 and d.status == CRITICAL


def test_pascal_case_full_definition() -> None:
    d = from_api({"Name": "api", "CheckID": "chk1", "HTTP": "https://x/", "Method": "post", "Interval": "1m30s",
                  "Timeout": "100ms", "Header": {"X-A": ["1", "2"], "X-B": "3"}, "TLSSkipVerify": True,
                  "tls_server_name": "x.example", "ServiceID": "api1", "Notes": "n", "Status": "passing",
                  "SuccessBeforePassing": 2, "FailuresBeforeWarning": 1, "failures_before_critical": 3,
                  "DeregisterCriticalServiceAfter": "90m", "Body": "{}", "DisableRedirects": True})
    assert d == CheckDefinition(
        id="chk1", name="api", kind="http", interval=90.0, timeout=0.1, http="https://x/", method="POST",
        header={"X-A": ["1", "2"], "X-B": ["3"]}, body="{}", tls_skip_verify=True, tls_server_name="x.example",
        disable_redirects=True, service_id="api1", notes="n", status="passing", success_before_passing=2,
        failures_before_warning=1, failures_before_critical=3, deregister_critical_service_after=5400.0,
        interval_text="1m30s", timeout_text="100ms")
    assert d.display() == {"HTTP": "https://x/", "Method": "POST", "Header": {"X-A": ["1", "2"], "X-B": ["3"]},
                           "TLSSkipVerify": True, "Interval": "1m30s", "Timeout": "100ms"}


def test_durations_as_nanosecond_numbers() -> None:
    d = from_api({"name": "t", "tcp": "localhost:22", "interval": 10_000_000_000, "timeout": 1_500_000_000})
    assert (d.interval, d.timeout) == (10.0, 1.5)
    assert d.interval_text == "10s" and d.timeout_text == "1.5s"
    assert from_api({"ttl": 100_000_000, "name": "t"}).ttl == 0.1
    assert from_api({"ttl": "100ms", "name": "t"}).ttl == 0.1


@pytest.mark.parametrize("key", ["args", "Args", "script_args", "ScriptArgs"])
def test_script_args_spellings_and_opt_in(key: str) -> None:
    obj = {"name": "s", key: ["/bin/true", "-x"], "interval": "5s"}
    with pytest.raises(DefinitionError, match="Args"):
        from_api(obj)
    d = from_api(obj, allow_scripts=True)  # positive control
    assert (d.kind, d.args) == ("script", ("/bin/true", "-x"))
    assert d.display()["ScriptArgs"] == ["/bin/true", "-x"]


def test_ttl_needs_no_interval_and_ids_default() -> None:
    d = from_api({"ttl": "30s"}, default_id="service:web", service_id="web")
    assert (d.kind, d.ttl, d.id, d.name, d.service_id, d.interval) == ("ttl", 30.0, "service:web", "service:web",
                                                                       "web", 0.0)
    assert from_api({"ID": "x", "ttl": "1s"}).name == "x"
    assert from_api({"Name": "y", "ttl": "1s"}).id == "y"
    assert from_api({"ttl": "1s", "ID": "c", "ServiceID": "own"}, service_id="other").service_id == "own"


@pytest.mark.parametrize(("obj", "field"), [
    ({"http": "http://x/", "name": "c"}, "Interval"),  # required for HTTP
    ({"http": "http://x/", "name": "c", "interval": "ten"}, "Interval"),
    ({"http": "http://x/", "name": "c", "interval": "10"}, "Interval"),  # no unit
    ({"tcp": "x:1", "name": "c", "interval": "0s"}, "Interval"),
    ({"http": "http://x/", "name": "c", "interval": "1s", "timeout": "soon"}, "Timeout"),
    ({"ttl": "forever", "name": "c"}, "TTL"),
    ({"ttl": "1s", "name": "c", "status": "ok"}, "Status"),
    ({"tcp": "no-port", "name": "c", "interval": "1s"}, "TCP"),
    ({"http": "ftp://x/", "name": "c", "interval": "1s"}, "HTTP"),
    ({"http": "http://x/", "name": "c", "interval": "1s", "header": ["x"]}, "Header"),
    ({"http": "http://x/", "name": "c", "interval": "1s", "header": {"A": [1]}}, "Header.A"),
    ({"ttl": "1s", "name": 5}, "Name"),
    ({"ttl": "1s", "name": "c", "SuccessBeforePassing": -1}, "SuccessBeforePassing"),
    ({"ttl": "1s", "name": "c", "FailuresBeforeCritical": "3"}, "FailuresBeforeCritical"),
    ({"ttl": "1s", "name": "c", "FailuresBeforeWarning": True}, "FailuresBeforeWarning"),
    ({"ttl": "1s", "name": "c", "DeregisterCriticalServiceAfter": "x"}, "DeregisterCriticalServiceAfter"),
    ({"args": "/bin/true", "name": "c", "interval": "1s"}, "Args"),
    ({"ttl": "1s", "name": "c", "Notes": 3}, "Notes"),
])
def test_errors_name_the_field(obj: dict, field: str) -> None:
    with pytest.raises(DefinitionError) as info:
        from_api(obj, allow_scripts=True)
    assert str(info.value).startswith(field), str(info.value)


def test_exactly_one_kind() -> None:
    with pytest.raises(DefinitionError, match="exactly one"):
        from_api({"name": "c"})
    with pytest.raises(DefinitionError, match="http, ttl"):
        from_api({"name": "c", "ttl": "1s", "http": "http://x/", "interval": "1s"})
    with pytest.raises(DefinitionError, match="Name or an ID"):
        from_api({"ttl": "1s"})
    with pytest.raises(DefinitionError, match="object"):
        from_api(["ttl"])  # type: ignore[arg-type]
    # alias checks: both alias keys are one kind
    d = from_api({"name": "a", "AliasService": "web", "alias_node": "n1"})
    assert (d.kind, d.alias_service, d.alias_node) == ("alias", "web", "n1")


def test_warning_results_count_as_successes_for_the_thresholds() -> None:
    """Consul's rule: warning counts toward success_before_passing and resets the failure count."""
    sm = StatusMachine(status="critical", success_before_passing=2, failures_before_critical=2)
    assert not sm.record("warning", "slow") or sm.status == "critical"
    assert sm.status == "critical"  # one success is not enough
    sm.record("warning", "slow")
    assert sm.status == "warning"
    sm.record("critical", "down")  # one failure below the threshold: status holds
    assert sm.status == "warning" and sm.output == "down"
    sm.record("warning", "slow")  # resets the failure count
    sm.record("critical", "down")
    assert sm.status == "warning"
    sm.record("critical", "down")
    assert sm.status == "critical"


def test_short_intervals_are_raised_to_one_second() -> None:
    assert from_api({"name": "t", "tcp": "localhost:22", "interval": 10}).interval == 1.0  # 10 ns, as py-consul sends
    assert from_api({"name": "t", "http": "http://x/", "interval": "100ms"}).interval == 1.0
    assert from_api({"name": "t", "http": "http://x/", "interval": "100ms"}).interval_text == "100ms"
    assert from_api({"name": "t", "tcp": "localhost:22", "interval": "3s"}).interval == 3.0  # control


def test_alias_status() -> None:
    from murmur.checks.alias import alias_status

    node = [("serfHealth", "", "passing"), ("service:web", "web", "passing"), ("service:db", "db", "critical")]
    assert alias_status(node, "web") == ("passing", "All checks passing.")
    assert alias_status(node, "db")[0] == "critical" and "service:db" in alias_status(node, "db")[1]
    assert alias_status(node, "") == ("passing", "All checks passing.")  # the node alone: node checks only
    assert alias_status([*node, ("disk", "", "warning")], "web")[0] == "warning"  # node checks count
    assert alias_status([*node, ("serfHealth", "", "critical")], "web")[0] == "critical"
    assert alias_status([], "web") == ("passing", "No checks found.")
    assert alias_status([("me", "web", "critical")], "web", own_id="me") == ("passing", "No checks found.")
