"""Key rotation on one member's ring (gossip/keyring.py install_key, use_key, remove_key) and the
answer format of the keyring queries (agent/keyring_ops.py)."""

from __future__ import annotations

import os

import pytest
from murmur.agent.keyring_ops import KeyringResult, decode_answer, encode_answer
from murmur.gossip import keyring as kr


def test_install_use_remove_keeps_every_step_readable() -> None:
    a, b = os.urandom(32), os.urandom(32)
    old = kr.Keyring([a], "lbl")
    installed = kr.install_key(old, b)
    assert installed.keys == (a, b) and installed.primary == a and installed.label == "lbl"
    assert kr.install_key(installed, b) is installed  # idempotent
    # A member that installed B still opens what a member without B seals, and the reverse.
    assert installed.open(old.seal(b"x", os.urandom(24))) == b"x"
    used = kr.use_key(installed, b)
    assert used.keys == (b, a)
    # After `use` on one member only, a member still on A-primary (but holding B) opens it.
    assert installed.open(used.seal(b"y", os.urandom(24))) == b"y"
    removed = kr.remove_key(used, a)
    assert removed.keys == (b,)
    # The removed key no longer opens anything sealed with it: a holder of only A is locked out.
    with pytest.raises(kr.Forged):
        removed.open(old.seal(b"z", os.urandom(24)))
    assert kr.remove_key(removed, a) is removed  # not held: unchanged


def test_primary_cannot_be_removed_and_use_needs_install() -> None:
    a, b = os.urandom(32), os.urandom(32)
    ring = kr.Keyring([a])
    with pytest.raises(kr.KeyringError, match="primary"):
        kr.remove_key(ring, a)
    with pytest.raises(kr.KeyringError, match="install it first"):
        kr.use_key(ring, b)
    assert ring.keys == (a,)


def test_answers_round_trip_and_garbage_is_an_error() -> None:
    a, b = os.urandom(32), os.urandom(32)
    body = decode_answer(encode_answer(True, ring=kr.Keyring([a, b])))
    assert body["ok"] and body["keys"] == [a, b] and body["primary"] == a
    assert decode_answer(b"\xc1garbage") == {"ok": False, "err": "undecodable answer"}
    assert decode_answer(encode_answer(False, "nope"))["err"] == "nope"


def test_result_counts_silent_members_as_errors() -> None:
    r = KeyringResult("install", num_nodes=5, num_resp=5)
    assert r.num_err == 0 and r.error() == ""
    r = KeyringResult("install", num_nodes=5, num_resp=4, messages={"n3": "cannot persist"})
    assert r.num_err == 2
    assert "2/5 nodes reported failure" in r.error() and "n3: cannot persist" in r.error()
    assert "1 node(s) did not answer" in r.error()
