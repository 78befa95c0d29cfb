"""The engine as a library (issue 12): `orchestrator_server.saga`'s one import
surface, `open_engine`, run/start/wait, chosen saga ids, step outputs (typed,
recorded with their outcome, restored after a restart, capped in size) and
versioned definitions (a saga finishes on its version; one this engine lacks
is left alone, says why, and is driven by an engine that has it)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from minisaga.inventory.v1 import inventory_pb2
from minisaga.orchestrator.v1.orchestrator_pb2 import PlaceOrderRequest
from minisaga.payment.v1 import payment_pb2, payment_pb2_grpc

import orchestrator_server.saga as saga
from orchestrator_server.order_saga import (
    CHARGE,
    CREATE_SHIPMENT,
    PLACE_ORDER,
    REFUND,
    RELEASE,
    RESERVE,
    Order,
    charge,
    refund,
    release,
    reserve,
)
from orchestrator_server.saga import (
    Phase,
    Saga,
    SagaDefinition,
    SagaStatus,
    SqliteSagaStore,
    StepOutputMissing,
    UnknownDefinition,
    open_engine,
)
from orchestrator_server.saga import engine as engine_module
from tests.conftest import start_inventory, start_payment, start_shipping
from tests.harness import InProcess


@dataclass
class Participants:
    payment: InProcess
    inventory: InProcess
    shipping: InProcess

    @property
    def channels(self) -> dict[str, str]:
        return {
            "payment": self.payment.address,
            "inventory": self.inventory.address,
            "shipping": self.shipping.address,
        }

    async def payment_of(self, saga_id: str) -> payment_pb2.Payment:
        stub = payment_pb2_grpc.PaymentServiceStub(self.payment.channel)
        return (await stub.GetPayment(payment_pb2.GetPaymentRequest(saga_id=saga_id))).payment


@pytest.fixture
async def participants(tmp_path: Path) -> AsyncIterator[Participants]:
    found = Participants(
        await start_payment(tmp_path / "p.db"),
        await start_inventory(tmp_path / "i.db", {"apple": 100}),
        await start_shipping(tmp_path / "s.db"),
    )
    yield found
    for server in (found.payment, found.inventory, found.shipping):
        await server.stop()


def order(quantity: int = 1) -> PlaceOrderRequest:
    return PlaceOrderRequest(product_id="apple", quantity=quantity, amount=500, currency="JPY")


def test_one_import_surface_names_everything_it_exports() -> None:
    assert sorted(saga.__all__) == sorted(set(saga.__all__))
    for name in saga.__all__:
        assert getattr(saga, name) is not None, name
    assert saga.PostgresSagaStore.__name__ == "PostgresSagaStore"


async def test_run_starts_a_saga_and_waits_for_its_end_under_a_chosen_id(
    tmp_path: Path, participants: Participants
) -> None:
    chosen = str(uuid.uuid4())
    async with open_engine(
        SqliteSagaStore(tmp_path / "log.db"), participants.channels, [PLACE_ORDER]
    ) as engine:
        ended = await engine.run(PLACE_ORDER, order(), request_id="order-1", saga_id=chosen)
        again, created = await engine.start(PLACE_ORDER, order(), saga_id=chosen)

    assert ended.saga_id == chosen and ended.status is SagaStatus.COMPLETED
    assert ended.saga_version == 1 and ended.business_key == chosen
    assert not created and again.saga_id == chosen
    charged = next(a for a in ended.attempts if a.step == "charge" and a.phase is Phase.ACTION)
    assert charged.output is not None
    receipt = payment_pb2.ChargeResponse.FromString(charged.output).payment.receipt_id
    assert receipt.startswith("rcpt_")


async def test_start_refuses_a_definition_it_did_not_register(
    tmp_path: Path, participants: Participants
) -> None:
    look_alike = saga_v(1)  # same name and version as REGISTERED, another object
    async with open_engine(
        SqliteSagaStore(tmp_path / "log.db"), participants.channels, [REGISTERED]
    ) as engine:
        with pytest.raises(UnknownDefinition, match="not registered"):
            await engine.start(look_alike, order())
        with pytest.raises(UnknownDefinition):
            await engine.start(PLACE_ORDER, order())
        with pytest.raises(TypeError, match="PlaceOrderRequest"):
            await engine.start(REGISTERED, payment_pb2.ChargeRequest())


# --- step outputs -------------------------------------------------------------

SEEN: list[str] = []
"""What the reserve builder read of the charge's output, one entry per call."""


def reserve_after_charge(ctx: Order) -> inventory_pb2.ReserveRequest:
    SEEN.append(ctx.output(CHARGE).payment.receipt_id)
    return reserve(ctx)


def refund_by_receipt(ctx: Order) -> payment_pb2.RefundRequest:
    charged = ctx.output_or_none(CHARGE)
    SEEN.append(charged.payment.receipt_id if charged is not None else "none")
    return refund(ctx)


READS_OUTPUTS = (
    Saga("reads_outputs", PlaceOrderRequest)
    .step("charge")
    .invoke(CHARGE, charge)
    .with_compensation(REFUND, refund_by_receipt)
    .step("reserve")
    .invoke(RESERVE, reserve_after_charge)
    .with_compensation(RELEASE, release)
    .build()
)


