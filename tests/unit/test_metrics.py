"""agent/metrics.py: aggregates, the JSON shape, and Prometheus text that prometheus_client parses."""

from __future__ import annotations

import math

from murmur.agent.metrics import Metrics, prom_name
from prometheus_client.parser import text_string_to_metric_families


def test_json_aggregates_and_prometheus_text() -> None:
    t = [100.0]
    m = Metrics(clock=lambda: t[0])
    for ms in (1.0, 3.0, 800.0):
        m.observe_ms("consul.api.http", ms, {"method": "GET", "path": "v1_agent_self"})
    m.incr("murmur.things", 2)
    m.incr("murmur.things", 4)
    m.gauges(lambda: [("consul.state.nodes", {}, 3)])
    m.counts(lambda: [("consul.memberlist.msg.suspect", {}, 5)])
    t[0] = 110.0
    js = m.as_json(wall=0.0)
    assert js["Timestamp"] == "1970-01-01 00:00:00 +0000 UTC"
    assert js["Points"] == [] and js["Gauges"] == [{"Name": "consul.state.nodes", "Value": 3.0, "Labels": {}}]
    s = js["Samples"][0]
    assert (s["Count"], s["Sum"], s["Min"], s["Max"]) == (3, 804.0, 1.0, 800.0)
    assert math.isclose(s["Mean"], 268.0) and math.isclose(s["Rate"], 80.4)
    assert math.isclose(s["Stddev"], math.sqrt((1 + 9 + 640000) / 3 - 268.0 ** 2))
    counters = {c["Name"]: c for c in js["Counters"]}
    assert (counters["murmur.things"]["Count"], counters["murmur.things"]["Sum"]) == (2, 6.0)
    assert counters["consul.memberlist.msg.suspect"]["Sum"] == 5.0

    samples = {}
    types = {}
    for fam in text_string_to_metric_families(m.as_prometheus().decode()):
        types[fam.name] = fam.type
        for smp in fam.samples:
            samples[(smp.name, tuple(sorted(smp.labels.items())))] = smp.value
    lbl = (("method", "GET"), ("path", "v1_agent_self"))
    assert samples[("consul_api_http_count", lbl)] == 3
    assert samples[("consul_api_http_sum", lbl)] == 804.0
    assert samples[("consul_api_http_bucket", (("le", "1.0"), *lbl))] == 1
    assert samples[("consul_api_http_bucket", (("le", "5.0"), *lbl))] == 2
    assert samples[("consul_api_http_bucket", (("le", "+Inf"), *lbl))] == 3
    assert types["consul_api_http"] == "histogram" and types["consul_state_nodes"] == "gauge"
    assert samples[("consul_memberlist_msg_suspect", ())] == 5  # Consul's bare name, no _total
    assert samples[("murmur_things", ())] == 6


def test_prom_name() -> None:
    assert prom_name("consul.raft.commitTime") == "consul_raft_commitTime"


def test_fold_matches_add() -> None:
    import random

    from murmur.agent.metrics import Aggregate

    rng = random.Random(3)
    vals = [rng.expovariate(1 / 3) for _ in range(5000)] + [0.05, 0.1, 1.0, 30000.0, 50000.0]
    one, batch = Aggregate(), Aggregate()
    for v in vals:
        one.add(v, True)
    batch.pending.extend(vals[:2000])
    batch.fold()
    batch.pending.extend(vals[2000:])
    batch.fold()
    assert (one.count, one.min, one.max, one.buckets) == (batch.count, batch.min, batch.max, batch.buckets)
    assert math.isclose(one.sum, batch.sum) and math.isclose(one.sumsq, batch.sumsq)
