"""A saga whose Charge step builds a ReserveRequest: mypy --strict must reject it."""

from minisaga.inventory.v1 import inventory_pb2
from minisaga.orchestrator.v1.orchestrator_pb2 import PlaceOrderRequest

from orchestrator_server.order_saga import CHARGE, REFUND, refund
from orchestrator_server.saga.definition import Saga, SagaContext


def wrong_request(order: SagaContext[PlaceOrderRequest]) -> inventory_pb2.ReserveRequest:
    return inventory_pb2.ReserveRequest(saga_id=order.saga_id)


WRONG = (
    Saga("wrong", PlaceOrderRequest)
    .step("charge")
    .invoke(CHARGE, wrong_request)
    .with_compensation(REFUND, refund)
    .build()
)
