"""One interface over the participants: the three built-in ones and the example's Loyalty.

The rules every participant obeys (docs/design.md §3) are written once as tests
against `Driver` and run for Payment, Inventory, Shipping and Loyalty alike. A driver
talks real gRPC to an in-process server; `snapshot()` reads the server's own
SQLite file, so "nothing written" is checked on the tables themselves.
"""

from __future__ import annotations

import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import grpc
from minisaga.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from minisaga.loyalty.v1 import loyalty_pb2, loyalty_pb2_grpc
from minisaga.payment.v1 import payment_pb2, payment_pb2_grpc
from minisaga.shipping.v1 import shipping_pb2, shipping_pb2_grpc

from service_kit.faults import FaultConfig
from tests.conftest import start_inventory, start_loyalty, start_payment, start_shipping
from tests.harness import InProcess


@dataclass(frozen=True)
class Record:
    """A participant's record of one saga, reduced to what every participant has."""

    record_id: str  # receipt, reservation or shipment id; empty for a tombstone
    status: str  # the status enum's name without its prefix: "CHARGED", "VOIDED", ...


@dataclass(frozen=True)
class Acted:
    record: Record
    replayed: bool


Snapshot = list[tuple[Any, ...]]


def _suffix(name: str, prefix: str) -> str:
    assert name.startswith(prefix), name
    return name[len(prefix) :]


class Driver(ABC):
    name: ClassVar[str]
    service: ClassVar[str]  # full gRPC service name, for health checks
    action: ClassVar[str]  # method names, as FaultConfig.methods knows them
    compensation: ClassVar[str]
    id_prefix: ClassVar[str]
    done: ClassVar[str]  # record status after the action
    undone: ClassVar[str]  # record status after a compensation of a done action
    outcome_undone: ClassVar[str]  # compensation outcomes
    outcome_already: ClassVar[str]
    outcome_nothing: ClassVar[str]
    tables: ClassVar[tuple[str, ...]]
    other_params: ClassVar[dict[str, Any]]  # the same saga with other parameters
    big_field: ClassVar[str]  # a string field of the action's request

    def __init__(self, server: InProcess) -> None:
        self.server = server

    @property
    def faults(self) -> FaultConfig:
        return self.server.faults

    @abstractmethod
    async def act(self, saga_id: str, **fields: Any) -> Acted:
        """The action, with default parameters that `fields` override."""

    @abstractmethod
    async def compensate(self, saga_id: str) -> tuple[str, Record]:
        """The compensation: its outcome (enum name without prefix) and the record."""

    @abstractmethod
    async def _get(self, saga_id: str) -> Record:
        """The Get* RPC; raises on NOT_FOUND."""

    async def get(self, saga_id: str) -> Record | None:
        """The saga's record through the Get* RPC, or None on NOT_FOUND."""
        try:
            return await self._get(saga_id)
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise

    @abstractmethod
    async def list_page(self, page_size: int = 0, page_token: str = "") -> tuple[list[str], str]:
        """One page of the List* RPC: the sagas of its records, and the next token."""

    async def snapshot(self) -> Snapshot:
        """Every row of every table of the participant, in key order."""

        def read(conn: sqlite3.Connection) -> Snapshot:
            return [
                tuple(row)
                for table in self.tables
                for row in conn.execute(f"SELECT * FROM {table} ORDER BY 1")
            ]

        return await self.server.db.run(read)


class PaymentDriver(Driver):
    name = "payment"
    service = payment_pb2.DESCRIPTOR.services_by_name["PaymentService"].full_name
    action, compensation = "Charge", "Refund"
    id_prefix = "rcpt_"
    done, undone = "CHARGED", "REFUNDED"
    outcome_undone, outcome_already, outcome_nothing = (
        "REFUNDED",
        "ALREADY_REFUNDED",
        "NOTHING_TO_REFUND",
    )
    tables = ("payments",)
    other_params: ClassVar[dict[str, Any]] = {"amount": 1300}
    big_field = "order_id"

    def __init__(self, server: InProcess) -> None:
        super().__init__(server)
        self.stub = payment_pb2_grpc.PaymentServiceStub(server.channel)

    @staticmethod
    def _record(payment: payment_pb2.Payment) -> Record:
        status = payment_pb2.PaymentStatus.Name(payment.status)
        return Record(payment.receipt_id, _suffix(status, "PAYMENT_STATUS_"))

    async def act(self, saga_id: str, **fields: Any) -> Acted:
        params: dict[str, Any] = {"order_id": "ord_1", "amount": 1200, **fields}
        response = await self.stub.Charge(payment_pb2.ChargeRequest(saga_id=saga_id, **params))
        return Acted(self._record(response.payment), response.replayed)

    async def compensate(self, saga_id: str) -> tuple[str, Record]:
        response = await self.stub.Refund(payment_pb2.RefundRequest(saga_id=saga_id, reason="t"))
        outcome = payment_pb2.RefundOutcome.Name(response.outcome)
        return _suffix(outcome, "REFUND_OUTCOME_"), self._record(response.payment)

    async def _get(self, saga_id: str) -> Record:
        response = await self.stub.GetPayment(payment_pb2.GetPaymentRequest(saga_id=saga_id))
        return self._record(response.payment)

    async def list_page(self, page_size: int = 0, page_token: str = "") -> tuple[list[str], str]:
        request = payment_pb2.ListPaymentsRequest(page_size=page_size, page_token=page_token)
        response = await self.stub.ListPayments(request)
        return [p.saga_id for p in response.payments], response.next_page_token


