"""agent/tls.py: contexts from the tls.* keys, refusals of unusable settings, reload keeping the
old certificates on a bad file, and the server-port side over real loopback sockets."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import trio
import trio.testing
from murmur.agent import config as config_mod
from murmur.agent.tls import PrefixedStream, TLSConfigError, TLSManager
from murmur.cli.tls import make_ca, make_cert


def pki(d: Path) -> dict[str, Path]:
    ca, ca_key = make_ca()
    cert, key = make_cert(ca, ca_key, "server.dc1.murmur", ["server.dc1.murmur"], ["127.0.0.1"])
    out = {"ca": d / "ca.pem", "cert": d / "s.pem", "key": d / "s-key.pem"}
    out["ca"].write_bytes(ca)
    out["cert"].write_bytes(cert)
    out["key"].write_bytes(key)
    out["key"].chmod(0o600)
    return out


def cfg(tmp: Path, text: str) -> config_mod.RuntimeConfig:
    f = tmp / "tls.toml"
    f.write_text(text)
    return config_mod.load([str(f)])


def test_unusable_settings_are_refused_with_a_reason(tmp_path: Path) -> None:
    files = pki(tmp_path)
    with pytest.raises(TLSConfigError, match="ca_file is required"):
        TLSManager(cfg(tmp_path, "[tls.defaults]\nverify_outgoing = true\n"))
    with pytest.raises(TLSConfigError, match="go together"):
        TLSManager(cfg(tmp_path, f'[tls.defaults]\ncert_file = "{files["cert"]}"\n'))
    with pytest.raises(TLSConfigError, match="needs cert_file"):
        TLSManager(cfg(tmp_path, f'[tls.defaults]\nca_file = "{files["ca"]}"\nverify_incoming = true\n'))
    with pytest.raises(TLSConfigError, match="cannot load"):
        TLSManager(cfg(tmp_path, f'[tls.defaults]\ncert_file = "{files["cert"]}"\nkey_file = "{tmp_path}/nope"\n'))
    # Positive control: the full set loads, and nothing at all means TLS off.
    full = cfg(tmp_path, f'[tls.defaults]\nca_file = "{files["ca"]}"\ncert_file = "{files["cert"]}"\n'
                         f'key_file = "{files["key"]}"\nverify_incoming = true\nverify_outgoing = true\n'
                         "[tls.internal_rpc]\nverify_server_hostname = true\n")
    m = TLSManager(full)
    assert m.enabled and m.server_ctx is not None and m.server_ctx.verify_mode == ssl.CERT_REQUIRED
    assert m.client_ctx is not None and m.client_ctx.check_hostname
    off = TLSManager(cfg(tmp_path, ""))
    assert not off.enabled and off.client_ctx is None


def test_reload_keeps_the_old_contexts_when_a_file_is_bad(tmp_path: Path) -> None:
    files = pki(tmp_path)
    text = f'[tls.defaults]\ncert_file = "{files["cert"]}"\nkey_file = "{files["key"]}"\n'
    m = TLSManager(cfg(tmp_path, text))
    old = m.server_ctx
    files["key"].write_text("not a key")
    assert m.reload(cfg(tmp_path, text)) is False and m.server_ctx is old
    pki(tmp_path)  # good files again
    assert m.reload(cfg(tmp_path, text)) is True and m.server_ctx is not old and m.stats["reloads"] == 1


async def test_prefixed_stream_replays_the_peeked_bytes() -> None:
    a, b = trio.testing.memory_stream_pair()
    await a.send_all(b"world")
    p = PrefixedStream(b, b"hello ")
    got = b""
    while len(got) < 11:
        got += await p.receive_some(4)
    assert got == b"hello world"


async def test_server_port_accepts_tls_and_refuses_plaintext_when_required(tmp_path: Path) -> None:
    from murmur.agent.rpc.mux import RPC, FramedStream, ServerPort

    files = pki(tmp_path)
    m = TLSManager(cfg(tmp_path, f'[tls.defaults]\nca_file = "{files["ca"]}"\ncert_file = "{files["cert"]}"\n'
                                 f'key_file = "{files["key"]}"\nverify_incoming = true\nverify_outgoing = true\n'))
    port = ServerPort()
    port.tls = m
    seen: list[bytes] = []

    async def echo(framed: FramedStream, peer: tuple[str, int]) -> None:
        data = await framed.read()
        assert data is not None
        seen.append(data)
        await framed.write(data)

    port.register(RPC, echo)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            bound = await nursery.start(port.serve, "127.0.0.1", 0)
            # Positive control: TLS with our own (server) certificate as the client's.
            stream = await trio.open_tcp_stream("127.0.0.1", bound)
            tls = await m.wrap_outgoing(stream, ("127.0.0.1", bound))
            await tls.send_all(bytes([RPC]))
            await FramedStream(tls).write(b"ping")
            assert await FramedStream(tls).read() == b"ping"
            await tls.aclose()
            # Plaintext: closed without an answer, counted.
            plain = await trio.open_tcp_stream("127.0.0.1", bound)
            await plain.send_all(bytes([RPC]) + b"\x00\x00\x00\x04ping")
            assert await plain.receive_some(100) == b""
            await plain.aclose()
            assert m.stats["plaintext_refused"] == 1 and seen == [b"ping"]
            nursery.cancel_scope.cancel()


def test_repeated_refusals_are_logged_once_per_window(monkeypatch: pytest.MonkeyPatch) -> None:
    from murmur.agent import tls as tls_mod

    now = [1000.0]
    monkeypatch.setattr(tls_mod.time, "monotonic", lambda: now[0])
    r = tls_mod._Repeats()
    assert r.should_log("10.0.0.1", "expired")
    assert not r.should_log("10.0.0.1", "expired")  # the same again at once: counted, not logged
    assert r.should_log("10.0.0.1", "unknown ca") and r.should_log("10.0.0.2", "expired")  # others still are
    now[0] += tls_mod.LOG_REPEAT
    assert r.should_log("10.0.0.1", "expired") and r.suppressed == 1
