"""gossip/keyring.py: sealing and opening packets, the keyring file format, bad keys."""

from __future__ import annotations

import base64
import json
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from murmur.agent import config as config_mod
from murmur.gossip import keyring as kr
from murmur.gossip import wire
from murmur.gossip.keyring import Keyring, KeyringError

RNG = random.Random(4)


def key() -> bytes:
    return RNG.randbytes(32)


def nonce() -> bytes:
    return RNG.randbytes(kr.NONCE_SIZE)


K1, K2, K3 = key(), key(), key()
PLAIN = wire.packet(wire.Ping(7, "n1", "n0", "127.0.0.1", 8301))


def test_round_trip() -> None:
    ring = Keyring([K1])
    sealed = ring.seal(PLAIN, nonce())
    assert sealed[0] == kr.SealFormat.SECRETBOX_V1 and sealed[0] & wire.ENCRYPTED_FLAG
    assert len(sealed) == len(PLAIN) + ring.overhead
    assert PLAIN not in sealed  # the clear bytes do not show through
    assert ring.open(sealed) == PLAIN
    assert wire.decode_packet(ring.open(sealed))[0] == [wire.Ping(7, "n1", "n0", "127.0.0.1", 8301)]


def test_fresh_nonces_give_different_ciphertexts() -> None:
    ring = Keyring([K1])
    assert ring.seal(PLAIN, nonce()) != ring.seal(PLAIN, nonce())


def test_seals_with_the_primary_and_opens_with_any_key() -> None:
    old = Keyring([K2])  # an agent that has not installed K1 yet
    new = Keyring([K1, K2])  # K1 primary, K2 still accepted
    assert new.primary == K1 and new.keys == (K1, K2)
    from_old = old.seal(PLAIN, nonce())
    assert new.open(from_old) == PLAIN  # decrypted with the secondary key
    from_new = new.seal(PLAIN, nonce())
    assert Keyring([K1]).open(from_new) == PLAIN  # sealed with the primary
    with pytest.raises(kr.Forged):
        old.open(from_new)  # ... which the old ring does not hold


def test_wrong_key_fails() -> None:
    sealed = Keyring([K1]).seal(PLAIN, nonce())
    with pytest.raises(kr.Forged):
        Keyring([K2, K3]).open(sealed)
    assert Keyring([K3, K1]).open(sealed) == PLAIN  # positive control: a ring holding K1 opens it


def test_any_tampered_byte_fails() -> None:
    ring = Keyring([K1], label="prod")
    sealed = ring.seal(PLAIN, nonce())
    for i in range(1, len(sealed)):  # every byte after the format byte: nonce, MAC, ciphertext
        bad = bytearray(sealed)
        bad[i] ^= 0x01
        with pytest.raises(kr.Forged):
            ring.open(bytes(bad))
    assert ring.open(sealed) == PLAIN


def test_wrong_label_fails() -> None:
    sealed = Keyring([K1], label="blue").seal(PLAIN, nonce())
    with pytest.raises(kr.LabelMismatch):
        Keyring([K1], label="green").open(sealed)
    with pytest.raises(kr.LabelMismatch):
        Keyring([K1]).open(sealed)  # "" is a label too
    with pytest.raises(kr.LabelMismatch):
        Keyring([K1], label="blue").open(Keyring([K1]).seal(PLAIN, nonce()))
    assert Keyring([K1], label="blue").open(sealed) == PLAIN
    assert b"blue" not in sealed  # the label travels sealed


def test_unknown_format_byte_fails() -> None:
    ring = Keyring([K1])
    sealed = ring.seal(PLAIN, nonce())
    for version in (0x80, 0x82, 0xFF):
        with pytest.raises(kr.UnknownFormat):
            ring.open(bytes([version]) + sealed[1:])


def test_clear_packet_is_not_sealed() -> None:
    ring = Keyring([K1])
    with pytest.raises(kr.NotSealed):
        ring.open(PLAIN)
    with pytest.raises(kr.NotSealed):
        ring.open(b"")


def test_truncated_input_fails() -> None:
    ring = Keyring([K1])
    sealed = ring.seal(PLAIN, nonce())
    for n in (1, 2, 10, 1 + kr.NONCE_SIZE, 1 + kr.NONCE_SIZE + kr.MAC_SIZE, len(sealed) - 1):
        with pytest.raises(kr.Forged):
            ring.open(sealed[:n])


