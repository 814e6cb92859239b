"""User events and queries across 20 real agents on loopback (local() gossip preset).

One cluster for the module (starting 20 Python processes is most of the cost): an event fired
with PUT /v1/event/fire on one agent shows up in GET /v1/event/list on all 20, a blocking list
wakes on the next event, service filters are applied by the receivers, oversized events are a
413; a _murmur_ping query collects an answer from all 20 within Serf's default timeout, and a
node-filtered one (through the CLI) only from the listed nodes. Every loop is bounded in count
and time; wall-clock bounds carry 10x slack.
"""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from murmur.gossip.config import GossipConfig
from murmur.gossip.membership import USER_MIN_TRANSMITS
from murmur.gossip.userevents import EVENT_SIZE_LIMIT, default_query_timeout
from support.procs import MURMUR, ROOT, AgentProc, wait_for

pytestmark = pytest.mark.e2e

LOCAL = GossipConfig.local()
N = 20
SLACK = 10
QUERY_TIMEOUT = default_query_timeout(LOCAL, N)  # 0.1 s * 16 * ceil(log10 21) = 3.2 s
# An event is gossiped max(retransmit_limit(N), USER_MIN_TRANSMITS) times per member, gossip_nodes at a time, each
# gossip_interval: everyone has it well within 12 intervals (1.2 s here), and 10x that is our bound.
SPREAD = max(LOCAL.retransmit_limit(N), USER_MIN_TRANSMITS) * LOCAL.gossip_interval


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[AgentProc]]:
    tmp = tmp_path_factory.mktemp("events")
    conf = tmp / "conf"
    conf.mkdir()
    (conf / "gossip.toml").write_text('[gossip_lan]\npreset = "local"\n')
    agents = [AgentProc(tmp, [conf], node="n0", dev=False)]
    try:
        agents[0].start()
        seed = f"127.0.0.1:{agents[0].serf_port}"
        for i in range(1, N):  # launched together, then waited for: a sequential start takes too long
            agents.append(AgentProc(tmp, [conf], ["--join", seed], node=f"n{i}", dev=False).launch())
        for a in agents[1:]:
            a.wait_ready(120)  # 20 interpreters starting at once on 2 shared cores
        names = {a.node for a in agents}

        def all_alive() -> bool:
            for a in agents:
                ms = a.get("/v1/agent/members").json()
                if {m["Name"] for m in ms if m["Status"] == 1} != names:
                    return False
            return True

        wait_for(all_alive, 120, interval=0.2, what="20 agents each listing 20 alive members")
        yield agents
    finally:
        for a in agents:  # SIGTERM all first (each leaves the cluster), then wait for each by PID
            if a.proc is not None and a.proc.poll() is None:
                a.proc.send_signal(signal.SIGTERM)
        for a in agents:
            a.stop()


def event_ids(a: AgentProc, name: str | None = None) -> list[str]:
    r = a.get("/v1/event/list", params={"name": name} if name else None)
    r.raise_for_status()
    return [e["ID"] for e in r.json()]


def test_fired_event_appears_in_every_agents_list(cluster: list[AgentProc]) -> None:
    origin = cluster[3]
    r = origin.put("/v1/event/fire/deploy", content=b"v1.2.3")
    assert r.status_code == 200, r.text
    ev = r.json()
    assert set(ev) == {"ID", "Name", "Payload", "NodeFilter", "ServiceFilter", "TagFilter", "Version", "LTime"}
    assert ev["Name"] == "deploy" and base64.b64decode(ev["Payload"]) == b"v1.2.3" and ev["Version"] == 1
    t0 = time.monotonic()
    wait_for(lambda: all(ev["ID"] in event_ids(a) for a in cluster), SLACK * SPREAD + 5, interval=0.1,
             what="the event in all 20 lists")
    print(f"event in all {N} lists after {time.monotonic() - t0:.2f}s")
    for a in cluster:
        listed = [e for e in a.get("/v1/event/list", params={"name": "deploy"}).json() if e["ID"] == ev["ID"]]
        assert len(listed) == 1, a.node  # once, although every member gossiped it several times
        assert listed[0]["Payload"] == ev["Payload"] and listed[0]["LTime"] == ev["LTime"]
    assert event_ids(cluster[0], "no-such-event") == []


