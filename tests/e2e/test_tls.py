"""TLS with real agents on loopback: server RPC (the 0x16 first byte on the server port) and the
HTTPS API, with `verify_incoming`, `verify_outgoing` and `verify_server_hostname`. Every refusal
has its positive control in the same test, and each refusal is logged by the agent.

Certificates come from murmur.cli.tls (the code behind `murmur tls`); the expired one and the
one from another CA are made the same way with other parameters."""

from __future__ import annotations

import datetime
import signal
import socket
import ssl
import struct
import subprocess
from pathlib import Path

import httpx
import msgpack
import pytest
from murmur.cli.tls import make_ca, make_cert
from support.procs import MURMUR, AgentProc, free_port, wait_for

pytestmark = pytest.mark.e2e

SERVER_NAME = "server.dc1.murmur"


class PKI:
    """A CA and certificates written as files in `d` (keys 0600)."""

    def __init__(self, d: Path, name: str = "ca") -> None:
        d.mkdir(parents=True, exist_ok=True)
        self.d = d
        self.ca_pem, self.ca_key = make_ca(f"{name} CA")
        self.ca_file = self.write(f"{name}.pem", self.ca_pem)

    def write(self, fname: str, data: bytes, private: bool = False) -> Path:
        p = self.d / fname
        p.touch(mode=0o600 if private else 0o644)
        p.write_bytes(data)
        return p

    def cert(self, fname: str, cn: str, dns: list[str], ips: list[str] = (), days: int = 30,  # type: ignore[assignment]
             not_before: datetime.datetime | None = None) -> tuple[Path, Path]:
        c, k = make_cert(self.ca_pem, self.ca_key, cn, dns, list(ips), days, not_before)
        return self.write(f"{fname}.pem", c), self.write(f"{fname}-key.pem", k, private=True)


def tls_conf(d: Path, ca: Path, cert: Path, key: Path, *, verify_incoming: bool = True, verify_outgoing: bool = True,
             verify_server_hostname: bool = True, https: int | None = None, extra: str = "") -> Path:
    d.mkdir(parents=True, exist_ok=True)
    text = (f'[tls.defaults]\nca_file = "{ca}"\ncert_file = "{cert}"\nkey_file = "{key}"\n'
            f"verify_incoming = {str(verify_incoming).lower()}\nverify_outgoing = {str(verify_outgoing).lower()}\n"
            f"[tls.internal_rpc]\nverify_server_hostname = {str(verify_server_hostname).lower()}\n"
            '[gossip_lan]\npreset = "local"\n' + extra)
    if https is not None:
        text = f"[ports]\nhttps = {https}\n" + text
    (d / "tls.toml").write_text(text)
    return d


def ctx(ca: Path | None, cert: tuple[Path, Path] | None = None, check_hostname: bool = False) -> ssl.SSLContext:
    c = ssl.create_default_context(cafile=str(ca) if ca else None)
    c.check_hostname = check_hostname
    if ca is None:
        c.verify_mode = ssl.CERT_NONE
    if cert is not None:
        c.load_cert_chain(str(cert[0]), str(cert[1]))
    return c


