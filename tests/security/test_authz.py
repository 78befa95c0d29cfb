"""The authorization table, cell by cell, against real servers over mTLS; bearer tokens.

Every (identity, method) cell of `service_kit.authz.TABLE` is called with
that identity's certificate: an allowed cell reaches the handler (OK or a
business error, such as INVALID_ARGUMENT for an empty request), a refused
one answers PERMISSION_DENIED with ErrorInfo ROLE_NOT_ALLOWED.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor import MethodDescriptor
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2
from minisaga.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from minisaga.orchestrator.v1 import orchestrator_pb2 as pb
from minisaga.orchestrator.v1 import orchestrator_pb2_grpc
from minisaga.payment.v1 import payment_pb2, payment_pb2_grpc
from minisaga.shipping.v1 import shipping_pb2

from service_kit import authz
from service_kit.authz import ANYONE, IDENTITIES, TABLE
from tests.rich_errors import error_info
from tests.security.conftest import Pki, SecureSystem

SERVICES = {
    "orchestrator": pb.DESCRIPTOR.services_by_name["OrchestratorService"],
    "payment": payment_pb2.DESCRIPTOR.services_by_name["PaymentService"],
    "inventory": inventory_pb2.DESCRIPTOR.services_by_name["InventoryService"],
    "shipping": shipping_pb2.DESCRIPTOR.services_by_name["ShippingService"],
}
SHARED = (
    health_pb2.DESCRIPTOR.services_by_name["Health"],
    reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"],
)
"""Served by every server."""

REACHED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.OUT_OF_RANGE,
}
"""What a call that reached its handler may answer: OK or a business error."""
UNFINISHED = {"grpc.health.v1.Health/List": grpc.StatusCode.UNIMPLEMENTED}
"""Methods whose servicer answers UNIMPLEMENTED once reached: the aio health
servicer of grpcio-health-checking has no List (a refusal would be
PERMISSION_DENIED or UNAUTHENTICATED)."""


def method_name(method: MethodDescriptor) -> str:
    return f"{method.containing_service.full_name}/{method.name}"


def served_by(name: str) -> list[str]:
    """The servers that serve the method `name` of the table."""
    service = name.split("/")[0]
    if service in {s.full_name for s in SHARED}:
        return list(SERVICES)
    return [server for server, s in SERVICES.items() if s.full_name == service]


def describe(name: str) -> MethodDescriptor:
    return descriptor_pool.Default().FindMethodByName(name.replace("/", "."))


def test_the_table_names_every_method_of_every_service_and_nothing_else() -> None:
    served = {method_name(m) for s in (*SERVICES.values(), *SHARED) for m in s.methods}
    assert set(TABLE) == served
    for name, roles in TABLE.items():
        assert roles, f"{name}: nobody may call it"
        assert roles <= {*IDENTITIES, ANYONE}, name


def test_the_table_is_the_one_the_issue_lists() -> None:
    """The roles in words (docs/security.md shows the same table)."""

    def who(service: str, method: str) -> set[str]:
        return set(TABLE[f"minisaga.{service}.v1.{service.capitalize()}Service/{method}"])

    for service, method in [
        ("payment", "Charge"), ("payment", "Refund"), ("inventory", "Reserve"),
        ("inventory", "Release"), ("shipping", "CreateShipment"), ("shipping", "CancelShipment"),
    ]:  # fmt: skip
        assert who(service, method) == {"orchestrator"}
    for service, method in [
        ("payment", "GetPayment"), ("payment", "ListPayments"), ("inventory", "GetReservation"),
        ("inventory", "ListReservations"), ("inventory", "GetStock"),
        ("shipping", "GetShipment"), ("shipping", "ListShipments"),
    ]:  # fmt: skip
        assert who(service, method) == {"orchestrator", "operator"}
    assert who("inventory", "SetStock") == {"operator"}
    for method in ["PlaceOrder", "StartSaga", "GetSaga", "GetOrder", "WatchSaga", "ListSagas",
                   "CountSagas", "GetSagaDefinition"]:  # fmt: skip
        assert who("orchestrator", method) == {"client", "operator"}
    for method in ["ResumeSaga", "ResumeSagas", "CancelSaga"]:
        assert who("orchestrator", method) == {"operator"}
    for method in ["Check", "Watch", "List"]:
        assert TABLE[f"grpc.health.v1.Health/{method}"] == {ANYONE}


async def call(
    channel: grpc.aio.Channel, name: str, **metadata: str
) -> grpc.aio.AioRpcError | None:
    """Calls `name` with an empty request (the first reply of a stream); the error, or None."""
    method = describe(name)
    request_type = message_factory.GetMessageClass(method.input_type)
    reply_type = message_factory.GetMessageClass(method.output_type)
    path = f"/{name}"
    request: Any = request_type()
    if name.endswith("ServerReflectionInfo"):
        request = reflection_pb2.ServerReflectionRequest(list_services="")
    kwargs: dict[str, Any] = {
        "request_serializer": request_type.SerializeToString,
        "response_deserializer": reply_type.FromString,
    }
    sent: dict[str, Any] = {"timeout": 30, "metadata": tuple(metadata.items()) or None}
    try:
        if method.client_streaming:
            stream = channel.stream_stream(path, **kwargs)(iter([request]), **sent)
            await stream.read()
            stream.cancel()
        elif method.server_streaming:
            replies = channel.unary_stream(path, **kwargs)(request, **sent)
            await replies.read()
            replies.cancel()
        else:
            await channel.unary_unary(path, **kwargs)(request, **sent)
    except grpc.aio.AioRpcError as error:
        return error
    return None


def reason(error: grpc.aio.AioRpcError) -> str:
    return error_info(error).reason


@pytest.fixture
async def channels(
    secure_system: SecureSystem, pki: Pki
) -> AsyncIterator[dict[tuple[str, str], grpc.aio.Channel]]:
    """A channel per (identity, server), each presenting that identity's certificate."""
    found = {
        (identity, server): grpc.aio.secure_channel(
            secure_system.address(server), pki.credentials(identity)
        )
        for identity in IDENTITIES
        for server in SERVICES
    }
    yield found
    for channel in found.values():
        await channel.close(None)


