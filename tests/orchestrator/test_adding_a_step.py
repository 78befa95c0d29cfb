"""Adding a step with versioning, deployed while sagas are in flight (issue 12, item 5).

An orchestrator hosting only place_order version 1 (charge, reserve, ship) takes
two orders and is stopped while both are inside CreateShipment (parked there).
The orchestrator is deployed again with version 3 loaded beside version 1
(`--saga examples.loyalty.saga:PLACE_ORDER_V3 --participant loyalty=...`:
reserve, charge, ship, award points) and takes a new order while the old ones
are still parked. Once they go on:

- the old sagas finish on version 1: one completes with its three steps, the
  one whose shipment fails compensates exactly version 1's steps in version 1's
  reverse order, and neither ever calls the loyalty service;
- the new saga runs all four steps, and its award names the shipment and the
  amount its earlier steps returned;
- a new saga whose last step is refused compensates the three before it in
  reverse order, and one whose last step stays in doubt (AwardPoints commits,
  then answers UNAVAILABLE, until its attempts run out) compensates all four.

Everything is checked on the participants' records and the saga log, never on
timing. The orchestrator is a real process started with the real flags; the
participants run in this process, so the test can park and fault them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from minisaga.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from minisaga.loyalty.v1 import loyalty_pb2, loyalty_pb2_grpc
from minisaga.orchestrator.v1 import orchestrator_pb2 as pb
from minisaga.orchestrator.v1 import orchestrator_pb2_grpc
from minisaga.payment.v1 import payment_pb2, payment_pb2_grpc
from minisaga.shipping.v1 import shipping_pb2, shipping_pb2_grpc

from examples.loyalty.saga import POINTS_PER
from tests.conftest import start_inventory, start_loyalty, start_payment, start_shipping
from tests.harness import InProcess, Subprocess, wait_until

pytestmark = pytest.mark.slow

V3 = "examples.loyalty.saga:PLACE_ORDER_V3"
STOCK = 100
AMOUNT = 1200  # yen: version 3 awards 12 points for it
ENDED = (pb.SAGA_STATUS_COMPLETED, pb.SAGA_STATUS_COMPENSATED, pb.SAGA_STATUS_FAILED)
FAST_RETRIES = (
    "--initial-backoff-ms", "5",
    "--action-max-backoff-ms", "20",
    "--compensation-max-backoff-ms", "20",
    # A parked attempt must not time out and be sent again: the test counts them.
    "--attempt-timeout-ms", "60000",
)  # fmt: skip


@dataclass
class Shop:
    """Four participants in this process, and the orchestrators deployed in turn."""

    folder: Path
    payment: InProcess
    inventory: InProcess
    shipping: InProcess
    loyalty: InProcess
    deployed: list[Subprocess] = field(default_factory=list)

    async def deploy(self, *flags: str) -> str:
        """Starts an orchestrator on the one saga log; returns its address."""
        process = Subprocess(
            "orchestrator_server",
            [
                "--listen", "127.0.0.1:0",
                "--db", str(self.folder / "orchestrator.db"),
                "--participant", f"payment={self.payment.address}",
                "--participant", f"inventory={self.inventory.address}",
                "--participant", f"shipping={self.shipping.address}",
                "--grace-seconds", "0",  # a deploy stops it mid-saga; the log keeps the sagas
                *FAST_RETRIES,
                *flags,
            ],
            self.folder / f"orchestrator-{len(self.deployed) + 1}.log",
        )  # fmt: skip
        self.deployed.append(process)
        # Off the event loop: the participants it calls at start-up answer from this loop.
        await asyncio.to_thread(process.start)
        return process.address

    async def stop(self) -> None:
        process = self.deployed[-1]
        code = await asyncio.to_thread(process.terminate)
        assert code == 0, f"the orchestrator stopped with {code}:\n{process.log()}"


@pytest.fixture
async def shop(tmp_path: Path) -> AsyncIterator[Shop]:
    started = Shop(
        tmp_path,
        await start_payment(tmp_path / "payment.db"),
        await start_inventory(tmp_path / "inventory.db", {"apple": STOCK}),
        await start_shipping(tmp_path / "shipping.db"),
        await start_loyalty(tmp_path / "loyalty.db"),
    )
    try:
        yield started
    finally:
        for process in started.deployed:
            process.kill()  # only one still running: after a failure
        for server in (started.payment, started.inventory, started.shipping, started.loyalty):
            await server.stop()


def place(address: str, request_id: str, **fields: Any) -> asyncio.Task[pb.PlaceOrderResponse]:
    async def call() -> pb.PlaceOrderResponse:
        async with grpc.aio.insecure_channel(address) as channel:
            api = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
            request = pb.PlaceOrderRequest(
                request_id=request_id, product_id="apple", quantity=1, amount=AMOUNT, **fields
            )
            return await api.PlaceOrder(request, timeout=60)

    return asyncio.create_task(call())


async def get_saga(address: str, saga_id: str) -> pb.Saga:
    async with grpc.aio.insecure_channel(address) as channel:
        api = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
        return (await api.GetSaga(pb.GetSagaRequest(saga_id=saga_id))).saga


async def ended(address: str, saga_id: str) -> pb.Saga:
    async def done() -> pb.Saga | None:
        saga = await get_saga(address, saga_id)
        return saga if saga.status in ENDED else None

    saga: pb.Saga = await wait_until(done, timeout=30)
    return saga


def ran(saga: pb.Saga, phase: pb.StepPhase.ValueType) -> list[str]:
    """The steps that sent at least one RPC in `phase`, in the order the log has them."""
    return [s.step for s in saga.steps if s.phase == phase and s.attempts]


def actions(saga: pb.Saga) -> list[str]:
    return ran(saga, pb.STEP_PHASE_ACTION)


def undos(saga: pb.Saga) -> list[str]:
    return ran(saga, pb.STEP_PHASE_COMPENSATION)


@dataclass
class Records:
    """What each participant holds for one saga: its status name, or None."""

    payment: str | None
    reservation: str | None
    shipment: str | None
    award: str | None


async def records(shop: Shop, saga_id: str) -> Records:
    async def status(call: Any, name: Any) -> str | None:
        try:
            return str(name(await call))
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise

    payments = payment_pb2_grpc.PaymentServiceStub(shop.payment.channel)
    stock = inventory_pb2_grpc.InventoryServiceStub(shop.inventory.channel)
    shipments = shipping_pb2_grpc.ShippingServiceStub(shop.shipping.channel)
    awards = loyalty_pb2_grpc.LoyaltyServiceStub(shop.loyalty.channel)
    return Records(
        await status(
            payments.GetPayment(payment_pb2.GetPaymentRequest(saga_id=saga_id)),
            lambda r: payment_pb2.PaymentStatus.Name(r.payment.status),
        ),
        await status(
            stock.GetReservation(inventory_pb2.GetReservationRequest(saga_id=saga_id)),
            lambda r: inventory_pb2.ReservationStatus.Name(r.reservation.status),
        ),
        await status(
            shipments.GetShipment(shipping_pb2.GetShipmentRequest(saga_id=saga_id)),
            lambda r: shipping_pb2.ShipmentStatus.Name(r.shipment.status),
        ),
        await status(
            awards.GetAward(loyalty_pb2.GetAwardRequest(saga_id=saga_id)),
            lambda r: loyalty_pb2.AwardStatus.Name(r.award.status),
        ),
    )


COMPLETED = Records(
    "PAYMENT_STATUS_CHARGED",
    "RESERVATION_STATUS_RESERVED",
    "SHIPMENT_STATUS_CREATED",
    "AWARD_STATUS_AWARDED",
)


async def test_old_sagas_finish_on_version_1_while_new_ones_run_the_added_step(
    shop: Shop,
) -> None:
    # Every loyalty call is counted: a park released at once lets calls through
    # and still records which saga each came from.
    awarded = shop.loyalty.faults.park("AwardPoints")
    revoked = shop.loyalty.faults.park("RevokePoints")
    awarded.release()
    revoked.release()

    # 1. Version 1 only: two orders, held inside CreateShipment.
    ship = shop.shipping.faults.park("CreateShipment")
    v1 = await shop.deploy()
    old_calls = [place(v1, "old-ok"), place(v1, "old-fails", fail_shipping=True)]
    old_ids = await ship.reached(2)
    old = {(await get_saga(v1, saga_id)).request_id: saga_id for saga_id in old_ids}
    assert set(old) == {"old-ok", "old-fails"}

    # 2. The deploy: stopped mid-saga, started again with version 3 beside version 1.
    await shop.stop()
    await asyncio.gather(*old_calls, return_exceptions=True)  # cut off by the stop
    v3 = await shop.deploy("--saga", V3, "--participant", f"loyalty={shop.loyalty.address}")
    new_call = place(v3, "new-ok")
    # The old sagas' CreateShipments, sent again by the restart, and the new one's.
    arrived = await ship.reached(2 + 2 + 1)
    [new_id] = set(arrived) - set(old_ids)
    in_flight = {}
    for saga_id in (*old_ids, new_id):
        saga = await get_saga(v3, saga_id)
        in_flight[saga_id] = (saga.status, saga.saga_version)
    assert in_flight == {
        old["old-ok"]: (pb.SAGA_STATUS_RUNNING, 1),
        old["old-fails"]: (pb.SAGA_STATUS_RUNNING, 1),
        new_id: (pb.SAGA_STATUS_RUNNING, 3),
    }
    ship.release()

    # 3. The old sagas finish on version 1, and never touch loyalty.
    old_ok = await ended(v3, old["old-ok"])
    assert (old_ok.status, old_ok.saga_version) == (pb.SAGA_STATUS_COMPLETED, 1)
    assert actions(old_ok) == ["charge", "reserve", "ship"]
    assert undos(old_ok) == []
    assert await records(shop, old_ok.saga_id) == Records(
        "PAYMENT_STATUS_CHARGED", "RESERVATION_STATUS_RESERVED", "SHIPMENT_STATUS_CREATED", None
    )

    old_fails = await ended(v3, old["old-fails"])
    assert (old_fails.status, old_fails.saga_version) == (pb.SAGA_STATUS_COMPENSATED, 1)
    assert (old_fails.compensation_cause.step, old_fails.compensation_cause.code) == (
        "ship",
        "FAILED_PRECONDITION",
    )
    assert actions(old_fails) == ["charge", "reserve", "ship"]
    # Version 1's steps in version 1's reverse order; ship too, since the
    # attempt the deploy cut off may have taken effect (docs/design.md §4).
    assert undos(old_fails) == ["ship", "reserve", "charge"]
    assert await records(shop, old_fails.saga_id) == Records(
        "PAYMENT_STATUS_REFUNDED", "RESERVATION_STATUS_RELEASED", "SHIPMENT_STATUS_VOIDED", None
    )

    # 4. The new saga runs the four steps of version 3.
    new_ok = (await new_call).saga
    assert (new_ok.status, new_ok.saga_version) == (pb.SAGA_STATUS_COMPLETED, 3)
    assert actions(new_ok) == ["reserve", "charge", "ship", "award_points"]
    assert await records(shop, new_ok.saga_id) == COMPLETED
    award = (
        await loyalty_pb2_grpc.LoyaltyServiceStub(shop.loyalty.channel).GetAward(
            loyalty_pb2.GetAwardRequest(saga_id=new_ok.saga_id)
        )
    ).award
    shipment = (
        await shipping_pb2_grpc.ShippingServiceStub(shop.shipping.channel).GetShipment(
            shipping_pb2.GetShipmentRequest(saga_id=new_ok.saga_id)
        )
    ).shipment
    # Built from the earlier steps' outputs: the charge's amount, the shipment's id.
    assert (award.points, award.shipment_id, award.order_id) == (
        AMOUNT // POINTS_PER,
        shipment.shipment_id,
        new_ok.order_id,
    )

    # 5. The last step refused: the three steps before it are undone, in reverse.
    shop.loyalty.faults.methods = frozenset({"AwardPoints"})
    shop.loyalty.faults.error_code = grpc.StatusCode.FAILED_PRECONDITION
    shop.loyalty.faults.error_rate = 1.0
    refused = (await place(v3, "new-refused")).saga
    assert (refused.status, refused.saga_version) == (pb.SAGA_STATUS_COMPENSATED, 3)
    assert (refused.compensation_cause.step, refused.compensation_cause.code) == (
        "award_points",
        "FAILED_PRECONDITION",
    )
    assert actions(refused) == ["reserve", "charge", "ship", "award_points"]
    assert undos(refused) == ["ship", "charge", "reserve"]
    assert await records(shop, refused.saga_id) == Records(
        "PAYMENT_STATUS_REFUNDED",
        "RESERVATION_STATUS_RELEASED",
        "SHIPMENT_STATUS_CANCELLED",
        None,  # the refusal committed nothing, so there is nothing to revoke
    )

    # 6. The last step in doubt (committed, reply lost, every attempt): all four undone.
    shop.loyalty.faults.error_rate = 0.0
    shop.loyalty.faults.commit_then_unavailable_rate = 1.0
    in_doubt = (await place(v3, "new-in-doubt")).saga
    assert (in_doubt.status, in_doubt.saga_version) == (pb.SAGA_STATUS_COMPENSATED, 3)
    assert (in_doubt.compensation_cause.step, in_doubt.compensation_cause.code) == (
        "award_points",
        "UNAVAILABLE",
    )
    assert undos(in_doubt) == ["award_points", "ship", "charge", "reserve"]
    assert await records(shop, in_doubt.saga_id) == Records(
        "PAYMENT_STATUS_REFUNDED",
        "RESERVATION_STATUS_RELEASED",
        "SHIPMENT_STATUS_CANCELLED",
        "AWARD_STATUS_REVOKED",
    )

    # Loyalty heard only from version 3's sagas, and a revoke only for the one in doubt.
    assert set(awarded.saga_ids) == {new_ok.saga_id, refused.saga_id, in_doubt.saga_id}
    assert set(revoked.saga_ids) == {in_doubt.saga_id}
    stock = await inventory_pb2_grpc.InventoryServiceStub(shop.inventory.channel).GetStock(
        inventory_pb2.GetStockRequest(product_id="apple")
    )
    assert (stock.stock.quantity, stock.stock.reserved) == (STOCK - 2, 2)  # the two completed
    await shop.stop()
