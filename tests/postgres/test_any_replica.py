"""Two orchestrator replicas (in this process) on one PostgreSQL saga log: each
answers for every saga, whichever of them drives it."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import grpc
import pytest
from minisaga.orchestrator.v1 import orchestrator_pb2 as pb
from minisaga.orchestrator.v1 import orchestrator_pb2_grpc

from orchestrator_server.app import Orchestrator, start
from orchestrator_server.saga.policy import UNRECORDED
from tests.harness import wait_until
from tests.orchestrator.conftest import System, start_system, timeline

TERMINAL = (pb.SAGA_STATUS_COMPLETED, pb.SAGA_STATUS_COMPENSATED, pb.SAGA_STATUS_FAILED)
FAST_LEASES = {
    "lease_ttl": timedelta(seconds=2),
    "lease_renew_every": timedelta(milliseconds=100),
    "recover_every": timedelta(milliseconds=200),
}


@dataclass
class Pair:
    system: System
    """Participants and replica A (`system.api`)."""
    other: Orchestrator
    channel: grpc.aio.Channel

    @property
    def a(self) -> orchestrator_pb2_grpc.OrchestratorServiceAsyncStub:
        return self.system.api

    @property
    def b(self) -> orchestrator_pb2_grpc.OrchestratorServiceAsyncStub:
        return orchestrator_pb2_grpc.OrchestratorServiceStub(self.channel)


@pytest.fixture
async def pair(
    tmp_path: Path, postgres_url: str, request: pytest.FixtureRequest
) -> AsyncIterator[Pair]:
    """Replicas A and B; a test may override FAST_LEASES through indirect parametrize."""
    leases = {**FAST_LEASES, **getattr(request, "param", {})}
    system = await start_system(tmp_path, postgres_url, **leases)
    other = await start(dataclasses.replace(system.config))
    channel = grpc.aio.insecure_channel(other.address)
    try:
        yield Pair(system, other, channel)
    finally:
        await channel.close(None)
        await other.stop()
        await system.close()


def _cancel_seen(replica: Orchestrator, saga_id: str) -> bool:
    asked = replica.engine._cancels.get(saga_id)
    return asked is not None and asked.is_set()


async def ended(api: orchestrator_pb2_grpc.OrchestratorServiceAsyncStub, saga_id: str) -> pb.Saga:
    updates = [u async for u in api.WatchSaga(pb.WatchSagaRequest(saga_id=saga_id), timeout=30)]
    assert updates[-1].saga.status in TERMINAL
    return updates[-1].saga


async def test_either_replica_shows_and_lists_every_saga(pair: Pair) -> None:
    placed = [await pair.system.place(), await pair.system.place(fail_shipping=True)]

    for api in (pair.a, pair.b):
        for p in placed:
            saga = (await api.GetSaga(pb.GetSagaRequest(saga_id=p.saga_id))).saga
            assert saga == p.saga
        listed = await api.ListSagas(pb.ListSagasRequest())
        assert [s.saga_id for s in listed.sagas] == [p.saga_id for p in reversed(placed)]
        order = await api.GetOrder(pb.GetOrderRequest(order_id=placed[0].order_id))
        assert order.saga.saga_id == placed[0].saga_id


async def test_a_cancel_through_the_other_replica_reaches_the_owner(pair: Pair) -> None:
    reserve = pair.system.inventory.faults.park("Reserve")  # the cancel lands during Reserve
    pair.system.place_in_background()  # driven by A
    [saga_id] = await reserve.reached()

    cancelled = await pair.b.CancelSaga(pb.CancelSagaRequest(saga_id=saga_id))
    assert cancelled.saga.status == pb.SAGA_STATUS_RUNNING
    # A hears of it with its next lease renewal, while its Reserve is still out.
    await wait_until(lambda: _cancel_seen(pair.system.orchestrator, saga_id))
    reserve.release()

    final = await ended(pair.b, saga_id)
    assert final.status == pb.SAGA_STATUS_COMPENSATED
    assert (final.compensation_cause.step, final.compensation_cause.code) == ("ship", "CANCELLED")
    assert timeline(final) == ["charge OK", "reserve OK", "undo reserve OK", "undo charge OK"]


async def test_a_saga_failed_on_one_replica_is_resumed_through_the_other(pair: Pair) -> None:
    pair.system.payment.faults.error_rate = 1.0
    pair.system.payment.faults.error_code = grpc.StatusCode.INTERNAL
    pair.system.payment.faults.methods = frozenset({"Refund"})
    placed = await pair.system.place(fail_inventory=True)
    assert placed.status == pb.SAGA_STATUS_FAILED

    pair.system.payment.faults.error_rate = 0.0
    await pair.b.ResumeSaga(pb.ResumeSagaRequest(saga_id=placed.saga_id))

    final = await ended(pair.a, placed.saga_id)  # A follows B's progress through the log
    assert final.status == pb.SAGA_STATUS_COMPENSATED
    assert timeline(final)[-1] == "undo charge OK"


@pytest.mark.parametrize("pair", [{"lease_ttl": timedelta(hours=1)}], indirect=True)
async def test_a_replica_stopped_cleanly_hands_its_sagas_over_at_once(pair: Pair) -> None:
    """A stop gives the leases up: the other replica goes on without waiting the TTL,
    re-sending the call the stop cut off as a new attempt."""
    reserve = pair.system.inventory.faults.park("Reserve")
    pair.system.place_in_background()  # driven by A
    [saga_id] = await reserve.reached()
    await pair.system.channel.close(None)
    await pair.system.orchestrator.stop()  # (System.close stops it again: harmless)
    reserve.release()

    # Leases last an hour here: B can only be finishing it because A gave it up.
    final = await ended(pair.b, saga_id)

    assert final.status == pb.SAGA_STATUS_COMPLETED
    reserved = next(s for s in final.steps if s.step == "reserve")
    assert [a.code for a in reserved.attempts] == [UNRECORDED, "OK"]
