"""mTLS handshakes, the loopback rule, reflection off by default, and the certificates' content."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from service_kit import certs
from service_kit.authz import IDENTITIES
from service_kit.server import start_server
from service_kit.tls import InsecureListen, Security, TlsFiles, check_listen, is_loopback
from tests.harness import ROOT
from tests.security.conftest import Pki, SecureSystem

SERVICES = ("orchestrator", "payment", "inventory", "shipping")


async def health(address: str, credentials: grpc.ChannelCredentials | None) -> grpc.StatusCode:
    """The status code of Health/Check over these credentials (None: plaintext)."""
    channel = (
        grpc.aio.secure_channel(address, credentials)
        if credentials is not None
        else grpc.aio.insecure_channel(address)
    )
    async with channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=30
            )
        except grpc.aio.AioRpcError as error:
            return error.code()
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    return grpc.StatusCode.OK


@pytest.mark.parametrize("service", SERVICES)
async def test_every_service_completes_the_handshake_with_a_certificate_of_the_ca(
    secure_system: SecureSystem, pki: Pki, service: str
) -> None:
    for identity in IDENTITIES:
        assert await health(secure_system.address(service), pki.credentials(identity)) == (
            grpc.StatusCode.OK
        ), identity


@pytest.mark.parametrize("service", SERVICES)
async def test_the_handshake_fails_without_a_good_client_certificate(
    secure_system: SecureSystem, pki: Pki, service: str
) -> None:
    address = secure_system.address(service)
    ca = pki.ca.read_bytes()
    refused = {
        "another CA's": pki.foreign.channel_credentials(),
        "an expired one": pki.expired.channel_credentials(),
        "none at all": grpc.ssl_channel_credentials(root_certificates=ca),
        "plaintext": None,
    }
    codes = {what: await health(address, credentials) for what, credentials in refused.items()}
    assert codes == dict.fromkeys(refused, grpc.StatusCode.UNAVAILABLE)


async def test_a_client_does_not_trust_a_server_of_another_ca(
    secure_system: SecureSystem, pki: Pki, tmp_path: Path
) -> None:
    """The client side checks too: our client certificate, but a CA that did not sign the server."""
    other = certs.Authority.create("another CA")
    (tmp_path / "other-ca.crt").write_bytes(other.cert_pem())
    files = pki.files("operator")
    lying = TlsFiles(files.cert, files.key, tmp_path / "other-ca.crt")
    code = await health(secure_system.address("payment"), lying.channel_credentials())
    assert code == grpc.StatusCode.UNAVAILABLE


def test_certs_init_writes_a_ca_and_one_certificate_per_identity_with_its_spiffe_id(
    pki: Pki,
) -> None:
    ca = x509.load_pem_x509_certificate(pki.ca.read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    for identity in IDENTITIES:
        cert = x509.load_pem_x509_certificate(pki.files(identity).cert.read_bytes())
        assert cert.issuer == ca.subject
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert names.get_values_for_type(x509.UniformResourceIdentifier) == [
            f"spiffe://minisaga/{identity}"
        ]
        assert names.get_values_for_type(x509.DNSName) == ["localhost"]
        assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
        assert pki.files(identity).key.stat().st_mode & 0o077 == 0, "a key readable by others"
    assert (pki.folder / "ca.key").stat().st_mode & 0o077 == 0


def test_certs_init_refuses_a_folder_that_has_a_ca(pki: Pki) -> None:
    before = pki.ca.read_bytes()
    with pytest.raises(certs.AlreadyInitialized):
        certs.init(pki.folder)
    assert pki.ca.read_bytes() == before


@pytest.mark.parametrize(
    ("listen", "loopback"),
    [
        ("127.0.0.1:7001", True),
        ("127.0.0.2:0", True),
        ("localhost:7001", True),
        ("[::1]:7001", True),
        ("0.0.0.0:7001", False),
        ("[::]:7001", False),
        ("10.1.2.3:7001", False),
        ("payment.internal:7002", False),
    ],
)
def test_which_addresses_are_loopback(listen: str, loopback: bool) -> None:
    assert is_loopback(listen) is loopback


async def test_a_plaintext_server_refuses_a_non_loopback_address() -> None:
    with pytest.raises(InsecureListen, match=r"refusing to listen on 0\.0\.0\.0:0 without TLS"):
        await start_server(lambda server: None, [], "0.0.0.0:0")


def test_a_participant_refuses_to_start_on_a_non_loopback_address_without_tls(
    tmp_path: Path,
) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "payment_server", "--listen", "0.0.0.0:0",
         "--db", str(tmp_path / "payment.db")],
        cwd=ROOT, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{ROOT}:{ROOT / 'generated'}"},
    )  # fmt: skip
    assert run.returncode != 0
    assert "refusing to listen on 0.0.0.0:0 without TLS" in run.stderr
    assert "Traceback" not in run.stderr


def test_the_orchestrator_refuses_to_start_on_a_non_loopback_address_without_tls(
    tmp_path: Path,
) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "orchestrator_server", "--listen", "0.0.0.0:0",
         "--db", str(tmp_path / "orchestrator.db")],
        cwd=ROOT, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{ROOT}:{ROOT / 'generated'}"},
    )  # fmt: skip
    assert run.returncode != 0
    assert "refusing to listen on 0.0.0.0:0 without TLS" in run.stderr
    assert "Traceback" not in run.stderr


async def test_insecure_logs_a_warning_at_every_start(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="service_kit.tls")
    for _ in range(2):
        running = await start_server(lambda server: None, [], "127.0.0.1:0",
                                     security=Security(insecure=True))  # fmt: skip
        await running.stop(0)
    warnings = [r for r in caplog.records if "--insecure" in r.getMessage()]
    assert len(warnings) == 2


async def test_reflection_is_off_unless_asked(pki: Pki) -> None:
    for asked in (False, True):
        running = await start_server(lambda server: None, [], "127.0.0.1:0",
                                     security=Security(reflection=asked))  # fmt: skip
        try:
            async with grpc.aio.insecure_channel(running.address) as channel:
                stub = reflection_pb2_grpc.ServerReflectionStub(channel)
                call = stub.ServerReflectionInfo(
                    iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=30
                )
                try:
                    reply = await call.read()
                    code = grpc.StatusCode.OK
                except grpc.aio.AioRpcError as error:
                    code = error.code()
        finally:
            await running.stop(0)
        if asked:
            assert code == grpc.StatusCode.OK
            listed = {s.name for s in reply.list_services_response.service}
            assert "grpc.health.v1.Health" in listed
        else:
            assert code == grpc.StatusCode.UNIMPLEMENTED


def test_tls_or_insecure_may_listen_beyond_loopback(
    pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="service_kit.tls")
    check_listen("0.0.0.0:7002", Security(tls=pki.files("payment")))
    assert not caplog.records  # TLS: nothing to warn about
    check_listen("0.0.0.0:7002", Security(insecure=True))
    [warning] = caplog.records
    assert "--insecure: serving plaintext on 0.0.0.0:7002" in warning.getMessage()
    with pytest.raises(InsecureListen):
        check_listen("0.0.0.0:7002", Security(token_file=pki.ca))  # tokens are not TLS
