"""agent/gossip_keyring.py (data_dir/serf/keyring) and `murmur keygen`."""

from __future__ import annotations

import base64
import json
import logging
import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from murmur.agent.gossip_keyring import KeyringFileError, keyring_path, load_keyring
from murmur.cli.main import main
from murmur.gossip import keyring as kr

K1, K2 = os.urandom(32), os.urandom(32)
B1, B2 = kr.encode_key(K1), kr.encode_key(K2)


def assert_absent(secret: str, text: str, what: str) -> None:
    """`assert secret not in text`, but a failure does not print the key."""
    if secret in text:
        pytest.fail(f"a key appears in {what}")


def test_no_key_and_no_file_means_clear_gossip(tmp_path: Path) -> None:
    assert load_keyring(str(tmp_path), "") is None
    assert not keyring_path(str(tmp_path)).exists()


def test_first_start_writes_the_file_private(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    old = os.umask(0o022)
    try:
        ring = load_keyring(str(tmp_path), B1)
    finally:
        os.umask(old)
    assert ring is not None and ring.keys == (K1,)
    path = tmp_path / "serf" / "keyring"
    if json.loads(path.read_text()) != [B1]:
        pytest.fail("the keyring file does not hold exactly the configured key")
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    assert_absent(B1, caplog.text, "the log")
    assert "wrote the key" in caplog.text


def test_existing_file_wins_over_encrypt(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    load_keyring(str(tmp_path), B1)
    caplog.set_level(logging.INFO)
    ring = load_keyring(str(tmp_path), B2)
    assert ring is not None and ring.keys == (K1,)
    assert "ignoring the `encrypt` key" in caplog.text
    assert_absent(B1, caplog.text, "the log")
    assert_absent(B2, caplog.text, "the log")
    # The file alone turns encryption on; all its keys are used, primary first.
    keyring_path(str(tmp_path)).write_text(json.dumps([B2, B1]))
    ring = load_keyring(str(tmp_path), "")
    assert ring is not None and ring.keys == (K2, K1)


def test_a_loose_file_mode_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    load_keyring(str(tmp_path), B1)
    keyring_path(str(tmp_path)).chmod(0o644)
    caplog.set_level(logging.WARNING)
    load_keyring(str(tmp_path), "")
    assert "mode is 0644" in caplog.text


def test_bad_file_is_a_clear_error_naming_the_file(tmp_path: Path) -> None:
    path = keyring_path(str(tmp_path))
    path.parent.mkdir(parents=True)
    short = base64.b64encode(b"x" * 16).decode()
    path.write_text(json.dumps([B1, short]))
    with pytest.raises(KeyringFileError) as e:
        load_keyring(str(tmp_path), "")
    assert str(path) in str(e.value) and "key 2 of the keyring decodes to 16 bytes" in str(e.value)
    assert_absent(short, str(e.value), "the error")
    assert_absent(B1, str(e.value), "the error")
    path.write_text("not json")
    with pytest.raises(KeyringFileError, match="not JSON"):
        load_keyring(str(tmp_path), B1)


def test_without_a_data_dir_the_key_stays_in_memory(tmp_path: Path) -> None:
    ring = load_keyring("", B1)
    assert ring is not None and ring.keys == (K1,)
    assert list(tmp_path.iterdir()) == []


def test_keygen_prints_a_fresh_32_byte_key() -> None:
    runner = CliRunner()
    keys = set()
    for _ in range(2):
        out = runner.invoke(main, ["keygen"])
        assert out.exit_code == 0
        text = out.output.strip()
        assert len(base64.b64decode(text, validate=True)) == 32
        kr.decode_key(text)  # what `encrypt` accepts
        keys.add(text)
    assert len(keys) == 2
