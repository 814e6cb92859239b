"""The gossip keyring on disk: `data_dir/serf/keyring`, Consul's file (a JSON list of base64 keys,
primary first).

On the first start with `encrypt` set, the key is written there (file 0600, folder 0700). From then
on the file wins over `encrypt`, as in Consul: a changed `encrypt` is ignored (and logged), since
keys are rotated through the keyring, not the config. A keyring file alone turns encryption on.
Without a data dir (`--dev`) the key from `encrypt` is used and nothing is written.

Keys are never logged; messages name the file, never its content.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from murmur.gossip.keyring import Keyring, KeyringError, decode_key, dump_keyring_file, parse_keyring_file

log = logging.getLogger("murmur.agent")

KEYRING_PATH = ("serf", "keyring")


class KeyringFileError(Exception):
    """The keyring file cannot be read or written; the message names the file, never a key."""


def keyring_path(data_dir: str) -> Path:
    return Path(data_dir).joinpath(*KEYRING_PATH)


def load_keyring(data_dir: str, encrypt: str, label: str = "") -> Keyring | None:
    """The keyring the agent gossips with, or None for clear-text gossip."""
    path = keyring_path(data_dir) if data_dir else None
    if path is not None and path.exists():
        try:
            keys = parse_keyring_file(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, KeyringError) as exc:
            raise KeyringFileError(f"{path}: cannot use the gossip keyring: {exc}") from None
        mode = path.stat().st_mode & 0o777
        if mode & 0o037:
            log.warning("%s holds gossip keys but its mode is %04o; make it 0600", path, mode)
        if encrypt:
            log.info("gossip keyring file %s exists: using it and ignoring the `encrypt` key", path)
        log.info("gossip encryption on: %d key(s) from %s", len(keys), path)
        return Keyring(keys, label)
    if not encrypt:
        return None
    try:
        key = decode_key(encrypt, "encrypt")
    except KeyringError as exc:
        raise KeyringFileError(str(exc)) from None
    if path is not None:
        write_keyring(path, [key])
        log.info("gossip encryption on: wrote the key from `encrypt` to %s", path)
    else:
        log.info("gossip encryption on (no data dir: the keyring is kept in memory)")
    return Keyring([key], label)


def write_keyring(path: Path, keys: list[bytes]) -> None:
    """Write the file atomically: folder 0700, file 0600 from its creation on."""
    try:
        if not path.parent.exists():
            path.parent.mkdir(parents=True, mode=0o700)
            os.chmod(path.parent, 0o700)  # mkdir's mode is filtered by the umask
        tmp = path.with_name(path.name + ".tmp")
        if tmp.exists():
            tmp.unlink()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(dump_keyring_file(keys))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise KeyringFileError(f"{path}: cannot write the gossip keyring: {exc.strerror or exc}") from None
