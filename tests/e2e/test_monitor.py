"""GET /v1/agent/monitor and `murmur monitor` against a real agent: a bad level is a 400, lines
stream as they are logged (debug ones too, from an agent logging at info, whose own log stays at
info), and JSON lines with logjson."""

from __future__ import annotations

import json
import subprocess
import threading
import time

import httpx
import pytest
from support.procs import MURMUR, ROOT, wait_for

pytestmark = pytest.mark.e2e


def test_monitor_streams_logs(tmp_path, start_agent) -> None:  # type: ignore[no-untyped-def]
    agent = start_agent(extra=["--log-level", "info"])
    r = agent.get("/v1/agent/monitor?loglevel=not-a-real-level")
    assert r.status_code == 400 and "Unknown log level" in r.text

    proc = subprocess.Popen([*MURMUR, "monitor", "-log-level", "debug", "-http-addr", agent.url],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    lines: list[str] = []

    def reader() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    try:
        n = 0

        def seen_event() -> bool:  # fire until the stream shows one (the CLI needs a moment to connect)
            nonlocal n
            n += 1
            assert agent.put(f"/v1/event/fire/probe{n}").status_code == 200
            return any("user event probe" in ln for ln in lines)

        wait_for(seen_event, 60, interval=0.3, what="a debug line in murmur monitor's output")
        assert agent.put("/v1/agent/maintenance?enable=true&reason=monitor-test").status_code == 200
        wait_for(lambda: any("node entered maintenance mode: monitor-test" in ln for ln in lines), 30,
                 what="an info line in the stream")
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    own = agent.logs()
    assert "node entered maintenance mode: monitor-test" in own  # positive control: info reaches stderr
    assert "user event probe" not in own  # the monitor's debug level did not leak into the agent's log

    # JSON lines, over a raw HTTP stream.
    got: list[dict[str, str]] = []
    with httpx.stream("GET", agent.url + "/v1/agent/monitor?loglevel=info&logjson=true",
                      timeout=httpx.Timeout(10.0, read=30.0)) as resp:
        assert resp.status_code == 200
        assert resp.headers.get("transfer-encoding") == "chunked"
        time.sleep(0.2)
        assert agent.put("/v1/agent/maintenance?enable=false").status_code == 200
        for line in resp.iter_lines():
            if line.strip():
                got.append(json.loads(line))
            if any(g["@message"] == "node left maintenance mode" for g in got):
                break
    rec = next(g for g in got if g["@message"] == "node left maintenance mode")
    assert rec["@level"] == "info" and rec["@module"] == "murmur.maintenance" and rec["@timestamp"].endswith("Z")
    # The agent is still fine after its stream clients went away.
    wait_for(lambda: agent.get("/v1/agent/self").status_code == 200, 10, what="agent still answering")
