"""Payment: a first charge, its replay, and a refund, over real gRPC."""

from __future__ import annotations

import uuid

from minisaga.payment.v1 import payment_pb2 as pb
from minisaga.payment.v1 import payment_pb2_grpc


async def test_repeated_charge_returns_the_same_receipt(
    payment_stub: payment_pb2_grpc.PaymentServiceAsyncStub,
) -> None:
    saga_id = str(uuid.uuid4())
    request = pb.ChargeRequest(saga_id=saga_id, order_id="ord_1", amount=1200)
    first = await payment_stub.Charge(request)
    second = await payment_stub.Charge(request)
    assert first.payment.receipt_id.startswith("rcpt_")
    assert second.payment.receipt_id == first.payment.receipt_id
    assert (first.replayed, second.replayed) == (False, True)
    refund = await payment_stub.Refund(pb.RefundRequest(saga_id=saga_id, reason="test"))
    assert refund.outcome == pb.REFUND_OUTCOME_REFUNDED
    assert refund.payment.status == pb.PAYMENT_STATUS_REFUNDED
