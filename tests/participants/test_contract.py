"""The rules every participant obeys (docs/design.md §3, §6), run for each of them
(the three built-in ones and the example's Loyalty, examples/loyalty/)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.participants.drivers import Driver, Record
from tests.rich_errors import (
    assert_invalid,
    assert_rejected,
    bad_request_fields,
    rpc_error,
)

VOIDED = Record(record_id="", status="VOIDED")


def new_saga() -> str:
    return str(uuid.uuid4())


# --- 1. idempotent by saga_id ----------------------------------------------


async def test_repeated_action_returns_the_first_result_and_works_once(
    participant: Driver,
) -> None:
    saga_id = new_saga()
    first = await participant.act(saga_id)
    after_first = await participant.snapshot()
    second = await participant.act(saga_id)

    assert first.record.record_id.startswith(participant.id_prefix)
    assert first.record.status == participant.done
    assert (first.replayed, second.replayed) == (False, True)
    assert second.record == first.record
    assert await participant.snapshot() == after_first  # the replay changed nothing
    assert await participant.get(saga_id) == first.record


async def test_concurrent_identical_actions_do_the_work_once(participant: Driver) -> None:
    saga_id = new_saga()
    before = await participant.snapshot()
    results = await asyncio.gather(*(participant.act(saga_id) for _ in range(20)))

    assert len({r.record.record_id for r in results}) == 1
    assert sorted(r.replayed for r in results) == [False] + [True] * 19
    new_rows = [row for row in await participant.snapshot() if row not in before]
    # Inventory also updates the product's row; the saga itself has one row.
    assert sum(1 for row in new_rows if row[0] == saga_id) == 1


async def test_same_saga_with_other_parameters_is_already_exists(participant: Driver) -> None:
    saga_id = new_saga()
    first = await participant.act(saga_id)
    after_first = await participant.snapshot()

    error = await rpc_error(participant.act(saga_id, **participant.other_params))

    info = assert_rejected(error, grpc.StatusCode.ALREADY_EXISTS, "IDEMPOTENCY_KEY_REUSED")
    assert info.metadata["saga_id"] == saga_id
    assert await participant.snapshot() == after_first
    assert await participant.get(saga_id) == first.record


# --- 2 and 3. compensation: idempotent, never fails, leaves a tombstone --------


async def test_empty_compensation_leaves_a_tombstone_that_refuses_a_late_action(
    participant: Driver,
) -> None:
    saga_id = new_saga()
    outcome, record = await participant.compensate(saga_id)
    assert outcome == participant.outcome_nothing
    assert record == VOIDED
    after_tombstone = await participant.snapshot()

    error = await rpc_error(participant.act(saga_id))

    info = assert_rejected(error, grpc.StatusCode.FAILED_PRECONDITION, "ALREADY_COMPENSATED")
    assert info.metadata["saga_id"] == saga_id
    assert await participant.snapshot() == after_tombstone
    assert await participant.get(saga_id) == VOIDED
    # The tombstone itself stays a tombstone under another compensation.
    assert (await participant.compensate(saga_id))[0] == participant.outcome_nothing


async def test_compensating_twice_reports_already(participant: Driver) -> None:
    saga_id = new_saga()
    acted = await participant.act(saga_id)

    first_outcome, first = await participant.compensate(saga_id)
    after_first = await participant.snapshot()
    second_outcome, second = await participant.compensate(saga_id)

    assert (first_outcome, second_outcome) == (
        participant.outcome_undone,
        participant.outcome_already,
    )
    assert first.record_id == second.record_id == acted.record.record_id
    assert first.status == second.status == participant.undone
    assert await participant.snapshot() == after_first


async def test_action_after_a_real_compensation_is_refused(participant: Driver) -> None:
    saga_id = new_saga()
    acted = await participant.act(saga_id)
    await participant.compensate(saga_id)
    after = await participant.snapshot()

    error = await rpc_error(participant.act(saga_id))

    assert_rejected(error, grpc.StatusCode.FAILED_PRECONDITION, "ALREADY_COMPENSATED")
    assert await participant.snapshot() == after
    assert await participant.get(saga_id) == Record(acted.record.record_id, participant.undone)


# --- 6. the failure switch ---------------------------------------------------


async def test_fail_switch_fails_on_purpose_and_writes_nothing(participant: Driver) -> None:
    saga_id = new_saga()
    before = await participant.snapshot()

    error = await rpc_error(participant.act(saga_id, fail=True))

    assert_rejected(error, grpc.StatusCode.FAILED_PRECONDITION, "INJECTED_FAILURE")
    assert await participant.snapshot() == before
    assert await participant.get(saga_id) is None
    # Nothing was held for the saga: its compensation finds nothing to undo.
    assert (await participant.compensate(saga_id))[0] == participant.outcome_nothing


async def test_fail_switch_does_not_undo_a_finished_action(participant: Driver) -> None:
    """A retry with fail=true of an action that already happened replays it."""
    saga_id = new_saga()
    first = await participant.act(saga_id)
    again = await participant.act(saga_id, fail=True)
    assert (again.record, again.replayed) == (first.record, True)


# --- §6. bad input -----------------------------------------------------------

LONG_ID = "x" * 65
SAGA_ID_CASES = {
    "empty saga_id": "",
    "malformed saga_id": "not-a-uuid",
    "saga_id with braces": "{" + str(uuid.UUID(int=7)) + "}",
    "saga_id of 32 hex digits": uuid.UUID(int=7).hex,
    "over-long saga_id": LONG_ID,
}

# (participant, label, fields overriding the valid defaults, the field named)
BAD_FIELDS: list[tuple[str, str, dict[str, Any], str]] = [
    ("payment", "empty order_id", {"order_id": ""}, "order_id"),
    ("payment", "over-long order_id", {"order_id": LONG_ID}, "order_id"),
    ("payment", "order_id with a space", {"order_id": "ord 1"}, "order_id"),
    ("payment", "zero amount", {"amount": 0}, "amount"),
    ("payment", "negative amount", {"amount": -1200}, "amount"),
    ("payment", "absurd amount", {"amount": 2**62}, "amount"),
    ("payment", "unknown currency", {"currency": "XYZ"}, "currency"),
    ("payment", "lower-case currency", {"currency": "jpy"}, "currency"),
    ("inventory", "empty product_id", {"product_id": ""}, "product_id"),
    ("inventory", "over-long product_id", {"product_id": LONG_ID}, "product_id"),
    ("inventory", "unknown product", {"product_id": "durian"}, "product_id"),
    ("inventory", "zero quantity", {"quantity": 0}, "quantity"),
    ("inventory", "negative quantity", {"quantity": -2}, "quantity"),
    ("inventory", "absurd quantity", {"quantity": 10**12}, "quantity"),
    ("shipping", "empty order_id", {"order_id": ""}, "order_id"),
    ("shipping", "over-long order_id", {"order_id": LONG_ID}, "order_id"),
    ("shipping", "empty address", {"address": ""}, "address"),
    ("shipping", "blank address", {"address": "   "}, "address"),
    ("shipping", "over-long address", {"address": "a" * 501}, "address"),
    ("loyalty", "empty order_id", {"order_id": ""}, "order_id"),
    ("loyalty", "zero points", {"points": 0}, "points"),
    ("loyalty", "negative points", {"points": -5}, "points"),
    ("loyalty", "empty shipment_id", {"shipment_id": ""}, "shipment_id"),
    ("loyalty", "shipment_id with a space", {"shipment_id": "shp 1"}, "shipment_id"),
]


@pytest.mark.parametrize("saga_id", SAGA_ID_CASES.values(), ids=SAGA_ID_CASES.keys())
async def test_bad_saga_id_is_invalid_argument_everywhere(
    participant: Driver, saga_id: str
) -> None:
    before = await participant.snapshot()
    await assert_invalid(participant.act(saga_id), "saga_id")
    await assert_invalid(participant.compensate(saga_id), "saga_id")
    await assert_invalid(participant.get(saga_id), "saga_id")
    assert await participant.snapshot() == before


@pytest.mark.parametrize(
    ("participant", "fields", "field"),
    [(name, fields, field) for name, _, fields, field in BAD_FIELDS],
    ids=[f"{name}: {label}" for name, label, _, _ in BAD_FIELDS],
    indirect=["participant"],
)
async def test_bad_field_is_invalid_argument_naming_it(
    participant: Driver, fields: dict[str, Any], field: str
) -> None:
    saga_id = new_saga()
    before = await participant.snapshot()

    await assert_invalid(participant.act(saga_id, **fields), field)

    assert await participant.snapshot() == before
    assert await participant.get(saga_id) is None


async def test_every_bad_field_is_named_at_once(participant: Driver) -> None:
    everything_wrong: dict[str, dict[str, Any]] = {
        "payment": {"order_id": "", "amount": 0, "currency": "XYZ"},
        "inventory": {"product_id": "", "quantity": 0},
        "shipping": {"order_id": LONG_ID, "address": ""},
        "loyalty": {"order_id": "", "points": 0, "shipment_id": LONG_ID},
    }
    fields = everything_wrong[participant.name]
    before = await participant.snapshot()
    error = await rpc_error(participant.act("nope", **fields))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request_fields(error) == ["saga_id", *fields]
    assert await participant.snapshot() == before


async def test_validation_comes_before_the_fail_switch(participant: Driver) -> None:
    await assert_invalid(participant.act("", fail=True), "saga_id")


async def test_oversized_request_is_resource_exhausted(participant: Driver) -> None:
    saga_id = new_saga()
    before = await participant.snapshot()

    error = await rpc_error(participant.act(saga_id, **{participant.big_field: "z" * (2 << 20)}))

    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert await participant.snapshot() == before
    assert await participant.get(saga_id) is None


# --- serving -----------------------------------------------------------------


@pytest.mark.parametrize("whole_server", [True, False], ids=["server", "service"])
async def test_health_check_is_serving(participant: Driver, whole_server: bool) -> None:
    name = "" if whole_server else participant.service
    stub = health_pb2_grpc.HealthStub(participant.server.channel)
    response = await stub.Check(health_pb2.HealthCheckRequest(service=name))
    assert response.status == health_pb2.HealthCheckResponse.SERVING


async def test_health_check_of_an_unknown_service_is_not_found(participant: Driver) -> None:
    stub = health_pb2_grpc.HealthStub(participant.server.channel)
    error = await rpc_error(stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service")))
    assert error.code() == grpc.StatusCode.NOT_FOUND
