"""Compensations that outlast an outage: a horizon, not an attempt count, ends them.

FAST_COMPENSATIONS (4 attempts) is the budget a compensation had before
horizons: Payment down for longer than that used to leave the saga FAILED.
With no attempt limit and a horizon the undo keeps trying, and the saga is
COMPENSATED once Payment is back; only a horizon that runs out ends it FAILED.
Nothing here waits for time: the tests wait for states of the saga's log.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import grpc
from minisaga.orchestrator.v1 import orchestrator_pb2 as pb
from minisaga.payment.v1 import payment_pb2

from tests.harness import wait_until
from tests.orchestrator.conftest import FAST_COMPENSATIONS, System, start_system, timeline

TODAYS_BUDGET = FAST_COMPENSATIONS.maximum_attempts
PATIENT = replace(FAST_COMPENSATIONS, maximum_attempts=0, horizon=timedelta(hours=1))


def _take_refund_down(system: System) -> None:
    system.payment.faults.error_rate = 1.0
    system.payment.faults.error_code = grpc.StatusCode.UNAVAILABLE
    system.payment.faults.methods = frozenset({"Refund"})


def _refunds(saga: pb.Saga) -> list[str]:
    return [line for line in timeline(saga) if line.startswith("undo charge")]


async def test_a_refund_outlasts_an_outage_longer_than_the_attempt_budget(
    tmp_path: Path, store: str
) -> None:
    system = await start_system(tmp_path, store, compensation_retry=PATIENT)
    try:
        _take_refund_down(system)
        placing = system.place_in_background(fail_inventory=True)
        saga_id = await wait_until(lambda: _the_saga(system))

        async def down_past_the_budget() -> bool:
            saga = await system.saga(saga_id)
            assert saga.status != pb.SAGA_STATUS_FAILED  # today's budget would have ended it
            return _refunds(saga).count("undo charge UNAVAILABLE") > TODAYS_BUDGET * 2

        await wait_until(down_past_the_budget)

        system.payment.faults.error_rate = 0.0  # Payment is back
        placed = await placing
        assert placed.status == pb.SAGA_STATUS_COMPENSATED
        refunds = _refunds(placed.saga)
        assert refunds[-1] == "undo charge OK"
        assert refunds[:-1].count("undo charge UNAVAILABLE") > TODAYS_BUDGET * 2
        assert set(refunds[:-1]) == {"undo charge UNAVAILABLE"}
        assert not placed.saga.compensation_failures
        payment = await system.payments.GetPayment(payment_pb2.GetPaymentRequest(saga_id=saga_id))
        assert payment.payment.status == payment_pb2.PAYMENT_STATUS_REFUNDED
    finally:
        await system.close()


async def test_a_horizon_that_runs_out_ends_the_saga_failed(tmp_path: Path, store: str) -> None:
    tiny = replace(PATIENT, horizon=timedelta(milliseconds=1))
    system = await start_system(tmp_path, store, compensation_retry=tiny)
    try:
        _take_refund_down(system)
        placed = await system.place(fail_inventory=True)

        assert placed.status == pb.SAGA_STATUS_FAILED
        refunds = _refunds(placed.saga)
        assert refunds and set(refunds) == {"undo charge UNAVAILABLE"}
        [failure] = placed.saga.compensation_failures
        assert (failure.step, failure.code, failure.attempts) == (
            "charge",
            "UNAVAILABLE",
            len(refunds),
        )

        system.payment.faults.error_rate = 0.0  # a resume starts a fresh horizon
        await system.api.ResumeSaga(pb.ResumeSagaRequest(saga_id=placed.saga_id))

        async def compensated() -> pb.Saga | None:
            saga = await system.saga(placed.saga_id)
            return saga if saga.status == pb.SAGA_STATUS_COMPENSATED else None

        final = await wait_until(compensated)
        assert _refunds(final)[-1] == "undo charge OK"
    finally:
        await system.close()


async def _the_saga(system: System) -> str:
    """The id of the one saga started so far, or "" before it is."""
    listed = await system.api.ListSagas(pb.ListSagasRequest())
    return listed.sagas[0].saga_id if listed.sagas else ""
