"""Gossip encryption (pure): a keyring of 32-byte keys sealing packets and stream frames with
NaCl's SecretBox (XSalsa20-Poly1305).

A sealed packet is

    format byte | nonce (24 bytes) | SecretBox(format byte | label length | label | plaintext)

The format byte always has the high bit set (`wire.ENCRYPTED_FLAG`), so a clear gossip packet
(version 1..127) is never mistaken for a sealed one. It is repeated inside the box, so it is
authenticated too: nobody can relabel a packet as another format. The cluster label is inside the
box as well: a packet sealed with the right key for another cluster is refused, and the label
never travels in clear text. `plaintext` is the clear packet or stream-frame payload, version
byte included.

Sealing uses the primary key (the first in the ring); opening tries the primary, then the others,
which is what lets a key rotation install a new key everywhere before making it primary. The nonce
comes from the caller (the driver passes `os.urandom`): this module reads no clock, socket or
random source. The keyring file's format (Consul's: a JSON list of base64 keys, primary first) is
parsed and written here too; where it lives and its permissions are the agent's business.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Sequence
from enum import IntEnum

from nacl.exceptions import CryptoError
from nacl.secret import SecretBox

from .wire import ENCRYPTED_FLAG

KEY_SIZE = SecretBox.KEY_SIZE  # 32
NONCE_SIZE = SecretBox.NONCE_SIZE  # 24
MAC_SIZE = SecretBox.MACBYTES  # 16
MAX_LABEL = 255  # bytes of UTF-8


class SealFormat(IntEnum):
    """The first byte of a sealed packet or frame. Only append: the numbers are on the wire.
    Every member has the high bit set."""

    SECRETBOX_V1 = ENCRYPTED_FLAG | 1


class KeyringError(ValueError):
    """A key or keyring that cannot be used. The message never contains a key."""


class SealError(ValueError):
    """Bytes that cannot be opened. The subclass says why; the driver counts each kind."""


class NotSealed(SealError):
    """A clear (unencrypted) packet where a sealed one was expected."""


class UnknownFormat(SealError):
    """A sealed packet of a format this version does not know."""


class Forged(SealError):
    """No key in the ring opens it: sealed with another key, tampered with, or truncated."""


class LabelMismatch(SealError):
    """Opened with one of our keys, but sealed for a cluster with another label."""


def is_sealed(data: bytes) -> bool:
    """True if `data` claims to be sealed (its first byte has the encryption flag)."""
    return bool(data) and bool(data[0] & ENCRYPTED_FLAG)


def decode_key(text: str, what: str = "key") -> bytes:
    """A base64 key (as `murmur keygen` and `consul keygen` print) to its 32 bytes."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise KeyringError(f"{what} is not valid base64") from None
    if len(raw) != KEY_SIZE:
        raise KeyringError(f"{what} decodes to {len(raw)} bytes; gossip keys are {KEY_SIZE} bytes")
    return raw


def encode_key(key: bytes) -> str:
    return base64.b64encode(key).decode("ascii")


