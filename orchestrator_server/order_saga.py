"""The "place an order" saga: charge, reserve, ship — and their undos.

This is the business process, declared as data. Adding a step is one more
`.step(...)` here; the engine does not change. Builders read earlier steps'
outputs: the refund names the receipt Charge returned, the shipment names the
reservation Reserve returned (`order.output(CHARGE)` is a ChargeResponse).
"""

from __future__ import annotations

from datetime import timedelta

from minisaga.inventory.v1 import inventory_pb2 as inventory
from minisaga.orchestrator.v1.orchestrator_pb2 import PlaceOrderRequest
from minisaga.payment.v1 import payment_pb2 as payment
from minisaga.shipping.v1 import shipping_pb2 as shipping

from orchestrator_server.saga import (
    DEFAULT_ACTION_RETRY,
    DEFAULT_COMPENSATION_RETRY,
    DEFAULT_SAGA_DEADLINE,
    RetryPolicy,
    Rpc,
    Saga,
    SagaContext,
    SagaDefinition,
)

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
CREATE_SHIPMENT = Rpc.of(
    "shipping",
    SHIPPING,
    "CreateShipment",
    shipping.CreateShipmentRequest,
    shipping.CreateShipmentResponse,
)
CANCEL_SHIPMENT = Rpc.of(
    "shipping",
    SHIPPING,
    "CancelShipment",
    shipping.CancelShipmentRequest,
    shipping.CancelShipmentResponse,
)

STORE_PICKUP = "store pickup"
"""Where an order with no address is shipped: the customer collects it."""

Order = SagaContext[PlaceOrderRequest]


def charge(order: Order) -> payment.ChargeRequest:
    return payment.ChargeRequest(
        saga_id=order.saga_id,
        order_id=order.business_key,
        amount=order.input.amount,
        currency=order.input.currency,
        fail=order.input.fail_payment,
    )


def refund(order: Order) -> payment.RefundRequest:
    charged = order.output_or_none(CHARGE)  # None when the charge is in doubt
    return payment.RefundRequest(
        saga_id=order.saga_id,
        reason="order saga compensation",
        receipt_id=charged.payment.receipt_id if charged is not None else "",
    )


def reserve(order: Order) -> inventory.ReserveRequest:
    return inventory.ReserveRequest(
        saga_id=order.saga_id,
        product_id=order.input.product_id,
        quantity=order.input.quantity,
        fail=order.input.fail_inventory,
    )


def release(order: Order) -> inventory.ReleaseRequest:
    return inventory.ReleaseRequest(saga_id=order.saga_id)


def create_shipment(order: Order) -> shipping.CreateShipmentRequest:
    return shipping.CreateShipmentRequest(
        saga_id=order.saga_id,
        order_id=order.business_key,
        address=order.input.address or STORE_PICKUP,
        fail=order.input.fail_shipping,
        reservation_id=order.output(RESERVE).reservation.reservation_id,
    )


def cancel_shipment(order: Order) -> shipping.CancelShipmentRequest:
    return shipping.CancelShipmentRequest(saga_id=order.saga_id)


def place_order_saga(
    *,
    deadline: timedelta = DEFAULT_SAGA_DEADLINE,
    action_retry: RetryPolicy = DEFAULT_ACTION_RETRY,
    compensation_retry: RetryPolicy = DEFAULT_COMPENSATION_RETRY,
) -> SagaDefinition[PlaceOrderRequest]:
    return (
        Saga(
            "place_order",
            PlaceOrderRequest,
            deadline=deadline,
            action_retry=action_retry,
            compensation_retry=compensation_retry,
        )
        .step("charge")
        .invoke(CHARGE, charge)
        .with_compensation(REFUND, refund)
        .step("reserve")
        .invoke(RESERVE, reserve)
        .with_compensation(RELEASE, release)
        .step("ship")
        .invoke(CREATE_SHIPMENT, create_shipment)
        .with_compensation(CANCEL_SHIPMENT, cancel_shipment)
        .build()
    )


PLACE_ORDER = place_order_saga()
