"""KV, session and txn HTTP behaviour on a real `murmur agent --dev`: status codes for bad bodies,
blocking session reads, transactions' all-or-nothing answers, lock delays through both paths."""

from __future__ import annotations

import base64
import threading

import httpx
import pytest
from support.procs import AgentProc

pytestmark = pytest.mark.e2e


def b64(v: bytes) -> str:
    return base64.b64encode(v).decode()


def test_kv_session_and_txn_http(tmp_path, start_agent) -> None:  # type: ignore[no-untyped-def]
    a: AgentProc = start_agent()

    # KV: value size limit, 404 with an index, delete of a missing key.
    assert a.put("/v1/kv/big", content=b"x" * (512 * 1024)).json() is True
    assert a.put("/v1/kv/big", content=b"x" * (512 * 1024 + 1)).status_code == 413
    r = a.get("/v1/kv/nope")
    assert r.status_code == 404 and int(r.headers["X-Consul-Index"]) >= 1
    assert httpx.delete(a.url + "/v1/kv/nope", timeout=10).json() is True
    assert httpx.delete(a.url + "/v1/kv/", timeout=10).status_code == 400  # no key, no recurse

    # Session bodies: 400 for Consul's rules, 500 for a node that is not registered.
    for body in ({"TTL": "5s"}, {"TTL": "25h"}, {"LockDelay": "61s"}, {"Behavior": "keep"}, {"Checks": "x"}):
        assert a.put("/v1/session/create", json=body).status_code == 400, body
    assert a.put("/v1/session/create", json={"Node": "nope"}).status_code == 500
    assert a.put("/v1/session/renew/" + "1" * 36).status_code == 404

    # A blocking session list wakes on a create.
    r = a.get("/v1/session/list")
    index = int(r.headers["X-Consul-Index"])
    got: dict[str, httpx.Response] = {}
    t = threading.Thread(target=lambda: got.setdefault(
        "r", httpx.get(f"{a.url}/v1/session/list?index={index}&wait=60s", timeout=120)))
    t.start()
    s1 = a.put("/v1/session/create", json={"Name": "s1", "LockDelay": 30}).json()["ID"]  # 30: seconds
    t.join(timeout=60)
    assert [s["ID"] for s in got["r"].json()] == [s1] and int(got["r"].headers["X-Consul-Index"]) > index
    info = a.get(f"/v1/session/info/{s1}").json()[0]
    assert info["LockDelay"] == 30 * 10**9 and info["Behavior"] == "release" and info["TTL"] == ""

    # Lock, flags, LockIndex; invalidation starts the lock delay for both ?acquire and txn lock.
    assert a.put(f"/v1/kv/lk?acquire={s1}&flags=9", content=b"mine").json() is True
    e = a.get("/v1/kv/lk").json()[0]
    assert (e["Session"], e["LockIndex"], e["Flags"]) == (s1, 1, 9)
    s2 = a.put("/v1/session/create", json={"Name": "s2", "LockDelay": "0s"}).json()["ID"]
    assert a.put(f"/v1/session/destroy/{s1}").json() is True
    assert "Session" not in a.get("/v1/kv/lk").json()[0]
    assert a.put(f"/v1/kv/lk?acquire={s2}").json() is False
    r = a.put("/v1/txn", json=[{"KV": {"Verb": "lock", "Key": "lk", "Session": s2}}])
    assert r.status_code == 409 and r.json()["Errors"][0]["OpIndex"] == 0
    # Positive control: a session with no lock delay leaves its key free at once.
    s3 = a.put("/v1/session/create", json={"LockDelay": "0s"}).json()["ID"]
    assert a.put(f"/v1/kv/free?acquire={s3}").json() is True
    a.put(f"/v1/session/destroy/{s3}")
    r = a.put("/v1/txn", json=[{"KV": {"Verb": "lock", "Key": "free", "Session": s2}}])
    assert r.status_code == 200 and r.json()["Results"][0]["KV"]["LockIndex"] == 2

    # Transactions: all or nothing.
    r = a.put("/v1/txn", json=[{"KV": {"Verb": "set", "Key": "t/a", "Value": b64(b"1")}},
                               {"KV": {"Verb": "set", "Key": "t/b", "Value": b64(b"2"), "Flags": 4}}])
    assert r.status_code == 200 and r.json()["Errors"] is None
    assert [x["KV"]["Value"] for x in r.json()["Results"]] == [None, None]  # writes do not echo values
    mod = r.json()["Results"][0]["KV"]["ModifyIndex"]
    r = a.put("/v1/txn", json=[{"KV": {"Verb": "set", "Key": "t/c", "Value": b64(b"3")}},
                               {"KV": {"Verb": "cas", "Key": "t/a", "Value": b64(b"x"), "Index": mod - 1}},
                               {"KV": {"Verb": "check-not-exists", "Key": "t/b"}}])
    assert r.status_code == 409 and r.json()["Results"] is None
    assert [x["OpIndex"] for x in r.json()["Errors"]] == [1, 2]
    assert a.get("/v1/kv/t/c").status_code == 404  # rolled back
    r = a.put("/v1/txn", json=[{"KV": {"Verb": "get-tree", "Key": "t/"}}])
    assert int(r.headers["X-Consul-Index"]) >= mod  # a read-only txn is a read, with its headers
    assert [(x["KV"]["Key"], x["KV"]["Value"]) for x in r.json()["Results"]] == [("t/a", b64(b"1")),
                                                                                  ("t/b", b64(b"2"))]
    assert a.put("/v1/txn", json=[{"KV": {"Verb": "get", "Key": "k"}}] * 65).status_code == 413
    assert a.put("/v1/txn", json=[{"KV": {"Verb": "set", "Key": "k", "Value": "@@"}}]).status_code == 400
    assert a.put("/v1/txn", content=b"{not json").status_code == 400
