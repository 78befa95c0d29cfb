"""The same saga with a builder of the right type: mypy --strict accepts it."""

from minisaga.orchestrator.v1.orchestrator_pb2 import PlaceOrderRequest

from orchestrator_server.order_saga import CHARGE, REFUND, charge, refund
from orchestrator_server.saga.definition import Saga

RIGHT = (
    Saga("right", PlaceOrderRequest)
    .step("charge")
    .invoke(CHARGE, charge)
    .with_compensation(REFUND, refund)
    .build()
)