def test_every_seal_error_is_a_value_error() -> None:
    for cls in (kr.NotSealed, kr.UnknownFormat, kr.Forged, kr.LabelMismatch):
        assert issubclass(cls, kr.SealError) and issubclass(cls, ValueError)


def test_bad_nonce_length_is_refused() -> None:
    with pytest.raises(ValueError, match="nonce is 24 bytes"):
        Keyring([K1]).seal(PLAIN, b"short")


def test_bad_keys_are_clear_errors_that_never_echo_the_key() -> None:
    short = base64.b64encode(b"s" * 16).decode()
    with pytest.raises(KeyringError, match="decodes to 16 bytes; gossip keys are 32 bytes") as e:
        kr.decode_key(short, "encrypt")
    assert short not in str(e.value)
    with pytest.raises(KeyringError, match="not valid base64"):
        kr.decode_key("not base64!!", "encrypt")
    with pytest.raises(KeyringError, match="key 2 of the keyring is 31 bytes"):
        Keyring([K1, b"x" * 31])
    with pytest.raises(KeyringError, match="no keys"):
        Keyring([])
    with pytest.raises(KeyringError, match="label"):
        Keyring([K1], label="x" * 256)
    assert repr(Keyring([K1])) == "Keyring(1 keys, label='')"  # no key material in repr


def test_bad_key_length_in_config_is_a_clear_error(tmp_path: Path) -> None:
    secret = base64.b64encode(b"q" * 20).decode()
    f = tmp_path / "a.toml"
    f.write_text(f'encrypt = "{secret}"\n')
    f.chmod(0o600)
    with pytest.raises(config_mod.ConfigError) as e:
        config_mod.load([f])
    assert "encrypt: the key decodes to 20 bytes; murmur needs 32" in str(e.value)
    assert secret not in str(e.value)


def test_good_key_in_config_loads_without_warnings(tmp_path: Path) -> None:
    f = tmp_path / "a.toml"
    f.write_text(f'encrypt = "{kr.encode_key(K1)}"\nencrypt_verify_incoming = false\n')
    f.chmod(0o600)
    cfg = config_mod.load([f])
    assert cfg.encrypt == kr.encode_key(K1) and not cfg.encrypt_verify_incoming
    assert cfg.warnings == []  # encryption works now: no "does not work yet"


def test_keyring_file_format() -> None:
    text = kr.dump_keyring_file([K1, K2])
    assert json.loads(text) == [kr.encode_key(K1), kr.encode_key(K2)]
    assert kr.parse_keyring_file(text) == [K1, K2]
    for bad, msg in (("{", "not JSON"), ('{"a": 1}', "JSON list"), ("[]", "no keys"), ("[1]", "JSON list"),
                     (json.dumps([kr.encode_key(K1), "AAAA"]), "key 2 of the keyring decodes to 3 bytes")):
        with pytest.raises(KeyringError, match=msg):
            kr.parse_keyring_file(bad)


def test_keyring_module_takes_no_randomness_of_its_own() -> None:
    """The nonce is injected: the module imports no random source (the layering test covers the
    rest of the purity rules)."""
    from test_layering import imported_modules

    mods = {m for _, m in imported_modules(Path(kr.__file__).read_text())}
    assert not mods & {"os", "secrets", "random", "nacl.utils", "time", "socket"}, mods
    assert "nacl.secret" in mods  # positive control: the scan sees this module's imports


@settings(deadline=None, max_examples=300)
@given(st.binary(max_size=200), st.binary(min_size=24, max_size=24), st.text(max_size=20))
def test_open_of_any_bytes_raises_only_seal_errors(data: bytes, n: bytes, label: str) -> None:
    """Hostile input: opening arbitrary bytes (and sealed bytes with one byte changed) either
    fails with a SealError or, for untouched sealed bytes, round-trips."""
    ring = Keyring([K1], label=label)
    for candidate in (data, bytes([kr.SealFormat.SECRETBOX_V1]) + data):
        try:
            ring.open(candidate)
        except kr.SealError:
            pass
        else:
            raise AssertionError("arbitrary bytes opened")
    sealed = ring.seal(data, n)
    assert ring.open(sealed) == data
    if data:
        bad = bytearray(sealed)
        bad[len(sealed) // 2] ^= 0xFF
        with pytest.raises(kr.SealError):
            ring.open(bytes(bad))
