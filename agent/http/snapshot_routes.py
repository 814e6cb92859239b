"""`/v1/snapshot`: save the whole catalog and KV state to an archive, or restore one (Consul's
snapshot API; `murmur snapshot save|restore|inspect` call these).

The archive is a murmur snapshot file, the same format as the Raft snapshots in the data dir
(`agent/storage/snapshots.py`):

    b"MURMSNAP" | format version (u16) | header length (u32) | header | header CRC32 (u32) | body

The header (msgpack) holds the index and term the state was taken at, the voters, the body's
length and CRC32; the body is `StateStore.snapshot()` (msgpack). Consul ships a gzipped tar of
its own Raft snapshot; ours is smaller and carries its checksums in the same place.

Save (GET) is a linearizable read unless `?stale`: the state after every write acknowledged
before the request. Restore (PUT) checks the archive (magic, format, lengths, both checksums, and
that the state decodes) before anything changes, answers 400 to a bad one, then replaces the
state through Raft as one RESTORE command, so every server applies it at the same log index.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from murmur.catalog.commands import ApplyError, Restore
from murmur.catalog.store import StateStore
from murmur.raft.messages import Snapshot, SnapshotMeta

from ..storage import snapshots as archive
from ..storage.raft_log import StorageError
from .common import check_dc, read_params
from .server import HTTPError, Request, Response, Router

if TYPE_CHECKING:
    import re

    from ..agent import Agent


def _server(agent: Agent) -> None:
    if agent.server is None:
        raise HTTPError(400, "snapshots are saved and restored by server agents: use a server's HTTP address")


def parse_archive(raw: bytes) -> Snapshot:
    """A checked archive; HTTPError 400 saying what is wrong otherwise."""
    try:
        snap = archive.decode(raw, "snapshot archive")
    except (ValueError, StorageError) as exc:
        raise HTTPError(400, f"invalid snapshot archive: {exc}") from exc
    try:
        StateStore.restore(snap.data)
    except Exception as exc:  # noqa: BLE001 - any failure to decode the state is the client's
        raise HTTPError(400, f"invalid snapshot archive: the state does not decode: {exc!r}") from exc
    return snap


def add_routes(router: Router, agent: Agent) -> None:
    async def save(req: Request, m: re.Match[str]) -> Response:
        check_dc(agent, req)
        _server(agent)
        srv = agent.server
        assert srv is not None
        mode, _, _ = read_params(req)
        if mode != "stale":
            from ..server import NoLeader

            try:
                await srv.read_barrier()
            except NoLeader as exc:
                raise HTTPError(500, "No cluster leader") from exc
        store = agent.store
        term = srv.driver.node.raft.term if srv.driver is not None else 0
        meta = SnapshotMeta(store.last_index, term, tuple(srv.voters))
        body = archive.encode(Snapshot(meta, store.snapshot()))
        return Response(200, body, [("Content-Type", "application/octet-stream"),
                                    ("X-Consul-Index", str(store.last_index))])

    async def restore(req: Request, m: re.Match[str]) -> Response:
        check_dc(agent, req)
        _server(agent)
        snap = parse_archive(req.body)
        result = await agent.writer.apply(Restore(snap.data))
        if isinstance(result, ApplyError):
            raise HTTPError(400, f"snapshot not restored: {result.message}")
        return Response(200, b"")

    router.add("GET", r"/v1/snapshot", save)
    router.add("PUT", r"/v1/snapshot", restore)
