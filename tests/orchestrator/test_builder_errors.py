"""A request builder that raises (a bug in a saga's definition) stops the saga as
an unexpected error does an RPC (docs/design.md §4): the saga's log shows INTERNAL
with an incident id, never the exception's text; the orchestrator's log has the
id with the whole traceback. It is not retried, since the same input and outputs
raise again: an action's builder makes the saga undo the steps before it and end
COMPENSATED; a compensation's builder leaves that step undone, and the saga ends
FAILED for a person, who fixes the definition and resumes it."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from minisaga.inventory.v1 import inventory_pb2
from minisaga.orchestrator.v1.orchestrator_pb2 import PlaceOrderRequest
from minisaga.payment.v1 import payment_pb2

from orchestrator_server.order_saga import (
    CHARGE,
    REFUND,
    RELEASE,
    RESERVE,
    Order,
    charge,
    refund,
    release,
    reserve,
)
from orchestrator_server.saga import Phase, Saga, SagaEngine, SagaStatus, open_engine
from orchestrator_server.saga.engine import REQUEST_BUILD_FAILED
from orchestrator_server.saga.policy import NOT_SENT
from tests.orchestrator.conftest import saga_log
from tests.orchestrator.test_public_api import Participants, order
from tests.orchestrator.test_public_api import participants as participants  # the fixture
from tests.participants.test_unexpected_errors import SECRET

BROKEN: list[str] = []
"""While it holds a builder's name, that builder raises."""


def charge_or_raise(ctx: Order) -> payment_pb2.ChargeRequest:
    if "charge" in BROKEN:
        raise RuntimeError(SECRET)
    return charge(ctx)


def reserve_or_raise(ctx: Order) -> inventory_pb2.ReserveRequest:
    if "reserve" in BROKEN:
        raise RuntimeError(SECRET)
    return reserve(ctx)


def refund_or_raise(ctx: Order) -> payment_pb2.RefundRequest:
    if "refund" in BROKEN:
        raise RuntimeError(SECRET)
    return refund(ctx)


SAGA = (
    Saga("broken_builders", PlaceOrderRequest)
    .step("charge")
    .invoke(CHARGE, charge_or_raise)
    .with_compensation(REFUND, refund_or_raise)
    .step("reserve")
    .invoke(RESERVE, reserve_or_raise)
    .with_compensation(RELEASE, release)
    .build()
)


def logged_incident(caplog: pytest.LogCaptureFixture, message: str) -> None:
    """The incident id `message` quotes is in an ERROR log line with the traceback."""
    found = re.search(r"incident ([0-9a-f]{16})", message)
    assert found is not None, message
    logged = [r for r in caplog.records if found.group(1) in r.getMessage()]
    assert [r.levelno for r in logged] == [logging.ERROR]
    assert logged[0].exc_info is not None and SECRET in str(logged[0].exc_info[1])


@pytest.fixture
async def engine(
    tmp_path: Path, store: str, participants: Participants
) -> AsyncIterator[SagaEngine]:
    BROKEN.clear()
    async with open_engine(saga_log(tmp_path, store), participants.channels, [SAGA]) as running:
        yield running


@pytest.mark.parametrize(
    ("broken", "attempts", "payment_status"),
    [
        # Reserve was never sent (nothing to undo); Charge, done, is refunded once.
        (
            "reserve",
            [("charge", Phase.ACTION, "OK"), ("charge", Phase.COMPENSATION, "OK")],
            payment_pb2.PAYMENT_STATUS_REFUNDED,
        ),
        # The first attempt, recorded with the saga, was never sent: closed as
        # NOT_SENT and not undone (Payment never heard of the saga).
        (
            "charge",
            [("charge", Phase.ACTION, NOT_SENT)],
            None,
        ),
    ],
)
async def test_an_action_builder_that_raises_compensates_the_steps_before(
    engine: SagaEngine,
    participants: Participants,
    caplog: pytest.LogCaptureFixture,
    broken: str,
    attempts: list[tuple[str, Phase, str]],
    payment_status: int | None,
) -> None:
    BROKEN.append(broken)
    with caplog.at_level(logging.ERROR):
        ended = await engine.run(SAGA, order())
    assert await engine.recover() == []  # ended: nothing left to drive again

    assert ended.status is SagaStatus.COMPENSATED
    assert ended.cause is not None
    assert (ended.cause.step, ended.cause.code) == (broken, "INTERNAL")
    assert ended.cause.reason == REQUEST_BUILD_FAILED
    assert SECRET not in ended.cause.message
    assert f"{broken.capitalize()} request failed" in ended.cause.message
    logged_incident(caplog, ended.cause.message)
    assert [(a.step, a.phase, a.code) for a in ended.attempts] == attempts
    if payment_status is None:
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await participants.payment_of(ended.saga_id)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    else:
        assert (await participants.payment_of(ended.saga_id)).status == payment_status


async def test_a_compensation_builder_that_raises_fails_the_saga_until_resumed(
    engine: SagaEngine, participants: Participants, caplog: pytest.LogCaptureFixture
) -> None:
    BROKEN.append("refund")
    with caplog.at_level(logging.ERROR):
        ended = await engine.run(SAGA, order(quantity=1000))  # more than in stock
    assert await engine.recover() == []  # FAILED is for a person: not retried

    assert ended.status is SagaStatus.FAILED
    assert ended.cause is not None and ended.cause.step == "reserve"  # why it compensated
    [failure] = ended.failures
    assert (failure.step, failure.method, failure.code, failure.attempts) == (
        "charge",
        REFUND.method,
        "INTERNAL",
        0,  # no Refund was sent
    )
    assert SECRET not in failure.message and "Refund request failed" in failure.message
    logged_incident(caplog, failure.message)
    assert [(a.step, a.phase, a.code) for a in ended.attempts] == [
        ("charge", Phase.ACTION, "OK"),
        ("reserve", Phase.ACTION, "FAILED_PRECONDITION"),
    ]
    charged = await participants.payment_of(ended.saga_id)
    assert charged.status == payment_pb2.PAYMENT_STATUS_CHARGED  # honestly not undone

    BROKEN.clear()  # the definition is fixed; the operator resumes the saga
    await engine.resume(ended.saga_id)
    resumed = await engine.wait(ended.saga_id)

    assert resumed is not None and resumed.status is SagaStatus.COMPENSATED
    refunded = await participants.payment_of(ended.saga_id)
    assert refunded.status == payment_pb2.PAYMENT_STATUS_REFUNDED
