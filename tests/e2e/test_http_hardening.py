"""HTTP hardening on a real agent: body size limit, slowloris cut-off, per-client connection cap
(limits.http_max_body_bytes, http_read_timeout, http_max_conns_per_client). Each refusal is
logged, and each has its positive control in the same test."""

from __future__ import annotations

import socket
import time

import httpx
import pytest
from support.procs import AgentProc, wait_for

pytestmark = pytest.mark.e2e

READ_TIMEOUT = 2.0
SLACK = 10


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """One dev agent for the module (the tests leave it as they found it)."""
    tmp = tmp_path_factory.mktemp("hardening")
    conf = tmp / "conf"
    conf.mkdir()
    (conf / "limits.toml").write_text(f'[limits]\nhttp_read_timeout = "{READ_TIMEOUT:.0f}s"\n'
                                      "http_max_body_bytes = 4096\nhttp_max_conns_per_client = 5\n")
    a = AgentProc(tmp, [conf])
    a.start()
    yield a
    a.stop()


def test_oversized_body_is_refused(agent) -> None:  # type: ignore[no-untyped-def]
    assert agent.put("/v1/kv/ok", content=b"x" * 4000).status_code == 200  # positive control
    r = agent.put("/v1/kv/big", content=b"x" * 5000)
    assert r.status_code == 413
    assert agent.get("/v1/kv/big").status_code == 404  # nothing written
    assert agent.get("/v1/kv/ok?raw").content == b"x" * 4000
    wait_for(lambda: "refused a request from 127.0.0.1: body of 5000 bytes" in agent.logs(), 10, what="413 logged")


def test_slowloris_is_cut_off_and_others_are_served(agent) -> None:  # type: ignore[no-untyped-def]
    s = socket.create_connection(("127.0.0.1", agent.http_port), timeout=READ_TIMEOUT * SLACK)
    t0 = time.monotonic()
    head = b"GET /v1/agent/self HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 200
    got = b""
    try:
        for byte in head:  # one byte every 0.2 s: the head would take 50 s
            s.sendall(bytes([byte]))
            assert agent.get("/v1/status/leader").status_code == 200  # positive control, meanwhile
            s.settimeout(0.2)
            try:
                got = s.recv(4096)
            except TimeoutError:
                continue
            break
        else:
            pytest.fail("the slow client kept its connection for the whole head")
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        s.close()
    elapsed = time.monotonic() - t0
    assert got.startswith(b"HTTP/1.1 408"), got[:40]
    assert READ_TIMEOUT * 0.9 <= elapsed <= READ_TIMEOUT * SLACK, elapsed
    wait_for(lambda: "request head not received within 2s" in agent.logs(), 10, what="slowloris logged")


def test_connections_per_client_are_capped(agent) -> None:  # type: ignore[no-untyped-def]
    held = [socket.create_connection(("127.0.0.1", agent.http_port), timeout=10) for _ in range(5)]
    try:
        time.sleep(0.5)  # let the agent accept them all
        r = httpx.get(agent.url + "/v1/agent/self", timeout=10)
        assert r.status_code == 429
        held.pop().close()
        wait_for(lambda: httpx.get(agent.url + "/v1/status/leader", timeout=10).status_code == 200, 10,
                 what="a free slot again")  # positive control
    finally:
        for s in held:
            s.close()
    wait_for(lambda: "more than 5 concurrent connections" in agent.logs(), 10, what="429 logged")
