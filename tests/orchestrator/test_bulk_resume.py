"""ResumeSagas: every FAILED saga a filter takes, resumed a page at a time.

Payment's Refund is down longer than the compensations' budget (the fast
policy's 4 attempts), so several sagas end FAILED; once Payment is back an
operator resumes them all in a few calls rather than one per saga.
"""

from __future__ import annotations

import grpc
import pytest
from minisaga.orchestrator.v1 import orchestrator_pb2 as pb
from minisaga.payment.v1 import payment_pb2

from tests.harness import wait_until
from tests.orchestrator.conftest import System


def _take_refund_down(system: System) -> None:
    system.payment.faults.error_rate = 1.0
    system.payment.faults.error_code = grpc.StatusCode.UNAVAILABLE
    system.payment.faults.methods = frozenset({"Refund"})


async def _failed_sagas(system: System, count: int) -> list[pb.PlaceOrderResponse]:
    placed = [await system.place(fail_inventory=True) for _ in range(count)]
    assert [p.status for p in placed] == [pb.SAGA_STATUS_FAILED] * count
    return placed


async def _status(system: System, saga_id: str) -> pb.SagaStatus.ValueType:
    return (await system.saga(saga_id)).status


async def test_resume_every_failed_saga_page_by_page(system: System) -> None:
    _take_refund_down(system)
    completed = await system.place()  # not FAILED: left alone
    failed = await _failed_sagas(system, 5)
    ids = {p.saga_id for p in failed}

    system.payment.faults.error_rate = 0.0  # Payment is back
    resumed: list[str] = []
    token = ""
    calls = 0
    while True:
        page = await system.api.ResumeSagas(pb.ResumeSagasRequest(page_size=2, page_token=token))
        calls += 1
        assert len(page.saga_ids) <= 2
        resumed.extend(page.saga_ids)
        token = page.next_page_token
        if not token:
            break
    assert sorted(resumed) == sorted(ids)
    assert calls == 3
    assert completed.saga_id not in resumed

    async def all_compensated() -> bool:
        return all([await _is(system, i, pb.SAGA_STATUS_COMPENSATED) for i in ids])

    await wait_until(all_compensated)
    for saga_id in ids:
        payment = await system.payments.GetPayment(payment_pb2.GetPaymentRequest(saga_id=saga_id))
        assert payment.payment.status == payment_pb2.PAYMENT_STATUS_REFUNDED

    again = await system.api.ResumeSagas(pb.ResumeSagasRequest())  # idempotent: nothing left
    assert (list(again.saga_ids), again.next_page_token) == ([], "")


async def test_only_the_sagas_the_filter_takes_are_resumed(system: System) -> None:
    _take_refund_down(system)
    first, second = await _failed_sagas(system, 2)

    system.payment.faults.error_rate = 0.0
    one = await system.api.ResumeSagas(pb.ResumeSagasRequest(order_id=first.order_id))
    assert list(one.saga_ids) == [first.saga_id]
    await wait_until(lambda: _is(system, first.saga_id, pb.SAGA_STATUS_COMPENSATED))
    assert await _status(system, second.saga_id) == pb.SAGA_STATUS_FAILED

    none = await system.api.ResumeSagas(pb.ResumeSagasRequest(saga_type="no_such_saga"))
    assert list(none.saga_ids) == []
    rest = await system.api.ResumeSagas(pb.ResumeSagasRequest(saga_type="place_order"))
    assert list(rest.saga_ids) == [second.saga_id]
    await wait_until(lambda: _is(system, second.saga_id, pb.SAGA_STATUS_COMPENSATED))


async def test_a_saga_that_fails_again_is_not_resumed_twice_in_one_sweep(system: System) -> None:
    _take_refund_down(system)  # and it stays down
    failed = await _failed_sagas(system, 3)

    first = await system.api.ResumeSagas(pb.ResumeSagasRequest(page_size=1))
    assert list(first.saga_ids) == [failed[-1].saga_id]  # newest first
    await wait_until(lambda: _is(system, failed[-1].saga_id, pb.SAGA_STATUS_FAILED))
    rest = await system.api.ResumeSagas(
        pb.ResumeSagasRequest(page_size=5, page_token=first.next_page_token)
    )
    assert list(rest.saga_ids) == [failed[1].saga_id, failed[0].saga_id]
    assert rest.next_page_token == ""


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.ResumeSagasRequest(page_size=-1), "page_size"),
        (pb.ResumeSagasRequest(page_token="not a token"), "page_token"),
        (pb.ResumeSagasRequest(order_id="bad id!"), "order_id"),
    ],
)
async def test_a_bad_request_is_refused(
    system: System, request_: pb.ResumeSagasRequest, field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await system.api.ResumeSagas(request_)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in (refused.value.details() or "")


async def _is(system: System, saga_id: str, status: pb.SagaStatus.ValueType) -> bool:
    return await _status(system, saga_id) == status
