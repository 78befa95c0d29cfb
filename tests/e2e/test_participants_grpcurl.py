"""The participants as a user meets them: real processes, the real grpcurl binary.

Reflection lets grpcurl work with no proto files at hand; JSON shows int64 as
strings and leaves out fields at their default value; grpcurl exits with
64 + the gRPC status code when a call fails.
"""

from __future__ import annotations

import uuid

import grpc
import pytest

from tests.e2e.conftest import PARTICIPANTS
from tests.e2e.grpcurl import EXIT_STATUS_BASE, Grpcurl

pytestmark = pytest.mark.slow

PAYMENT = "minisaga.payment.v1.PaymentService"
INVENTORY = "minisaga.inventory.v1.InventoryService"
SHIPPING = "minisaga.shipping.v1.ShippingService"


def exit_code(status: grpc.StatusCode) -> int:
    return EXIT_STATUS_BASE + int(status.value[0])


def saga() -> str:
    return str(uuid.uuid4())


@pytest.mark.parametrize("name", list(PARTICIPANTS))
def test_reflection_lists_the_service(
    name: str, grpcurl: Grpcurl, request: pytest.FixtureRequest
) -> None:
    address: str = request.getfixturevalue(name)
    result = grpcurl(address, "list")
    assert result.code == 0, result.output
    services = result.stdout.split()
    assert PARTICIPANTS[name].service in services
    assert "grpc.health.v1.Health" in services
    assert "grpc.reflection.v1alpha.ServerReflection" in services


@pytest.mark.parametrize("name", list(PARTICIPANTS))
def test_health_check_is_serving(
    name: str, grpcurl: Grpcurl, request: pytest.FixtureRequest
) -> None:
    address: str = request.getfixturevalue(name)
    whole = grpcurl.call(address, "grpc.health.v1.Health/Check", {})
    assert whole.json() == {"status": "SERVING"}
    one = grpcurl.call(
        address, "grpc.health.v1.Health/Check", {"service": PARTICIPANTS[name].service}
    )
    assert one.json() == {"status": "SERVING"}


def test_charge_twice_gives_one_receipt_then_refund(payment: str, grpcurl: Grpcurl) -> None:
    saga_id = saga()
    charge = {"saga_id": saga_id, "order_id": "ord_e2e1", "amount": 1200}
    first = grpcurl.call(payment, f"{PAYMENT}/Charge", charge).json()
    second = grpcurl.call(payment, f"{PAYMENT}/Charge", charge).json()
    assert first["payment"]["receipt_id"].startswith("rcpt_")
    assert second["payment"]["receipt_id"] == first["payment"]["receipt_id"]
    assert first["payment"]["amount"] == "1200"  # int64 comes back as a string
    assert first["payment"]["currency"] == "JPY"
    assert first["payment"]["status"] == "PAYMENT_STATUS_CHARGED"
    assert "replayed" not in first  # false is the default: omitted
    assert second["replayed"] is True

    refund = grpcurl.call(payment, f"{PAYMENT}/Refund", {"saga_id": saga_id, "reason": "e2e"})
    assert refund.json()["outcome"] == "REFUND_OUTCOME_REFUNDED"
    got = grpcurl.call(payment, f"{PAYMENT}/GetPayment", {"saga_id": saga_id}).json()
    assert got["payment"]["status"] == "PAYMENT_STATUS_REFUNDED"
    assert got["payment"]["refund_reason"] == "e2e"
    assert got["payment"]["receipt_id"] == first["payment"]["receipt_id"]


def test_bad_charge_names_the_field_and_charges_nothing(payment: str, grpcurl: Grpcurl) -> None:
    saga_id = saga()
    bad = {"saga_id": saga_id, "order_id": "ord_e2e2", "amount": -1}
    result = grpcurl.call(payment, f"{PAYMENT}/Charge", bad, "-format-error")
    assert result.code == exit_code(grpc.StatusCode.INVALID_ARGUMENT), result.output
    assert '"field":"amount"' in result.output  # the BadRequest field violation
    assert '"code": 3' in result.output
    got = grpcurl.call(payment, f"{PAYMENT}/GetPayment", {"saga_id": saga_id})
    assert got.code == exit_code(grpc.StatusCode.NOT_FOUND), got.output


