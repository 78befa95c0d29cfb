"""The benchmark's correctness check notices a participant that disagrees with a saga."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from minisaga.inventory.v1 import inventory_pb2
from minisaga.payment.v1 import payment_pb2

from bench.loadgen import Clients, Saga, Spec, check
from bench.services import PRODUCT, cluster

pytestmark = pytest.mark.slow


async def test_check_flags_money_kept_by_a_saga_that_did_not_complete(tmp_path: Path) -> None:
    with cluster(tmp_path, orchestrator=False) as services:
        addresses = {name: s.address for name, s in services.services.items()}
        clients = Clients(addresses)
        try:
            await clients.ready()
            charged, refunded, reserved = (str(uuid.uuid4()) for _ in range(3))
            for saga_id in (charged, refunded):
                await clients.payment.Charge(
                    payment_pb2.ChargeRequest(saga_id=saga_id, order_id="ord_1", amount=1200),
                    timeout=10,
                )
            await clients.payment.Refund(payment_pb2.RefundRequest(saga_id=refunded), timeout=10)
            await clients.inventory.Reserve(
                inventory_pb2.ReserveRequest(saga_id=reserved, product_id=PRODUCT, quantity=1),
                timeout=10,
            )
            spec = Spec(mode="direct", addresses=addresses, pids={})
            result = await check(
                clients,
                spec,
                [
                    Saga(charged, failing=True, status="COMPENSATED"),  # charged, never refunded
                    Saga(refunded, failing=True, status="COMPENSATED"),  # consistent
                    Saga(reserved, failing=True, status="COMPENSATED"),  # stock kept
                    Saga(str(uuid.uuid4()), failing=False, status="COMPLETED"),  # nothing done
                ],
            )
        finally:
            await clients.close()
    assert result["passed"] is False
    assert result["sagas"] == 4
    assert result["disagreements"] == 3
    assert result["errors"] == 0
    samples = "\n".join(result["samples"])
    assert f"saga {charged} COMPENSATED: payment PAYMENT_STATUS_CHARGED" in samples
    assert f"saga {reserved} COMPENSATED: reservation RESERVATION_STATUS_RESERVED" in samples
    assert refunded not in samples
    assert "payment PAYMENT NONE; reservation RESERVATION NONE; shipment SHIPMENT NONE" in samples