class InventoryDriver(Driver):
    name = "inventory"
    service = inventory_pb2.DESCRIPTOR.services_by_name["InventoryService"].full_name
    action, compensation = "Reserve", "Release"
    id_prefix = "rsv_"
    done, undone = "RESERVED", "RELEASED"
    outcome_undone, outcome_already, outcome_nothing = (
        "RELEASED",
        "ALREADY_RELEASED",
        "NOTHING_TO_RELEASE",
    )
    tables = ("products", "reservations")
    other_params: ClassVar[dict[str, Any]] = {"quantity": 3}
    big_field = "product_id"
    STOCK: ClassVar[dict[str, int]] = {"widget": 100, "gadget": 100}

    def __init__(self, server: InProcess) -> None:
        super().__init__(server)
        self.stub = inventory_pb2_grpc.InventoryServiceStub(server.channel)

    @staticmethod
    def _record(reservation: inventory_pb2.Reservation) -> Record:
        status = inventory_pb2.ReservationStatus.Name(reservation.status)
        return Record(reservation.reservation_id, _suffix(status, "RESERVATION_STATUS_"))

    async def act(self, saga_id: str, **fields: Any) -> Acted:
        params: dict[str, Any] = {"product_id": "widget", "quantity": 2, **fields}
        request = inventory_pb2.ReserveRequest(saga_id=saga_id, **params)
        response = await self.stub.Reserve(request)
        return Acted(self._record(response.reservation), response.replayed)

    async def compensate(self, saga_id: str) -> tuple[str, Record]:
        response = await self.stub.Release(inventory_pb2.ReleaseRequest(saga_id=saga_id))
        outcome = inventory_pb2.ReleaseOutcome.Name(response.outcome)
        return _suffix(outcome, "RELEASE_OUTCOME_"), self._record(response.reservation)

    async def _get(self, saga_id: str) -> Record:
        request = inventory_pb2.GetReservationRequest(saga_id=saga_id)
        response = await self.stub.GetReservation(request)
        return self._record(response.reservation)

    async def list_page(self, page_size: int = 0, page_token: str = "") -> tuple[list[str], str]:
        request = inventory_pb2.ListReservationsRequest(page_size=page_size, page_token=page_token)
        response = await self.stub.ListReservations(request)
        return [r.saga_id for r in response.reservations], response.next_page_token


