"""Transport security of a server: mTLS, bearer tokens, reflection, and the loopback rule.

`Security` is what `start_server` is told; `security_from_args` reads it from
the flags `service_kit.flags.add_security_flags` adds. With a certificate a
server serves TLS and requires a client certificate signed by its CA
(`grpc.ssl_server_credentials(..., require_client_auth=True)`); with TLS or a
token file, every call goes through the authorization table
(`service_kit.authz`). Without TLS a server listens on a loopback address
only, unless told `--insecure`.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path

import grpc

# One definition of loopback for servers and clients: 127.0.0.0/8, ::1 or
# localhost; any other name is taken as reachable from elsewhere (not resolved).
from minisaga_client.tls import is_loopback as is_loopback

log = logging.getLogger(__name__)


class InsecureListen(Exception):
    """A plaintext server asked to listen beyond loopback without --insecure."""


@dataclass(frozen=True)
class TlsFiles:
    """PEM files: this side's certificate and key, and the CA its peers' certificates chain to."""

    cert: Path
    key: Path
    ca: Path

    def server_credentials(self) -> grpc.ServerCredentials:
        """Serves TLS; a caller must present a certificate the CA signed."""
        return grpc.ssl_server_credentials(
            [(self.key.read_bytes(), self.cert.read_bytes())],
            root_certificates=self.ca.read_bytes(),
            require_client_auth=True,
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """Dials TLS, trusting the CA and presenting this certificate."""
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca.read_bytes(),
            private_key=self.key.read_bytes(),
            certificate_chain=self.cert.read_bytes(),
        )


@dataclass(frozen=True)
class Security:
    """How a server guards its port. The default is today's: plaintext, no checks."""

    tls: TlsFiles | None = None
    token_file: Path | None = None
    """Bearer tokens (hashes and identities; `service_kit.authz.TokenFile`)."""
    reflection: bool = False
    """Serve grpc.reflection (what `grpcurl list` and `grpcurl` without protos use)."""
    insecure: bool = False
    """Allow plaintext on a non-loopback address (a warning at every start)."""

    @property
    def authorizing(self) -> bool:
        """Whether every call is checked against the authorization table."""
        return self.tls is not None or self.token_file is not None


def check_listen(listen: str, security: Security) -> None:
    """Refuses plaintext beyond loopback unless `insecure`; warns whenever `insecure` is used."""
    if security.tls is not None:
        return
    if security.insecure:
        log.warning(
            "--insecure: serving plaintext on %s; anyone who reaches this port can read the "
            "traffic%s",
            listen,
            "" if security.token_file else " and call every method",
        )
        return
    if not is_loopback(listen):
        raise InsecureListen(
            f"refusing to listen on {listen} without TLS: give --tls-cert, --tls-key and "
            "--tls-ca, or --insecure to serve plaintext beyond loopback anyway"
        )


def tls_from_args(cert: str, key: str, ca: str, what: str) -> TlsFiles | None:
    """All three files or none; a missing file is refused here, by name."""
    given = {"cert": cert, "key": key, "ca": ca}
    if not any(given.values()):
        return None
    missing = [name for name, value in given.items() if not value]
    if missing:
        raise SystemExit(
            f"{what}: give all of cert, key and ca, or none; missing: {', '.join(missing)}"
        )
    for name, value in given.items():
        if not Path(value).is_file():
            raise SystemExit(f"{what}: the {name} file {value} does not exist")
    return TlsFiles(Path(cert), Path(key), Path(ca))


def security_from_args(args: argparse.Namespace) -> Security:
    """The `Security` of the flags `add_security_flags` added."""
    token_file = Path(args.token_file) if args.token_file else None
    if token_file is not None:
        from service_kit.authz import TokenFileError, read_tokens

        try:
            read_tokens(token_file)
        except (OSError, TokenFileError) as error:
            raise SystemExit(f"--token-file: {error}") from None
    return Security(
        tls=tls_from_args(
            args.tls_cert, args.tls_key, args.tls_ca, "--tls-cert/--tls-key/--tls-ca"
        ),
        token_file=token_file,
        reflection=switch(args.reflection, "--reflection"),
        insecure=switch(args.insecure, "--insecure"),
    )


def switch(value: object, flag: str) -> bool:
    """A store_true flag whose default may come from an environment variable as
    a word: true/false, 1/0, yes/no, on/off; anything else stops with one line."""
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word in ("1", "true", "yes", "on"):
        return True
    if word in ("", "0", "false", "no", "off"):
        return False
    raise SystemExit(f"{getattr(value, 'variable', flag)}={str(value)!r}: use true or false")