def test_refund_of_an_unknown_saga_leaves_a_tombstone(payment: str, grpcurl: Grpcurl) -> None:
    saga_id = saga()
    refund = grpcurl.call(payment, f"{PAYMENT}/Refund", {"saga_id": saga_id})
    assert refund.json()["outcome"] == "REFUND_OUTCOME_NOTHING_TO_REFUND"
    late = grpcurl.call(
        payment,
        f"{PAYMENT}/Charge",
        {"saga_id": saga_id, "order_id": "ord_e2e3", "amount": 1200},
        "-format-error",
    )
    assert late.code == exit_code(grpc.StatusCode.FAILED_PRECONDITION), late.output
    assert "ALREADY_COMPENSATED" in late.output
    got = grpcurl.call(payment, f"{PAYMENT}/GetPayment", {"saga_id": saga_id}).json()
    assert got["payment"]["status"] == "PAYMENT_STATUS_VOIDED"


def test_describe_shows_the_request_fields(payment: str, grpcurl: Grpcurl) -> None:
    result = grpcurl(payment, "describe", "minisaga.payment.v1.ChargeRequest")
    assert result.code == 0, result.output
    for line in [
        "string saga_id = 1;",
        "string order_id = 2;",
        "int64 amount = 3;",
        "string currency = 4;",
        "bool fail = 5;",
    ]:
        assert line in result.stdout


def test_stock_reserve_and_release(inventory: str, grpcurl: Grpcurl) -> None:
    product = f"e2e-{uuid.uuid4().hex[:8]}"
    stock = grpcurl.call(inventory, f"{INVENTORY}/SetStock", {"product_id": product, "quantity": 5})
    assert stock.json()["stock"]["quantity"] == "5"

    saga_id = saga()
    reserve = {"saga_id": saga_id, "product_id": product, "quantity": 2}
    first = grpcurl.call(inventory, f"{INVENTORY}/Reserve", reserve).json()
    second = grpcurl.call(inventory, f"{INVENTORY}/Reserve", reserve).json()
    assert first["reservation"]["status"] == "RESERVATION_STATUS_RESERVED"
    assert second["reservation"]["reservation_id"] == first["reservation"]["reservation_id"]
    assert second["replayed"] is True
    after = grpcurl.call(inventory, f"{INVENTORY}/GetStock", {"product_id": product}).json()
    assert after["stock"]["reserved"] == "2"

    too_many = grpcurl.call(
        inventory,
        f"{INVENTORY}/Reserve",
        {"saga_id": saga(), "product_id": product, "quantity": 4},
        "-format-error",
    )
    assert too_many.code == exit_code(grpc.StatusCode.FAILED_PRECONDITION), too_many.output
    assert "INSUFFICIENT_STOCK" in too_many.output

    release = grpcurl.call(inventory, f"{INVENTORY}/Release", {"saga_id": saga_id}).json()
    assert release["outcome"] == "RELEASE_OUTCOME_RELEASED"
    back = grpcurl.call(inventory, f"{INVENTORY}/GetStock", {"product_id": product}).json()
    assert back["stock"].get("reserved", "0") == "0"


def test_shipment_create_twice_then_cancel(shipping: str, grpcurl: Grpcurl) -> None:
    saga_id = saga()
    create = {"saga_id": saga_id, "order_id": "ord_e2e4", "address": "1-1 Chiyoda, Tokyo"}
    first = grpcurl.call(shipping, f"{SHIPPING}/CreateShipment", create).json()
    second = grpcurl.call(shipping, f"{SHIPPING}/CreateShipment", create).json()
    assert first["shipment"]["status"] == "SHIPMENT_STATUS_CREATED"
    assert second["shipment"]["shipment_id"] == first["shipment"]["shipment_id"]
    assert second["replayed"] is True
    cancel = grpcurl.call(shipping, f"{SHIPPING}/CancelShipment", {"saga_id": saga_id}).json()
    assert cancel["outcome"] == "CANCEL_OUTCOME_CANCELLED"
    got = grpcurl.call(shipping, f"{SHIPPING}/GetShipment", {"saga_id": saga_id}).json()
    assert got["shipment"]["status"] == "SHIPMENT_STATUS_CANCELLED"
