"""A stopped orchestrator picks every unfinished saga up again when it starts.

(Kills with SIGKILL at exact points are in tests/crash; here the process
stays up and the orchestrator is stopped and started in it, which is quick.)
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

from minisaga.orchestrator.v1 import orchestrator_pb2 as pb
from minisaga.payment.v1 import payment_pb2

from orchestrator_server.saga.policy import UNRECORDED
from tests.harness import wait_until
from tests.orchestrator.conftest import STOCK, System, start_system, timeline


async def test_sagas_cut_off_mid_step_finish_after_a_restart(system: System) -> None:
    reserve = system.inventory.faults.park("Reserve")  # every saga is inside Reserve when we stop
    calls = [asyncio.create_task(system.place(fail_shipping=i % 2 == 1)) for i in range(6)]
    saga_ids = await reserve.reached(6)

    await system.restart_orchestrator()  # cuts the six Reserves off; PlaceOrder calls end too
    await asyncio.gather(*calls, return_exceptions=True)
    reserve.release()

    for saga_id in saga_ids:
        final = [
            u async for u in system.api.WatchSaga(pb.WatchSagaRequest(saga_id=saga_id), timeout=30)
        ][-1].saga
        reserve_step = next(s for s in final.steps if s.step == "reserve")
        assert reserve_step.attempts[0].code == UNRECORDED  # the call cut off by the stop
        assert reserve_step.attempts[-1].code == "OK"
        expected = (
            pb.SAGA_STATUS_COMPLETED if "ship OK" in timeline(final) else pb.SAGA_STATUS_COMPENSATED
        )
        assert final.status == expected
    statuses = [(await system.saga(saga_id)).status for saga_id in saga_ids]
    assert statuses.count(pb.SAGA_STATUS_COMPLETED) == 3
    assert await wait_until(lambda: system.available()) == (STOCK - 2 * 3, 2 * 3)
    for saga_id in saga_ids:
        payment = await system.payments.GetPayment(payment_pb2.GetPaymentRequest(saga_id=saga_id))
        charged = payment.payment.status == payment_pb2.PAYMENT_STATUS_CHARGED
        assert charged == ((await system.saga(saga_id)).status == pb.SAGA_STATUS_COMPLETED)


async def test_recovery_twice_is_harmless(system: System) -> None:
    placed = await system.place()
    assert await system.orchestrator.engine.recover() == []
    await system.restart_orchestrator()
    again = await system.saga(placed.saga_id)
    assert again.status == pb.SAGA_STATUS_COMPLETED
    assert timeline(again) == ["charge OK", "reserve OK", "ship OK"]


async def test_a_saga_whose_runner_is_gone_is_picked_up_again(tmp_path: Path, store: str) -> None:
    """No saga stays stuck unseen: the maintenance loop re-drives a saga that is
    not terminal and that nothing drives (here its task is killed by hand)."""
    system = await start_system(
        tmp_path,
        store,
        lease_renew_every=timedelta(milliseconds=20),
        recover_every=timedelta(milliseconds=50),
    )
    try:
        ship = system.shipping.faults.park("CreateShipment")
        placing = asyncio.create_task(system.place())
        [saga_id] = await ship.reached()
        runner = system.orchestrator.engine._tasks[saga_id]
        runner.cancel()
        await wait_until(lambda: runner.done())
        ship.release()

        final = await wait_until(lambda: _ended(system, saga_id), timeout=20)
        await asyncio.gather(placing, return_exceptions=True)

        assert final.status == pb.SAGA_STATUS_COMPLETED
        shipped = next(s for s in final.steps if s.step == "ship")
        assert [a.code for a in shipped.attempts] == [UNRECORDED, "OK"]
    finally:
        await system.close()


async def _ended(system: System, saga_id: str) -> pb.Saga | None:
    saga = await system.saga(saga_id)
    return saga if saga.status == pb.SAGA_STATUS_COMPLETED else None
