"""`murmur kv get|put|delete|export|import` against a real dev agent: Consul's flags, output and exit codes."""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support.procs import MURMUR, ROOT, AgentProc

CLI_TIMEOUT = 60.0  # one CLI call takes well under a second; 10x+ slack for a loaded box


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProc]:
    """One dev agent for the module (each test uses its own keys): agents cost seconds to start."""
    a = AgentProc(tmp_path_factory.mktemp("cli-kv"), [], node="cli-kv")
    try:
        yield a.start()
    finally:
        a.stop()


def kv(agent: AgentProc, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MURMUR, "kv", *args, "-http-addr", agent.url], input=stdin.decode() if stdin else None,
                          capture_output=True, text=True, cwd=ROOT, timeout=CLI_TIMEOUT)


def ok(agent: AgentProc, *args: str, stdin: bytes | None = None) -> str:
    out = kv(agent, *args, stdin=stdin)
    assert out.returncode == 0, (args, out.stdout, out.stderr)
    return out.stdout


def entry(agent: AgentProc, key: str) -> dict[str, object] | None:
    r = httpx.get(f"{agent.url}/v1/kv/{key}", timeout=10)
    return None if r.status_code == 404 else r.json()[0]


def test_put_get_flags_detailed_and_missing_key(agent: AgentProc) -> None:
    assert ok(agent, "put", "-flags", "42", "redis/config/minconns", "1").strip() == \
        "Success! Data written to: redis/config/minconns"
    e = entry(agent, "redis/config/minconns")
    assert e is not None and e["Flags"] == 42 and base64.b64decode(str(e["Value"])) == b"1"
    assert ok(agent, "get", "redis/config/minconns") == "1\n"
    detailed = ok(agent, "get", "-detailed", "redis/config/minconns")
    fields = dict(line.split(None, 1) for line in detailed.strip().splitlines())
    assert fields["Flags"] == "42" and fields["Key"] == "redis/config/minconns" and fields["Value"] == "1"
    assert fields["ModifyIndex"] == str(e["ModifyIndex"]) and fields["Session"] == "-"
    assert ok(agent, "get", "-base64", "redis/config/minconns").strip() == base64.b64encode(b"1").decode()
    missing = kv(agent, "get", "redis/nope")
    assert missing.returncode == 1 and "No key exists at: redis/nope" in missing.stderr


def test_put_reads_a_file_stdin_and_base64(agent: AgentProc, tmp_path: Path) -> None:
    f = tmp_path / "blob"
    f.write_bytes(b"from a file\n")
    ok(agent, "put", "a/file", f"@{f}")
    ok(agent, "put", "a/stdin", "-", stdin=b"from stdin")
    ok(agent, "put", "-base64", "a/b64", base64.b64encode(b"\x00\x01bin").decode())
    assert base64.b64decode(str(entry(agent, "a/file")["Value"])) == b"from a file\n"  # type: ignore[index]
    assert base64.b64decode(str(entry(agent, "a/stdin")["Value"])) == b"from stdin"  # type: ignore[index]
    assert base64.b64decode(str(entry(agent, "a/b64")["Value"])) == b"\x00\x01bin"  # type: ignore[index]
    bad = kv(agent, "put", "-base64", "a/bad", "***")
    assert bad.returncode == 1 and entry(agent, "a/bad") is None


def test_recurse_keys_and_separator(agent: AgentProc) -> None:
    for k in ("app/a", "app/b/c", "app/b/d", "other"):
        ok(agent, "put", k, k.upper())
    assert ok(agent, "get", "-recurse", "app/").splitlines() == ["app/a:APP/A", "app/b/c:APP/B/C", "app/b/d:APP/B/D"]
    assert ok(agent, "get", "-keys", "app/").splitlines() == ["app/a", "app/b/"]
    assert ok(agent, "get", "-keys", "-separator", "", "app/").splitlines() == ["app/a", "app/b/c", "app/b/d"]
    blocks = ok(agent, "get", "-recurse", "-detailed", "app/b/").strip().split("\n\n")
    assert [dict(ln.split(None, 1) for ln in b.splitlines())["Key"] for b in blocks] == ["app/b/c", "app/b/d"]


def test_cas_put_and_delete(agent: AgentProc) -> None:
    need = kv(agent, "put", "-cas", "c/k", "x")
    assert need.returncode == 1 and "-modify-index" in need.stderr
    ok(agent, "put", "-cas", "-modify-index", "0", "c/k", "first")  # 0: create only
    again = kv(agent, "put", "-cas", "-modify-index", "0", "c/k", "second")
    assert again.returncode == 1 and "CAS failed" in again.stderr
    idx = entry(agent, "c/k")["ModifyIndex"]  # type: ignore[index]
    stale = kv(agent, "put", "-cas", "-modify-index", str(int(idx) - 1), "c/k", "third")  # type: ignore[call-overload]
    assert stale.returncode == 1
    assert base64.b64decode(str(entry(agent, "c/k")["Value"])) == b"first"  # type: ignore[index]
    ok(agent, "put", "-cas", "-modify-index", str(idx), "c/k", "fourth")
    idx2 = entry(agent, "c/k")["ModifyIndex"]  # type: ignore[index]
    wrong = kv(agent, "delete", "-cas", "-modify-index", str(idx), "c/k")
    assert wrong.returncode == 1 and "CAS failed" in wrong.stderr and entry(agent, "c/k") is not None
    assert "Deleted key: c/k" in ok(agent, "delete", "-cas", "-modify-index", str(idx2), "c/k")
    assert entry(agent, "c/k") is None


def test_delete_recurse(agent: AgentProc) -> None:
    for k in ("t/1", "t/2", "tx"):
        ok(agent, "put", k, "v")
    assert "Deleted keys with prefix: t/" in ok(agent, "delete", "-recurse", "t/")
    assert entry(agent, "t/1") is None and entry(agent, "t/2") is None and entry(agent, "tx") is not None
    assert kv(agent, "delete").returncode == 1  # a key (or -recurse) is required


def test_export_import_round_trip(agent: AgentProc, tmp_path: Path) -> None:
    ok(agent, "put", "-flags", "7", "cfg/one", "1")
    ok(agent, "put", "-base64", "cfg/bin", base64.b64encode(b"\xff\x00").decode())
    ok(agent, "put", "zzz", "not exported")
    doc = json.loads(ok(agent, "export", "cfg/"))
    assert doc == [{"key": "cfg/bin", "flags": 0, "value": base64.b64encode(b"\xff\x00").decode()},
                   {"key": "cfg/one", "flags": 7, "value": base64.b64encode(b"1").decode()}]
    f = tmp_path / "export.json"
    f.write_text(json.dumps(doc))
    out = ok(agent, "import", "-prefix", "copy/", f"@{f}")
    assert out.splitlines() == ["Imported: copy/cfg/bin", "Imported: copy/cfg/one"]
    assert json.loads(ok(agent, "export", "copy/")) == [{**d, "key": "copy/" + str(d["key"])} for d in doc]
    ok(agent, "import", "-", stdin=json.dumps([{"key": "piped", "flags": 1, "value": ""}]).encode())
    assert entry(agent, "piped") is not None
    # a malformed document writes nothing at all
    bad = kv(agent, "import", json.dumps([{"key": "ok1", "flags": 0, "value": ""}, {"key": "ok2", "value": "!!"}]))
    assert bad.returncode == 1 and "base64" in bad.stderr and entry(agent, "ok1") is None
    assert kv(agent, "import", "{not json").returncode == 1
