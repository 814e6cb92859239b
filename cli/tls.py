"""`murmur tls ca create` and `murmur tls cert create` (Consul's `consul tls ...`), with the
`cryptography` package.

Files, in the current directory, named as Consul names them with `murmur` for `consul`:

- `murmur-agent-ca.pem`, `murmur-agent-ca-key.pem`: the CA (ECDSA P-256, 5 years by default).
- `<dc>-server-murmur-<n>.pem` and `-key.pem`: a server certificate naming
  `server.<dc>.<domain>` and `localhost` (DNS) and 127.0.0.1 (IP), for server and client auth.
- `<dc>-client-murmur-<n>.pem` and `-key.pem`: a client certificate naming
  `client.<dc>.<domain>` and `localhost`, for client and server auth (as Consul's).

`<n>` is the first free number. Private keys are written 0600 and never printed.
`make_ca` and `make_cert` are also what the tests use to make certificates (expired ones too).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from pathlib import Path

import click

CA_CERT = "{domain}-agent-ca.pem"
CA_KEY = "{domain}-agent-ca-key.pem"


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def make_ca(common_name: str = "Murmur Agent CA", days: int = 1825,
            not_before: datetime.datetime | None = None) -> tuple[bytes, bytes]:
    """A self-signed CA: (certificate PEM, key PEM)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    start = not_before or _now() - datetime.timedelta(minutes=1)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(start)
            .not_valid_after(start + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def make_cert(ca_pem: bytes, ca_key_pem: bytes, common_name: str, dns_names: list[str], ips: list[str],
              days: int = 365, not_before: datetime.datetime | None = None) -> tuple[bytes, bytes]:
    """A leaf certificate signed by the CA, for server and client auth: (certificate PEM, key PEM)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca = x509.load_pem_x509_certificate(ca_pem)
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    start = not_before or _now() - datetime.timedelta(minutes=1)
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
               .issuer_name(ca.subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(start)
               .not_valid_after(start + datetime.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                            key_encipherment=True, data_encipherment=False, key_agreement=False,
                                            key_cert_sign=False, crl_sign=False, encipher_only=False,
                                            decipher_only=False), critical=True)
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                     ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.public_key()),  # type: ignore[arg-type]
                              critical=False))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


@click.group()
def tls() -> None:
    """Make a CA and agent certificates for TLS (server RPC, HTTPS)."""


@tls.group()
def ca() -> None:
    """The certificate authority."""


@ca.command("create")
@click.option("-days", "--days", default=1825, show_default=True, help="Days the CA is valid.")
@click.option("-domain", "--domain", default="murmur", show_default=True, help="Domain the agents use.")
@click.option("-common-name", "--common-name", default="", help="CA common name.")
def ca_create(days: int, domain: str, common_name: str) -> None:
    """Create <domain>-agent-ca.pem and <domain>-agent-ca-key.pem here."""
    cert_path, key_path = Path(CA_CERT.format(domain=domain)), Path(CA_KEY.format(domain=domain))
    for p in (cert_path, key_path):
        if p.exists():
            raise click.ClickException(f"{p} already exists")
    cert, key = make_ca(common_name or f"{domain.capitalize()} Agent CA", days)
    cert_path.write_bytes(cert)
    _write_private(key_path, key)
    click.echo(f"==> Saved {cert_path}")
    click.echo(f"==> Saved {key_path}")


@tls.group()
def cert() -> None:
    """Agent certificates."""


@cert.command("create")
@click.option("-server", "--server", is_flag=True, help="A server certificate (names server.<dc>.<domain>).")
@click.option("-client", "--client", is_flag=True, help="A client certificate (names client.<dc>.<domain>).")
@click.option("-dc", "--dc", default="dc1", show_default=True, help="Datacenter.")
@click.option("-domain", "--domain", default="murmur", show_default=True, help="Domain.")
@click.option("-days", "--days", default=365, show_default=True, help="Days the certificate is valid.")
@click.option("-ca", "--ca", "ca_file", default="", help="CA certificate (default <domain>-agent-ca.pem).")
@click.option("-key", "--key", "ca_key_file", default="", help="CA key (default <domain>-agent-ca-key.pem).")
@click.option("-additional-dnsname", "--additional-dnsname", multiple=True, help="Another DNS name (repeatable).")
@click.option("-additional-ipaddress", "--additional-ipaddress", multiple=True, help="Another IP (repeatable).")
def cert_create(server: bool, client: bool, dc: str, domain: str, days: int, ca_file: str, ca_key_file: str,
                additional_dnsname: tuple[str, ...], additional_ipaddress: tuple[str, ...]) -> None:
    """Create <dc>-server-<domain>-<n>.pem (or -client-) and its -key.pem here, signed by the CA."""
    if server == client:
        raise click.ClickException("exactly one of -server or -client is required")
    kind = "server" if server else "client"
    ca_path = Path(ca_file or CA_CERT.format(domain=domain))
    ca_key_path = Path(ca_key_file or CA_KEY.format(domain=domain))
    try:
        ca_pem, ca_key_pem = ca_path.read_bytes(), ca_key_path.read_bytes()
    except OSError as exc:
        raise click.ClickException(f"cannot read the CA ({exc.filename}): {exc.strerror}; "
                                   "run `murmur tls ca create` first") from None
    try:
        for ip in additional_ipaddress:
            __import__("ipaddress").ip_address(ip)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    n = 0
    while Path(f"{dc}-{kind}-{domain}-{n}.pem").exists() or Path(f"{dc}-{kind}-{domain}-{n}-key.pem").exists():
        n += 1
    name = f"{kind}.{dc}.{domain}"
    ips = ["127.0.0.1", *additional_ipaddress] if server else list(additional_ipaddress)
    cert_pem, key_pem = make_cert(ca_pem, ca_key_pem, name, [name, "localhost", *additional_dnsname], ips, days)
    cert_path, key_path = Path(f"{dc}-{kind}-{domain}-{n}.pem"), Path(f"{dc}-{kind}-{domain}-{n}-key.pem")
    cert_path.write_bytes(cert_pem)
    _write_private(key_path, key_pem)
    click.echo(f"==> Using {ca_path} and {ca_key_path}")
    click.echo(f"==> Saved {cert_path}")
    click.echo(f"==> Saved {key_path}")