def rpc_status(port: int, context: ssl.SSLContext | None, server_hostname: str = "127.0.0.1") -> dict:  # type: ignore[type-arg]
    """One `status` RPC on the server port, over TLS with `context` or in plaintext."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        s = context.wrap_socket(raw, server_hostname=server_hostname) if context is not None else raw
        s.sendall(b"\x01" + frame({"v": 1, "op": "status"}))
        head = recv_exact(s, 4)
        (n,) = struct.unpack("!I", head)
        return msgpack.unpackb(recv_exact(s, n), raw=False, strict_map_key=False)  # type: ignore[no-any-return]
    finally:
        raw.close()


def frame(body: dict) -> bytes:  # type: ignore[type-arg]
    data = msgpack.packb(body)
    return struct.pack("!I", len(data)) + data


def recv_exact(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed by the server")
        buf += chunk
    return buf


def refused(port: int, context: ssl.SSLContext | None, server_hostname: str = "127.0.0.1") -> str:
    """The error a status RPC ends with; fails the test if the server answered."""
    try:
        reply = rpc_status(port, context, server_hostname)
    except (OSError, ssl.SSLError) as exc:
        return f"{type(exc).__name__}: {exc}"
    pytest.fail(f"the server answered: {reply!r}")


class HTTPSAgent(AgentProc):
    """A dev agent with plain HTTP off (ports.http = -1), checked for readiness over HTTPS."""

    def __init__(self, tmp: Path, conf: Path, https_port: int, client: tuple[Path, Path], ca: Path) -> None:
        super().__init__(tmp, [conf], node="tls0")
        i = self.args.index("--http-port")
        self.args[i + 1] = "-1"
        self.url = f"https://127.0.0.1:{https_port}"
        self.verify = ctx(ca, client)

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"agent exited with {self.proc.returncode}:\n{self.log_path.read_text()}")
        try:
            r = httpx.get(self.url + "/v1/status/leader", timeout=1, verify=self.verify)
        except httpx.HTTPError:
            return False
        return r.status_code == 200 and bool(r.json())


@pytest.fixture
def pki(tmp_path: Path):  # type: ignore[no-untyped-def]
    good = PKI(tmp_path / "pki")
    other = PKI(tmp_path / "other", "other")
    return good, other


def test_https_only_with_client_certs_and_reload_on_sighup(tmp_path: Path, pki) -> None:  # type: ignore[no-untyped-def]
    good, other = pki
    server = good.cert("server", SERVER_NAME, [SERVER_NAME, "localhost"], ["127.0.0.1"])
    client = good.cert("client", "client.dc1.murmur", ["client.dc1.murmur"])
    wrong_ca_client = other.cert("client-other", "client.dc1.murmur", ["client.dc1.murmur"])
    long_ago = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=10)
    expired = good.cert("expired", "client.dc1.murmur", ["client.dc1.murmur"], days=1, not_before=long_ago)
    port = free_port()
    agent = HTTPSAgent(tmp_path, tls_conf(tmp_path / "conf", good.ca_file, *server, https=port), port, client,
                       good.ca_file)
    agent.start()
    try:
        url = agent.url + "/v1/agent/self"
        # Positive control: the right client certificate, and the agent's name checked.
        r = httpx.get(url, verify=ctx(good.ca_file, client, check_hostname=True), timeout=10)
        assert r.status_code == 200
        # Plain HTTP is off: nothing listens on the port the harness gave it.
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{agent.http_port}/v1/agent/self", timeout=5)
        # Refused: no client certificate, one from another CA, an expired one.
        for label, cert in (("none", None), ("wrong CA", wrong_ca_client), ("expired", expired)):
            with pytest.raises((httpx.HTTPError, ssl.SSLError)):  # noqa: PT012 - one call
                print("refused:", label)
                httpx.get(url, verify=ctx(good.ca_file, cert), timeout=10).raise_for_status()
        # Plaintext HTTP to the HTTPS port gets no HTTP answer.
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/v1/agent/self", timeout=5)
        # Our client refuses a server certificate from another CA.
        with pytest.raises(httpx.ConnectError):
            httpx.get(url, verify=ctx(other.ca_file, client), timeout=10)
        wait_for(lambda: agent.logs().count("HTTPS: TLS handshake with 127.0.0.1 failed") >= 4, 10,
                 what="four refused handshakes logged")
        logs = agent.logs()
        assert "certificate has expired" in logs or "certificate expired" in logs
        assert "unknown ca" in logs.lower() or "certificate verify failed" in logs

        # SIGHUP reloads the certificates: new connections see the new server certificate.
        def serial() -> int:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                    ctx(good.ca_file, client).wrap_socket(raw, server_hostname="localhost") as s:
                der = s.getpeercert(binary_form=True)
            from cryptography import x509

            return x509.load_der_x509_certificate(der).serial_number  # type: ignore[arg-type]

        before = serial()
        c, k = make_cert(good.ca_pem, good.ca_key, SERVER_NAME, [SERVER_NAME, "localhost"], ["127.0.0.1"])
        server[0].write_bytes(c)
        server[1].write_bytes(k)
        agent.signal(signal.SIGHUP)
        wait_for(lambda: serial() != before, 20, what="the new certificate served after SIGHUP")
        assert "TLS certificates reloaded" in agent.logs()
        r = httpx.get(url, verify=ctx(good.ca_file, client, check_hostname=True), timeout=10)
        assert r.status_code == 200
        # The CLI speaks HTTPS with Consul's variables.
        env = {"MURMUR_HTTP_ADDR": agent.url, "MURMUR_CACERT": str(good.ca_file),
               "MURMUR_CLIENT_CERT": str(client[0]), "MURMUR_CLIENT_KEY": str(client[1]), "PATH": "/usr/bin:/bin"}
        out = subprocess.run([*MURMUR, "members"], env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and "tls0" in out.stdout, out.stderr
    finally:
        agent.stop()


def test_server_rpc_over_tls(tmp_path: Path, pki, start_agent) -> None:  # type: ignore[no-untyped-def]
    good, other = pki
    server = good.cert("server", SERVER_NAME, [SERVER_NAME, "localhost"], ["127.0.0.1"])
    # A certificate from the right CA that does not name server.dc1.murmur (a client's, say).
    nameless = good.cert("nameless", "client.dc1.murmur", ["client.dc1.murmur", "localhost"], ["127.0.0.1"])
    client = good.cert("client", "client.dc1.murmur", ["client.dc1.murmur"])
    wrong_ca_client = other.cert("client-other", "client.dc1.murmur", ["client.dc1.murmur"])
    long_ago = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=10)
    expired = good.cert("expired", "client.dc1.murmur", ["client.dc1.murmur"], days=1, not_before=long_ago)

    a = start_agent(tls_conf(tmp_path / "a", good.ca_file, *server), node="srv-a")
    # Positive control: a TLS status RPC with a good client certificate, the server's name checked.
    reply = rpc_status(a.server_port, ctx(good.ca_file, client, check_hostname=True), SERVER_NAME)
    assert "err" not in reply and reply["leader"], reply
    # verify_incoming: plaintext RPC is refused, and so are the wrong CA, an expired certificate, none.
    refused(a.server_port, None)
    for cert in (wrong_ca_client, expired, None):
        refused(a.server_port, ctx(good.ca_file, cert))
    wait_for(lambda: "refused a plaintext connection" in a.logs(), 10, what="plaintext refusal logged")
    wait_for(lambda: a.logs().count("server port: TLS handshake with") >= 3, 10, what="3 handshake refusals logged")
    assert "certificate has expired" in a.logs() or "certificate expired" in a.logs()

    # A client agent writes through server RPC over TLS (positive control) ...
    c1 = start_agent(tls_conf(tmp_path / "c1", good.ca_file, *client), node="c1", dev=False,
                     extra=["--join", f"127.0.0.1:{a.serf_port}"])
    wait_for(lambda: c1.put("/v1/kv/tls-probe", content=b"ok").status_code == 200, 60,
             what="a KV write from the TLS client agent")
    assert a.get("/v1/kv/tls-probe?raw").content == b"ok"

    # ... but not to a server whose certificate lacks server.dc1.murmur (verify_server_hostname).
    b = start_agent(tls_conf(tmp_path / "b", good.ca_file, *nameless), node="srv-b")
    # (Started by hand: its readiness probe asks the servers, which it refuses to talk to.)
    c2 = AgentProc(tmp_path, [tls_conf(tmp_path / "c2", good.ca_file, *client)],
                   ["--join", f"127.0.0.1:{b.serf_port}"], node="c2", dev=False)
    c2.launch()
    try:
        wait_for(lambda: "certificate is not valid for 'server.dc1.murmur'" in c2.logs(), 60,
                 what="the client refusing the nameless server")
        r = httpx.put(c2.url + "/v1/kv/x", content=b"1", timeout=60)
        assert r.status_code == 500, r.status_code
        assert b.get("/v1/kv/x").status_code == 404  # nothing got through
    finally:
        c2.stop()
    # The same check from outside, positive control included: the name is what is refused.
    with pytest.raises(ssl.SSLCertVerificationError):
        rpc_status(b.server_port, ctx(good.ca_file, client, check_hostname=True), SERVER_NAME)
    assert "err" not in rpc_status(b.server_port, ctx(good.ca_file, client, check_hostname=True), "client.dc1.murmur")


def test_three_servers_raft_and_rpc_over_tls(tmp_path: Path, pki) -> None:  # type: ignore[no-untyped-def]
    """Raft, forwarding, snapshot transfer and client RPC all over verified TLS: three servers
    elect a leader, a write through a client agent reaches every server, a follower that was down
    past the log catches up by a snapshot from the leader, and no plaintext crossed the server
    ports (each server would refuse and log it)."""
    good, _ = pki
    server = good.cert("server", SERVER_NAME, [SERVER_NAME, "localhost"], ["127.0.0.1"])
    client = good.cert("client", "client.dc1.murmur", ["client.dc1.murmur"])
    sconf = tls_conf(tmp_path / "s", good.ca_file, *server)
    (sconf / "raft.toml").write_text("raft_snapshot_threshold = 20\nraft_trailing_logs = 5\n")
    agents: list[AgentProc] = []
    try:
        servers: list[AgentProc] = []
        for i in range(3):
            extra = ["--server", "--bootstrap-expect", "3"]
            if servers:
                extra += ["--join", f"127.0.0.1:{servers[0].serf_port}"]
            s = AgentProc(tmp_path, [sconf], extra, node=f"s{i}", dev=False)
            s.wait_leader = False
            agents.append(s)
            servers.append(s.start())

        def leader(a: AgentProc) -> str:
            return str(a.get("/v1/status/leader").json())

        wait_for(lambda: len({leader(s) for s in servers}) == 1 and leader(servers[0]), 90,
                 what="one leader known to all three TLS servers")
        c = AgentProc(tmp_path, [tls_conf(tmp_path / "c", good.ca_file, *client)],
                      ["--join", f"127.0.0.1:{servers[1].serf_port}"], node="c0", dev=False)
        c.has_servers = True
        agents.append(c.start())
        wait_for(lambda: c.put("/v1/kv/over-tls", content=b"yes").status_code == 200, 60, what="a write via the client")
        for s in servers:
            wait_for(lambda s=s: s.get("/v1/kv/over-tls?raw&stale").content == b"yes", 30,
                     what=f"the write on {s.node}")
        # A follower down while the others write past the snapshot threshold gets a snapshot.
        lead = next(s for s in servers if s.get("/v1/agent/self").json()["Stats"]["raft"].get("state") == "Leader")
        follower = next(s for s in servers if s is not lead)
        follower.stop()
        for i in range(60):
            assert lead.put(f"/v1/kv/bulk{i}", content=str(i).encode()).status_code == 200
        follower.wait_leader = False
        follower.restart()
        wait_for(lambda: follower.get("/v1/kv/bulk59?raw&stale").content == b"59", 60,
                 what="the follower caught up")
        assert "installed a snapshot from the leader" in follower.logs()
        for a in agents:
            assert "refused a plaintext connection" not in a.logs()
            assert "TLS handshake" not in a.logs()
            assert "TLS on: server RPC accepts TLS only; outgoing RPC verified TLS" in a.logs()
    finally:
        for a in agents:
            a.stop()
