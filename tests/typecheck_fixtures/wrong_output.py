"""A builder that takes Charge's output for a ReserveResponse: mypy --strict must reject it."""

from minisaga.inventory.v1 import inventory_pb2
from minisaga.payment.v1 import payment_pb2

from orchestrator_server.order_saga import CHARGE, Order


def refund_the_reservation(order: Order) -> payment_pb2.RefundRequest:
    reserved: inventory_pb2.ReserveResponse = order.output(CHARGE)
    return payment_pb2.RefundRequest(
        saga_id=order.saga_id, receipt_id=reserved.reservation.reservation_id
    )