async def test_every_cell_of_the_table_over_mtls(
    channels: dict[tuple[str, str], grpc.aio.Channel],
) -> None:
    wrong: list[str] = []
    cells = 0
    for name, roles in TABLE.items():
        for server in served_by(name):
            for identity in IDENTITIES:
                cells += 1
                error = await call(channels[identity, server], name)
                code = grpc.StatusCode.OK if error is None else error.code()
                if ANYONE in roles or identity in roles:
                    if code not in {*REACHED, UNFINISHED.get(name)}:
                        wrong.append(f"{identity} → {server} {name}: {code.name}, should reach it")
                elif code != grpc.StatusCode.PERMISSION_DENIED:
                    wrong.append(f"{identity} → {server} {name}: {code.name}, should be refused")
                elif error is not None and reason(error) != authz.ROLE_NOT_ALLOWED:
                    wrong.append(f"{identity} → {server} {name}: reason {reason(error)!r}")
    assert not wrong, "\n".join(wrong)
    assert cells >= len(TABLE) * len(IDENTITIES)


async def test_a_refused_call_executes_nothing(secure_system: SecureSystem, pki: Pki) -> None:
    saga_id = str(uuid.uuid4())
    charge = payment_pb2.ChargeRequest(saga_id=saga_id, amount=100, currency="JPY")
    async with (
        grpc.aio.secure_channel(secure_system.address("payment"), pki.credentials("client")) as c,
        grpc.aio.secure_channel(secure_system.address("payment"), pki.credentials("operator")) as o,
        grpc.aio.secure_channel(secure_system.address("inventory"), pki.credentials("client")) as i,
        grpc.aio.secure_channel(
            secure_system.address("orchestrator"), pki.credentials("orchestrator")
        ) as orchestrator,
        grpc.aio.secure_channel(
            secure_system.address("orchestrator"), pki.credentials("operator")
        ) as operator,
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await payment_pb2_grpc.PaymentServiceStub(c).Charge(charge, timeout=30)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.aio.AioRpcError) as absent:
            await payment_pb2_grpc.PaymentServiceStub(o).GetPayment(
                payment_pb2.GetPaymentRequest(saga_id=saga_id), timeout=30
            )
        assert absent.value.code() == grpc.StatusCode.NOT_FOUND

        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await inventory_pb2_grpc.InventoryServiceStub(i).SetStock(
                inventory_pb2.SetStockRequest(product_id="apple", quantity=1), timeout=30
            )
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED

        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await orchestrator_pb2_grpc.OrchestratorServiceStub(orchestrator).PlaceOrder(
                pb.PlaceOrderRequest(product_id="apple", quantity=1, amount=100), timeout=30
            )
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        api = orchestrator_pb2_grpc.OrchestratorServiceStub(operator)
        listed = await api.ListSagas(pb.ListSagasRequest(), timeout=30)
        assert list(listed.sagas) == []
    async with grpc.aio.secure_channel(
        secure_system.address("inventory"), pki.credentials("operator")
    ) as reader:
        stock = await inventory_pb2_grpc.InventoryServiceStub(reader).GetStock(
            inventory_pb2.GetStockRequest(product_id="apple"), timeout=30
        )
    assert stock.stock.quantity == 100


async def test_a_certificate_naming_an_unknown_identity_is_unauthenticated(
    secure_system: SecureSystem, pki: Pki
) -> None:
    credentials = pki.stranger.channel_credentials()
    async with grpc.aio.secure_channel(secure_system.address("orchestrator"), credentials) as c:
        error = await call(c, "minisaga.orchestrator.v1.OrchestratorService/ListSagas")
        assert error is not None and error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert reason(error) == authz.UNAUTHENTICATED
        assert await call(c, "grpc.health.v1.Health/Check") is None  # health for everyone


