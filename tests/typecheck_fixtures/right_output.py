"""A builder that reads Charge's output as what it is: mypy --strict accepts it."""

from minisaga.payment.v1 import payment_pb2

from orchestrator_server.order_saga import CHARGE, Order


def refund_the_receipt(order: Order) -> payment_pb2.RefundRequest:
    charged: payment_pb2.ChargeResponse = order.output(CHARGE)
    return payment_pb2.RefundRequest(saga_id=order.saga_id, receipt_id=charged.payment.receipt_id)
