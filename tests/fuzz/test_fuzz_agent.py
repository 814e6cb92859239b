"""Fuzzing a real agent's network decoders: HTTP requests (the h11 server and every route's query
and body parsing), server RPC frames and Raft frames on the server port. One `murmur agent --dev`
on loopback takes every example.

Rules:
- HTTP: every request gets a well-formed HTTP response within the bound; none is the catch-all
  500 ("internal error", a handler that raised), and the agent log has no "handler failed".
- RPC: every frame gets a reply map carrying "v"; errors have a known kind and are never the
  endpoint's catch-all ("request failed: <exception>").
- Raft: frames that do not decode leave the Raft state alone (same term, same leader, still
  answering consistent reads).
- At the end the agent still runs and answers.

Routes that stop or reshape the agent (leave, reload, monitor's endless stream, Raft peer
removal and leadership transfer, join to arbitrary addresses, snapshot restore) are left out;
checks come only as TTL checks (no probe to an arbitrary address). Blocking reads are capped at
a few milliseconds of wait.
"""

from __future__ import annotations

import json
import re
import socket
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import msgpack
import pytest
from hypothesis import strategies as st
from murmur.agent.rpc.mux import RAFT, RPC
from murmur.raft import codec
from support.procs import AgentProc

from .fuzzing import EXAMPLE_TIMEOUT, INTERESTING, byte_mutations, fuzz, mutated, values
from .test_fuzz_raft import raft_frames
from .test_fuzz_store import VALID as COMMANDS

pytestmark = pytest.mark.e2e

_agent: AgentProc | None = None
_http = httpx.Client(timeout=5)  # one client: a new one per call costs ~50 ms (its SSL context)


@pytest.fixture(scope="module", autouse=True)
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProc]:
    global _agent
    tmp: Path = tmp_path_factory.mktemp("fuzz-agent")
    a = AgentProc(tmp, []).start()
    _agent = a
    try:
        yield a
        assert a.proc is not None and a.proc.poll() is None, "the agent died"
        assert a.get("/v1/status/leader").status_code == 200
        log = a.logs()
        assert "handler failed" not in log and "RPC request failed" not in log, log[-4000:]  # http, server port
    finally:
        a.stop()
        _agent = None


# ---- HTTP ------------------------------------------------------------------------------------------
PATHS = ["/", "/v1/agent/check/pass/c1", "/v1/agent/check/fail/c1", "/v1/agent/check/deregister/c1",
         "/v1/agent/check/register", "/v1/agent/check/update/c1", "/v1/agent/checks", "/v1/agent/force-leave/x",
         "/v1/agent/maintenance", "/v1/agent/members", "/v1/agent/metrics", "/v1/agent/self",
         "/v1/agent/service/s1", "/v1/agent/service/deregister/s1", "/v1/agent/service/maintenance/s1",
         "/v1/agent/service/register", "/v1/agent/services", "/v1/agent/token/default", "/v1/catalog/connect/web",
         "/v1/catalog/datacenters", "/v1/catalog/deregister", "/v1/catalog/node/e2e", "/v1/catalog/nodes",
         "/v1/catalog/register", "/v1/catalog/service/web", "/v1/catalog/services", "/v1/coordinate/datacenters",
         "/v1/coordinate/node/e2e", "/v1/coordinate/nodes", "/v1/coordinate/update", "/v1/event/fire/ev",
         "/v1/event/list", "/v1/health/checks/web", "/v1/health/connect/web", "/v1/health/ingress/web",
         "/v1/health/node/e2e", "/v1/health/service/web", "/v1/health/state/any", "/v1/health/state/critical",
         "/v1/kv/", "/v1/kv/a/b", "/v1/kv/fuzz/key", "/v1/operator/autopilot/configuration",
         "/v1/operator/autopilot/health", "/v1/operator/keyring", "/v1/operator/raft/configuration",
         "/v1/operator/usage", "/v1/session/create", "/v1/session/destroy/x", "/v1/session/info/x",
         "/v1/session/list", "/v1/session/node/e2e", "/v1/session/renew/x", "/v1/status/leader",
         "/v1/status/peers", "/v1/txn", "/v1/nope"]
EXCLUDED = re.compile(r"^/v1/(agent/(leave|reload|monitor|join)|operator/raft/(peer|transfer-leader)|snapshot"
                      r"|internal/)")
QUERY_KEYS = ["dc", "recurse", "keys", "separator", "cas", "flags", "acquire", "release", "raw", "stale", "consistent",
              "cached", "filter", "near", "node-meta", "tag", "passing", "pretty", "ns", "enable", "reason", "note",
              "name", "node", "service", "token", "replace-existing-checks", "prune", "wan", "segment", "ttl", "x"]
