"""ShippingService: books a delivery for an order and cancels it on compensation.

The rules of docs/design.md §3: idempotent by saga_id, empty compensations leave a
tombstone that refuses a late CreateShipment, and a rejection commits nothing.
"""

from __future__ import annotations

import sqlite3
import uuid

from minisaga.shipping.v1 import shipping_pb2 as pb
from minisaga.shipping.v1 import shipping_pb2_grpc

from service_kit import errors, paging, validation
from service_kit.clock import now_ms, timestamp
from service_kit.database import Database
from service_kit.errors import Context
from service_kit.faults import FaultConfig

DOMAIN = "minisaga.shipping.v1"

# The shipments table's migrations, oldest first (a change is a new entry).
SCHEMA = (
    """
-- One row per saga: its shipment, its cancellation, or a tombstone (VOIDED).
CREATE TABLE IF NOT EXISTS shipments (
    saga_id             TEXT PRIMARY KEY,
    shipment_id         TEXT NOT NULL,
    order_id            TEXT NOT NULL,
    address             TEXT NOT NULL,
    status              INTEGER NOT NULL,  -- minisaga.shipping.v1.ShipmentStatus
    created_at_epoch_ms INTEGER NOT NULL,
    updated_at_epoch_ms INTEGER NOT NULL
);
""",
    """
-- 2: the inventory reservation a shipment carries out (CreateShipmentRequest).
ALTER TABLE shipments ADD COLUMN reservation_id TEXT NOT NULL DEFAULT '';
""",
)


class ShippingService(shipping_pb2_grpc.ShippingServiceServicer):
    def __init__(self, db: Database, *, faults: FaultConfig) -> None:
        self.db = db
        self.faults = faults

    @errors.rpc_errors(DOMAIN)
    async def CreateShipment(
        self, request: pb.CreateShipmentRequest, context: Context
    ) -> pb.CreateShipmentResponse:
        await self.faults.before("CreateShipment", request.saga_id)
        validation.require_valid(
            validation.check_saga_id("saga_id", request.saga_id),
            validation.check_id("order_id", request.order_id),
            validation.check_text("address", request.address),
            validation.check_id("reservation_id", request.reservation_id, required=False),
        )
        self.faults.check_switches(fail=request.fail)

        def create(conn: sqlite3.Connection) -> pb.CreateShipmentResponse:
            row = _select(conn, request.saga_id)
            if row is not None:
                if row["status"] != pb.SHIPMENT_STATUS_CREATED:
                    raise errors.failed_precondition(
                        errors.ALREADY_COMPENSATED,
                        f"saga {request.saga_id} was already compensated; shipment refused",
                        saga_id=request.saga_id,
                    )
                if (row["order_id"], row["address"]) != (request.order_id, request.address):
                    raise errors.already_exists(
                        errors.IDEMPOTENCY_KEY_REUSED,
                        f"saga {request.saga_id} booked a shipment with other parameters",
                        saga_id=request.saga_id,
                    )
                return pb.CreateShipmentResponse(shipment=_shipment(row), replayed=True)
            if request.fail:
                raise errors.failed_precondition(
                    errors.INJECTED_FAILURE, "shipment failed on purpose (fail=true)"
                )
            now = now_ms()
            conn.execute(
                "INSERT INTO shipments (saga_id, shipment_id, order_id, address, status,"
                " created_at_epoch_ms, updated_at_epoch_ms, reservation_id)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    request.saga_id,
                    f"shp_{uuid.uuid4().hex}",
                    request.order_id,
                    request.address,
                    pb.SHIPMENT_STATUS_CREATED,
                    now,
                    now,
                    request.reservation_id,
                ),
            )
            return pb.CreateShipmentResponse(shipment=_shipment(_select(conn, request.saga_id)))

        response = await self.db.run(create)
        self.faults.after_commit("CreateShipment")
        return response

    @errors.rpc_errors(DOMAIN)
    async def CancelShipment(
        self, request: pb.CancelShipmentRequest, context: Context
    ) -> pb.CancelShipmentResponse:
        await self.faults.before("CancelShipment", request.saga_id)
        validation.require_valid(validation.check_saga_id("saga_id", request.saga_id))

        def cancel(conn: sqlite3.Connection) -> pb.CancelShipmentResponse:
            row = _select(conn, request.saga_id)
            now = now_ms()
            if row is None:
                conn.execute(
                    "INSERT INTO shipments (saga_id, shipment_id, order_id, address, status,"
                    " created_at_epoch_ms, updated_at_epoch_ms) VALUES (?, '', '', '', ?, ?, ?)",
                    (request.saga_id, pb.SHIPMENT_STATUS_VOIDED, now, now),
                )
                outcome = pb.CANCEL_OUTCOME_NOTHING_TO_CANCEL
            elif row["status"] == pb.SHIPMENT_STATUS_CREATED:
                conn.execute(
                    "UPDATE shipments SET status = ?, updated_at_epoch_ms = ? WHERE saga_id = ?",
                    (pb.SHIPMENT_STATUS_CANCELLED, now, request.saga_id),
                )
                outcome = pb.CANCEL_OUTCOME_CANCELLED
            elif row["status"] == pb.SHIPMENT_STATUS_CANCELLED:
                outcome = pb.CANCEL_OUTCOME_ALREADY_CANCELLED
            else:
                outcome = pb.CANCEL_OUTCOME_NOTHING_TO_CANCEL
            return pb.CancelShipmentResponse(
                outcome=outcome, shipment=_shipment(_select(conn, request.saga_id))
            )

        response = await self.db.run(cancel)
        self.faults.after_commit("CancelShipment")
        return response

    @errors.rpc_errors(DOMAIN)
    async def ListShipments(
        self, request: pb.ListShipmentsRequest, context: Context
    ) -> pb.ListShipmentsResponse:
        wanted = paging.page(request.page_size, request.page_token)
        rows, token = await self.db.run(lambda conn: paging.select(conn, "shipments", wanted))
        return pb.ListShipmentsResponse(
            shipments=[_shipment(row) for row in rows], next_page_token=token
        )

    @errors.rpc_errors(DOMAIN)
    async def GetShipment(
        self, request: pb.GetShipmentRequest, context: Context
    ) -> pb.GetShipmentResponse:
        validation.require_valid(validation.check_saga_id("saga_id", request.saga_id))
        row = await self.db.run(lambda conn: _select(conn, request.saga_id))
        if row is None:
            raise errors.not_found(f"no shipment for saga {request.saga_id}")
        return pb.GetShipmentResponse(shipment=_shipment(row))


def _select(conn: sqlite3.Connection, saga_id: str) -> sqlite3.Row | None:
    row: sqlite3.Row | None = conn.execute(
        "SELECT * FROM shipments WHERE saga_id = ?", (saga_id,)
    ).fetchone()
    return row


def _shipment(row: sqlite3.Row | None) -> pb.Shipment:
    assert row is not None
    return pb.Shipment(
        saga_id=row["saga_id"],
        shipment_id=row["shipment_id"],
        order_id=row["order_id"],
        address=row["address"],
        status=row["status"],
        created_at=timestamp(row["created_at_epoch_ms"]),
        updated_at=timestamp(row["updated_at_epoch_ms"]),
        reservation_id=row["reservation_id"],
    )
