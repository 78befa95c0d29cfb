"""Dialing minisaga over mutual TLS: `connect(address, tls=Tls(ca=..., cert=..., key=...))`.

The servers of a TLS system require a client certificate signed by their CA
and decide what it may call by the identity in it (spiffe://minisaga/client
may place orders and read sagas; spiffe://minisaga/operator may also resume
and cancel them, and read the participants' records). `minisaga certs init`
writes a development CA and one certificate per identity.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

import grpc


@dataclass(frozen=True)
class Tls:
    """PEM files: the CA the servers' certificates chain to; this client's certificate, key."""

    ca: str | Path
    cert: str | Path
    key: str | Path

    def credentials(self) -> grpc.ChannelCredentials:
        """Channel credentials that trust `ca` and present `cert`. The files are read now."""
        return grpc.ssl_channel_credentials(
            root_certificates=Path(self.ca).read_bytes(),
            private_key=Path(self.key).read_bytes(),
            certificate_chain=Path(self.cert).read_bytes(),
        )

    @classmethod
    def from_options(cls, ca: str | None, cert: str | None, key: str | None) -> Tls | None:
        """From the three command-line options: all or none (ValueError names what is missing)."""
        given = {"--tls-ca": ca, "--tls-cert": cert, "--tls-key": key}
        if not any(given.values()):
            return None
        missing = [name for name, value in given.items() if not value]
        if missing:
            missing_text = ", ".join(missing)
            raise ValueError(
                f"give --tls-ca, --tls-cert and --tls-key together; missing {missing_text}"
            )
        assert ca and cert and key
        return cls(ca, cert, key)


def is_loopback(target: str) -> bool:
    """Whether host:port names a loopback address: 127.0.0.0/8, ::1 or localhost."""
    host = target.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def credentials_for(
    target: str, tls: Tls | None, token: str | None
) -> grpc.ChannelCredentials | None:
    """How to dial `target`: None for plaintext; mTLS with `tls`; and with `token`, every
    call carries `authorization: Bearer <token>`.

    A token is sent only over TLS or to a loopback address (ValueError otherwise):
    in clear on a network, anyone on the way could copy it.
    """
    if tls is None and token is None:
        return None
    if tls is not None:
        transport = tls.credentials()
    elif is_loopback(target):
        transport = grpc.local_channel_credentials(grpc.LocalConnectionType.LOCAL_TCP)
    else:
        raise ValueError(
            f"a bearer token goes only over TLS or to a loopback address, not in clear to {target}"
        )
    if token is None:
        return transport
    return grpc.composite_channel_credentials(transport, grpc.access_token_call_credentials(token))
