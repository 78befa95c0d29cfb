"""Real `python -m <participant>` processes: SIGKILL loses nothing acknowledged.

Each test does several actions and compensations, each acknowledged by the
server, kills it with SIGKILL (no drain, no close), restarts it on the same
SQLite file and reads every acknowledged record back.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
from minisaga.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from minisaga.loyalty.v1 import loyalty_pb2, loyalty_pb2_grpc
from minisaga.payment.v1 import payment_pb2, payment_pb2_grpc
from minisaga.shipping.v1 import shipping_pb2, shipping_pb2_grpc

from tests.harness import ROOT, Subprocess

pytestmark = pytest.mark.slow

ACTIONS = 8  # acknowledged actions per test
UNDONE = 3  # of which this many are compensated


def sagas() -> list[str]:
    return [str(uuid.uuid4()) for _ in range(ACTIONS)]


@contextmanager
def serving(
    module: str, db: Path, tmp_path: Path, *flags: str
) -> Iterator[tuple[Subprocess, grpc.Channel]]:
    """Starts `python -m module` on a free port; SIGKILLs it when the block ends."""
    process = Subprocess(
        module, ["--listen", "127.0.0.1:0", "--db", str(db), *flags], tmp_path / f"{module}.log"
    ).start()
    channel = grpc.insecure_channel(process.address)
    try:
        yield process, channel
    finally:
        channel.close()
        process.kill()


def test_payment_keeps_every_acknowledged_record_through_sigkill(tmp_path: Path) -> None:
    db = tmp_path / "payment.db"
    charged, tombstone = sagas(), str(uuid.uuid4())
    with serving("payment_server", db, tmp_path) as (process, channel):
        stub = payment_pb2_grpc.PaymentServiceStub(channel)
        receipts = {
            saga_id: stub.Charge(
                payment_pb2.ChargeRequest(saga_id=saga_id, order_id=f"ord_{i}", amount=100 + i)
            ).payment.receipt_id
            for i, saga_id in enumerate(charged)
        }
        for saga_id in charged[:UNDONE]:
            stub.Refund(payment_pb2.RefundRequest(saga_id=saga_id, reason="undo"))
        stub.Refund(payment_pb2.RefundRequest(saga_id=tombstone))
        process.kill()

    with serving("payment_server", db, tmp_path) as (_, channel):
        stub = payment_pb2_grpc.PaymentServiceStub(channel)
        for i, saga_id in enumerate(charged):
            got = stub.GetPayment(payment_pb2.GetPaymentRequest(saga_id=saga_id)).payment
            assert (got.receipt_id, got.amount, got.order_id) == (
                receipts[saga_id],
                100 + i,
                f"ord_{i}",
            )
            expected = (
                payment_pb2.PAYMENT_STATUS_REFUNDED
                if i < UNDONE
                else (payment_pb2.PAYMENT_STATUS_CHARGED)
            )
            assert got.status == expected
        replay = stub.Charge(
            payment_pb2.ChargeRequest(
                saga_id=charged[-1], order_id=f"ord_{ACTIONS - 1}", amount=100 + ACTIONS - 1
            )
        )
        assert (replay.payment.receipt_id, replay.replayed) == (receipts[charged[-1]], True)
        with pytest.raises(grpc.RpcError) as late:
            stub.Charge(payment_pb2.ChargeRequest(saga_id=tombstone, order_id="ord_x", amount=1))
        assert isinstance(late.value, grpc.Call)
        assert late.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_the_loyalty_example_keeps_every_acknowledged_record_through_sigkill(
    tmp_path: Path,
) -> None:
    """`python -m examples.loyalty`, as docs/writing-a-saga.md starts it."""
    db = tmp_path / "loyalty.db"
    awarded, tombstone = sagas(), str(uuid.uuid4())

    def award(saga_id: str, i: int) -> loyalty_pb2.AwardPointsRequest:
        return loyalty_pb2.AwardPointsRequest(
            saga_id=saga_id, order_id=f"ord_{i}", points=10 + i, shipment_id=f"shp_{i}"
        )

    with serving("examples.loyalty", db, tmp_path) as (process, channel):
        stub = loyalty_pb2_grpc.LoyaltyServiceStub(channel)
        ids = {
            saga_id: stub.AwardPoints(award(saga_id, i)).award.award_id
            for i, saga_id in enumerate(awarded)
        }
        for saga_id in awarded[:UNDONE]:
            stub.RevokePoints(loyalty_pb2.RevokePointsRequest(saga_id=saga_id, reason="undo"))
        stub.RevokePoints(loyalty_pb2.RevokePointsRequest(saga_id=tombstone))
        process.kill()

    with serving("examples.loyalty", db, tmp_path) as (_, channel):
        stub = loyalty_pb2_grpc.LoyaltyServiceStub(channel)
        for i, saga_id in enumerate(awarded):
            got = stub.GetAward(loyalty_pb2.GetAwardRequest(saga_id=saga_id)).award
            assert (got.award_id, got.points, got.shipment_id) == (ids[saga_id], 10 + i, f"shp_{i}")
            assert got.status == (
                loyalty_pb2.AWARD_STATUS_REVOKED if i < UNDONE else loyalty_pb2.AWARD_STATUS_AWARDED
            )
        replay = stub.AwardPoints(award(awarded[-1], ACTIONS - 1))
        assert (replay.award.award_id, replay.replayed) == (ids[awarded[-1]], True)
        with pytest.raises(grpc.RpcError) as late:
            stub.AwardPoints(award(tombstone, 0))
        assert isinstance(late.value, grpc.Call)
        assert late.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_inventory_keeps_reservations_and_stock_through_sigkill(tmp_path: Path) -> None:
    db = tmp_path / "inventory.db"
    reserved = sagas()
    with serving("inventory_server", db, tmp_path, "--stock", "widget=30") as (process, channel):
        stub = inventory_pb2_grpc.InventoryServiceStub(channel)
        ids = {
            saga_id: stub.Reserve(
                inventory_pb2.ReserveRequest(saga_id=saga_id, product_id="widget", quantity=2)
            ).reservation.reservation_id
            for saga_id in reserved
        }
        for saga_id in reserved[:UNDONE]:
            stub.Release(inventory_pb2.ReleaseRequest(saga_id=saga_id))
        stub.SetStock(inventory_pb2.SetStockRequest(product_id="gadget", quantity=4))
        process.kill()

    held = 2 * (ACTIONS - UNDONE)
    # Restarted with the same --stock flag (and one new product): what happened stays.
    flags = ("--stock", "widget=30,sprocket=5")
    with serving("inventory_server", db, tmp_path, *flags) as (_, channel):
        stub = inventory_pb2_grpc.InventoryServiceStub(channel)
        for i, saga_id in enumerate(reserved):
            request = inventory_pb2.GetReservationRequest(saga_id=saga_id)
            got = stub.GetReservation(request).reservation
            assert (got.reservation_id, got.product_id, got.quantity) == (ids[saga_id], "widget", 2)
            expected = (
                inventory_pb2.RESERVATION_STATUS_RELEASED
                if i < UNDONE
                else (inventory_pb2.RESERVATION_STATUS_RESERVED)
            )
            assert got.status == expected

        def stock(product_id: str) -> tuple[int, int]:
            request = inventory_pb2.GetStockRequest(product_id=product_id)
            s = stub.GetStock(request).stock
            return s.quantity, s.reserved

        assert stock("widget") == (30 - held, held)
        assert stock("gadget") == (4, 0)
        assert stock("sprocket") == (5, 0)


def test_shipping_keeps_every_acknowledged_record_through_sigkill(tmp_path: Path) -> None:
    db = tmp_path / "shipping.db"
    created, tombstone = sagas(), str(uuid.uuid4())
    with serving("shipping_server", db, tmp_path) as (process, channel):
        stub = shipping_pb2_grpc.ShippingServiceStub(channel)
        ids = {
            saga_id: stub.CreateShipment(
                shipping_pb2.CreateShipmentRequest(
                    saga_id=saga_id, order_id=f"ord_{i}", address=f"{i} Main St"
                )
            ).shipment.shipment_id
            for i, saga_id in enumerate(created)
        }
        for saga_id in created[:UNDONE]:
            stub.CancelShipment(shipping_pb2.CancelShipmentRequest(saga_id=saga_id))
        stub.CancelShipment(shipping_pb2.CancelShipmentRequest(saga_id=tombstone))
        process.kill()

    with serving("shipping_server", db, tmp_path) as (_, channel):
        stub = shipping_pb2_grpc.ShippingServiceStub(channel)
        for i, saga_id in enumerate(created):
            request = shipping_pb2.GetShipmentRequest(saga_id=saga_id)
            got = stub.GetShipment(request).shipment
            assert (got.shipment_id, got.address) == (ids[saga_id], f"{i} Main St")
            expected = (
                shipping_pb2.SHIPMENT_STATUS_CANCELLED
                if i < UNDONE
                else (shipping_pb2.SHIPMENT_STATUS_CREATED)
            )
            assert got.status == expected
        got = stub.GetShipment(shipping_pb2.GetShipmentRequest(saga_id=tombstone)).shipment
        assert got.status == shipping_pb2.SHIPMENT_STATUS_VOIDED


# --- the command line --------------------------------------------------------

COMMON_FLAGS = [
    "--listen",
    "--db",
    "--grace-seconds",
    "--max-message-bytes",
    "--log-level",
    "--fault-error-rate",
    "--fault-error-code",
    "--fault-fail-first",
    "--fault-latency-ms",
    "--fault-commit-then-unavailable",
    "--fault-methods",
]


@pytest.mark.parametrize(
    ("module", "own_flags", "defaults"),
    [
        (
            "inventory_server",
            ["--stock"],
            [
                "127.0.0.1:7003",
                "data/inventory.db",
                "apple=1000,banana=1000,cherry=1000",
                "MINISAGA_INVENTORY_STOCK",
            ],
        ),
        ("shipping_server", [], ["127.0.0.1:7004", "data/shipping.db"]),
        ("examples.loyalty", [], ["127.0.0.1:7005", "data/loyalty.db"]),
    ],
)
def test_help_mentions_every_flag(module: str, own_flags: list[str], defaults: list[str]) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "generated")])}
    done = subprocess.run(
        [sys.executable, "-m", module, "--help"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for flag in [*COMMON_FLAGS, *own_flags]:
        assert flag in done.stdout, flag
    for default in defaults:
        assert default in done.stdout.replace("\n", " ").replace(" ", ""), default
