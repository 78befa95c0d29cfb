"""Start-up recovery alone finishes a saga stopped in any non-terminal status.

The orchestrator is stopped while a saga's RPC hangs, in RUNNING (inside
Reserve) or in COMPENSATING (inside Release, after Ship refused), and started
again; or cancelled during the hanging Reserve, so that recovery must undo a
step whose outcome was never recorded. After the restart no client sends
anything but reads (GetSaga), and the maintenance sweep runs once an hour:
only `recover()` at start-up can finish the saga. Then the participants must
agree with it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path

import grpc
import pytest
from minisaga.inventory.v1 import inventory_pb2
from minisaga.orchestrator.v1 import orchestrator_pb2 as pb
from minisaga.payment.v1 import payment_pb2
from minisaga.shipping.v1 import shipping_pb2

from orchestrator_server.saga.policy import UNRECORDED
from tests.harness import wait_until
from tests.orchestrator.conftest import (
    FAST_ACTIONS,
    FAST_COMPENSATIONS,
    STOCK,
    System,
    start_system,
    timeline,
)

NO_SWEEP = timedelta(hours=1)
HANGS = timedelta(minutes=5)
"""The hanging call's deadline: it is cut off by the stop, never by its deadline."""


@dataclass(frozen=True)
class Case:
    status: str
    """The saga's status when the orchestrator stops."""
    hangs: str
    """The participant method whose call is cut off by the stop."""
    order: dict[str, bool]
    expected: list[str]
    """The saga's timeline once recovery ended it."""
    cancel: bool = False
    """CancelSaga before the stop: recovery then undoes the step left in doubt."""


CASES = {
    "running": Case(
        "RUNNING",
        "Reserve",
        {},
        ["charge OK", f"reserve {UNRECORDED}", "reserve OK", "ship OK"],
    ),
    "compensating": Case(
        "COMPENSATING",
        "Release",
        {"fail_shipping": True},
        [
            "charge OK",
            "reserve OK",
            "ship FAILED_PRECONDITION",
            f"undo reserve {UNRECORDED}",
            "undo reserve OK",
            "undo charge OK",
        ],
    ),
    # The cut-off Reserve may have reserved (in doubt): it must be undone too.
    "running-cancelled": Case(
        "RUNNING",
        "Reserve",
        {},
        ["charge OK", f"reserve {UNRECORDED}", "undo reserve OK", "undo charge OK"],
        cancel=True,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_a_saga_stopped_mid_call_is_finished_by_recovery_alone(
    tmp_path: Path, store: str, case: str
) -> None:
    status, method, order, expected = (
        CASES[case].status,
        CASES[case].hangs,
        CASES[case].order,
        CASES[case].expected,
    )
    system = await start_system(
        tmp_path,
        store,
        recover_every=NO_SWEEP,
        action_retry=replace(FAST_ACTIONS, attempt_timeout=HANGS),
        compensation_retry=replace(FAST_COMPENSATIONS, attempt_timeout=HANGS),
    )
    try:
        system.inventory.faults.methods = frozenset({method})
        system.inventory.faults.latency_ms = int(HANGS.total_seconds() * 1000)
        # In the background: its reply waits for a call that hangs, and a short
        # deadline raced against a busy machine could fail the test by itself.
        system.place_in_background(**order)

        async def the_saga() -> str | None:
            sagas = (await system.api.ListSagas(pb.ListSagasRequest())).sagas
            return sagas[0].saga_id if sagas else None

        saga_id = await wait_until(the_saga)

        async def in_the_hanging_call() -> bool:
            saga = await system.saga(saga_id)
            open_calls = [
                execution.method
                for execution in saga.steps
                for attempt in execution.attempts
                if not attempt.code
            ]
            return pb.SagaStatus.Name(saga.status) == f"SAGA_STATUS_{status}" and [
                m.rsplit("/", 1)[-1] for m in open_calls
            ] == [method]

        await wait_until(in_the_hanging_call)
        if CASES[case].cancel:  # durable, and honoured once the step in flight ends
            await system.api.CancelSaga(pb.CancelSagaRequest(saga_id=saga_id))
        system.inventory.faults.latency_ms = 0  # the call in flight still hangs
        await system.restart_orchestrator()  # from here on, reads only

        async def ended() -> pb.Saga | None:
            saga = await system.saga(saga_id)
            return saga if saga.status in TERMINAL else None

        final = await wait_until(ended, timeout=15)

        assert timeline(final) == expected
        await participants_agree(system, final)
    finally:
        await system.close()


TERMINAL = (pb.SAGA_STATUS_COMPLETED, pb.SAGA_STATUS_COMPENSATED, pb.SAGA_STATUS_FAILED)


async def participants_agree(system: System, saga: pb.Saga) -> None:
    """Payment, Inventory and Shipping hold what the saga's end says they must."""
    completed = saga.status == pb.SAGA_STATUS_COMPLETED
    assert saga.status == (pb.SAGA_STATUS_COMPLETED if completed else pb.SAGA_STATUS_COMPENSATED)
    payment = await system.payments.GetPayment(payment_pb2.GetPaymentRequest(saga_id=saga.saga_id))
    assert payment.payment.status == (
        payment_pb2.PAYMENT_STATUS_CHARGED if completed else payment_pb2.PAYMENT_STATUS_REFUNDED
    )
    reservation = await system.stock.GetReservation(
        inventory_pb2.GetReservationRequest(saga_id=saga.saga_id)
    )
    assert reservation.reservation.status in (
        (inventory_pb2.RESERVATION_STATUS_RESERVED,)
        if completed  # released, or refused by the tombstone of a release that came first
        else (inventory_pb2.RESERVATION_STATUS_RELEASED, inventory_pb2.RESERVATION_STATUS_VOIDED)
    )
    held = 2 if completed else 0
    assert await system.available() == (STOCK - held, held)
    request = shipping_pb2.GetShipmentRequest(saga_id=saga.saga_id)
    if completed:
        shipment = await system.shipments.GetShipment(request)
        assert shipment.shipment.status == shipping_pb2.SHIPMENT_STATUS_CREATED
    else:  # Ship refused and did nothing
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await system.shipments.GetShipment(request)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
