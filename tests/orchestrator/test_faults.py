"""The status-code policy against participants that misbehave on purpose."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import grpc
import pytest
from minisaga.inventory.v1 import inventory_pb2
from minisaga.orchestrator.v1 import orchestrator_pb2 as pb
from minisaga.payment.v1 import payment_pb2

from orchestrator_server.saga.retry import RetryPolicy
from tests.orchestrator.conftest import STOCK, System, start_system, timeline
from tests.rich_errors import error_info


async def test_transient_errors_are_retried_until_success(system: System) -> None:
    system.payment.faults.fail_first = 2
    system.payment.faults.methods = frozenset({"Charge"})

    placed = await system.place()

    assert placed.status == pb.SAGA_STATUS_COMPLETED
    assert timeline(placed.saga) == [
        "charge UNAVAILABLE",
        "charge UNAVAILABLE",
        "charge OK",
        "reserve OK",
        "ship OK",
    ]
    charge = placed.saga.steps[0]
    assert [a.number for a in charge.attempts] == [1, 2, 3]
    assert charge.attempts[0].reason == "INJECTED_FAILURE"


async def test_commit_then_unavailable_is_compensated_including_the_step(
    system: System,
) -> None:
    """Reserve commits but every reply is lost: when attempts run out the saga must
    release the stock it may hold (it does) and refund the money."""
    system.inventory.faults.commit_then_unavailable_rate = 1.0
    system.inventory.faults.methods = frozenset({"Reserve"})

    placed = await system.place(quantity=5)

    assert placed.status == pb.SAGA_STATUS_COMPENSATED
    assert timeline(placed.saga) == [
        "charge OK",
        *["reserve UNAVAILABLE"] * 5,
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


async def test_failing_refund_fails_the_saga_until_resumed(system: System) -> None:
    system.payment.faults.error_rate = 1.0
    system.payment.faults.error_code = grpc.StatusCode.INTERNAL
    system.payment.faults.methods = frozenset({"Refund"})

    placed = await system.place(fail_inventory=True)

    assert placed.status == pb.SAGA_STATUS_FAILED
    assert timeline(placed.saga)[-4:] == ["undo charge INTERNAL"] * 4
    [failure] = placed.saga.compensation_failures
    assert (failure.step, failure.method, failure.code, failure.attempts) == (
        "charge",
        "/minisaga.payment.v1.PaymentService/Refund",
        "INTERNAL",
        4,
    )
    order = await system.api.GetOrder(pb.GetOrderRequest(order_id=placed.order_id))
    assert order.order.status == pb.ORDER_STATUS_FAILED

    system.payment.faults.error_rate = 0.0  # the operator heals Payment
    resumed = await system.api.ResumeSaga(pb.ResumeSagaRequest(saga_id=placed.saga_id))
    assert resumed.saga.status in (pb.SAGA_STATUS_COMPENSATING, pb.SAGA_STATUS_COMPENSATED)

    final = await _wait_for_end(system, placed.saga_id)
    assert final.status == pb.SAGA_STATUS_COMPENSATED
    assert timeline(final)[-1] == "undo charge OK"
    assert len(final.compensation_failures) == 1  # history is kept
    payment = await system.payments.GetPayment(
        payment_pb2.GetPaymentRequest(saga_id=placed.saga_id)
    )
    assert payment.payment.status == payment_pb2.PAYMENT_STATUS_REFUNDED


async def test_a_slow_participant_is_in_doubt_and_its_late_action_is_refused(
    tmp_path: Path, store: str
) -> None:
    """Reserve does not answer within the attempt deadline. The saga compensates
    Reserve too; a late Reserve arriving after that is refused by the tombstone."""
    quick = RetryPolicy(
        initial_interval=timedelta(milliseconds=5),
        maximum_interval=timedelta(milliseconds=10),
        maximum_attempts=2,
        attempt_timeout=timedelta(seconds=2),  # Charge's too: it must not run out on a busy machine
    )
    system = await start_system(tmp_path, store, action_retry=quick)
    try:
        reserve = system.inventory.faults.park("Reserve")  # answers no attempt in time

        placed = await system.place()

        assert placed.status == pb.SAGA_STATUS_COMPENSATED
        assert timeline(placed.saga) == [
            "charge OK",
            "reserve DEADLINE_EXCEEDED",
            "reserve DEADLINE_EXCEEDED",
            "undo reserve OK",
            "undo charge OK",
        ]
        reserve.release()
        late = inventory_pb2.ReserveRequest(saga_id=placed.saga_id, product_id="apple", quantity=2)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await system.stock.Reserve(late)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error_info(refused.value).reason == "ALREADY_COMPENSATED"
        assert await system.available() == (STOCK, 0)
    finally:
        await system.close()


async def test_the_saga_deadline_stops_retries_and_compensates(tmp_path: Path, store: str) -> None:
    patient = RetryPolicy(
        initial_interval=timedelta(milliseconds=20),
        maximum_interval=timedelta(milliseconds=50),
        maximum_attempts=1000,
        attempt_timeout=timedelta(seconds=1),
    )
    # Charge and Reserve must fit in the deadline even on a busy machine.
    system = await start_system(
        tmp_path, store, action_retry=patient, saga_deadline=timedelta(seconds=3)
    )
    try:
        system.shipping.faults.error_rate = 1.0
        system.shipping.faults.methods = frozenset({"CreateShipment"})

        placed = await system.place()

        assert placed.status == pb.SAGA_STATUS_COMPENSATED
        assert placed.saga.compensation_cause.code == "DEADLINE_EXCEEDED"
        assert placed.saga.compensation_cause.reason == "SAGA_DEADLINE_EXCEEDED"
        assert placed.saga.compensation_cause.step == "ship"
        assert timeline(placed.saga)[-3:] == ["undo ship OK", "undo reserve OK", "undo charge OK"]
        assert await system.available() == (STOCK, 0)
    finally:
        await system.close()


async def _wait_for_end(system: System, saga_id: str) -> pb.Saga:
    async for update in system.api.WatchSaga(pb.WatchSagaRequest(saga_id=saga_id), timeout=30):
        if update.saga.status in (
            pb.SAGA_STATUS_COMPLETED,
            pb.SAGA_STATUS_COMPENSATED,
            pb.SAGA_STATUS_FAILED,
        ):
            return update.saga
    return await system.saga(saga_id)
