"""The client library and the `minisaga` command on a TLS system: tls=, --tls-*, certs, tokens."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from minisaga_client import Tls, connect_async
from minisaga_client.cli import EXIT_OK, EXIT_REFUSED, EXIT_USAGE, main
from minisaga_client.errors import NotFound, PermissionDenied, Unauthenticated, Unavailable
from minisaga_client.tls import credentials_for
from service_kit import authz
from tests.security.conftest import Pki, SecureSystem


def tls(pki: Pki, identity: str) -> Tls:
    files = pki.files(identity)
    return Tls(ca=files.ca, cert=files.cert, key=files.key)


async def test_connect_async_with_a_client_certificate_places_orders_but_may_not_cancel(
    secure_system: SecureSystem, pki: Pki
) -> None:
    async with connect_async(secure_system.address("orchestrator"), tls=tls(pki, "client")) as c:
        placed = await c.place_order(product_id="apple", quantity=1, amount=100)
        assert placed.saga_id
        with pytest.raises(PermissionDenied) as refused:
            await c.cancel_saga(placed.saga_id)
        assert refused.value.reason == authz.ROLE_NOT_ALLOWED
    async with connect_async(secure_system.address("orchestrator"), tls=tls(pki, "operator")) as o:
        assert (await o.get_saga(placed.saga_id)).saga_id == placed.saga_id


async def test_connect_async_without_tls_cannot_reach_a_tls_server(
    secure_system: SecureSystem,
) -> None:
    async with connect_async(secure_system.address("orchestrator"), timeout=30) as plain:
        with pytest.raises(Unavailable):
            await plain.list_sagas()


def test_the_command_wants_all_three_tls_options_or_none(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--tls-ca", "ca.crt", "saga", "list"]) == EXIT_USAGE
    assert "missing --tls-cert, --tls-key" in capsys.readouterr().err


def test_certs_init_writes_the_folder_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "certs"
    assert main(["certs", "init", str(folder)]) == EXIT_OK
    assert "grpcurl -cacert" in capsys.readouterr().out
    names = {p.name for p in folder.iterdir()}
    assert names == {"ca.crt", "ca.key"} | {
        f"{identity}.{ext}" for identity in authz.IDENTITIES for ext in ("crt", "key")
    }
    assert main(["certs", "init", str(folder)]) == EXIT_REFUSED
    assert "exists" in capsys.readouterr().err


def test_tokens_add_prints_the_token_once_and_stores_its_hash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "tokens"
    assert main(["tokens", "add", str(path), "operator", "--label", "alice"]) == EXIT_OK
    token = capsys.readouterr().out.strip()
    assert authz.Tokens(path).identity(token) == "operator"
    assert token not in path.read_text()
    assert main(["tokens", "add", str(path), "root"]) != EXIT_OK
    assert "unknown identity 'root'" in capsys.readouterr().err


async def test_connect_async_sends_a_bearer_token(token_payment: Any) -> None:
    address, tokens, issued = token_payment
    saga_id = str(uuid.uuid4())
    operator = authz.add_token(tokens, "operator")
    async with connect_async(None, payment=address, token=operator, timeout=30) as reader:
        with pytest.raises(NotFound):  # reached the handler: no such payment
            await reader.get_payment(saga_id)
    async with connect_async(None, payment=address, token=issued["client"], timeout=30) as c:
        with pytest.raises(PermissionDenied):
            await c.get_payment(saga_id)
    async with connect_async(None, payment=address, timeout=30) as anonymous:
        with pytest.raises(Unauthenticated):
            await anonymous.get_payment(saga_id)


def test_a_token_is_not_sent_in_clear_beyond_loopback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert credentials_for("127.0.0.1:7001", None, "t") is not None
    assert credentials_for("127.0.0.1:7001", None, None) is None
    with pytest.raises(ValueError, match="only over TLS or to a loopback address"):
        credentials_for("10.0.0.1:7001", None, "t")
    assert main(["--token", "t", "--orchestrator", "10.0.0.1:7001", "saga", "list"]) == (EXIT_USAGE)
    assert "not in clear to 10.0.0.1:7001" in capsys.readouterr().err
