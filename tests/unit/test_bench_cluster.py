"""bench/cluster.py pieces that need no processes: the requests both sides get, which answers
count, phase names, the summary (sums for errors, failed runs left out), the targets and the
per-round pairs."""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root holds bench/

from bench import cluster as c  # noqa: E402


def test_both_sides_write_the_same_key_and_value() -> None:
    m, path, body, _ = c.make_request("ours", "put", 12)
    assert (m, path, body) == ("PUT", "/v1/kv/bench/k0000012", b"v" * c.VALUE_SIZE)
    m, path, body, hdrs = c.make_request("peer", "put", 12)
    doc = json.loads(body or b"")
    assert (m, path, hdrs["Content-Type"]) == ("POST", "/v3/kv/put", "application/json")
    assert base64.b64decode(doc["key"]) == b"bench/k0000012" and base64.b64decode(doc["value"]) == b"v" * 256
    m, path, body, _ = c.make_request("ours", "get-lin", 99)
    assert (m, path, body) == ("GET", "/v1/kv/bench/k0000001?consistent", None)
    m, path, body, _ = c.make_request("peer", "get-lin", 99)
    assert path == "/v3/kv/range" and base64.b64decode(json.loads(body or b"")["key"]) == b"bench/k0000001"
    assert "serializable" not in json.loads(body or b"")  # etcd's default range is linearizable


def test_only_real_successes_count() -> None:
    assert c.answer_ok("ours", "put", 200, b"true")
    assert not c.answer_ok("ours", "put", 200, b"false")
    assert not c.answer_ok("ours", "put", 500, b"No cluster leader")
    assert c.answer_ok("peer", "put", 200, b'{"header":{}}')
    assert not c.answer_ok("peer", "put", 503, b"")
    assert c.answer_ok("peer", "get-lin", 200, b'{"header":{},"kvs":[{}],"count":"1"}')
    assert not c.answer_ok("peer", "get-lin", 200, b'{"header":{}}')  # the key is missing
    assert c.phase_kind("put-16") == ("put", 16) and c.phase_kind("get-lin-1") == ("get-lin", 1)


def run(side: str, case: str, rnd: int, **m: Any) -> dict[str, Any]:
    return {"side": side, "case": case, "round": rnd, **m}


def test_summary_targets_and_pairs() -> None:
    results = [
        run("ours", "put-1", 0, p50_ms=6.0, errors=1), run("peer", "put-1", 0, p50_ms=2.0, errors=0),
        run("ours", "put-1", 1, p50_ms=2.0, errors=2), run("peer", "put-1", 1, p50_ms=2.0, errors=0),
        run("ours", "put-16", 0, ops_per_s=80.0, server_cpu_ms_per_op=3.5),
        run("peer", "put-16", 0, ops_per_s=100.0, server_cpu_ms_per_op=1.0),
        run("ours", "get-lin-1", 0, error="no leader"), run("peer", "get-lin-1", 0, p50_ms=1.0),
    ]
    s = c.summarize(results)
    assert s["put-1"]["p50_ms"] == {"ours": 4.0, "peer": 2.0, "ratio": 2.0}
    assert s["put-1"]["errors"]["ours"] == 3.0  # summed, not a median
    assert s["get-lin-1"]["p50_ms"]["ours"] is None  # a failed run is no figure
    tg = {t["target"]: t for t in c.targets(s)}
    assert tg["single-client write p50"]["pass"] is True  # 2.0 <= 2
    assert tg["16-client write throughput"]["pass"] is True  # 0.8 >= 0.7
    assert tg["server CPU per write (16 clients)"]["pass"] is False  # 3.5 > 3
    assert tg["linearizable read p50"]["pass"] is None
    pairs = c.per_round_ratios(results)
    assert pairs["single-client write p50"] == [3.0, 1.0]
    assert c.side_order(0) == ("ours", "peer") and c.side_order(1) == ("peer", "ours")