class ShippingDriver(Driver):
    name = "shipping"
    service = shipping_pb2.DESCRIPTOR.services_by_name["ShippingService"].full_name
    action, compensation = "CreateShipment", "CancelShipment"
    id_prefix = "shp_"
    done, undone = "CREATED", "CANCELLED"
    outcome_undone, outcome_already, outcome_nothing = (
        "CANCELLED",
        "ALREADY_CANCELLED",
        "NOTHING_TO_CANCEL",
    )
    tables = ("shipments",)
    other_params: ClassVar[dict[str, Any]] = {"address": "4-5-6 Umeda, Osaka"}
    big_field = "address"

    def __init__(self, server: InProcess) -> None:
        super().__init__(server)
        self.stub = shipping_pb2_grpc.ShippingServiceStub(server.channel)

    @staticmethod
    def _record(shipment: shipping_pb2.Shipment) -> Record:
        status = shipping_pb2.ShipmentStatus.Name(shipment.status)
        return Record(shipment.shipment_id, _suffix(status, "SHIPMENT_STATUS_"))

    async def act(self, saga_id: str, **fields: Any) -> Acted:
        params: dict[str, Any] = {"order_id": "ord_1", "address": "1-2-3 Shibuya, Tokyo", **fields}
        request = shipping_pb2.CreateShipmentRequest(saga_id=saga_id, **params)
        response = await self.stub.CreateShipment(request)
        return Acted(self._record(response.shipment), response.replayed)

    async def compensate(self, saga_id: str) -> tuple[str, Record]:
        request = shipping_pb2.CancelShipmentRequest(saga_id=saga_id)
        response = await self.stub.CancelShipment(request)
        outcome = shipping_pb2.CancelOutcome.Name(response.outcome)
        return _suffix(outcome, "CANCEL_OUTCOME_"), self._record(response.shipment)

    async def _get(self, saga_id: str) -> Record:
        response = await self.stub.GetShipment(shipping_pb2.GetShipmentRequest(saga_id=saga_id))
        return self._record(response.shipment)

    async def list_page(self, page_size: int = 0, page_token: str = "") -> tuple[list[str], str]:
        request = shipping_pb2.ListShipmentsRequest(page_size=page_size, page_token=page_token)
        response = await self.stub.ListShipments(request)
        return [s.saga_id for s in response.shipments], response.next_page_token


class LoyaltyDriver(Driver):
    """The fourth participant of examples/loyalty/: it obeys the same rules."""

    name = "loyalty"
    service = loyalty_pb2.DESCRIPTOR.services_by_name["LoyaltyService"].full_name
    action, compensation = "AwardPoints", "RevokePoints"
    id_prefix = "pts_"
    done, undone = "AWARDED", "REVOKED"
    outcome_undone, outcome_already, outcome_nothing = (
        "REVOKED",
        "ALREADY_REVOKED",
        "NOTHING_TO_REVOKE",
    )
    tables = ("awards",)
    other_params: ClassVar[dict[str, Any]] = {"points": 13}
    big_field = "order_id"

    def __init__(self, server: InProcess) -> None:
        super().__init__(server)
        self.stub = loyalty_pb2_grpc.LoyaltyServiceStub(server.channel)

    @staticmethod
    def _record(award: loyalty_pb2.Award) -> Record:
        status = loyalty_pb2.AwardStatus.Name(award.status)
        return Record(award.award_id, _suffix(status, "AWARD_STATUS_"))

    async def act(self, saga_id: str, **fields: Any) -> Acted:
        params: dict[str, Any] = {
            "order_id": "ord_1",
            "points": 12,
            "shipment_id": "shp_1",
            **fields,
        }
        request = loyalty_pb2.AwardPointsRequest(saga_id=saga_id, **params)
        response = await self.stub.AwardPoints(request)
        return Acted(self._record(response.award), response.replayed)

    async def compensate(self, saga_id: str) -> tuple[str, Record]:
        request = loyalty_pb2.RevokePointsRequest(saga_id=saga_id, reason="t")
        response = await self.stub.RevokePoints(request)
        outcome = loyalty_pb2.RevokeOutcome.Name(response.outcome)
        return _suffix(outcome, "REVOKE_OUTCOME_"), self._record(response.award)

    async def _get(self, saga_id: str) -> Record:
        response = await self.stub.GetAward(loyalty_pb2.GetAwardRequest(saga_id=saga_id))
        return self._record(response.award)

    async def list_page(self, page_size: int = 0, page_token: str = "") -> tuple[list[str], str]:
        request = loyalty_pb2.ListAwardsRequest(page_size=page_size, page_token=page_token)
        response = await self.stub.ListAwards(request)
        return [a.saga_id for a in response.awards], response.next_page_token


async def _start_payment(directory: Path) -> Driver:
    return PaymentDriver(await start_payment(directory / "payment.db"))


async def _start_inventory(directory: Path) -> Driver:
    server = await start_inventory(directory / "inventory.db", InventoryDriver.STOCK)
    return InventoryDriver(server)


async def _start_shipping(directory: Path) -> Driver:
    return ShippingDriver(await start_shipping(directory / "shipping.db"))


async def _start_loyalty(directory: Path) -> Driver:
    return LoyaltyDriver(await start_loyalty(directory / "loyalty.db"))


STARTERS: dict[str, Callable[[Path], Awaitable[Driver]]] = {
    "payment": _start_payment,
    "inventory": _start_inventory,
    "shipping": _start_shipping,
    "loyalty": _start_loyalty,
}


async def start_driver(name: str, directory: Path) -> Driver:
    return await STARTERS[name](directory)
