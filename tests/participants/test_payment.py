"""Payment's own rules: the payment limit, the default currency."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import grpc
from minisaga.payment.v1 import payment_pb2 as pb

from tests.conftest import PAYMENT_LIMIT
from tests.rich_errors import assert_rejected, rpc_error

if TYPE_CHECKING:  # the async stub type exists for type checkers only
    from minisaga.payment.v1.payment_pb2_grpc import PaymentServiceAsyncStub as Stub


def charge(saga_id: str, amount: int = 1200, currency: str = "") -> pb.ChargeRequest:
    return pb.ChargeRequest(saga_id=saga_id, order_id="ord_1", amount=amount, currency=currency)


async def test_amount_over_the_limit_is_declined_and_nothing_written(payment_stub: Stub) -> None:
    saga_id = str(uuid.uuid4())

    error = await rpc_error(payment_stub.Charge(charge(saga_id, amount=PAYMENT_LIMIT + 1)))

    info = assert_rejected(error, grpc.StatusCode.FAILED_PRECONDITION, "PAYMENT_DECLINED")
    assert info.metadata["limit"] == str(PAYMENT_LIMIT)
    missing = await rpc_error(payment_stub.GetPayment(pb.GetPaymentRequest(saga_id=saga_id)))
    assert_rejected(missing, grpc.StatusCode.NOT_FOUND, "NOT_FOUND")
    # A decline is not a tombstone: the same saga may still be charged within the limit.
    ok = await payment_stub.Charge(charge(saga_id, amount=PAYMENT_LIMIT))
    assert ok.payment.status == pb.PAYMENT_STATUS_CHARGED


async def test_currency_defaults_to_jpy_and_replays_as_jpy(payment_stub: Stub) -> None:
    saga_id = str(uuid.uuid4())
    first = await payment_stub.Charge(charge(saga_id))
    explicit = await payment_stub.Charge(charge(saga_id, currency="JPY"))
    assert first.payment.currency == "JPY"
    assert (explicit.payment.receipt_id, explicit.replayed) == (first.payment.receipt_id, True)

    error = await rpc_error(payment_stub.Charge(charge(saga_id, currency="USD")))
    assert_rejected(error, grpc.StatusCode.ALREADY_EXISTS, "IDEMPOTENCY_KEY_REUSED")


async def test_refund_keeps_the_reason_and_the_receipt(payment_stub: Stub) -> None:
    saga_id = str(uuid.uuid4())
    charged = await payment_stub.Charge(charge(saga_id, amount=5000))
    refund = await payment_stub.Refund(pb.RefundRequest(saga_id=saga_id, reason="saga undone"))
    got = await payment_stub.GetPayment(pb.GetPaymentRequest(saga_id=saga_id))
    assert refund.outcome == pb.REFUND_OUTCOME_REFUNDED
    assert got.payment.receipt_id == charged.payment.receipt_id
    assert (got.payment.amount, got.payment.refund_reason) == (5000, "saga undone")
    assert got.payment.updated_at.ToMilliseconds() >= got.payment.created_at.ToMilliseconds() > 0
