"""Fault injection (docs/design.md §3.6) on an in-process server, for each participant.

The tests change the running server's FaultConfig in place.
"""

from __future__ import annotations

import asyncio
import uuid

import grpc

from tests.participants.drivers import Driver
from tests.rich_errors import assert_rejected, rpc_error


def new_saga() -> str:
    return str(uuid.uuid4())


async def test_error_rate_one_fails_every_call_with_the_chosen_code(participant: Driver) -> None:
    saga_id = new_saga()
    before = await participant.snapshot()
    participant.faults.error_rate = 1.0
    participant.faults.error_code = grpc.StatusCode.ABORTED

    action_error = await rpc_error(participant.act(saga_id))
    compensation_error = await rpc_error(participant.compensate(saga_id))

    for error, method in [
        (action_error, participant.action),
        (compensation_error, participant.compensation),
    ]:
        info = assert_rejected(error, grpc.StatusCode.ABORTED, "INJECTED_FAILURE")
        assert info.metadata["method"] == method
    # Neither the action nor a tombstone was written.
    assert await participant.snapshot() == before
    assert await participant.get(saga_id) is None  # reads are never faulted


async def test_fail_first_fails_the_first_calls_of_each_saga_then_succeeds(
    participant: Driver,
) -> None:
    participant.faults.fail_first = 2
    saga_id, other_saga_id = new_saga(), new_saga()

    for _ in range(2):
        error = await rpc_error(participant.act(saga_id))
        assert_rejected(error, grpc.StatusCode.UNAVAILABLE, "INJECTED_FAILURE")
        assert await participant.get(saga_id) is None
    acted = await participant.act(saga_id)
    assert (acted.record.status, acted.replayed) == (participant.done, False)

    # The count is per saga: another saga fails its own first two calls.
    error = await rpc_error(participant.act(other_saga_id))
    assert error.code() == grpc.StatusCode.UNAVAILABLE


async def test_commit_then_unavailable_commits_the_work(participant: Driver) -> None:
    saga_id = new_saga()
    participant.faults.commit_then_unavailable_rate = 1.0

    error = await rpc_error(participant.act(saga_id))

    info = assert_rejected(error, grpc.StatusCode.UNAVAILABLE, "INJECTED_FAILURE")
    assert info.metadata["committed"] == "true"
    committed = await participant.get(saga_id)
    assert committed is not None
    assert committed.status == participant.done
    assert committed.record_id.startswith(participant.id_prefix)

    # The caller, in doubt, retries: it gets the committed work, not a second one.
    participant.faults.commit_then_unavailable_rate = 0.0
    retried = await participant.act(saga_id)
    assert (retried.record, retried.replayed) == (committed, True)


async def test_commit_then_unavailable_on_compensation_commits_it(participant: Driver) -> None:
    saga_id = new_saga()
    await participant.act(saga_id)
    participant.faults.commit_then_unavailable_rate = 1.0

    error = await rpc_error(participant.compensate(saga_id))

    assert error.code() == grpc.StatusCode.UNAVAILABLE
    record = await participant.get(saga_id)
    assert record is not None
    assert record.status == participant.undone
    participant.faults.commit_then_unavailable_rate = 0.0
    assert (await participant.compensate(saga_id))[0] == participant.outcome_already


async def test_added_latency_still_succeeds(participant: Driver) -> None:
    saga_id = new_saga()
    participant.faults.latency_ms = 30

    acted = await participant.act(saga_id)

    assert acted.record.status == participant.done
    assert await participant.get(saga_id) == acted.record


async def test_methods_restricts_faults_to_the_named_methods(participant: Driver) -> None:
    saga_id = new_saga()
    participant.faults.error_rate = 1.0
    participant.faults.methods = frozenset({participant.compensation})

    acted = await participant.act(saga_id)  # not a faulty method
    error = await rpc_error(participant.compensate(saga_id))

    assert acted.record.status == participant.done
    assert_rejected(error, grpc.StatusCode.UNAVAILABLE, "INJECTED_FAILURE")
    assert await participant.get(saga_id) == acted.record  # the compensation did nothing

    participant.faults.methods = frozenset({participant.action})
    outcome, _ = await participant.compensate(saga_id)
    assert outcome == participant.outcome_undone
    error = await rpc_error(participant.act(new_saga()))
    assert error.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_parked_call_does_nothing_until_released(participant: Driver) -> None:
    saga_id = new_saga()
    park = participant.faults.park(participant.action)

    acting = asyncio.create_task(participant.act(saga_id))
    assert await park.reached() == [saga_id]
    assert await participant.get(saga_id) is None  # held before any work
    park.release()
    acted = await acting

    assert acted.record.status == participant.done
    assert await participant.get(saga_id) == acted.record
