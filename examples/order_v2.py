"""Writing, running, loading and versioning a saga (docs/writing-a-saga.md).

place_order version 2 holds the stock before it takes the money: reserve,
charge, ship. Its builders read earlier steps' outputs, typed: the shipment
names the reservation Reserve returned, the refund names the receipt Charge
returned.

Run it in this process against the participants of `make run`:

    .venv/bin/python -m examples.order_v2 --db /tmp/order_v2.db

Or host it in the orchestrator beside version 1, without forking anything:

    python -m orchestrator_server --saga examples.order_v2:PLACE_ORDER_V2
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from minisaga.inventory.v1 import inventory_pb2 as inventory
from minisaga.orchestrator.v1.orchestrator_pb2 import PlaceOrderRequest
from minisaga.payment.v1 import payment_pb2 as payment
from minisaga.shipping.v1 import shipping_pb2 as shipping

from orchestrator_server.saga import (
    Rpc,
    Saga,
    SagaContext,
    SagaRecord,
    SqliteSagaStore,
    open_engine,
)

# 1. The participants' RPCs, checked against their protos at import time.
PAYMENT = payment.DESCRIPTOR.services_by_name["PaymentService"]
INVENTORY = inventory.DESCRIPTOR.services_by_name["InventoryService"]
SHIPPING = shipping.DESCRIPTOR.services_by_name["ShippingService"]

CHARGE = Rpc.of("payment", PAYMENT, "Charge", payment.ChargeRequest, payment.ChargeResponse)
REFUND = Rpc.of("payment", PAYMENT, "Refund", payment.RefundRequest, payment.RefundResponse)
RESERVE = Rpc.of(
    "inventory", INVENTORY, "Reserve", inventory.ReserveRequest, inventory.ReserveResponse
)
RELEASE = Rpc.of(
    "inventory", INVENTORY, "Release", inventory.ReleaseRequest, inventory.ReleaseResponse
)
SHIP = Rpc.of(
    "shipping",
    SHIPPING,
    "CreateShipment",
    shipping.CreateShipmentRequest,
    shipping.CreateShipmentResponse,
)
UNSHIP = Rpc.of(
    "shipping",
    SHIPPING,
    "CancelShipment",
    shipping.CancelShipmentRequest,
    shipping.CancelShipmentResponse,
)

# 2. Request builders: what each step sends, from the saga's input and outputs.
Order = SagaContext[PlaceOrderRequest]


def reserve(order: Order) -> inventory.ReserveRequest:
    return inventory.ReserveRequest(
        saga_id=order.saga_id,
        product_id=order.input.product_id,
        quantity=order.input.quantity,
        fail=order.input.fail_inventory,  # the tutorial's failure switches, as version 1
    )


def release(order: Order) -> inventory.ReleaseRequest:
    return inventory.ReleaseRequest(saga_id=order.saga_id)


def charge(order: Order) -> payment.ChargeRequest:
    return payment.ChargeRequest(
        saga_id=order.saga_id,
        order_id=order.business_key,
        amount=order.input.amount,
        currency=order.input.currency,
        fail=order.input.fail_payment,
    )


def refund(order: Order) -> payment.RefundRequest:
    charged = order.output_or_none(CHARGE)  # None if the charge's reply was lost
    return payment.RefundRequest(
        saga_id=order.saga_id,
        reason="order v2 compensation",
        receipt_id=charged.payment.receipt_id if charged else "",
    )


def ship(order: Order) -> shipping.CreateShipmentRequest:
    reserved = order.output(RESERVE)  # a ReserveResponse: mypy knows it
    return shipping.CreateShipmentRequest(
        saga_id=order.saga_id,
        order_id=order.business_key,
        address=order.input.address or "store pickup",
        reservation_id=reserved.reservation.reservation_id,
        fail=order.input.fail_shipping,
    )


def unship(order: Order) -> shipping.CancelShipmentRequest:
    return shipping.CancelShipmentRequest(saga_id=order.saga_id)


# 3. The definition: same name as the built-in place_order, the next version.
PLACE_ORDER_V2 = (
    Saga("place_order", PlaceOrderRequest, version=2)
    .step("reserve")
    .invoke(RESERVE, reserve)
    .with_compensation(RELEASE, release)
    .step("charge")
    .invoke(CHARGE, charge)
    .with_compensation(REFUND, refund)
    .step("ship")
    .invoke(SHIP, ship)
    .with_compensation(UNSHIP, unship)
    .build()
)


# 4. Running it in your own process: one `async with`, one `run`.
async def place(
    db: Path, participants: dict[str, str], order: PlaceOrderRequest, request_id: str | None
) -> SagaRecord:
    async with open_engine(SqliteSagaStore(db), participants, [PLACE_ORDER_V2]) as engine:
        return await engine.run(PLACE_ORDER_V2, order, request_id=request_id)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.order_v2")
    parser.add_argument("--db", default="data/order_v2.db", help="the saga log (SQLite)")
    parser.add_argument("--payment", default="127.0.0.1:7002")
    parser.add_argument("--inventory", default="127.0.0.1:7003")
    parser.add_argument("--shipping", default="127.0.0.1:7004")
    parser.add_argument("--product", default="apple")
    parser.add_argument("--request-id", default="", help="idempotency key (default: none)")
    args = parser.parse_args(argv)
    participants = {
        "payment": args.payment,
        "inventory": args.inventory,
        "shipping": args.shipping,
    }
    order = PlaceOrderRequest(product_id=args.product, quantity=1, amount=500, currency="JPY")
    ended = asyncio.run(place(Path(args.db), participants, order, args.request_id or None))
    print(f"saga {ended.saga_id} version {ended.saga_version}: {ended.status.value}")
    for attempt in ended.attempts:
        print(f"  {attempt.step:8} {attempt.phase.value:12} {attempt.code}")
    return 0 if ended.status.value == "COMPLETED" else 1


if __name__ == "__main__":
    sys.exit(main())
