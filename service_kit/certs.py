"""A development CA and one certificate per identity (`minisaga certs init DIR`).

    DIR/ca.crt, DIR/ca.key                  the CA (EC P-256), 10 years
    DIR/<identity>.crt, DIR/<identity>.key  for orchestrator, payment, inventory,
                                            shipping, operator, client; 1 year

Each leaf names its identity as the URI SAN spiffe://minisaga/<identity>
(what `service_kit.authz` reads) and carries DNS localhost and IP 127.0.0.1,
so any of them serves on loopback and dials it; each may act as server and as
client. Keys are written 0600. For anything but development, issue the
certificates from your own CA with the same URI SANs.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from service_kit.authz import IDENTITIES, SPIFFE_PREFIX

CA_DAYS = 3650
LEAF_DAYS = 365


@dataclass(frozen=True)
class Authority:
    """A CA's certificate and key, able to issue leaves."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def create(cls, name: str = "minisaga development CA", days: int = CA_DAYS) -> Authority:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    @classmethod
    def load(cls, directory: Path) -> Authority:
        cert = x509.load_pem_x509_certificate((directory / "ca.crt").read_bytes())
        key = serialization.load_pem_private_key((directory / "ca.key").read_bytes(), None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{directory / 'ca.key'} is not an EC key")
        return cls(cert, key)

    def issue(
        self,
        identity: str,
        *,
        days: int = LEAF_DAYS,
        not_before: datetime.datetime | None = None,
        not_after: datetime.datetime | None = None,
    ) -> tuple[bytes, bytes]:
        """A leaf for `identity`: (certificate PEM, key PEM)."""
        key = ec.generate_private_key(ec.SECP256R1())
        start = not_before or _now() - datetime.timedelta(minutes=5)
        end = not_after or start + datetime.timedelta(days=days)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identity)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.UniformResourceIdentifier(f"{SPIFFE_PREFIX}{identity}"),
                        x509.DNSName("localhost"),
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    ]
                ),
                critical=False,
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), False
            )
            .sign(self.key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return _key_pem(self.key)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def write(path: Path, data: bytes, *, secret: bool = False) -> None:
    """Writes a file that must not exist yet; a secret one readable by its owner only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if secret else 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


class AlreadyInitialized(Exception):
    """The folder already holds a CA."""


def init(directory: Path, identities: Iterable[str] = IDENTITIES) -> list[Path]:
    """Writes a new CA and a certificate and key per identity into `directory`.

    Refuses (AlreadyInitialized) when `directory` already has a ca.crt or ca.key:
    certificates signed by the old CA would stop being trusted."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("ca.crt", "ca.key"):
        if (directory / name).exists():
            raise AlreadyInitialized(f"{directory / name} exists; remove the folder to start over")
    authority = Authority.create()
    written = [directory / "ca.crt", directory / "ca.key"]
    write(written[0], authority.cert_pem())
    write(written[1], authority.key_pem(), secret=True)
    for identity in identities:
        cert, key = authority.issue(identity)
        for path, data, secret in (
            (directory / f"{identity}.crt", cert, False),
            (directory / f"{identity}.key", key, True),
        ):
            path.unlink(missing_ok=True)
            write(path, data, secret=secret)
            written.append(path)
    return written


def files(directory: Path, identity: str) -> tuple[Path, Path, Path]:
    """(cert, key, ca) of `identity` in a folder `init` wrote."""
    return directory / f"{identity}.crt", directory / f"{identity}.key", directory / "ca.crt"
