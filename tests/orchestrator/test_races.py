"""Races and edges a review found: each test failed before its fix."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from datetime import timedelta
from pathlib import Path

import grpc
import pytest
from minisaga.orchestrator.v1 import orchestrator_pb2 as pb

from orchestrator_server.app import start
from orchestrator_server.order_saga import PLACE_ORDER
from orchestrator_server.saga import SagaIdConflict, SagaStatus, open_engine
from orchestrator_server.saga.sqlite_store import StoreInUse
from orchestrator_server.saga.store import SagaRecord
from tests.harness import wait_until
from tests.orchestrator.conftest import STOCK, System, saga_log, start_system, timeline
from tests.orchestrator.test_public_api import Participants, order
from tests.orchestrator.test_public_api import participants as participants  # the fixture


async def _status(system: System, saga_id: str) -> int:
    return (await system.saga(saga_id)).status


async def test_a_saga_recorded_as_its_caller_gives_up_is_still_driven(
    tmp_path: Path, store: str
) -> None:
    # No recovery sweep comes to the rescue: only the fix drives the saga.
    system = await start_system(tmp_path, store, recover_every=timedelta(hours=1))
    try:
        log = system.orchestrator.engine.store
        create = log.create
        reached = asyncio.Event()
        commit = asyncio.Event()

        async def late_create(saga: SagaRecord) -> tuple[SagaRecord, bool]:
            reached.set()
            await commit.wait()  # the commit outlives the caller's deadline
            return await create(saga)

        log.create = late_create  # type: ignore[method-assign]
        placing = asyncio.create_task(system.place(timeout=0.5, request_id="gave-up"))
        # The request got as far as the log (on a busy machine the deadline could
        # otherwise pass before it arrives, and nothing would be recorded at all).
        await asyncio.wait_for(reached.wait(), 60)
        with pytest.raises(grpc.aio.AioRpcError) as late:
            await placing
        assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        commit.set()

        sagas = await wait_until(lambda: _listed(system))
        saga_id = sagas[0].saga_id
        await wait_until(lambda: _is(system, saga_id, pb.SAGA_STATUS_COMPLETED))
        log.create = create  # type: ignore[method-assign]
        again = await system.place(request_id="gave-up")
        assert again.saga_id == saga_id and again.status == pb.SAGA_STATUS_COMPLETED
    finally:
        await system.close()


async def _listed(system: System) -> list[pb.Saga]:
    return list((await system.api.ListSagas(pb.ListSagasRequest())).sagas)


async def _is(system: System, saga_id: str, status: int) -> bool:
    return await _status(system, saga_id) == status


async def test_a_finished_runner_does_not_swallow_a_resume(system: System) -> None:
    system.payment.faults.error_rate = 1.0
    system.payment.faults.methods = frozenset({"Refund"})
    placed = await system.place(fail_inventory=True)
    assert placed.status == pb.SAGA_STATUS_FAILED
    system.payment.faults.error_rate = 0.0

    # The moment the review found: the old run is over, its clean-up not yet run.
    engine = system.orchestrator.engine
    finished = asyncio.get_running_loop().create_task(asyncio.sleep(0, result=None))
    await finished
    engine._tasks[placed.saga_id] = finished

    await system.api.ResumeSaga(pb.ResumeSagaRequest(saga_id=placed.saga_id))

    await wait_until(lambda: _is(system, placed.saga_id, pb.SAGA_STATUS_COMPENSATED))


async def test_a_cancel_during_the_last_step_undoes_the_whole_order(system: System) -> None:
    ship = system.shipping.faults.park("CreateShipment")
    system.place_in_background()
    [saga_id] = await ship.reached()

    cancelled = await system.api.CancelSaga(pb.CancelSagaRequest(saga_id=saga_id))
    assert cancelled.saga.status == pb.SAGA_STATUS_RUNNING
    ship.release()

    await wait_until(lambda: _is(system, saga_id, pb.SAGA_STATUS_COMPENSATED))
    final = await system.saga(saga_id)
    assert (final.compensation_cause.step, final.compensation_cause.reason) == (
        "",
        "SAGA_CANCELLED",
    )
    assert timeline(final) == [
        "charge OK",
        "reserve OK",
        "ship OK",
        "undo ship OK",
        "undo reserve OK",
        "undo charge OK",
    ]
    assert await system.available() == (STOCK, 0)


async def test_a_page_token_out_of_range_is_invalid(system: System) -> None:
    token = base64.urlsafe_b64encode(json.dumps([10**30, "x"]).encode()).decode()
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await system.api.ListSagas(pb.ListSagasRequest(page_token=token))
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_one_orchestrator_per_sqlite_saga_log(tmp_path: Path) -> None:
    system = await start_system(tmp_path, "sqlite")
    try:
        with pytest.raises(StoreInUse, match="another orchestrator"):
            await start(system.config)
    finally:
        await system.close()
    second = await start(system.config)  # once the first has stopped, the file is free
    await second.stop()


@pytest.mark.parametrize("same_order", [False, True], ids=["other-order", "same-order"])
async def test_two_starts_racing_on_one_chosen_saga_id_make_one_saga(
    tmp_path: Path, store: str, participants: Participants, same_order: bool
) -> None:
    """Both starts get past every check before either inserts (a barrier in front
    of the store's create): the loser gets SagaIdConflict, or the winner's saga
    when it asked for the same one, never the database's unique-key error."""
    chosen = str(uuid.uuid4())
    async with open_engine(
        saga_log(tmp_path, store), participants.channels, [PLACE_ORDER]
    ) as engine:
        both = asyncio.Barrier(2)
        create = engine.store.create

        async def create_together(saga: SagaRecord) -> tuple[SagaRecord, bool]:
            await both.wait()
            return await create(saga)

        engine.store.create = create_together  # type: ignore[method-assign]
        first, second = order(quantity=1), order(quantity=1 if same_order else 2)
        results = await asyncio.gather(
            engine.start(PLACE_ORDER, first, saga_id=chosen),
            engine.start(PLACE_ORDER, second, saga_id=chosen),
            return_exceptions=True,
        )
        ended = await engine.wait(chosen)

    assert ended is not None and ended.status is SagaStatus.COMPLETED
    made = [r for r in results if isinstance(r, tuple) and r[1]]
    assert len(made) == 1 and made[0][0].saga_id == chosen
    [other] = [r for r in results if not (isinstance(r, tuple) and r[1])]
    if same_order:
        assert isinstance(other, tuple) and other[0].saga_id == chosen
    else:
        assert isinstance(other, SagaIdConflict), other
        assert other.existing.saga_id == chosen and other.existing.input == ended.input
