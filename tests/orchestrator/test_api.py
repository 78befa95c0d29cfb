"""OrchestratorService as a client sees it: idempotency, bad input, listing, watching,
cancelling and resuming."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import grpc
import pytest
from minisaga.orchestrator.v1 import orchestrator_pb2 as pb

from tests.orchestrator.conftest import STOCK, System, timeline
from tests.rich_errors import bad_request_fields, error_info

TERMINAL = (pb.SAGA_STATUS_COMPLETED, pb.SAGA_STATUS_COMPENSATED, pb.SAGA_STATUS_FAILED)


def details(error: grpc.aio.AioRpcError) -> tuple[str, list[str]]:
    """(ErrorInfo reason, BadRequest fields) of a rich error."""
    fields = bad_request_fields(error) if error.code() == grpc.StatusCode.INVALID_ARGUMENT else []
    return error_info(error).reason, fields


async def charges(system: System) -> int:
    row = await system.payment.db.run(
        lambda conn: conn.execute("SELECT count(*) FROM payments WHERE status = 1").fetchone()
    )
    return int(row[0])


async def test_concurrent_placements_with_one_request_id_make_one_saga(system: System) -> None:
    results = await asyncio.gather(*(system.place(request_id="req-42") for _ in range(20)))

    assert {r.saga_id for r in results} == {results[0].saga_id}
    assert {r.order_id for r in results} == {results[0].order_id}
    assert {r.status for r in results} == {pb.SAGA_STATUS_COMPLETED}
    assert await charges(system) == 1
    assert await system.available() == (STOCK - 2, 2)
    listed = await system.api.ListSagas(pb.ListSagasRequest())
    assert len(listed.sagas) == 1


async def test_a_request_id_reused_for_another_order_is_refused(system: System) -> None:
    await system.place(request_id="req-7", quantity=1)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await system.place(request_id="req-7", quantity=2)
    assert refused.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert details(refused.value)[0] == "IDEMPOTENCY_KEY_REUSED"


@pytest.mark.parametrize(
    ("fields", "bad_field"),
    [
        ({"quantity": 0}, "quantity"),
        ({"quantity": 10**9}, "quantity"),
        ({"amount": -1}, "amount"),
        ({"amount": 10**15}, "amount"),
        ({"currency": "XXX"}, "currency"),
        ({"product_id": ""}, "product_id"),
        ({"product_id": "p" * 65}, "product_id"),
        ({"product_id": "durian"}, "product_id"),
        ({"request_id": "r" * 65}, "request_id"),
        ({"address": "x" * 501}, "address"),
        ({"address": "   "}, "address"),
    ],
)
async def test_bad_input_is_refused_and_nothing_happens(
    system: System, fields: dict[str, Any], bad_field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await system.place(**fields)

    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_field in (refused.value.details() or "")
    assert details(refused.value) == ("INVALID_ARGUMENT", [bad_field])
    assert await charges(system) == 0
    assert await system.available() == (STOCK, 0)
    assert not (await system.api.ListSagas(pb.ListSagasRequest())).sagas


async def test_unknown_and_malformed_saga_ids(system: System) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await system.saga(str(uuid.uuid4()))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as malformed:
        await system.saga("not-a-uuid")
    assert malformed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(malformed.value)[1] == ["saga_id"]
    with pytest.raises(grpc.aio.AioRpcError) as no_order:
        await system.api.GetOrder(pb.GetOrderRequest(order_id="ord_missing"))
    assert no_order.value.code() == grpc.StatusCode.NOT_FOUND


async def test_list_filters_by_status_and_pages_through_everything(system: System) -> None:
    placed = [await system.place(fail_inventory=i % 3 == 0) for i in range(7)]
    compensated = {p.saga_id for p in placed if p.status == pb.SAGA_STATUS_COMPENSATED}
    assert len(compensated) == 3

    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = await system.api.ListSagas(pb.ListSagasRequest(page_size=3, page_token=token))
        seen.extend(s.saga_id for s in page.sagas)
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert pages == 3
    assert sorted(seen) == sorted(p.saga_id for p in placed)
    assert seen == [p.saga_id for p in reversed(placed)]  # newest first

    only = await system.api.ListSagas(pb.ListSagasRequest(status=pb.SAGA_STATUS_COMPENSATED))
    assert {s.saga_id for s in only.sagas} == compensated

    with pytest.raises(grpc.aio.AioRpcError) as bad_token:
        await system.api.ListSagas(pb.ListSagasRequest(page_token="garbage!"))
    assert bad_token.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as bad_size:
        await system.api.ListSagas(pb.ListSagasRequest(page_size=-1))
    assert details(bad_size.value)[1] == ["page_size"]


async def test_watch_streams_every_event_once_until_the_end(system: System) -> None:
    charge = system.payment.faults.park("Charge")
    system.place_in_background()
    [saga_id] = await charge.reached()

    stream = aiter(system.api.WatchSaga(pb.WatchSagaRequest(saga_id=saga_id), timeout=30))
    updates = [await anext(stream)]  # the stream is open while the saga waits in Charge
    charge.release()
    updates += [u async for u in stream]

    sequences = [u.event.sequence for u in updates]
    assert sequences == list(range(1, len(updates) + 1))
    descriptions = [u.event.description for u in updates]
    assert descriptions[0] == "saga place_order started"
    assert any(d.startswith("charge: attempt 1 OK") for d in descriptions)
    assert any(d.startswith("ship: attempt 1 OK") for d in descriptions)
    assert descriptions[-1] == "saga COMPLETED"
    assert updates[-1].saga.status == pb.SAGA_STATUS_COMPLETED
    assert len(set(descriptions)) == len(descriptions)

    replay = [u async for u in system.api.WatchSaga(pb.WatchSagaRequest(saga_id=saga_id))]
    assert [u.event.description for u in replay] == descriptions


async def test_watching_an_unknown_saga_is_not_found(system: System) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        async for _ in system.api.WatchSaga(pb.WatchSagaRequest(saga_id=str(uuid.uuid4()))):
            pass
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


async def test_cancel_compensates_a_running_saga(system: System) -> None:
    reserve = system.inventory.faults.park("Reserve")  # the cancel lands during Reserve
    system.place_in_background()
    [saga_id] = await reserve.reached()

    cancelled = await system.api.CancelSaga(pb.CancelSagaRequest(saga_id=saga_id))
    assert cancelled.saga.status == pb.SAGA_STATUS_RUNNING  # the Reserve in flight finishes
    reserve.release()

    final = [
        u async for u in system.api.WatchSaga(pb.WatchSagaRequest(saga_id=saga_id), timeout=30)
    ][-1].saga
    assert final.status == pb.SAGA_STATUS_COMPENSATED
    cause = final.compensation_cause
    assert (cause.step, cause.code, cause.reason) == ("ship", "CANCELLED", "SAGA_CANCELLED")
    assert timeline(final) == ["charge OK", "reserve OK", "undo reserve OK", "undo charge OK"]
    assert await charges(system) == 0
    assert await system.available() == (STOCK, 0)

    again = await system.api.CancelSaga(pb.CancelSagaRequest(saga_id=saga_id))
    assert again.saga.status == pb.SAGA_STATUS_COMPENSATED


async def test_completed_sagas_can_be_neither_cancelled_nor_resumed(system: System) -> None:
    placed = await system.place()
    with pytest.raises(grpc.aio.AioRpcError) as not_cancelled:
        await system.api.CancelSaga(pb.CancelSagaRequest(saga_id=placed.saga_id))
    assert details(not_cancelled.value)[0] == "SAGA_NOT_CANCELLABLE"
    with pytest.raises(grpc.aio.AioRpcError) as not_resumed:
        await system.api.ResumeSaga(pb.ResumeSagaRequest(saga_id=placed.saga_id))
    assert details(not_resumed.value)[0] == "SAGA_NOT_RESUMABLE"
    assert not_resumed.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert (await system.saga(placed.saga_id)).status == pb.SAGA_STATUS_COMPLETED


async def test_a_caller_that_gives_up_finds_the_saga_again(system: System) -> None:
    ship = system.shipping.faults.park("CreateShipment")
    gave_up = system.place_in_background(request_id="req-late")
    [saga_id] = await ship.reached()
    gave_up.cancel()  # the caller gives up while the saga waits in CreateShipment
    await asyncio.gather(gave_up, return_exceptions=True)

    again = system.place_in_background(request_id="req-late")
    ship.release()

    assert (await again).saga_id == saga_id
    assert (await again).status == pb.SAGA_STATUS_COMPLETED
    assert ship.saga_ids == [saga_id]  # found again, not placed again
    assert (await system.saga(saga_id)).status in TERMINAL
