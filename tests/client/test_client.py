"""The client library against a real system: typed calls, typed errors, retries, deadlines."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import TypedDict

import grpc
import pytest
from minisaga.inventory.v1 import inventory_pb2
from minisaga.orchestrator.v1 import orchestrator_pb2 as pb
from minisaga.payment.v1 import payment_pb2, payment_pb2_grpc
from minisaga.shipping.v1 import shipping_pb2

from minisaga_client import (
    AlreadyExists,
    AsyncClient,
    Client,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
    connect,
    connect_async,
)
from minisaga_client.client import CHANNEL_OPTIONS, RETRY_POLICY, SERVICES
from tests.orchestrator.conftest import STOCK, System


class Order(TypedDict):
    product_id: str
    quantity: int
    amount: int


APPLES: Order = {"product_id": "apple", "quantity": 2, "amount": 1200}


@pytest.fixture
async def client(system: System) -> AsyncIterator[AsyncClient]:
    async with connect_async(
        system.orchestrator.address,
        payment=system.payment.address,
        inventory=system.inventory.address,
        shipping=system.shipping.address,
    ) as opened:
        yield opened


def test_every_channel_retries_unavailable_through_the_service_config() -> None:
    options = dict(CHANNEL_OPTIONS)
    config = json.loads(options["grpc.service_config"])
    [method_config] = config["methodConfig"]
    assert method_config["retryPolicy"] == RETRY_POLICY
    assert RETRY_POLICY["retryableStatusCodes"] == ["UNAVAILABLE"]
    assert {name["service"] for name in method_config["name"]} == set(SERVICES.values())
    assert options["grpc.enable_retries"] == 1


async def test_an_order_and_every_record_it_leaves(client: AsyncClient) -> None:
    placed = await client.place_order(**APPLES, address="1-2-3 Shibuya, Tokyo")

    assert placed.status == pb.SAGA_STATUS_COMPLETED
    assert placed.saga.request_id, "the client always sends a request_id, so retries are safe"
    saga = await client.get_saga(placed.saga_id)
    assert [s.step for s in saga.steps] == ["charge", "reserve", "ship"]
    order = await client.get_order(placed.order_id)
    assert (order.order.status, order.saga.saga_id) == (pb.ORDER_STATUS_COMPLETED, placed.saga_id)
    payment = await client.get_payment(placed.saga_id)
    assert (payment.status, payment.amount) == (payment_pb2.PAYMENT_STATUS_CHARGED, 1200)
    reservation = await client.get_reservation(placed.saga_id)
    assert reservation.status == inventory_pb2.RESERVATION_STATUS_RESERVED
    shipment = await client.get_shipment(placed.saga_id)
    assert shipment.address == "1-2-3 Shibuya, Tokyo"
    stock = await client.get_stock("apple")
    assert (stock.quantity, stock.reserved) == (STOCK - 2, 2)

    again = await client.place_order(
        **APPLES, address="1-2-3 Shibuya, Tokyo", request_id=placed.saga.request_id
    )
    assert again.saga_id == placed.saga_id


async def test_every_participant_rpc(client: AsyncClient) -> None:
    saga_id = str(uuid.uuid4())
    charged = await client.charge(saga_id=saga_id, order_id="ord_1", amount=500)
    assert not charged.replayed
    assert (await client.charge(saga_id=saga_id, order_id="ord_1", amount=500)).replayed
    refunded = await client.refund(saga_id, reason="test")
    assert refunded.outcome == payment_pb2.REFUND_OUTCOME_REFUNDED

    assert (await client.set_stock("kiwi", 3)).quantity == 3
    reserved = await client.reserve(saga_id=saga_id, product_id="kiwi", quantity=3)
    assert reserved.reservation.status == inventory_pb2.RESERVATION_STATUS_RESERVED
    released = await client.release(saga_id)
    assert released.outcome == inventory_pb2.RELEASE_OUTCOME_RELEASED
    assert (await client.get_stock("kiwi")).quantity == 3

    created = await client.create_shipment(saga_id=saga_id, order_id="ord_1", address="Osaka")
    assert created.shipment.status == shipping_pb2.SHIPMENT_STATUS_CREATED
    cancelled = await client.cancel_shipment(saga_id)
    assert cancelled.outcome == shipping_pb2.CANCEL_OUTCOME_CANCELLED
    assert (await client.get_shipment(saga_id)).status == shipping_pb2.SHIPMENT_STATUS_CANCELLED


async def test_rich_errors_become_typed_exceptions(system: System, client: AsyncClient) -> None:
    with pytest.raises(InvalidArgument) as invalid:
        await client.place_order(product_id="apple", quantity=0, amount=-5)
    error = invalid.value
    assert error.fields == ("quantity", "amount")
    assert all(v.description for v in error.field_violations)
    assert (error.reason, error.domain) == ("INVALID_ARGUMENT", "minisaga.orchestrator.v1")
    assert (error.service, error.address) == ("orchestrator", system.orchestrator.address)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT

    with pytest.raises(NotFound) as missing:
        await client.get_saga(str(uuid.uuid4()))
    assert missing.value.reason == "NOT_FOUND"

    placed = await client.place_order(**APPLES, request_id="req-1")
    with pytest.raises(FailedPrecondition) as refused:
        await client.cancel_saga(placed.saga_id)
    assert refused.value.reason == "SAGA_NOT_CANCELLABLE"
    assert refused.value.metadata["status"] == "COMPLETED"

    with pytest.raises(AlreadyExists) as reused:
        await client.place_order(product_id="apple", quantity=3, amount=1200, request_id="req-1")
    assert reused.value.reason == "IDEMPOTENCY_KEY_REUSED"
    assert reused.value.metadata["saga_id"] == placed.saga_id

    with pytest.raises(FailedPrecondition) as short:
        await client.reserve(saga_id=str(uuid.uuid4()), product_id="apple", quantity=STOCK * 2)
    assert short.value.reason == "INSUFFICIENT_STOCK"
    assert (short.value.service, short.value.domain) == ("inventory", "minisaga.inventory.v1")
    assert short.value.metadata["requested"] == str(STOCK * 2)


async def test_sagas_are_listed_page_by_page_and_all_at_once(client: AsyncClient) -> None:
    placed = [await client.place_order(**APPLES, fail_payment=n % 2 == 1) for n in range(5)]
    newest_first = [p.saga_id for p in reversed(placed)]

    first = await client.list_sagas(page_size=2)
    assert [s.saga_id for s in first.sagas] == newest_first[:2]
    second = await client.list_sagas(page_size=2, page_token=first.next_page_token)
    assert [s.saga_id for s in second.sagas] == newest_first[2:4]
    assert [s.saga_id async for s in client.iter_sagas(page_size=2)] == newest_first
    compensated = [
        s.saga_id async for s in client.iter_sagas(status=pb.SAGA_STATUS_COMPENSATED, page_size=1)
    ]
    assert compensated == [placed[3].saga_id, placed[1].saga_id]


async def test_watch_streams_until_the_saga_ends(system: System, client: AsyncClient) -> None:
    charge = system.payment.faults.park("Charge")
    system.place_in_background()
    [saga_id] = await charge.reached()

    stream = client.watch_saga(saga_id)
    updates = [await anext(stream)]  # the stream is open while the saga waits in Charge
    charge.release()
    updates += [u async for u in stream]

    assert updates[-1].saga.status == pb.SAGA_STATUS_COMPLETED
    assert updates[-1].event.description == "saga COMPLETED"
    assert [u.event.sequence for u in updates] == list(range(1, len(updates) + 1))
    with pytest.raises(NotFound):
        async for _ in client.watch_saga(str(uuid.uuid4())):
            pass


async def test_unavailable_is_retried_by_grpc_itself(system: System, client: AsyncClient) -> None:
    system.payment.faults.fail_first = 2  # the first two Charges of each saga: UNAVAILABLE
    system.payment.faults.methods = frozenset({"Charge"})

    bare = payment_pb2_grpc.PaymentServiceStub(system.payment.channel)  # no retry config
    with pytest.raises(grpc.aio.AioRpcError) as unretried:
        await bare.Charge(payment_pb2.ChargeRequest(saga_id=str(uuid.uuid4()), amount=1))
    assert unretried.value.code() == grpc.StatusCode.UNAVAILABLE

    charged = await client.charge(saga_id=str(uuid.uuid4()), order_id="ord_1", amount=700)
    assert charged.payment.status == payment_pb2.PAYMENT_STATUS_CHARGED


async def test_a_slow_answer_is_deadline_exceeded(system: System, client: AsyncClient) -> None:
    system.payment.faults.park("Charge")  # never answers
    with pytest.raises(DeadlineExceeded) as late:
        await client.charge(saga_id=str(uuid.uuid4()), order_id="ord_1", amount=1, timeout=0.05)
    assert late.value.service == "payment"
    assert late.value.address == system.payment.address


async def test_the_sync_client_does_the_same(system: System) -> None:
    def use() -> tuple[pb.PlaceOrderResponse, list[str], list[str], str]:
        with connect(
            system.orchestrator.address, payment=system.payment.address, timeout=5
        ) as client:
            placed = client.place_order(**APPLES, fail_inventory=True)
            listed = [s.saga_id for s in client.iter_sagas(page_size=1)]
            events = [u.event.description for u in client.watch_saga(placed.saga_id)]
            try:
                client.resume_saga(placed.saga_id)
            except FailedPrecondition as error:
                refused = error.reason
            return placed, listed, events, refused

    placed, listed, events, refused = await asyncio.to_thread(use)

    assert placed.status == pb.SAGA_STATUS_COMPENSATED
    assert listed == [placed.saga_id]
    assert events[-1] == "saga COMPENSATED"
    assert refused == "SAGA_NOT_RESUMABLE"


def test_an_unreachable_service_is_unavailable_with_its_address() -> None:
    with connect("127.0.0.1:1") as client, pytest.raises(Unavailable) as down:
        client.get_saga(str(uuid.uuid4()))
    assert (down.value.service, down.value.address) == ("orchestrator", "127.0.0.1:1")
    assert down.value.reason == ""  # nobody answered, so no ErrorInfo


def test_a_participant_needs_its_address() -> None:
    client = Client()
    with pytest.raises(ValueError, match="payment='host:port'"):
        client.get_payment(str(uuid.uuid4()))
