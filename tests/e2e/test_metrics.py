"""/v1/agent/metrics against real agents: each named metric moves by what the test did to it.

Agent A is a --dev server with the local() gossip preset, agent B a client that joins it. The test
sends N DNS queries and M HTTP requests to A, registers a service, makes a check fail and B
suspected (SIGSTOP), and reads A's Prometheus text with prometheus_client's parser."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import dns.message
import dns.query
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.procs import wait_for

pytestmark = pytest.mark.e2e

Sample = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(agent) -> Sample:  # type: ignore[no-untyped-def]
    r = agent.get("/v1/agent/metrics?format=prometheus")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    out: Sample = {}
    for fam in text_string_to_metric_families(r.text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def val(s: Sample, name: str, **labels: str) -> float:
    return s.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_move_by_what_was_done(tmp_path: Path, start_agent) -> None:  # type: ignore[no-untyped-def]
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "gossip.toml").write_text('[gossip_lan]\npreset = "local"\n')
    a = start_agent(conf, node="a")
    b = start_agent(conf, node="b", dev=False, extra=["--join", f"127.0.0.1:{a.serf_port}"])
    wait_for(lambda: val(scrape(a), "consul_memberlist_node_instances", network="lan", node_state="alive") == 2,
             30, what="a sees 2 alive members")

    # JSON shape, as Consul's.
    js = a.get("/v1/agent/metrics").json()
    assert set(js) == {"Timestamp", "Gauges", "Points", "Counters", "Samples"}
    assert {"Name", "Value", "Labels"} <= set(js["Gauges"][0])
    assert {"Name", "Count", "Rate", "Sum", "Min", "Max", "Mean", "Stddev", "Labels"} <= set(js["Samples"][0])
    assert a.get("/v1/agent/metrics?format=xml").status_code == 400

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    before = scrape(a)

    # N DNS queries, M HTTP requests.
    n_dns, m_http = 7, 5
    for _ in range(n_dns):
        dns.query.udp(dns.message.make_query("consul.service.murmur", "A"), "127.0.0.1", port=a.dns_port, timeout=5)
    for _ in range(m_http):
        assert a.get("/v1/agent/self").status_code == 200
    # A service with a TCP check that passes, then fails.
    reg = {"Name": "db", "Port": port, "Check": {"TCP": f"127.0.0.1:{port}", "Interval": "1s", "Status": "passing"}}
    assert a.put("/v1/agent/service/register", json=reg).status_code == 200
    wait_for(lambda: val(scrape(a), "murmur_check_results", type="tcp", status="passing") >= 1, 30,
             what="the tcp check ran and passed")
    listener.close()
    wait_for(lambda: val(scrape(a), "murmur_checks", status="critical") == val(before, "murmur_checks",
                                                                                 status="critical") + 1,
             30, what="the tcp check critical")

    # A suspicion: stop b until a suspects it, then let it refute.
    assert b.proc is not None
    os.kill(b.proc.pid, signal.SIGSTOP)
    try:
        wait_for(lambda: val(scrape(a), "consul_memberlist_node_instances", network="lan", node_state="suspect") == 1,
                 30, interval=0.05, what="a suspects b")
    finally:
        os.kill(b.proc.pid, signal.SIGCONT)
    wait_for(lambda: val(scrape(a), "consul_memberlist_node_instances", network="lan", node_state="alive") == 2,
             30, what="b refuted, alive again")
    time.sleep(0.5)
    after = scrape(a)

    def delta(name: str, **labels: str) -> float:
        return val(after, name, **labels) - val(before, name, **labels)

    assert delta("consul_dns_domain_query_count", node="a") == n_dns
    assert delta("consul_api_http_count", method="GET", path="v1_agent_self") == m_http
    assert delta("consul_api_http_count", method="PUT", path="v1_agent_service_register") == 1
    assert delta("consul_memberlist_msg_suspect") == 1
    assert delta("consul_memberlist_msg_dead") == 0
    assert delta("murmur_memberlist_probes_failed") >= 1
    assert delta("consul_memberlist_probeNode_count") >= 2
    assert delta("murmur_checks", status="critical") == 1
    assert delta("murmur_checks", status="passing") == 0  # registered passing, now critical: net 0 passing
    assert delta("murmur_check_results", type="tcp", status="critical") >= 1
    assert delta("murmur_check_run_count", type="tcp") == (
        delta("murmur_check_results", type="tcp", status="critical")
        + delta("murmur_check_results", type="tcp", status="passing"))
    assert delta("consul_state_services") == 1 and delta("consul_state_service_instances") == 1
    applied = delta("consul_raft_apply")
    assert applied >= 1  # the registration and the check's status changes went through Raft
    assert delta("consul_raft_commitTime_count") == applied
    assert delta("consul_raft_fsm_apply_count") >= applied
    assert val(after, "consul_server_isLeader") == 1 and val(after, "consul_raft_state_leader") == 1
    # The histogram's buckets add up to its count.
    assert val(after, "consul_dns_domain_query_bucket", node="a", le="+Inf") == val(
        after, "consul_dns_domain_query_count", node="a")
