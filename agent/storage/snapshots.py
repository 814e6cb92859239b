"""Raft snapshot files: `data_dir/raft/snapshots/snap-<index>-<term>.snap`.

A file is a fixed preamble, a msgpack header and the body (the state machine's snapshot):

    b"MURMSNAP" | format version (u16) | header length (u32) | header | header CRC32 (u32) | body

The header holds the snapshot's index, term and voters, the body's length and the body's CRC32.
Writing is crash-safe: the file is written under a temporary name, fsynced, renamed into place,
and the directory is fsynced, so after a crash a name either holds a whole snapshot or does not
exist. On start the newest file that reads back whole (length and both checksums) is used;
torn or corrupt ones are logged, renamed to `*.corrupt` and skipped, and leftover temporary files
are deleted. A file of a newer format stops the agent with a message saying so (never guess at a
format we do not know). After each write only the newest KEEP snapshots stay.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from pathlib import Path

import msgpack
from murmur.raft.messages import Snapshot, SnapshotMeta

from ..failpoints import FAILPOINTS
from .raft_log import StorageError

log = logging.getLogger("murmur.raft.snapshots")

MAGIC = b"MURMSNAP"
FORMAT_VERSION = 1  # bump when the layout changes; a newer one is refused
KEEP = 2
_PREAMBLE = struct.Struct("!8sHI")  # magic, version, header length
_CRC = struct.Struct("!I")
MAX_HEADER = 1 << 20


class SnapshotFormatError(StorageError):
    """A snapshot file written by a newer murmur: refuse to start rather than misread it."""


def file_name(meta: SnapshotMeta) -> str:
    return f"snap-{meta.index:020d}-{meta.term:020d}.snap"


def encode(snap: Snapshot) -> bytes:
    body = snap.data
    fields = {"i": snap.meta.index, "t": snap.meta.term, "v": list(snap.meta.voters), "n": len(body),
              "c": zlib.crc32(body)}
    if snap.meta.learners:
        fields["l"] = list(snap.meta.learners)  # (readers ignore keys they do not know)
    header = bytes(msgpack.packb(fields))
    return _PREAMBLE.pack(MAGIC, FORMAT_VERSION, len(header)) + header + _CRC.pack(zlib.crc32(header)) + body


def decode(raw: bytes, where: str = "snapshot") -> Snapshot:
    """A whole, checked snapshot; ValueError if torn or corrupt, SnapshotFormatError if newer."""
    if len(raw) < _PREAMBLE.size:
        raise ValueError("shorter than the preamble")
    magic, version, hlen = _PREAMBLE.unpack_from(raw)
    if magic != MAGIC:
        raise ValueError("not a snapshot file (bad magic)")
    if version > FORMAT_VERSION:
        raise SnapshotFormatError(f"{where}: snapshot format {version} is newer than this murmur understands "
                                  f"({FORMAT_VERSION}); run a newer murmur or restore a backup")
    if version < 1:
        raise ValueError(f"unknown snapshot format {version}")
    if hlen > MAX_HEADER:
        raise ValueError("header too long")
    start = _PREAMBLE.size
    end = start + hlen
    if len(raw) < end + _CRC.size:
        raise ValueError("torn inside the header")
    header = raw[start:end]
    (hcrc,) = _CRC.unpack_from(raw, end)
    if zlib.crc32(header) != hcrc:
        raise ValueError("header checksum mismatch")
    try:
        h = msgpack.unpackb(header, raw=False)
        index, term, voters, size, bcrc = int(h["i"]), int(h["t"]), [int(v) for v in h["v"]], int(h["n"]), int(h["c"])
        learners = [int(v) for v in h.get("l", [])]
    except Exception as exc:
        raise ValueError(f"unreadable header: {type(exc).__name__}") from exc
    body = raw[end + _CRC.size:]
    if len(body) != size:
        raise ValueError(f"body is {len(body)} bytes, the header says {size} (torn)")
    if zlib.crc32(body) != bcrc:
        raise ValueError("body checksum mismatch")
    return Snapshot(SnapshotMeta(index, term, tuple(voters), tuple(learners)), bytes(body))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SnapshotStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.stats = {"written": 0, "ignored_corrupt": 0, "removed_temp": 0}

    def _files(self) -> list[Path]:
        """Snapshot files, newest (highest index, then term) first."""
        return sorted(self.path.glob("snap-*.snap"), key=lambda p: p.name, reverse=True)

    def write(self, snap: Snapshot) -> Path:
        """Durably store `snap` (temp file, fsync, rename, directory fsync); keep the newest KEEP.
        Raises StorageError if the disk fails: the agent stops, never retries silently."""
        final = self.path / file_name(snap.meta)
        tmp = self.path / (final.name + ".tmp")
        FAILPOINTS.hit("raft-before-snapshot-write")
        try:
            with open(tmp, "wb") as f:
                f.write(encode(snap))
                f.flush()
                os.fsync(f.fileno())
            FAILPOINTS.hit("raft-after-snapshot-write")
            os.replace(tmp, final)
            FAILPOINTS.hit("raft-after-snapshot-rename")
            _fsync_dir(self.path)
            FAILPOINTS.hit("raft-after-snapshot-dirsync")
        except OSError as exc:
            raise StorageError(f"{final}: writing the snapshot failed: {exc}") from exc
        self.stats["written"] += 1
        self._prune()
        return final

    def _prune(self) -> None:
        for old in self._files()[KEEP:]:
            try:
                old.unlink()
            except OSError as exc:
                log.warning("snapshot %s: cannot remove: %s", old, exc)

    def load(self) -> Snapshot | None:
        """The newest whole snapshot, or None. Temp files are removed, torn or corrupt files set
        aside (renamed *.corrupt) with a warning; a newer format raises SnapshotFormatError."""
        for tmp in self.path.glob("*.tmp"):
            log.warning("snapshot: removing %s, left by a write that did not finish", tmp.name)
            tmp.unlink(missing_ok=True)
            self.stats["removed_temp"] += 1
        for f in self._files():
            try:
                snap = decode(f.read_bytes(), str(f))
            except SnapshotFormatError:
                raise
            except (ValueError, OSError) as exc:
                log.warning("snapshot %s is unusable (%s): ignored, kept as %s.corrupt", f.name, exc, f.name)
                self.stats["ignored_corrupt"] += 1
                try:
                    f.rename(f.with_name(f.name + ".corrupt"))
                except OSError:
                    pass
                continue
            if file_name(snap.meta) != f.name:
                log.warning("snapshot %s holds %d@%d: the name does not match, ignored", f.name,
                            snap.meta.index, snap.meta.term)
                self.stats["ignored_corrupt"] += 1
                continue
            return snap
        return None
