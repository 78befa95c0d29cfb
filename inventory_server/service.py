"""InventoryService: holds stock per product and reserves it for sagas.

The rules of docs/design.md §3: idempotent by saga_id, empty compensations leave a
tombstone that refuses a late Reserve, and a rejection commits nothing. Every
check and write of a Reserve runs in one database job on the single writer
thread, so two concurrent Reserves can never both take the last unit.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Mapping

from minisaga.inventory.v1 import inventory_pb2 as pb
from minisaga.inventory.v1 import inventory_pb2_grpc

from service_kit import errors, paging, validation
from service_kit.clock import now_ms, timestamp
from service_kit.database import Database
from service_kit.errors import Context, FieldViolation
from service_kit.faults import FaultConfig

DOMAIN = "minisaga.inventory.v1"
DEFAULT_STOCK = "apple=1000,banana=1000,cherry=1000"

SCHEMA = """
-- One row per product: units free to reserve, and units held by reservations.
CREATE TABLE IF NOT EXISTS products (
    product_id          TEXT PRIMARY KEY,
    quantity            INTEGER NOT NULL CHECK (quantity >= 0),  -- available
    reserved            INTEGER NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    updated_at_epoch_ms INTEGER NOT NULL
);
-- One row per saga: its reservation, its release, or a tombstone (VOIDED).
CREATE TABLE IF NOT EXISTS reservations (
    saga_id             TEXT PRIMARY KEY,
    reservation_id      TEXT NOT NULL,
    product_id          TEXT NOT NULL,
    quantity            INTEGER NOT NULL,
    status              INTEGER NOT NULL,  -- minisaga.inventory.v1.ReservationStatus
    created_at_epoch_ms INTEGER NOT NULL,
    updated_at_epoch_ms INTEGER NOT NULL
);
"""


class InventoryService(inventory_pb2_grpc.InventoryServiceServicer):
    def __init__(self, db: Database, *, faults: FaultConfig) -> None:
        self.db = db
        self.faults = faults

    @errors.rpc_errors(DOMAIN)
    async def Reserve(self, request: pb.ReserveRequest, context: Context) -> pb.ReserveResponse:
        await self.faults.before("Reserve", request.saga_id)
        validation.require_valid(
            validation.check_saga_id("saga_id", request.saga_id),
            validation.check_id("product_id", request.product_id),
            validation.check_quantity("quantity", request.quantity),
        )
        self.faults.check_switches(fail=request.fail)

        def reserve(conn: sqlite3.Connection) -> pb.ReserveResponse:
            row = _select_reservation(conn, request.saga_id)
            if row is not None:
                if row["status"] != pb.RESERVATION_STATUS_RESERVED:
                    raise errors.failed_precondition(
                        errors.ALREADY_COMPENSATED,
                        f"saga {request.saga_id} was already compensated; reserve refused",
                        saga_id=request.saga_id,
                    )
                if (row["product_id"], row["quantity"]) != (request.product_id, request.quantity):
                    raise errors.already_exists(
                        errors.IDEMPOTENCY_KEY_REUSED,
                        f"saga {request.saga_id} reserved with other parameters",
                        saga_id=request.saga_id,
                    )
                return pb.ReserveResponse(reservation=_reservation(row), replayed=True)
            if request.fail:
                raise errors.failed_precondition(
                    errors.INJECTED_FAILURE, "reservation failed on purpose (fail=true)"
                )
            product = _select_product(conn, request.product_id)
            if product is None:
                raise errors.invalid_argument(
                    FieldViolation("product_id", f"unknown product {request.product_id!r}")
                )
            if request.quantity > product["quantity"]:
                raise errors.failed_precondition(
                    errors.INSUFFICIENT_STOCK,
                    f"only {product['quantity']} of {request.product_id} available,"
                    f" {request.quantity} requested",
                    product_id=request.product_id,
                    requested=str(request.quantity),
                    available=str(product["quantity"]),
                )
            now = now_ms()
            conn.execute(
                "UPDATE products SET quantity = quantity - ?, reserved = reserved + ?,"
                " updated_at_epoch_ms = ? WHERE product_id = ?",
                (request.quantity, request.quantity, now, request.product_id),
            )
            conn.execute(
                "INSERT INTO reservations (saga_id, reservation_id, product_id, quantity, status,"
                " created_at_epoch_ms, updated_at_epoch_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    request.saga_id,
                    f"rsv_{uuid.uuid4().hex}",
                    request.product_id,
                    request.quantity,
                    pb.RESERVATION_STATUS_RESERVED,
                    now,
                    now,
                ),
            )
            return pb.ReserveResponse(
                reservation=_reservation(_select_reservation(conn, request.saga_id))
            )

        response = await self.db.run(reserve)
        self.faults.after_commit("Reserve")
        return response

    @errors.rpc_errors(DOMAIN)
    async def Release(self, request: pb.ReleaseRequest, context: Context) -> pb.ReleaseResponse:
        await self.faults.before("Release", request.saga_id)
        validation.require_valid(validation.check_saga_id("saga_id", request.saga_id))

        def release(conn: sqlite3.Connection) -> pb.ReleaseResponse:
            row = _select_reservation(conn, request.saga_id)
            now = now_ms()
            if row is None:
                conn.execute(
                    "INSERT INTO reservations (saga_id, reservation_id, product_id, quantity,"
                    " status, created_at_epoch_ms, updated_at_epoch_ms)"
                    " VALUES (?, '', '', 0, ?, ?, ?)",
                    (request.saga_id, pb.RESERVATION_STATUS_VOIDED, now, now),
                )
                outcome = pb.RELEASE_OUTCOME_NOTHING_TO_RELEASE
            elif row["status"] == pb.RESERVATION_STATUS_RESERVED:
                conn.execute(
                    "UPDATE products SET quantity = quantity + ?, reserved = reserved - ?,"
                    " updated_at_epoch_ms = ? WHERE product_id = ?",
                    (row["quantity"], row["quantity"], now, row["product_id"]),
                )
                conn.execute(
                    "UPDATE reservations SET status = ?, updated_at_epoch_ms = ? WHERE saga_id = ?",
                    (pb.RESERVATION_STATUS_RELEASED, now, request.saga_id),
                )
                outcome = pb.RELEASE_OUTCOME_RELEASED
            elif row["status"] == pb.RESERVATION_STATUS_RELEASED:
                outcome = pb.RELEASE_OUTCOME_ALREADY_RELEASED
            else:
                outcome = pb.RELEASE_OUTCOME_NOTHING_TO_RELEASE
            return pb.ReleaseResponse(
                outcome=outcome,
                reservation=_reservation(_select_reservation(conn, request.saga_id)),
            )

        response = await self.db.run(release)
        self.faults.after_commit("Release")
        return response

    @errors.rpc_errors(DOMAIN)
    async def ListReservations(
        self, request: pb.ListReservationsRequest, context: Context
    ) -> pb.ListReservationsResponse:
        wanted = paging.page(request.page_size, request.page_token)
        rows, token = await self.db.run(lambda conn: paging.select(conn, "reservations", wanted))
        return pb.ListReservationsResponse(
            reservations=[_reservation(row) for row in rows], next_page_token=token
        )

    @errors.rpc_errors(DOMAIN)
    async def GetReservation(
        self, request: pb.GetReservationRequest, context: Context
    ) -> pb.GetReservationResponse:
        validation.require_valid(validation.check_saga_id("saga_id", request.saga_id))
        row = await self.db.run(lambda conn: _select_reservation(conn, request.saga_id))
        if row is None:
            raise errors.not_found(f"no reservation for saga {request.saga_id}")
        return pb.GetReservationResponse(reservation=_reservation(row))

    @errors.rpc_errors(DOMAIN)
    async def SetStock(self, request: pb.SetStockRequest, context: Context) -> pb.SetStockResponse:
        await self.faults.before("SetStock", request.product_id)
        validation.require_valid(
            validation.check_id("product_id", request.product_id),
            validation.check_quantity("quantity", request.quantity, allow_zero=True),
        )

        def set_stock(conn: sqlite3.Connection) -> pb.SetStockResponse:
            conn.execute(
                "INSERT INTO products (product_id, quantity, reserved, updated_at_epoch_ms)"
                " VALUES (?, ?, 0, ?) ON CONFLICT (product_id) DO UPDATE"
                " SET quantity = excluded.quantity,"
                " updated_at_epoch_ms = excluded.updated_at_epoch_ms",
                (request.product_id, request.quantity, now_ms()),
            )
            return pb.SetStockResponse(stock=_stock(_select_product(conn, request.product_id)))

        response = await self.db.run(set_stock)
        self.faults.after_commit("SetStock")
        return response

    @errors.rpc_errors(DOMAIN)
    async def GetStock(self, request: pb.GetStockRequest, context: Context) -> pb.GetStockResponse:
        validation.require_valid(validation.check_id("product_id", request.product_id))
        row = await self.db.run(lambda conn: _select_product(conn, request.product_id))
        if row is None:
            raise errors.not_found(
                f"no product {request.product_id!r}", product_id=request.product_id
            )
        return pb.GetStockResponse(stock=_stock(row))


async def seed_stock(db: Database, stock: Mapping[str, int]) -> list[str]:
    """Creates each product of `stock` that does not exist yet; returns those created.

    Products that already exist keep their numbers, so restarting a server with
    the same `--stock` flag never undoes what happened since.
    """

    def seed(conn: sqlite3.Connection) -> list[str]:
        created = []
        now = now_ms()
        for product_id, quantity in stock.items():
            cursor = conn.execute(
                "INSERT INTO products (product_id, quantity, reserved, updated_at_epoch_ms)"
                " VALUES (?, ?, 0, ?) ON CONFLICT (product_id) DO NOTHING",
                (product_id, quantity, now),
            )
            if cursor.rowcount:
                created.append(product_id)
        return created

    return await db.run(seed)


def parse_stock(text: str) -> dict[str, int]:
    """Parses "apple=1000,banana=5" into {"apple": 1000, "banana": 5}.

    Raises ValueError naming the bad item; the same rules as SetStock apply.
    """
    stock: dict[str, int] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        product_id, sep, quantity_text = item.partition("=")
        product_id = product_id.strip()
        try:
            quantity = int(quantity_text.strip()) if sep else -1
        except ValueError:
            quantity = -1
        if not sep or quantity < 0:
            raise ValueError(f"{item!r} is not PRODUCT=QUANTITY with QUANTITY zero or more")
        violation = validation.check_id("product_id", product_id) or validation.check_quantity(
            "quantity", quantity, allow_zero=True
        )
        if violation is not None:
            raise ValueError(f"{item!r}: {violation.field} {violation.description}")
        stock[product_id] = quantity
    return stock


def _select_reservation(conn: sqlite3.Connection, saga_id: str) -> sqlite3.Row | None:
    row: sqlite3.Row | None = conn.execute(
        "SELECT * FROM reservations WHERE saga_id = ?", (saga_id,)
    ).fetchone()
    return row


def _select_product(conn: sqlite3.Connection, product_id: str) -> sqlite3.Row | None:
    row: sqlite3.Row | None = conn.execute(
        "SELECT * FROM products WHERE product_id = ?", (product_id,)
    ).fetchone()
    return row


def _reservation(row: sqlite3.Row | None) -> pb.Reservation:
    assert row is not None
    return pb.Reservation(
        saga_id=row["saga_id"],
        reservation_id=row["reservation_id"],
        product_id=row["product_id"],
        quantity=row["quantity"],
        status=row["status"],
        created_at=timestamp(row["created_at_epoch_ms"]),
        updated_at=timestamp(row["updated_at_epoch_ms"]),
    )


def _stock(row: sqlite3.Row | None) -> pb.Stock:
    assert row is not None
    return pb.Stock(
        product_id=row["product_id"],
        quantity=row["quantity"],
        reserved=row["reserved"],
        updated_at=timestamp(row["updated_at_epoch_ms"]),
    )
