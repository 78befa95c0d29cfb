"""Saga definitions are typed data, and the engine runs any of them."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import grpc
import pytest
from minisaga.inventory.v1 import inventory_pb2
from minisaga.orchestrator.v1 import orchestrator_pb2
from minisaga.payment.v1 import payment_pb2
from minisaga.shipping.v1 import shipping_pb2
from mypy import api as mypy_api

from orchestrator_server.app import OrchestratorConfig, open_store
from orchestrator_server.order_saga import (
    CANCEL_SHIPMENT,
    CHARGE,
    CREATE_SHIPMENT,
    REFUND,
    RELEASE,
    RESERVE,
    place_order_saga,
)
from orchestrator_server.saga.definition import Rpc, Saga, SagaContext
from orchestrator_server.saga.engine import SagaEngine
from orchestrator_server.saga.retry import DEFAULT_COMPENSATION_RETRY, RetryPolicy
from orchestrator_server.saga.sqlite_store import SqliteSagaStore
from orchestrator_server.saga.store import Phase, SagaStatus
from tests.conftest import start_inventory, start_payment, start_shipping

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "typecheck_fixtures"

# A second business process over the same participants: hold the stock first,
# then take the money. Its input is another message type altogether.
Hold = SagaContext[orchestrator_pb2.Order]


def hold(order: Hold) -> inventory_pb2.ReserveRequest:
    return inventory_pb2.ReserveRequest(
        saga_id=order.saga_id, product_id=order.input.product_id, quantity=order.input.quantity
    )


def unhold(order: Hold) -> inventory_pb2.ReleaseRequest:
    return inventory_pb2.ReleaseRequest(saga_id=order.saga_id)


def pay(order: Hold) -> payment_pb2.ChargeRequest:
    return payment_pb2.ChargeRequest(
        saga_id=order.saga_id, order_id=order.business_key, amount=order.input.amount
    )


def repay(order: Hold) -> payment_pb2.RefundRequest:
    return payment_pb2.RefundRequest(saga_id=order.saga_id, reason="hold_then_pay undone")


FAST = RetryPolicy(
    initial_interval=timedelta(milliseconds=5),
    maximum_interval=timedelta(milliseconds=10),
    maximum_attempts=2,
)
HOLD_THEN_PAY = (
    Saga("hold_then_pay", orchestrator_pb2.Order, action_retry=FAST, compensation_retry=FAST)
    .step("hold")
    .invoke(RESERVE, hold)
    .with_compensation(RELEASE, unhold)
    .step("pay")
    .invoke(CHARGE, pay)
    .with_compensation(REFUND, repay)
    .build()
)


async def test_a_second_definition_runs_on_the_same_engine(tmp_path: Path, store: str) -> None:
    payment = await start_payment(tmp_path / "p.db", limit=5000)
    inventory = await start_inventory(tmp_path / "i.db", {"pear": 10})
    log = await open_store(OrchestratorConfig(db=tmp_path / "log.db", participants={}, store=store))
    engine = SagaEngine(
        log, {"payment": payment.channel, "inventory": inventory.channel}, [HOLD_THEN_PAY]
    )
    try:
        done, _ = await engine.start(
            HOLD_THEN_PAY,
            orchestrator_pb2.Order(product_id="pear", quantity=3, amount=900),
            business_key="ord_a",
        )
        refused, _ = await engine.start(
            HOLD_THEN_PAY,
            orchestrator_pb2.Order(product_id="pear", quantity=3, amount=9000),
            business_key="ord_b",
        )

        done_end = await engine.wait(done.saga_id, timeout=30)
        refused_end = await engine.wait(refused.saga_id, timeout=30)

        assert done_end is not None and done_end.status is SagaStatus.COMPLETED
        assert refused_end is not None and refused_end.status is SagaStatus.COMPENSATED
        assert refused_end.cause is not None and refused_end.cause.reason == "PAYMENT_DECLINED"
        assert [(a.step, a.phase, a.code) for a in refused_end.attempts] == [
            ("hold", Phase.ACTION, "OK"),
            ("pay", Phase.ACTION, "FAILED_PRECONDITION"),
            ("hold", Phase.COMPENSATION, "OK"),
        ]
        stock = await inventory.db.run(
            lambda c: c.execute(
                "SELECT quantity, reserved FROM products WHERE product_id = 'pear'"
            ).fetchone()
        )
        assert tuple(stock) == (7, 3)
    finally:
        await engine.close()
        await log.close()
        await payment.stop()
        await inventory.stop()


def test_a_step_must_name_a_participant_with_a_channel() -> None:
    with pytest.raises(ValueError, match="has no channel"):
        SagaEngine(store=None, channels={}, definitions=[place_order_saga()])  # type: ignore[arg-type]


def test_an_rpc_is_checked_against_the_proto() -> None:
    service = payment_pb2.DESCRIPTOR.services_by_name["PaymentService"]
    with pytest.raises(TypeError, match="ChargeRequest"):
        Rpc.of("payment", service, "Charge", payment_pb2.RefundRequest, payment_pb2.ChargeResponse)


def test_step_names_are_unique() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        Saga("dup", orchestrator_pb2.Order).step("a").invoke(RESERVE, hold).step("a")


def test_retry_policies_are_validated() -> None:
    with pytest.raises(ValueError, match="a horizon is required"):
        RetryPolicy(maximum_attempts=0)  # no limit at all
    with pytest.raises(ValueError, match="maximum_attempts"):
        RetryPolicy(maximum_attempts=-1)
    with pytest.raises(ValueError, match="horizon"):
        RetryPolicy(horizon=timedelta(0))
    endless = RetryPolicy(maximum_attempts=0, horizon=timedelta(hours=1))
    assert not endless.exhausted(10_000, timedelta(minutes=59))
    assert endless.exhausted(1, timedelta(hours=1))
    both = RetryPolicy(maximum_attempts=3, horizon=timedelta(hours=1))
    assert both.exhausted(3, timedelta(0)) and both.exhausted(1, timedelta(hours=2))
    assert not both.exhausted(2, timedelta(minutes=1))
    assert DEFAULT_COMPENSATION_RETRY.maximum_attempts == 0  # outlasts an outage: a horizon
    assert DEFAULT_COMPENSATION_RETRY.horizon is not None
    assert DEFAULT_COMPENSATION_RETRY.horizon >= timedelta(hours=1)
    with pytest.raises(ValueError, match="backoff_coefficient"):
        RetryPolicy(backoff_coefficient=0.5)
    policy = RetryPolicy(
        initial_interval=timedelta(milliseconds=100), maximum_interval=timedelta(milliseconds=300)
    )
    import random

    rng = random.Random(7)
    caps = [0.1, 0.2, 0.3, 0.3]
    for attempt, cap in enumerate(caps, start=1):
        delays = [policy.backoff(attempt, rng) for _ in range(200)]
        assert min(delays) >= 0 and max(delays) <= cap
        assert max(delays) > cap * 0.8  # full jitter spreads over the whole range


def _mypy(fixture: str) -> tuple[str, int]:
    stdout, stderr, status = mypy_api.run(
        [
            "--strict",
            "--no-incremental",
            "--config-file",
            str(ROOT / "pyproject.toml"),
            str(FIXTURES / fixture),
        ]
    )
    return stdout + stderr, status


def test_a_builder_of_the_wrong_type_is_a_mypy_error() -> None:
    output, status = _mypy("wrong_builder.py")
    assert status == 1, output
    source = (FIXTURES / "wrong_builder.py").read_text().splitlines()
    line = next(n for n, text in enumerate(source, 1) if "invoke(CHARGE, wrong_request)" in text)
    assert f"wrong_builder.py:{line}: error" in output
    assert '"invoke"' in output and "ReserveRequest" in output


def test_a_builder_of_the_right_type_passes_mypy() -> None:
    output, status = _mypy("right_builder.py")
    assert status == 0, output


def test_a_step_output_read_as_the_wrong_type_is_a_mypy_error() -> None:
    output, status = _mypy("wrong_output.py")
    assert status == 1, output
    source = (FIXTURES / "wrong_output.py").read_text().splitlines()
    line = next(n for n, text in enumerate(source, 1) if "order.output(CHARGE)" in text)
    assert f"wrong_output.py:{line}: error" in output
    assert "ChargeResponse" in output and "ReserveResponse" in output


def test_a_step_output_read_as_its_type_passes_mypy() -> None:
    output, status = _mypy("right_output.py")
    assert status == 0, output


async def test_grpc_codes_are_classified_once() -> None:
    from orchestrator_server.saga.policy import DEFAULT_POLICY, UNRECORDED, Outcome

    assert DEFAULT_POLICY.classify("OK") is Outcome.DONE
    assert DEFAULT_POLICY.classify("UNAVAILABLE") is Outcome.TRANSIENT
    assert DEFAULT_POLICY.classify("DEADLINE_EXCEEDED") is Outcome.IN_DOUBT
    assert DEFAULT_POLICY.classify(UNRECORDED) is Outcome.IN_DOUBT
    assert DEFAULT_POLICY.classify("FAILED_PRECONDITION") is Outcome.REJECTED
    assert not Outcome.REJECTED.may_have_taken_effect
    assert Outcome.TRANSIENT.may_have_taken_effect and Outcome.TRANSIENT.retryable
    assert all(DEFAULT_POLICY.classify(code.name) for code in grpc.StatusCode)


def ship_failing(order: Hold) -> shipping_pb2.CreateShipmentRequest:
    return shipping_pb2.CreateShipmentRequest(
        saga_id=order.saga_id, order_id=order.business_key, address="x", fail=True
    )


def cancel_ship(order: Hold) -> shipping_pb2.CancelShipmentRequest:
    return shipping_pb2.CancelShipmentRequest(saga_id=order.saga_id)


# "pay" has no compensation, yet a later step fails: nothing can undo the charge.
PAY_NO_UNDO = (
    Saga("pay_no_undo", orchestrator_pb2.Order, action_retry=FAST, compensation_retry=FAST)
    .step("hold")
    .invoke(RESERVE, hold)
    .with_compensation(RELEASE, unhold)
    .step("pay")
    .invoke(CHARGE, pay)
    .step("ship")
    .invoke(CREATE_SHIPMENT, ship_failing)
    .with_compensation(CANCEL_SHIPMENT, cancel_ship)
    .build()
)


async def test_a_step_with_no_compensation_that_took_effect_fails_the_saga(
    tmp_path: Path,
) -> None:
    payment = await start_payment(tmp_path / "p.db")
    inventory = await start_inventory(tmp_path / "i.db", {"pear": 10})
    shipping = await start_shipping(tmp_path / "s.db")
    log = await SqliteSagaStore(tmp_path / "log.db").open()
    channels = {
        "payment": payment.channel,
        "inventory": inventory.channel,
        "shipping": shipping.channel,
    }
    engine = SagaEngine(log, channels, [PAY_NO_UNDO])
    try:
        saga, _ = await engine.start(
            PAY_NO_UNDO,
            orchestrator_pb2.Order(product_id="pear", quantity=1, amount=10),
            business_key="ord_c",
        )
        ended = await engine.wait(saga.saga_id, timeout=30)

        assert ended is not None and ended.status is SagaStatus.FAILED
        [failure] = ended.failures
        assert (failure.step, failure.code) == ("pay", "NO_COMPENSATION")
        assert ended.succeeded("hold", Phase.COMPENSATION)  # the rest is still undone
    finally:
        await engine.close()
        await log.close()
        for server in (payment, inventory, shipping):
            await server.stop()