async def test_a_later_step_reads_an_earlier_output_and_a_restart_restores_it(
    tmp_path: Path, participants: Participants
) -> None:
    SEEN.clear()
    log = tmp_path / "log.db"
    park = participants.inventory.faults.park("Reserve")
    async with open_engine(SqliteSagaStore(log), participants.channels, [READS_OUTPUTS]) as engine:
        started, _ = await engine.start(READS_OUTPUTS, order())
        await park.reached()
    # The engine stopped with Reserve in flight: the charge's output is in the log.
    park.release()
    async with open_engine(SqliteSagaStore(log), participants.channels, [READS_OUTPUTS]) as engine:
        ended = await engine.wait(started.saga_id)

    assert ended is not None and ended.status is SagaStatus.COMPLETED
    receipt = (await participants.payment_of(started.saga_id)).receipt_id
    assert [receipt, receipt] == SEEN  # before the restart, and from the log after it


async def test_a_compensation_names_the_receipt_it_refunds(
    tmp_path: Path, participants: Participants
) -> None:
    SEEN.clear()
    async with open_engine(
        SqliteSagaStore(tmp_path / "log.db"), participants.channels, [READS_OUTPUTS]
    ) as engine:
        ended = await engine.run(READS_OUTPUTS, order(quantity=1000))  # more than in stock

    assert ended.status is SagaStatus.COMPENSATED
    receipt = SEEN[0]
    assert receipt.startswith("rcpt_") and [receipt, receipt] == SEEN
    payment = await participants.payment_of(ended.saga_id)
    assert payment.status == payment_pb2.PAYMENT_STATUS_REFUNDED


def test_output_of_a_step_not_done_is_a_typed_error() -> None:
    ctx = Order("s", "k", order())
    with pytest.raises(StepOutputMissing, match="Charge"):
        ctx.output(CHARGE)
    assert ctx.output_or_none(CREATE_SHIPMENT) is None


async def test_an_output_over_the_cap_fails_its_step_at_once_and_is_compensated(
    tmp_path: Path, participants: Participants, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine_module, "MAX_STEP_OUTPUT_BYTES", 8)
    async with open_engine(
        SqliteSagaStore(tmp_path / "log.db"), participants.channels, [PLACE_ORDER]
    ) as engine:
        ended = await engine.run(PLACE_ORDER, order())

    assert ended.status is SagaStatus.COMPENSATED
    assert ended.cause is not None and ended.cause.reason == engine_module.STEP_OUTPUT_TOO_LARGE
    assert "at most 8 bytes" in ended.cause.message
    assert [(a.step, a.phase, a.code) for a in ended.attempts] == [
        ("charge", Phase.ACTION, "INTERNAL"),  # once: the same reply would come back
        ("charge", Phase.COMPENSATION, "OK"),
    ]


# --- versions -----------------------------------------------------------------


def saga_v(version: int) -> SagaDefinition[PlaceOrderRequest]:
    """`versioned` 1 charges; 2 charges, then reserves."""
    builder = (
        Saga("versioned", PlaceOrderRequest, version=version)
        .step("charge")
        .invoke(CHARGE, charge)
        .with_compensation(REFUND, refund)
    )
    if version >= 2:
        builder = (
            builder.step("reserve").invoke(RESERVE, reserve).with_compensation(RELEASE, release)
        )
    return builder.build()


REGISTERED = saga_v(1)
V1, V2 = saga_v(1), saga_v(2)


async def test_a_saga_finishes_on_its_version_and_waits_for_an_engine_that_has_it(
    tmp_path: Path, participants: Participants
) -> None:
    log = tmp_path / "log.db"
    park = participants.payment.faults.park("Charge")
    async with open_engine(SqliteSagaStore(log), participants.channels, [V1]) as engine:
        old, _ = await engine.start(V1, order())
        await park.reached()
    park.release()

    # Version 2 alone: the version-1 saga is not driven, says why, and is not retried.
    async with open_engine(SqliteSagaStore(log), participants.channels, [V2]) as engine:
        assert engine.definition("versioned").version == 2
        held = await engine.store.load(old.saga_id)
        assert held is not None and held.status is SagaStatus.RUNNING
        assert engine.not_driven_reason(held) == (
            "saga versioned version 1 is not registered on this orchestrator (it has version 2)"
        )
        assert await engine.recover() == []  # skipped by maintenance from now on
        new = await engine.run(V2, order())
    assert new.saga_version == 2
    assert [a.step for a in new.attempts] == ["charge", "reserve"]

    # Both versions: the old saga finishes on version 1, its one step.
    async with open_engine(SqliteSagaStore(log), participants.channels, [V2, V1]) as engine:
        assert engine.definition("versioned").version == 2  # new sagas: the newest
        ended = await engine.wait(old.saga_id)
    assert ended is not None and ended.status is SagaStatus.COMPLETED
    assert ended.saga_version == 1
    assert [a.step for a in ended.attempts] == ["charge", "charge"]  # re-sent after the stop


async def test_a_type_not_registered_says_so() -> None:
    engine = engine_module.SagaEngine(None, {"payment": None}, [V1])  # type: ignore[arg-type,dict-item]
    record = saga.SagaRecord("s", "other", "k", None, b"", SagaStatus.RUNNING, 0, 0, 0)
    assert engine.not_driven_reason(record) == (
        "saga type 'other' is not registered on this orchestrator"
    )
    record.status = SagaStatus.COMPLETED
    assert engine.not_driven_reason(record) == ""
    with pytest.raises(ValueError, match="registered twice"):
        engine_module.SagaEngine(None, {"payment": None}, [V1, saga_v(1)])  # type: ignore[arg-type,dict-item]
