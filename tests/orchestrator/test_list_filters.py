"""ListSagas's filters and CountSagas, on both stores: each filter alone, filters
together, paging under a filter, and the definitions GetSagaDefinition gives."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from minisaga.orchestrator.v1 import orchestrator_pb2 as pb

from tests.orchestrator.conftest import System
from tests.rich_errors import bad_request_fields


def at(ms: int) -> Timestamp:
    stamp = Timestamp()
    stamp.FromMilliseconds(ms)
    return stamp


async def every_page(system: System, page_size: int, **filters: object) -> list[list[str]]:
    """The saga ids of each page, following next_page_token with the same filters."""
    pages: list[list[str]] = []
    token = ""
    while True:
        request = pb.ListSagasRequest(page_size=page_size, page_token=token, **filters)  # type: ignore[arg-type]
        page = await system.api.ListSagas(request)
        pages.append([s.saga_id for s in page.sagas])
        token = page.next_page_token
        if not token:
            return pages


async def placed(system: System, count: int) -> list[pb.PlaceOrderResponse]:
    """`count` sagas, one after another, every third one compensated (inventory refuses)."""
    return [
        await system.place(request_id=f"req-{i}", fail_inventory=i % 3 == 0) for i in range(count)
    ]


async def test_each_filter_alone_takes_only_its_sagas(system: System) -> None:
    sagas = await placed(system, 6)
    third = sagas[3]

    async def ids(**filters: object) -> list[str]:
        request = pb.ListSagasRequest(**filters)  # type: ignore[arg-type]
        return [s.saga_id for s in (await system.api.ListSagas(request)).sagas]

    everything = [p.saga_id for p in reversed(sagas)]
    assert await ids(saga_type="place_order") == everything
    assert await ids(saga_type="another_saga") == []
    assert await ids(order_id=third.order_id) == [third.saga_id]
    assert await ids(order_id="ord_missing") == []
    assert await ids(request_id="req-3") == [third.saga_id]
    assert await ids(request_id="req-missing") == []
    compensated = [p.saga_id for p in reversed(sagas) if p.status == pb.SAGA_STATUS_COMPENSATED]
    assert await ids(status=pb.SAGA_STATUS_COMPENSATED) == compensated

    # The created-time range: from is inclusive, before exclusive.
    created = [p.saga.created_at.ToMilliseconds() for p in sagas]
    assert created == sorted(created)
    first, last = created[2], created[4]
    inside = [p.saga_id for p in reversed(sagas) if first <= p.saga.created_at.ToMilliseconds()]
    assert await ids(created_from=at(first)) == inside
    before = [p.saga_id for p in reversed(sagas) if p.saga.created_at.ToMilliseconds() < last]
    assert await ids(created_before=at(last)) == before
    between = [s for s in inside if s in before]
    assert sagas[2].saga_id in between
    assert sagas[4].saga_id not in between
    assert await ids(created_from=at(first), created_before=at(last)) == between
    assert await ids(created_before=at(created[0])) == []


async def test_filters_together_and_paging_under_them(system: System) -> None:
    sagas = await placed(system, 9)
    created = [p.saga.created_at.ToMilliseconds() for p in sagas]
    since = created[1]
    completed = [
        p.saga_id
        for p in reversed(sagas)
        if p.status == pb.SAGA_STATUS_COMPLETED and p.saga.created_at.ToMilliseconds() >= since
    ]
    assert len(completed) >= 5

    pages = await every_page(
        system,
        2,
        status=pb.SAGA_STATUS_COMPLETED,
        saga_type="place_order",
        created_from=at(since),
    )

    assert [saga for page in pages for saga in page] == completed  # newest first, none twice
    assert all(len(page) == 2 for page in pages[:-1])
    assert len(pages) == (len(completed) + 1) // 2
    # Every page of a filter too small for one page: one page, no token.
    assert await every_page(system, 2, request_id="req-4") == [[sagas[4].saga_id]]
    assert await every_page(system, 2, saga_type="none_such") == [[]]


async def test_counts_per_status_under_the_same_filters(system: System) -> None:
    sagas = await placed(system, 7)
    system.payment.faults.error_rate = 1.0
    system.payment.faults.error_code = grpc.StatusCode.INTERNAL
    system.payment.faults.methods = frozenset({"Refund"})
    failed = await system.place(fail_inventory=True)
    assert failed.status == pb.SAGA_STATUS_FAILED

    everything = await system.api.CountSagas(pb.CountSagasRequest())
    counts = {c.status: c.count for c in everything.counts}
    assert [c.status for c in everything.counts] == [
        pb.SAGA_STATUS_RUNNING,
        pb.SAGA_STATUS_COMPENSATING,
        pb.SAGA_STATUS_COMPLETED,
        pb.SAGA_STATUS_COMPENSATED,
        pb.SAGA_STATUS_FAILED,
    ]
    assert counts == {
        pb.SAGA_STATUS_RUNNING: 0,
        pb.SAGA_STATUS_COMPENSATING: 0,
        pb.SAGA_STATUS_COMPLETED: 4,
        pb.SAGA_STATUS_COMPENSATED: 3,
        pb.SAGA_STATUS_FAILED: 1,
    }
    assert everything.total == 8

    one = await system.api.CountSagas(pb.CountSagasRequest(order_id=sagas[0].order_id))
    assert one.total == 1
    assert {c.status: c.count for c in one.counts}[pb.SAGA_STATUS_COMPENSATED] == 1
    later = await system.api.CountSagas(
        pb.CountSagasRequest(created_from=failed.saga.created_at, saga_type="place_order")
    )
    assert {c.status: c.count for c in later.counts}[pb.SAGA_STATUS_FAILED] == 1
    assert later.total == 1


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.ListSagasRequest(order_id="no spaces"), "order_id"),
        (pb.ListSagasRequest(saga_type="x" * 65), "saga_type"),
        (pb.ListSagasRequest(request_id="a/b"), "request_id"),
        (pb.ListSagasRequest(created_from=at(2000), created_before=at(1000)), "created_before"),
    ],
)
async def test_bad_filters_are_refused_naming_the_field(
    system: System, request_: pb.ListSagasRequest, field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await system.api.ListSagas(request_)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request_fields(refused.value) == [field]


async def test_get_saga_definition_gives_the_steps_their_rpcs_and_undos(system: System) -> None:
    definition = (
        await system.api.GetSagaDefinition(pb.GetSagaDefinitionRequest(saga_type="place_order"))
    ).definition

    assert definition.saga_type == "place_order"
    assert definition.version == "1"
    assert [(s.name, s.participant, s.method, s.compensation_method) for s in definition.steps] == [
        (
            "charge",
            "payment",
            "/minisaga.payment.v1.PaymentService/Charge",
            "/minisaga.payment.v1.PaymentService/Refund",
        ),
        (
            "reserve",
            "inventory",
            "/minisaga.inventory.v1.InventoryService/Reserve",
            "/minisaga.inventory.v1.InventoryService/Release",
        ),
        (
            "ship",
            "shipping",
            "/minisaga.shipping.v1.ShippingService/CreateShipment",
            "/minisaga.shipping.v1.ShippingService/CancelShipment",
        ),
    ]
    assert definition.deadline.ToSeconds() == 30

    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await system.api.GetSagaDefinition(pb.GetSagaDefinitionRequest(saga_type="none_such"))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as empty:
        await system.api.GetSagaDefinition(pb.GetSagaDefinitionRequest())
    assert bad_request_fields(empty.value) == ["saga_type"]
