"""`/v1/snapshot` and `murmur snapshot save|restore|inspect` on three real servers: save, change
things, restore, and every server holds the saved state again; a damaged archive is refused with
400 and changes nothing."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import httpx
import pytest
from support.procs import MURMUR, ROOT, AgentProc, wait_for
from support.servers import start_servers

pytestmark = pytest.mark.e2e

CLI_TIMEOUT = 60.0


def cli(server: AgentProc, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MURMUR, "snapshot", *args, "-http-addr", server.url], capture_output=True, text=True,
                          cwd=ROOT, timeout=CLI_TIMEOUT)


def kv_state(server: AgentProc) -> dict[str, str]:
    """Every key on this server, read from its own store (?stale)."""
    r = httpx.get(server.url + "/v1/kv/?recurse&stale", timeout=10)
    if r.status_code == 404:
        return {}
    r.raise_for_status()
    return {e["Key"]: base64.b64decode(e["Value"] or "").decode() for e in r.json()}


def nodes(server: AgentProc) -> set[str]:
    r = httpx.get(server.url + "/v1/catalog/nodes?stale", timeout=10)
    r.raise_for_status()
    return {n["Node"] for n in r.json()}


def put(server: AgentProc, key: str, value: str) -> None:
    r = httpx.put(f"{server.url}/v1/kv/{key}", content=value.encode(), timeout=10)
    assert r.status_code == 200 and r.json() is True, r.text


def test_save_change_restore_on_three_servers_and_bad_archives_are_refused(tmp_path: Path, start_agent) -> None:  # type: ignore[no-untyped-def]
    servers = start_servers(tmp_path, start_agent)
    s0, s1, s2 = servers
    put(s0, "app/a", "1")
    put(s1, "app/b", "2")
    reg = httpx.put(s0.url + "/v1/catalog/register", timeout=10,
                    json={"Node": "ext1", "Address": "10.99.0.7", "Service": {"Service": "db", "Port": 5432}})
    assert reg.status_code == 200, reg.text

    path = tmp_path / "backup.snap"
    saved = cli(s1, "save", str(path))
    assert saved.returncode == 0, saved.stderr
    assert saved.stdout.startswith("Saved and verified snapshot to index ")
    saved_index = int(saved.stdout.split()[-1])
    raw = path.read_bytes()
    inspected = subprocess.run([*MURMUR, "snapshot", "inspect", str(path)], capture_output=True, text=True,
                               cwd=ROOT, timeout=CLI_TIMEOUT)
    assert inspected.returncode == 0, inspected.stderr
    fields = dict(ln.split(None, 1) for ln in inspected.stdout.splitlines() if ln and not ln.startswith("KV "))
    assert int(fields["Index"]) == saved_index and int(fields["Size"]) == len(raw)
    assert "KV entries  2" in inspected.stdout

    # the HTTP answer carries the index too, and a save is repeatable
    r = httpx.get(s2.url + "/v1/snapshot", timeout=30)
    assert r.status_code == 200 and int(r.headers["X-Consul-Index"]) >= saved_index

    # change things after the save
    put(s2, "app/a", "changed")
    assert httpx.delete(s0.url + "/v1/kv/app/b", timeout=10).json() is True
    put(s0, "app/c", "new")
    dereg = httpx.put(s0.url + "/v1/catalog/deregister", json={"Node": "ext1"}, timeout=10)
    assert dereg.status_code == 200
    changed = {"app/a": "changed", "app/c": "new"}
    wait_for(lambda: all(kv_state(s) == changed and "ext1" not in nodes(s) for s in servers), 30,
             what="the changes on every server")
    index_before = int(httpx.get(s0.url + "/v1/kv/app/?recurse", timeout=10).headers["X-Consul-Index"])

    # damaged archives: 400, nothing changes
    body_flip = bytearray(raw)
    body_flip[-3] ^= 0xFF
    header_flip = bytearray(raw)
    header_flip[20] ^= 0xFF
    from murmur.agent.storage import snapshots as archive
    from murmur.raft.messages import Snapshot, SnapshotMeta

    not_a_state = archive.encode(Snapshot(SnapshotMeta(5, 1, ()), b"\x93\x01\x02"))  # checksums fine, junk state
    newer = bytearray(raw)
    newer[8:10] = (archive.FORMAT_VERSION + 1).to_bytes(2, "big")
    for bad in (bytes(body_flip), bytes(header_flip), raw[: len(raw) // 2], b"", b"not a snapshot at all",
                not_a_state, bytes(newer)):
        resp = httpx.put(s0.url + "/v1/snapshot", content=bad, timeout=30)
        assert resp.status_code == 400, (resp.status_code, resp.text)
    bad_file = tmp_path / "bad.snap"
    bad_file.write_bytes(bytes(body_flip))
    refused = cli(s1, "restore", str(bad_file))
    assert refused.returncode == 1 and "checksum" in refused.stderr
    bad_inspect = subprocess.run([*MURMUR, "snapshot", "inspect", str(bad_file)], capture_output=True, text=True,
                                 cwd=ROOT, timeout=CLI_TIMEOUT)
    assert bad_inspect.returncode == 1
    for s in servers:
        assert kv_state(s) == changed and "ext1" not in nodes(s)

    # restore through a follower or the leader alike; every server converges on the saved state
    restored = cli(s2, "restore", str(path))
    assert restored.returncode == 0, restored.stderr
    assert restored.stdout.strip() == "Restored snapshot"
    old = {"app/a": "1", "app/b": "2"}
    wait_for(lambda: all(kv_state(s) == old and "ext1" in nodes(s) for s in servers), 30,
             what="the saved state on every server")
    after = httpx.get(s0.url + "/v1/kv/app/?recurse", timeout=10)
    assert int(after.headers["X-Consul-Index"]) > index_before  # blocked readers see a new index
    # the cluster keeps working after a restore
    put(s1, "app/d", "after")
    wait_for(lambda: all(kv_state(s) == {**old, "app/d": "after"} for s in servers), 30,
             what="a write after the restore on every server")
