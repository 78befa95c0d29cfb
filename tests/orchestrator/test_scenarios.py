"""The tutorial's scenarios, each step failing in turn, read as a script."""

from __future__ import annotations

import grpc
import pytest
from minisaga.inventory.v1 import inventory_pb2
from minisaga.orchestrator.v1 import orchestrator_pb2 as pb
from minisaga.payment.v1 import payment_pb2
from minisaga.shipping.v1 import shipping_pb2

from tests.orchestrator.conftest import STOCK, System, timeline


async def test_success_charges_reserves_and_ships(system: System) -> None:
    placed = await system.place(quantity=3)

    assert placed.status == pb.SAGA_STATUS_COMPLETED
    assert timeline(placed.saga) == ["charge OK", "reserve OK", "ship OK"]
    payment = await system.payments.GetPayment(
        payment_pb2.GetPaymentRequest(saga_id=placed.saga_id)
    )
    assert payment.payment.status == payment_pb2.PAYMENT_STATUS_CHARGED
    assert payment.payment.order_id == placed.order_id
    assert await system.available() == (STOCK - 3, 3)
    shipment = await system.shipments.GetShipment(
        shipping_pb2.GetShipmentRequest(saga_id=placed.saga_id)
    )
    assert shipment.shipment.status == shipping_pb2.SHIPMENT_STATUS_CREATED
    order = await system.api.GetOrder(pb.GetOrderRequest(order_id=placed.order_id))
    assert order.order.status == pb.ORDER_STATUS_COMPLETED
    assert not placed.saga.HasField("compensation_cause")


async def test_payment_failure_compensates_nothing(system: System) -> None:
    placed = await system.place(fail_payment=True)

    assert placed.status == pb.SAGA_STATUS_COMPENSATED
    assert timeline(placed.saga) == ["charge FAILED_PRECONDITION"]
    cause = placed.saga.compensation_cause
    assert (cause.step, cause.code, cause.reason) == (
        "charge",
        "FAILED_PRECONDITION",
        "INJECTED_FAILURE",
    )
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await system.payments.GetPayment(payment_pb2.GetPaymentRequest(saga_id=placed.saga_id))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    assert await system.available() == (STOCK, 0)


async def test_inventory_failure_refunds_the_charge(system: System) -> None:
    placed = await system.place(fail_inventory=True)

    assert placed.status == pb.SAGA_STATUS_COMPENSATED
    assert timeline(placed.saga) == [
        "charge OK",
        "reserve FAILED_PRECONDITION",
        "undo charge OK",
    ]
    payment = await system.payments.GetPayment(
        payment_pb2.GetPaymentRequest(saga_id=placed.saga_id)
    )
    assert payment.payment.status == payment_pb2.PAYMENT_STATUS_REFUNDED
    assert await system.available() == (STOCK, 0)
    order = await system.api.GetOrder(pb.GetOrderRequest(order_id=placed.order_id))
    assert order.order.status == pb.ORDER_STATUS_CANCELLED


async def test_shipping_failure_releases_stock_then_refunds(system: System) -> None:
    placed = await system.place(fail_shipping=True, quantity=4)

    assert placed.status == pb.SAGA_STATUS_COMPENSATED
    assert timeline(placed.saga) == [
        "charge OK",
        "reserve OK",
        "ship FAILED_PRECONDITION",
        "undo reserve OK",
        "undo charge OK",
    ]
    assert await system.available() == (STOCK, 0)
    reservation = await system.stock.GetReservation(
        inventory_pb2.GetReservationRequest(saga_id=placed.saga_id)
    )
    assert reservation.reservation.status == inventory_pb2.RESERVATION_STATUS_RELEASED
    payment = await system.payments.GetPayment(
        payment_pb2.GetPaymentRequest(saga_id=placed.saga_id)
    )
    assert payment.payment.status == payment_pb2.PAYMENT_STATUS_REFUNDED
    assert placed.saga.compensation_cause.step == "ship"


async def test_insufficient_stock_is_a_business_rejection(system: System) -> None:
    placed = await system.place(quantity=STOCK + 1)

    assert placed.status == pb.SAGA_STATUS_COMPENSATED
    assert timeline(placed.saga) == [
        "charge OK",
        "reserve FAILED_PRECONDITION",
        "undo charge OK",
    ]
    assert placed.saga.compensation_cause.reason == "INSUFFICIENT_STOCK"
    assert await system.available() == (STOCK, 0)


async def test_declined_payment_is_a_business_rejection(system: System) -> None:
    placed = await system.place(amount=10_000_000)  # over the test payment limit

    assert placed.status == pb.SAGA_STATUS_COMPENSATED
    assert timeline(placed.saga) == ["charge FAILED_PRECONDITION"]
    assert placed.saga.compensation_cause.reason == "PAYMENT_DECLINED"


async def test_steps_are_shown_pending_while_the_saga_runs(system: System) -> None:
    reserve = system.inventory.faults.park("Reserve")
    # The saga waits in Reserve, so PlaceOrder answers before the caller's deadline
    # with the saga as it is (early enough that the reply beats the deadline).
    placed = await system.place(timeout=3)
    reserve.release()

    assert placed.status == pb.SAGA_STATUS_RUNNING
    states = {(s.step, s.phase): s.state for s in placed.saga.steps}
    assert states[("charge", pb.STEP_PHASE_ACTION)] == pb.STEP_STATE_SUCCEEDED
    assert states[("reserve", pb.STEP_PHASE_ACTION)] == pb.STEP_STATE_RUNNING
    assert states[("ship", pb.STEP_PHASE_ACTION)] == pb.STEP_STATE_PENDING