async def test_the_orchestrator_reaches_the_participants_with_its_certificate(
    secure_system: SecureSystem, pki: Pki
) -> None:
    """A whole saga over mTLS: the orchestrator dials the participants with its certificate."""
    credentials = pki.credentials("client")
    async with grpc.aio.secure_channel(secure_system.address("orchestrator"), credentials) as c:
        placed = await orchestrator_pb2_grpc.OrchestratorServiceStub(c).PlaceOrder(
            pb.PlaceOrderRequest(product_id="apple", quantity=2, amount=1200), timeout=60
        )
    assert placed.status == pb.SAGA_STATUS_COMPLETED, placed


# --- bearer tokens -------------------------------------------------------------


GET_PAYMENT = "minisaga.payment.v1.PaymentService/GetPayment"
CHARGE = "minisaga.payment.v1.PaymentService/Charge"


async def test_tokens_name_an_identity_and_the_table_decides(token_payment: Any) -> None:
    address, tokens, issued = token_payment
    assert all(token not in tokens.read_text() for token in issued.values()), "a token stored"
    async with grpc.aio.insecure_channel(address) as channel:
        bearer = {name: {"authorization": f"Bearer {t}"} for name, t in issued.items()}

        allowed = await call(channel, GET_PAYMENT, **bearer["orchestrator"])
        assert allowed is not None and allowed.code() == grpc.StatusCode.INVALID_ARGUMENT

        wrong_role = await call(channel, GET_PAYMENT, **bearer["client"])
        assert wrong_role is not None and wrong_role.code() == grpc.StatusCode.PERMISSION_DENIED
        assert reason(wrong_role) == authz.ROLE_NOT_ALLOWED

        for metadata in ({}, {"authorization": "Bearer not-a-token"},
                         {"authorization": f"Basic {issued['orchestrator']}"}):  # fmt: skip
            error = await call(channel, GET_PAYMENT, **metadata)
            assert error is not None and error.code() == grpc.StatusCode.UNAUTHENTICATED, metadata
            assert reason(error) == authz.UNAUTHENTICATED

        assert await call(channel, "grpc.health.v1.Health/Check") is None


async def test_tokens_are_added_and_revoked_while_serving(token_payment: Any) -> None:
    address, tokens, _ = token_payment
    token = authz.add_token(tokens, "operator")
    bearer = f"Bearer {token}"
    async with grpc.aio.insecure_channel(address) as channel:
        error = await call(channel, GET_PAYMENT, authorization=bearer)
        assert error is not None and error.code() == grpc.StatusCode.INVALID_ARGUMENT
        refused = await call(channel, CHARGE, authorization=bearer)
        assert refused is not None and refused.code() == grpc.StatusCode.PERMISSION_DENIED

        kept = [line for line in tokens.read_text().splitlines() if "operator" not in line]
        tokens.write_text("\n".join(kept) + "\n")  # its line deleted: revoked
        revoked = await call(channel, GET_PAYMENT, authorization=bearer)
        assert revoked is not None and revoked.code() == grpc.StatusCode.UNAUTHENTICATED

        tokens.unlink()  # no file: no token is accepted (fail closed)
        gone = await call(channel, GET_PAYMENT, authorization=bearer)
        assert gone is not None and gone.code() == grpc.StatusCode.UNAUTHENTICATED


def test_a_token_file_line_holds_a_hash_and_an_identity(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    token = authz.add_token(path, "operator", "alice on call")
    [line] = path.read_text().splitlines()
    assert line == f"{authz.token_hash(token)} operator alice-on-call"
    assert path.stat().st_mode & 0o077 == 0
    with pytest.raises(authz.TokenFileError):
        authz.add_token(path, "root")
    path.write_text("sha256:abc operator\n")
    with pytest.raises(authz.TokenFileError, match="tokens:1"):
        authz.read_tokens(path)


def test_docs_security_shows_the_table() -> None:
    """docs/security.md's "Who may call what" is this module's TABLE, row for row."""
    page = (Path(__file__).resolve().parents[2] / "docs/security.md").read_text()
    section = page.split("\n## Who may call what\n", 1)[1].split("\n## ", 1)[0]
    shown: dict[str, frozenset[str]] = {}
    for method, who in re.findall(r"^\| `([^`]+)` \| ([^|]+) \|$", section, re.M):
        if who.startswith("anyone"):
            shown[method] = frozenset({ANYONE})
        elif who.startswith("any identity"):
            shown[method] = frozenset(IDENTITIES)
        else:
            shown[method] = frozenset(who.strip().split(", "))
    assert shown == dict(TABLE)