def parse_keyring_file(text: str) -> list[bytes]:
    """The keys of a keyring file: a JSON list of base64 keys, primary first."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise KeyringError(f"not JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, list) or not all(isinstance(k, str) for k in data):
        raise KeyringError("expected a JSON list of base64 keys")
    if not data:
        raise KeyringError("the keyring holds no keys")
    return [decode_key(k, f"key {i + 1} of the keyring") for i, k in enumerate(data)]


def dump_keyring_file(keys: Iterable[bytes]) -> str:
    return json.dumps([encode_key(k) for k in keys]) + "\n"


class Keyring:
    """Keys (primary first) and the cluster label. Seals with the primary, opens with any."""

    def __init__(self, keys: Sequence[bytes], label: str = "") -> None:
        unique: list[bytes] = []
        for i, key in enumerate(keys):
            if not isinstance(key, bytes) or len(key) != KEY_SIZE:
                size = len(key) if isinstance(key, bytes) else type(key).__name__
                raise KeyringError(f"key {i + 1} of the keyring is {size} bytes; gossip keys are {KEY_SIZE} bytes")
            if key not in unique:
                unique.append(key)
        if not unique:
            raise KeyringError("the keyring holds no keys")
        label_bytes = label.encode("utf-8")
        if len(label_bytes) > MAX_LABEL:
            raise KeyringError(f"the cluster label is {len(label_bytes)} bytes; at most {MAX_LABEL}")
        self._keys = tuple(unique)
        self._boxes = tuple(SecretBox(k) for k in unique)
        self.label = label
        self._label_block = bytes([len(label_bytes)]) + label_bytes

    @classmethod
    def from_base64(cls, keys: Sequence[str], label: str = "") -> Keyring:
        return cls([decode_key(k, f"key {i + 1}") for i, k in enumerate(keys)], label)

    def __repr__(self) -> str:  # never show key material
        return f"Keyring({len(self._keys)} keys, label={self.label!r})"

    @property
    def keys(self) -> tuple[bytes, ...]:
        return self._keys

    @property
    def primary(self) -> bytes:
        return self._keys[0]

    @property
    def overhead(self) -> int:
        """Bytes a sealed packet adds to its plaintext."""
        return 1 + NONCE_SIZE + MAC_SIZE + 1 + len(self._label_block)

    def seal(self, plaintext: bytes, nonce: bytes) -> bytes:
        """Seal with the primary key. `nonce` must be 24 fresh random bytes (never reuse one)."""
        if len(nonce) != NONCE_SIZE:
            raise ValueError(f"a nonce is {NONCE_SIZE} bytes, got {len(nonce)}")
        header = bytes([SealFormat.SECRETBOX_V1])
        box = self._boxes[0].encrypt(header + self._label_block + plaintext, nonce).ciphertext
        return header + nonce + box

    def open(self, data: bytes) -> bytes:
        """The plaintext of a sealed packet. Raises a SealError subclass saying why not."""
        if not is_sealed(data):
            raise NotSealed("packet is not encrypted")
        if data[0] != SealFormat.SECRETBOX_V1:
            raise UnknownFormat(f"unknown encryption format 0x{data[0]:02x}")
        if len(data) < 1 + NONCE_SIZE + MAC_SIZE + 2:
            raise Forged(f"encrypted packet of {len(data)} bytes is too short")
        nonce = bytes(data[1:1 + NONCE_SIZE])
        box = bytes(data[1 + NONCE_SIZE:])
        for secret in self._boxes:
            try:
                inner = secret.decrypt(box, nonce)
            except CryptoError:
                continue
            break
        else:
            raise Forged("no key in the keyring opens this packet")
        if len(inner) < 2 or inner[0] != data[0]:
            raise Forged("sealed format byte does not match")
        n = inner[1]
        if inner[1:2 + n] != self._label_block:
            raise LabelMismatch("packet is for a cluster with another label")
        return bytes(inner[2 + n:])


# ---- rotation (Serf's install / use / remove, applied to one member's ring) ---------------------
def install_key(ring: Keyring, key: bytes) -> Keyring:
    """The ring with `key` added as a secondary key (already there: unchanged)."""
    if key in ring.keys:
        return ring
    return Keyring([*ring.keys, key], ring.label)


def use_key(ring: Keyring, key: bytes) -> Keyring:
    """The ring with `key`, which must already be installed, as the primary."""
    if key not in ring.keys:
        raise KeyringError("the key is not in the keyring; install it first")
    return Keyring([key, *(k for k in ring.keys if k != key)], ring.label)


def remove_key(ring: Keyring, key: bytes) -> Keyring:
    """The ring without `key`. The primary key cannot be removed (make another one primary first);
    removing a key the ring does not hold changes nothing."""
    if key == ring.primary:
        raise KeyringError("removing the primary key is not allowed")
    if key not in ring.keys:
        return ring
    return Keyring([k for k in ring.keys if k != key], ring.label)
