"""bench/checks.py's pure parts: the checks config it writes (loaded by the real config loader) and
the per-run CPU it derives from the three configurations; the targets process answers for real."""

import subprocess
import sys
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root holds bench/

from murmur.checks.definitions import from_api  # noqa: E402

from bench import checks  # noqa: E402
from bench import harness as h  # noqa: E402


def test_config_has_the_checks_asked_for_ten_per_service() -> None:
    cfg = checks.checks_config(25, 12, 8080, [9001, 9002], "10s")
    services = cfg["services"]
    assert len(services) == 4 and [len(s["checks"]) for s in services] == [10, 10, 10, 7]
    defs = [from_api(c) for s in services for c in s["checks"]]
    assert [d.kind for d in defs].count("http") == 25 and [d.kind for d in defs].count("tcp") == 12
    assert {d.interval for d in defs} == {10.0}
    assert {d.tcp for d in defs if d.kind == "tcp"} == {"127.0.0.1:9001", "127.0.0.1:9002"}
    assert len({d.id for d in defs}) == 37


def test_derive_separates_http_and_tcp_cost() -> None:
    by = {"idle": {"cpu_s": 1.0, "wall_s": 100.0},
          "tcp": {"cpu_s": 5.0, "wall_s": 100.0, "tcp_runs": 10_000},
          "mixed": {"cpu_s": 11.0, "wall_s": 100.0, "http_runs": 10_000}}
    d = checks.derive(by)
    assert abs(d["tcp_ms_per_run"] - 0.4) < 1e-9  # (5 - 1) s / 10,000 runs
    assert abs(d["http_ms_per_run"] - 0.6) < 1e-9  # (11 - 5) s / 10,000 runs
    assert checks.derive({"mixed": by["mixed"]}) == {"tcp_ms_per_run": None, "http_ms_per_run": None}


def test_targets_process_answers_http_and_tcp() -> None:
    http_port, tcp_port = h.free_ports(2)
    proc = subprocess.Popen([sys.executable, "-m", "bench.checks_targets", "--http-port", str(http_port),
                             "--tcp-ports", str(tcp_port), "--seconds", "30"], stdout=subprocess.PIPE,
                            cwd=Path(__file__).resolve().parents[2])
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"READY"
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"http://127.0.0.1:{http_port}/health/1", timeout=5) as r:
            assert r.status == 200 and r.read() == checks_targets_body()
        import socket

        with socket.create_connection(("127.0.0.1", tcp_port), timeout=5):
            pass
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def checks_targets_body() -> bytes:
    from bench import checks_targets

    return checks_targets.BODY