def test_blocking_list_wakes_on_the_next_event(cluster: list[AgentProc]) -> None:
    watcher = cluster[11]
    first = watcher.get("/v1/event/list")
    index = first.headers["X-Consul-Index"]
    got: dict[str, httpx.Response] = {}

    def block() -> None:
        got["r"] = httpx.get(watcher.url + "/v1/event/list", params={"index": index, "wait": "30s"}, timeout=60)

    t = threading.Thread(target=block)
    t.start()
    time.sleep(0.5)
    assert "r" not in got  # still blocked: nothing new yet
    out = subprocess.run([*MURMUR, "event", "-name", "restart", "-http-addr", cluster[17].url, "now"],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("Event ID: ")
    t0 = time.monotonic()
    t.join(SLACK * SPREAD + 10)
    assert not t.is_alive(), "blocking list did not wake"
    assert time.monotonic() - t0 < SLACK * SPREAD + 10
    r = got["r"]
    assert r.headers["X-Consul-Index"] != index
    assert r.json()[-1]["ID"] == out.stdout.split()[-1] and r.json()[-1]["Name"] == "restart"


def test_service_filter_is_applied_by_receivers(cluster: list[AgentProc]) -> None:
    web = [cluster[2], cluster[9]]
    for a in web:
        r = a.put("/v1/agent/service/register", json={"Name": "web", "Tags": ["blue"], "Port": 80})
        assert r.status_code == 200, r.text
    r = cluster[5].put("/v1/event/fire/reload", params={"service": "^web$", "tag": "^blue$"})
    assert r.status_code == 200, r.text
    eid = r.json()["ID"]
    wait_for(lambda: all(eid in event_ids(a) for a in web), SLACK * SPREAD + 5, what="event on the web nodes")
    # Let the event finish spreading (the window, with slack), then: nobody else kept it.
    marker = cluster[5].put("/v1/event/fire/marker").json()["ID"]
    wait_for(lambda: all(marker in event_ids(a) for a in cluster), SLACK * SPREAD + 5, what="marker everywhere")
    assert [a.node for a in cluster if eid in event_ids(a)] == [a.node for a in web]
    bad = cluster[5].put("/v1/event/fire/reload", params={"tag": "x"})
    assert bad.status_code == 400 and "service filter" in bad.text


def test_oversized_event_is_refused_with_413(cluster: list[AgentProc]) -> None:
    r = cluster[0].put("/v1/event/fire/big", content=b"x" * EVENT_SIZE_LIMIT)
    assert r.status_code == 413 and f"{EVENT_SIZE_LIMIT} bytes" in r.text
    ok = cluster[0].put("/v1/event/fire/big", content=b"x" * 300)  # positive control
    assert ok.status_code == 200, ok.text


def test_ping_query_collects_all_20_within_its_timeout(cluster: list[AgentProc]) -> None:
    t0 = time.monotonic()
    r = httpx.post(cluster[6].url + "/v1/internal/query/_murmur_ping", json={"RequestAck": True, "RelayFactor": 2},
                   timeout=SLACK * QUERY_TIMEOUT + 30)
    elapsed = time.monotonic() - t0
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["Timeout"] == pytest.approx(QUERY_TIMEOUT)
    names = sorted(a.node for a in cluster)
    assert sorted(x["From"] for x in body["Responses"]) == names
    assert all(base64.b64decode(x["Payload"]).decode() == x["From"] for x in body["Responses"])
    assert sorted(body["Acks"]) == names
    assert QUERY_TIMEOUT * 0.9 <= elapsed < SLACK * QUERY_TIMEOUT  # the API answers at the deadline


def test_node_filtered_query_through_the_cli(cluster: list[AgentProc]) -> None:
    out = subprocess.run([*MURMUR, "query", "-node", "n1", "-node", "n7", "-node", "n13", "-timeout", "2s",
                          "-relay-factor", "1", "-format", "json", "-http-addr", cluster[4].url, "_murmur_ping"],
                         capture_output=True, text=True, timeout=SLACK * 2 + 30, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    body = json.loads(out.stdout)
    assert body["Timeout"] == 2
    assert sorted(x["From"] for x in body["Responses"]) == ["n1", "n13", "n7"]
    assert sorted(body["Acks"]) == ["n1", "n13", "n7"]
    text = subprocess.run([*MURMUR, "query", "-tag", "role=^node$", "-timeout", "1s", "-http-addr", cluster[4].url,
                           "_murmur_ping"], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert text.returncode == 0, text.stderr
    assert f"Total Responses: {N}" in text.stdout  # every agent here is a client (role=node)
