"""`murmur snapshot save|restore|inspect` (Consul's `consul snapshot`): /v1/snapshot archives.

The archive format is described in agent/http/snapshot_routes.py (a murmur snapshot file:
magic, format version, checksummed header with index and term, checksummed msgpack state).
`save` checks what it received before it writes the file (temp name, fsync, rename), so a
saved file is whole; `inspect` reads a file locally, without an agent.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from .client import APIError, Client, fail, http_options


@click.group()
def snapshot() -> None:
    """Save, restore and inspect snapshots of the catalog and KV state."""


def _check(raw: bytes, where: str) -> Any:
    """The decoded archive (agent/storage/snapshots.py format); exits with the reason if it is bad."""
    from murmur.agent.storage import snapshots as archive
    from murmur.agent.storage.raft_log import StorageError

    try:
        return archive.decode(raw, where)
    except (ValueError, StorageError) as exc:
        fail(f"{where}: not a valid snapshot: {exc}")


@snapshot.command("save")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("-stale", "--stale", is_flag=True, help="Any server may answer (the state may be stale).")
@http_options
def save(file: str, stale: bool, http_addr: str | None, token: str | None) -> None:
    """Save the cluster's state to FILE (GET /v1/snapshot)."""
    client = Client(http_addr, token, timeout=300.0)
    try:
        resp = client.http.get("/v1/snapshot", params={"stale": ""} if stale else None)
    except client._error as exc:
        fail(f"cannot reach the agent at {client.base}: {exc}")
        return
    if resp.status_code != 200:
        fail(f"Error saving snapshot: {resp.status_code} {resp.text.strip()}")
    snap = _check(resp.content, "received snapshot")
    path = Path(file)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(resp.content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        fail(f"Error writing {file}: {exc}")
    click.echo(f"Saved and verified snapshot to index {snap.meta.index}")


@snapshot.command("restore")
@click.argument("file", type=click.Path(dir_okay=False, exists=True))
@http_options
def restore(file: str, http_addr: str | None, token: str | None) -> None:
    """Replace the cluster's state by the one saved in FILE (PUT /v1/snapshot)."""
    raw = Path(file).read_bytes()
    _check(raw, file)  # the agent checks it again; this saves a round trip for a bad file
    try:
        Client(http_addr, token, timeout=300.0).call("PUT", "/v1/snapshot", content=raw)
    except APIError as exc:
        fail(f"Error restoring snapshot: {exc}")
    click.echo("Restored snapshot")


@snapshot.command("inspect")
@click.argument("file", type=click.Path(dir_okay=False, exists=True))
def inspect(file: str) -> None:
    """Print a snapshot file's index, term, size and what it holds (no agent needed)."""
    from murmur.catalog.store import StateStore

    raw = Path(file).read_bytes()
    snap = _check(raw, file)
    try:
        st = StateStore.restore(snap.data)
    except Exception as exc:  # noqa: BLE001 - a state we cannot read is a bad file, said plainly
        fail(f"{file}: the state does not decode: {exc!r}")
        return
    rows = [("ID", f"{snap.meta.term}-{snap.meta.index}"), ("Size", str(len(raw))),
            ("Index", str(snap.meta.index)), ("Term", str(snap.meta.term)),
            ("Version", str(int.from_bytes(raw[8:10], "big")))]  # the format version after the magic
    width = max(len(k) for k, _ in rows) + 2
    for k, v in rows:
        click.echo(f"{k.ljust(width)}{v}")
    counts = [("Nodes", len(st.nodes)), ("Services", sum(len(v) for v in st.services.values())),
              ("Checks", sum(len(v) for v in st.checks.values())), ("KV entries", len(st.kvs))]
    click.echo("")
    click.echo(f"{'Type'.ljust(12)}Count")
    for k, n in counts:
        click.echo(f"{k.ljust(12)}{n}")
