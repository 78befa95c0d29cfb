"""The place-an-order saga run by hand: what the benchmark's two baselines do.

Charge → Reserve → CreateShipment in sequence; on a failure the finished steps
are undone in reverse (CancelShipment, Release, Refund). Nothing is written
down and nothing is retried. The direct baseline runs it in the load
generator; bench.inmemory runs it behind PlaceOrder.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import grpc
from minisaga.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from minisaga.payment.v1 import payment_pb2, payment_pb2_grpc
from minisaga.shipping.v1 import shipping_pb2, shipping_pb2_grpc

STORE_PICKUP = "store pickup"  # as orchestrator_server.order_saga, so the requests match


@dataclass(frozen=True)
class Participants:
    payment: payment_pb2_grpc.PaymentServiceAsyncStub
    inventory: inventory_pb2_grpc.InventoryServiceAsyncStub
    shipping: shipping_pb2_grpc.ShippingServiceAsyncStub


@dataclass(frozen=True)
class Order:
    saga_id: str
    order_id: str
    product_id: str
    quantity: int
    amount: int
    currency: str
    address: str
    fail_payment: bool = False
    fail_inventory: bool = False
    fail_shipping: bool = False


@dataclass
class Outcome:
    status: str
    """COMPLETED, COMPENSATED, or FAILED when an undo failed (left for a human)."""
    failures: list[tuple[str, grpc.aio.AioRpcError]]
    """Each call that failed: the step ("reserve", "undo charge", ...) and its error."""


async def run_by_hand(to: Participants, order: Order, timeout: float) -> Outcome:
    saga_id = order.saga_id
    reservation_id = ""

    async def charge() -> None:
        await to.payment.Charge(
            payment_pb2.ChargeRequest(
                saga_id=saga_id,
                order_id=order.order_id,
                amount=order.amount,
                currency=order.currency,
                fail=order.fail_payment,
            ),
            timeout=timeout,
        )

    async def reserve() -> None:
        nonlocal reservation_id
        reply = await to.inventory.Reserve(
            inventory_pb2.ReserveRequest(
                saga_id=saga_id,
                product_id=order.product_id,
                quantity=order.quantity,
                fail=order.fail_inventory,
            ),
            timeout=timeout,
        )
        reservation_id = reply.reservation.reservation_id

    async def ship() -> None:
        await to.shipping.CreateShipment(
            shipping_pb2.CreateShipmentRequest(
                saga_id=saga_id,
                order_id=order.order_id,
                address=order.address or STORE_PICKUP,
                fail=order.fail_shipping,
                reservation_id=reservation_id,
            ),
            timeout=timeout,
        )

    async def refund() -> None:
        await to.payment.Refund(
            payment_pb2.RefundRequest(saga_id=saga_id, reason="order saga compensation"),
            timeout=timeout,
        )

    async def release() -> None:
        await to.inventory.Release(inventory_pb2.ReleaseRequest(saga_id=saga_id), timeout=timeout)

    async def cancel_shipment() -> None:
        await to.shipping.CancelShipment(
            shipping_pb2.CancelShipmentRequest(saga_id=saga_id), timeout=timeout
        )

    Call = Callable[[], Awaitable[None]]
    steps: list[tuple[str, Call, Call]] = [
        ("charge", charge, refund),
        ("reserve", reserve, release),
        ("ship", ship, cancel_shipment),
    ]
    outcome = Outcome("COMPLETED", [])
    done: list[tuple[str, Call]] = []
    for name, action, compensation in steps:
        try:
            await action()
        except grpc.aio.AioRpcError as error:
            outcome.failures.append((name, error))
            outcome.status = "COMPENSATED"
            break
        done.append((name, compensation))
    if outcome.status == "COMPENSATED":
        for name, compensation in reversed(done):
            try:
                await compensation()
            except grpc.aio.AioRpcError as error:
                outcome.failures.append((f"undo {name}", error))
                outcome.status = "FAILED"
                break
    return outcome