BODIES = [
    {"Name": "web", "ID": "s1", "Port": 80, "Tags": ["a"], "Meta": {"k": "v"}, "Check": {"TTL": "30s"},
     "Checks": [{"CheckID": "c1", "TTL": "10s", "Status": "passing"}], "Weights": {"Passing": 1, "Warning": 1}},
    {"Node": "n1", "Address": "127.0.0.2", "Service": {"Service": "web", "Port": 1},
     "Check": {"CheckID": "c", "Status": "passing"}, "NodeMeta": {"a": "b"}},
    {"Node": "n1", "ServiceID": "web", "CheckID": "c"},
    [{"KV": {"Verb": "set", "Key": "t/a", "Value": "eA=="}}, {"KV": {"Verb": "get", "Key": "t/a"}},
     {"KV": {"Verb": "cas", "Key": "t/a", "Index": 1, "Value": ""}}],
    {"Name": "s", "TTL": "10s", "Behavior": "delete", "LockDelay": "1s", "Node": "e2e", "Checks": ["serfHealth"]},
    {"ID": "c1", "Name": "c", "TTL": "5s", "ServiceID": "s1"},
    {"Status": "passing", "Output": "ok"},
    {"CleanupDeadServers": True, "MaxTrailingLogs": 250, "LastContactThreshold": "200ms"},
    {"Node": "n1", "Coord": {"Vec": [0.1, 0.2], "Error": 1.5, "Adjustment": 0, "Height": 1e-5}},
]
text_values = st.one_of(st.text(max_size=10), st.sampled_from(INTERESTING), st.sampled_from(["", "0", "1", "-1", "true", "18446744073709551616",
                                                             "1s", "abc", "%zz", "[", "Service.Name == web"]))


@st.composite
def http_requests(draw: st.DrawFn) -> bytes:
    if draw(st.integers(0, 9)) == 0:  # bytes that may not be HTTP at all
        return draw(st.one_of(st.binary(max_size=200), st.binary(max_size=80).map(lambda b: b"GET / HTTP/1.1\r\n" + b)))
    method = draw(st.sampled_from(["GET", "PUT", "POST", "DELETE", "HEAD", "PATCH", "OPTIONS", "get", "X"]))
    path = draw(st.sampled_from(PATHS))
    if draw(st.booleans()):
        path += "/" + quote(draw(st.text(max_size=12)), safe="/%")
    if draw(st.integers(0, 7)) == 0:  # a raw target: absolute forms, brackets, odd characters
        path = draw(st.sampled_from(["//", "http://", "//[", "http://[::1", "*", "/v1/kv/%", "/%zz", ""]))
        path += draw(st.text(alphabet="/[]:@%?#&=.abc019", max_size=12))
    if EXCLUDED.match(path) or "leave" in path or "snapshot" in path:
        path = "/v1/kv/excluded"
    params = draw(st.lists(st.tuples(st.sampled_from(QUERY_KEYS), text_values), max_size=4))
    if draw(st.integers(0, 4)) == 0:  # a blocking read, bounded
        params += [("index", draw(st.sampled_from(["1", "0", "99999999", "-1", "x"]))),
                   ("wait", draw(st.sampled_from(["5ms", "1" + "0" * 400 + "h", "1e400s", "x", "-5ms", ""])))]
    query = "&".join(f"{quote(k)}={quote(v)}" if v else quote(k) for k, v in params)
    target = path + ("?" + query if query else "")
    kind = draw(st.integers(0, 3))
    if kind == 0:
        body = b""
    elif kind == 1:
        body = json.dumps(draw(st.sampled_from(BODIES).flatmap(mutated)), default=repr).encode()
    elif kind == 2:
        body = json.dumps(draw(values), default=repr).encode()
    else:
        body = draw(st.binary(max_size=60))
    headers = [("Host", "127.0.0.1"), ("Connection", "close")]
    length = len(body)
    if draw(st.integers(0, 9)) == 0:
        length = draw(st.sampled_from([0, max(0, length - 1), length + 5]))  # a lying Content-Length
    headers.append(("Content-Length", str(length)))
    if draw(st.integers(0, 5)) == 0:
        headers.append((draw(st.sampled_from(["X-Consul-Token", "Transfer-Encoding", "Expect", "Content-Type",
                                              "Cache-Control", "X-\x7f"])), draw(st.text(max_size=12))))
    head = f"{method} {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
    return head.encode("utf-8", "surrogatepass") + body


