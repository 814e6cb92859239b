"""deregister_critical_service_after on a real agent: a service whose check stays critical goes
after the minimum minute (plus up to one 30 s reaper pass); its healthy twin stays. Slow: ~90 s."""

from __future__ import annotations

import time

import pytest
from support.procs import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_critical_service_is_deregistered_after_its_timeout(start_agent) -> None:  # type: ignore[no-untyped-def]
    agent = start_agent()
    for sid, dcsa in (("doomed", "1m"), ("kept", "")):
        chk = {"TTL": "1h", "Status": "critical"}
        if dcsa:
            chk["DeregisterCriticalServiceAfter"] = dcsa
        assert agent.put("/v1/agent/service/register", json={"Name": sid, "ID": sid, "Check": chk}).status_code == 200
    t0 = time.monotonic()
    wait_for(lambda: "doomed" not in agent.get("/v1/agent/services").json(), 60 + 30 + 60, interval=1,
             what="doomed deregistered by the reaper")
    took = time.monotonic() - t0
    assert took >= 59, took  # never before its minute
    assert "kept" in agent.get("/v1/agent/services").json()  # critical as long, no deregister_after
    wait_for(lambda: "doomed" not in agent.get("/v1/catalog/services").json(), 30, what="gone from the catalog")
