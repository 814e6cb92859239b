"""Alias checks on a real agent: following a local service, and another node through the catalog."""

from __future__ import annotations

import pytest
from support.procs import wait_for

pytestmark = pytest.mark.e2e


def check(agent, cid: str) -> dict:  # type: ignore[no-untyped-def]
    return agent.get("/v1/agent/checks").json()[cid]


def test_alias_follows_a_local_service_and_a_remote_node(start_agent) -> None:  # type: ignore[no-untyped-def]
    agent = start_agent()
    put = agent.put
    assert put("/v1/agent/service/register", json={"Name": "web", "ID": "web",
                                                   "Check": {"TTL": "1h", "Status": "passing"}}).status_code == 200
    assert put("/v1/agent/service/register", json={"Name": "proxy", "ID": "proxy",
                                                   "Check": {"AliasService": "web"}}).status_code == 200
    wait_for(lambda: check(agent, "service:proxy")["Status"] == "passing", 30, what="alias passing")
    passing = lambda: [e["Service"]["ID"] for e in agent.get("/v1/health/service/proxy?passing").json()]  # noqa: E731
    wait_for(lambda: passing() == ["proxy"], 30, what="proxy passing in the catalog")
    assert put("/v1/agent/check/fail/service:web?note=down").status_code == 200
    wait_for(lambda: check(agent, "service:proxy")["Status"] == "critical", 30, what="alias follows web to critical")
    assert "service:web" in check(agent, "service:proxy")["Output"]
    wait_for(lambda: passing() == [], 30, what="proxy dropped from ?passing")
    assert put("/v1/agent/check/pass/service:web").status_code == 200
    wait_for(lambda: check(agent, "service:proxy")["Status"] == "passing", 30, what="alias back to passing")

    # Another node, known only to the catalog: the alias reads it with blocking queries.
    reg = {"Node": "ext", "Address": "127.0.0.99", "Service": {"Service": "ext-svc", "ID": "ext-svc"},
           "Check": {"CheckID": "ext-check", "Name": "ext", "ServiceID": "ext-svc", "Status": "critical"}}
    assert put("/v1/catalog/register", json=reg).status_code == 200
    assert put("/v1/agent/check/register", json={"Name": "follow-ext", "AliasNode": "ext",
                                                 "AliasService": "ext-svc"}).status_code == 200
    wait_for(lambda: check(agent, "follow-ext")["Status"] == "critical"
             and "ext-check" in check(agent, "follow-ext")["Output"], 30, what="remote alias critical")
    reg["Check"]["Status"] = "passing"
    assert put("/v1/catalog/register", json=reg).status_code == 200
    wait_for(lambda: check(agent, "follow-ext")["Status"] == "passing", 30, what="remote alias follows to passing")
    assert put("/v1/agent/check/register", json={"Name": "ghost", "AliasNode": "nope"}).status_code == 200
    wait_for(lambda: check(agent, "ghost")["Output"] == "Node 'nope' not found", 30, what="unknown node: says so")
    assert check(agent, "ghost")["Status"] == "critical"
