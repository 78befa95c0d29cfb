"""place_order version 3: version 2's steps, then points for the shipped order.

Adding a step to a saga that has sagas in flight is a new version, never an
edit: version 2's sagas keep their three steps (and compensate those three),
and new sagas run four. This version is version 2 (examples/order_v2.py) with
one step added at the end, which calls a fourth participant, LoyaltyService
(examples/loyalty/service.py). Deploy it beside the versions in flight:

    python -m orchestrator_server --saga examples.loyalty.saga:PLACE_ORDER_V3 \\
        --participant loyalty=127.0.0.1:7005
"""

from __future__ import annotations

from minisaga.loyalty.v1 import loyalty_pb2 as loyalty
from minisaga.orchestrator.v1.orchestrator_pb2 import PlaceOrderRequest

from examples.order_v2 import (
    CHARGE,
    REFUND,
    RELEASE,
    RESERVE,
    SHIP,
    UNSHIP,
    Order,
    charge,
    refund,
    release,
    reserve,
    ship,
    unship,
)
from orchestrator_server.saga import Rpc, Saga

# The new participant's RPCs; "loyalty" is its --participant name.
LOYALTY = loyalty.DESCRIPTOR.services_by_name["LoyaltyService"]

AWARD_POINTS = Rpc.of(
    "loyalty", LOYALTY, "AwardPoints", loyalty.AwardPointsRequest, loyalty.AwardPointsResponse
)
REVOKE_POINTS = Rpc.of(
    "loyalty", LOYALTY, "RevokePoints", loyalty.RevokePointsRequest, loyalty.RevokePointsResponse
)

POINTS_PER = 100
"""Minor units of currency per point: 1,200 yen earns 12 points."""


def award_points(order: Order) -> loyalty.AwardPointsRequest:
    charged = order.output(CHARGE)  # points for what was really charged
    shipped = order.output(SHIP)  # and for the shipment that carries the order
    return loyalty.AwardPointsRequest(
        saga_id=order.saga_id,
        order_id=order.business_key,
        points=max(1, charged.payment.amount // POINTS_PER),
        shipment_id=shipped.shipment.shipment_id,
    )


def revoke_points(order: Order) -> loyalty.RevokePointsRequest:
    return loyalty.RevokePointsRequest(saga_id=order.saga_id, reason="order v3 compensation")


PLACE_ORDER_V3 = (
    Saga("place_order", PlaceOrderRequest, version=3)
    .step("reserve")
    .invoke(RESERVE, reserve)
    .with_compensation(RELEASE, release)
    .step("charge")
    .invoke(CHARGE, charge)
    .with_compensation(REFUND, refund)
    .step("ship")
    .invoke(SHIP, ship)
    .with_compensation(UNSHIP, unship)
    .step("award_points")
    .invoke(AWARD_POINTS, award_points)
    .with_compensation(REVOKE_POINTS, revoke_points)
    .build()
)
