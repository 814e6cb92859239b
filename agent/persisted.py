"""Services and checks registered through the HTTP API, kept in the data dir across restarts.

Consul's rule: what an operator or a program registered with `PUT /v1/agent/service/register` or
`/v1/agent/check/register` is still there after the agent restarts; config-file registrations
come from the config files again. We keep the request body exactly as it was accepted, one file
per registration, and replay it through the same parser at start, so a restarted agent and a
live one can never disagree about what a body means.

    data_dir/services/<sha256 of the ID>.json   {"ID": id, "Body": <the accepted JSON body>}
    data_dir/checks/<sha256 of the ID>.json     same shape

Files are written to a temp file, fsynced and renamed, mode 0600 (a body may carry a token). A
damaged file is skipped with a warning and left in place for the operator: it never stops the
agent, and the other registrations still load. `--dev` agents keep nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger("murmur.agent")

KINDS = ("services", "checks")


class PersistedRegistrations:
    def __init__(self, data_dir: str) -> None:
        self.root = Path(data_dir)

    def _path(self, kind: str, rid: str) -> Path:
        return self.root / kind / f"{hashlib.sha256(rid.encode()).hexdigest()}.json"

    def save(self, kind: str, rid: str, body: Any) -> None:
        path = self._path(kind, rid)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_suffix(".tmp")
        data = json.dumps({"ID": rid, "Body": body}, sort_keys=True).encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)

    def drop(self, kind: str, rid: str) -> None:
        self._path(kind, rid).unlink(missing_ok=True)

    def load(self, kind: str) -> list[tuple[str, Any]]:
        """(ID, body) of every readable registration of `kind`, in ID order."""
        folder = self.root / kind
        if not folder.is_dir():
            return []
        out: list[tuple[str, Any]] = []
        for path in sorted(folder.glob("*.json")):
            try:
                rec = json.loads(path.read_bytes())
                rid, body = rec["ID"], rec["Body"]
                if not isinstance(rid, str) or path != self._path(kind, rid):
                    raise ValueError("ID does not match the file name")
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("skipping damaged persisted registration %s: %s", path, exc)
                continue
            out.append((rid, body))
        return sorted(out, key=lambda r: r[0])