def _exchange(port: int, data: bytes, first: bytes = b"") -> bytes:
    """Send, half-close, and read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=EXAMPLE_TIMEOUT) as s:
        s.sendall(first + data)
        s.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
            if len(out) > 4 << 20:
                break
        return out


@fuzz(http_requests())
def test_fuzz_http_requests(raw: bytes) -> None:
    assert _agent is not None
    resp = _exchange(_agent.http_port, raw)
    if not resp:
        return  # the server may close on bytes that are not a request at all
    m = re.match(rb"HTTP/1\.[01] (\d{3}) ", resp)
    assert m, resp[:200]
    status = int(m.group(1))
    assert not (status == 500 and b"internal error" in resp), (raw, resp[:500])


# ---- server RPC ------------------------------------------------------------------------------------
def _cap_wait(req: Any) -> Any:
    if isinstance(req, dict) and "wait" in req and not (isinstance(req["wait"], (int, float)) and req["wait"] <= 0.01):
        req["wait"] = 0.005
    return req


READ_REQS = [{"v": 1, "op": "read", "name": n, "args": a, "mode": m, "index": 0, "wait": 0}
             for n, a, m in [("kv.get", {"key": "a/b"}, "default"), ("kv.get", {"key": "a/", "recurse": True}, "stale"),
                             ("catalog.service", {"name": "web", "tags": ["a"]}, "consistent"),
                             ("health.service", {"name": "web", "passing": True}, "default"),
                             ("catalog.node", {"node": "e2e"}, "default"), ("health.state", {"state": "any"}, "stale"),
                             ("txn.read", {"ops": [{"verb": "get", "key": "a"}]}, "default"),
                             ("session.info", {"id": "x"}, "default"), ("dns.slice", {"name": "web"}, "stale"),
                             ("node.slice", {"node": "e2e"}, "stale"), ("status.leader", {}, "default"),
                             ("session.lock_delay", {"key": "k"}, "default")]]
RPC_REQS = [*READ_REQS, {"v": 1, "op": "status"},
            *({"v": 1, "op": "apply", "d": c, "rid": "r1", "hops": 0} for c in COMMANDS if c[0] != 6),  # no RESTORE
            {"v": 1, "op": "operator", "action": "health", "args": {}, "hops": 1}]
KINDS = {"not_leader", "no_leader", "unknown_outcome", "bad_request", "bad_version", "unknown_op", "operator"}

rpc_payloads = st.one_of(
    st.binary(max_size=100),
    values.map(lambda v: bytes(msgpack.packb(v))),
    st.sampled_from(RPC_REQS).flatmap(mutated).map(_cap_wait).map(lambda v: bytes(msgpack.packb(v))),
    st.sampled_from(RPC_REQS).map(lambda v: bytes(msgpack.packb(v))).flatmap(byte_mutations).filter(
        lambda b: b"wait" not in b),
)


@fuzz(st.lists(rpc_payloads, min_size=1, max_size=3))
def test_fuzz_server_rpc_frames(payloads: list[bytes]) -> None:
    """Frames on one connection, kept open until every reply came (a peer that closes early
    legitimately cancels a read it was waiting for)."""
    assert _agent is not None
    replies = []
    with socket.create_connection(("127.0.0.1", _agent.server_port), timeout=EXAMPLE_TIMEOUT) as s:
        s.sendall(bytes([RPC]) + b"".join(struct.pack("!I", len(p)) + p for p in payloads))
        buf = b""
        while len(replies) < len(payloads):
            chunk = s.recv(65536)
            assert chunk, f"connection closed after {len(replies)} replies: {payloads!r}"
            buf += chunk
            while len(buf) >= 4 and len(buf) >= 4 + struct.unpack("!I", buf[:4])[0]:
                (n,) = struct.unpack("!I", buf[:4])
                replies.append(msgpack.unpackb(buf[4:4 + n], raw=False, strict_map_key=False))
                buf = buf[4 + n:]
    for r in replies:
        assert isinstance(r, dict) and "v" in r, r
        if "err" in r:
            assert r.get("kind") in KINDS and not str(r["err"]).startswith("request failed"), (payloads, r)


def _raft_state() -> tuple[Any, Any]:
    assert _agent is not None
    conf = _http.get(_agent.url + "/v1/operator/raft/configuration").json()
    leader = _http.get(_agent.url + "/v1/status/leader").json()
    return leader, [(s["ID"], s["Leader"], s["Voter"]) for s in conf["Servers"]]


@fuzz(st.lists(raft_frames.filter(lambda f: _undecodable(f)), min_size=1, max_size=3))
def test_fuzz_raft_port_drops_bad_frames(frames: list[bytes]) -> None:
    assert _agent is not None
    before = _raft_state()
    stream = b"".join(struct.pack("!I", len(f)) + f for f in frames)
    _exchange(_agent.server_port, stream, bytes([RAFT]))
    assert _raft_state() == before
    assert _http.get(_agent.url + "/v1/kv/fuzz-probe?consistent").status_code in (200, 404)


def _undecodable(frame: bytes) -> bool:
    try:
        codec.decode_message(frame)
    except codec.CodecError:
        return True
    return False
