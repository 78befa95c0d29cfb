"""The orchestrator's limits, each driven past: sagas in flight, calls per
participant, sagas recovered at once, PlaceOrder's longest wait, WatchSaga
streams, the saga log's queue, and a change feed that keeps nothing for a saga
nobody watches."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import cast

import grpc
import pytest
from minisaga.orchestrator.v1 import orchestrator_pb2 as pb

from orchestrator_server.saga.engine import ChangeFeed, EngineLimits, RecordingTime
from orchestrator_server.saga.sqlite_store import SqliteSagaStore
from service_kit import limits
from tests.harness import wait_until
from tests.orchestrator.conftest import System, start_system
from tests.rich_errors import assert_rejected, rpc_error
from tests.test_limits import retry_delay, writer_held

ORDER = pb.PlaceOrderRequest(product_id="apple", quantity=1, amount=100, address="1-2-3 Shibuya")


async def sagas(system: System) -> int:
    return len((await system.api.ListSagas(pb.ListSagasRequest())).sagas)


async def charges(system: System) -> int:
    row = await system.payment.db.run(
        lambda conn: conn.execute("SELECT count(*) FROM payments").fetchone()
    )
    return int(row[0])


async def ended(system: System, saga_id: str) -> pb.Saga:
    """Waits until the saga is terminal; returns it."""

    async def terminal() -> pb.Saga | None:
        saga = await system.saga(saga_id)
        running = (pb.SAGA_STATUS_RUNNING, pb.SAGA_STATUS_COMPENSATING)
        return None if saga.status in running else saga

    saga: pb.Saga = await wait_until(terminal)
    return saga


async def test_above_max_sagas_in_flight_place_order_is_refused_and_writes_nothing(
    tmp_path: Path, store: str
) -> None:
    system = await start_system(tmp_path, store, engine_limits=EngineLimits(max_sagas_in_flight=2))
    try:
        reserve = system.inventory.faults.park("Reserve")
        placing = [system.place_in_background() for _ in range(2)]
        await reserve.reached(2)

        error = await rpc_error(system.place())

        info = assert_rejected(error, grpc.StatusCode.RESOURCE_EXHAUSTED, "OVERLOADED")
        assert info.metadata["limit"] == "max-sagas-in-flight"
        assert retry_delay(error) == limits.RETRY_AFTER_SECONDS
        assert await sagas(system) == 2
        assert await charges(system) == 2
        reserve.release()
        assert {(await task).status for task in placing} == {pb.SAGA_STATUS_COMPLETED}
        assert (await system.place()).status == pb.SAGA_STATUS_COMPLETED  # room again
    finally:
        await system.close()


async def test_a_resent_place_order_gets_its_saga_back_while_the_orchestrator_is_full(
    tmp_path: Path, store: str
) -> None:
    """A client whose PlaceOrder timed out resends it with the same request_id:
    that adds no saga, so it is answered with its saga, not shed; a new order is."""
    system = await start_system(tmp_path, store, engine_limits=EngineLimits(max_sagas_in_flight=1))
    try:
        reserve = system.inventory.faults.park("Reserve")
        placing = system.place_in_background(request_id="order-1")
        (saga_id,) = await reserve.reached(1)

        other = await rpc_error(system.place(request_id="order-2"))
        assert_rejected(other, grpc.StatusCode.RESOURCE_EXHAUSTED, "OVERLOADED")
        reused = await rpc_error(system.place(request_id="order-1", quantity=3))
        assert reused.code() == grpc.StatusCode.ALREADY_EXISTS  # same key, another order
        # The resend as the service makes it, answered at once (the RPC would
        # wait for the parked saga): its saga, not a refusal.
        engine = system.orchestrator.engine
        order = pb.PlaceOrderRequest(
            product_id="apple",
            quantity=2,
            amount=1200,
            address="1-2-3 Shibuya, Tokyo",
            request_id="order-1",
        )
        record, created = await engine.start(
            engine.definition("place_order"), order, request_id="order-1"
        )
        assert (record.saga_id, created) == (saga_id, False)
        assert await sagas(system) == 1

        again = system.place_in_background(request_id="order-1")
        reserve.release()
        first, second = await placing, await again
        assert first.saga_id == second.saga_id == saga_id
        assert first.status == second.status == pb.SAGA_STATUS_COMPLETED
    finally:
        await system.close()


async def test_calls_to_one_participant_wait_for_a_slot(tmp_path: Path) -> None:
    system = await start_system(tmp_path, engine_limits=EngineLimits(max_calls_per_participant=1))
    try:
        reserve = system.inventory.faults.park("Reserve")
        placing = [system.place_in_background() for _ in range(3)]
        await reserve.reached(1)
        engine = system.orchestrator.engine
        await wait_until(lambda: engine.waiting_for("inventory") == 2)

        assert len(reserve.saga_ids) == 1  # the other two wait in the orchestrator
        reserve.release()
        assert {(await task).status for task in placing} == {pb.SAGA_STATUS_COMPLETED}
        assert len(reserve.saga_ids) == 3
    finally:
        await system.close()


async def test_recovery_drives_at_most_max_recovering_sagas_at_once(tmp_path: Path) -> None:
    system = await start_system(tmp_path, recover_every=timedelta(hours=1))
    try:
        before = system.inventory.faults.park("Reserve")
        for _ in range(3):
            system.place_in_background()
        saga_ids = await before.reached(3)
        reserve = system.inventory.faults.park("Reserve")  # the calls after the restart
        await system.restart_orchestrator(
            replace(system.config, engine_limits=EngineLimits(max_recovering_sagas=1))
        )
        engine = system.orchestrator.engine
        await reserve.reached(1)
        await wait_until(lambda: engine.recovery_backlog == 2)

        assert len(reserve.saga_ids) == 1
        assert engine.in_flight == 3  # the two in line count as in flight
        reserve.release()
        for saga_id in saga_ids:
            assert (await ended(system, saga_id)).status == pb.SAGA_STATUS_COMPLETED
        assert sorted(set(reserve.saga_ids)) == sorted(saga_ids)
        before.release()
    finally:
        await system.close()


async def test_place_order_without_a_deadline_answers_running_after_its_longest_wait(
    tmp_path: Path,
) -> None:
    system = await start_system(tmp_path, place_order_max_wait=timedelta(milliseconds=50))
    try:
        reserve = system.inventory.faults.park("Reserve")

        reply = await system.api.PlaceOrder(ORDER)  # no deadline

        assert reply.status == pb.SAGA_STATUS_RUNNING
        reserve.release()
        assert (await ended(system, reply.saga_id)).status == pb.SAGA_STATUS_COMPLETED
    finally:
        await system.close()


async def test_above_max_watch_streams_watch_saga_is_refused(tmp_path: Path) -> None:
    system = await start_system(tmp_path, max_watch_streams=1)
    try:
        reserve = system.inventory.faults.park("Reserve")
        system.place_in_background()
        (saga_id,) = await reserve.reached(1)
        request = pb.WatchSagaRequest(saga_id=saga_id)
        first = system.api.WatchSaga(request)
        await first.read()  # the stream is open and counted

        second = system.api.WatchSaga(request)
        error = await rpc_error(second.read())

        info = assert_rejected(error, grpc.StatusCode.RESOURCE_EXHAUSTED, "OVERLOADED")
        assert info.metadata["limit"] == "max-watch-streams"
        first.cancel()
        engine = system.orchestrator.engine
        await wait_until(lambda: not engine.changes.watched(saga_id))
        third = system.api.WatchSaga(request)
        opened = await third.read()
        assert isinstance(opened, pb.WatchSagaResponse) and opened.event.sequence == 1
        third.cancel()
        reserve.release()
        await ended(system, saga_id)
        await wait_until(lambda: len(engine.changes) == 0)
    finally:
        await system.close()


async def test_a_full_saga_log_queue_refuses_a_new_saga_and_writes_nothing(
    tmp_path: Path,
) -> None:
    system = await start_system(tmp_path, max_db_queue=1)
    try:
        await system.place()  # the product is known: the refusal comes from the log
        log = cast(SqliteSagaStore, system.orchestrator.store)
        async with writer_held(log.db):
            error = await rpc_error(system.place())
        info = assert_rejected(error, grpc.StatusCode.RESOURCE_EXHAUSTED, "OVERLOADED")
        assert info.metadata["limit"] == "max-db-queue"
        assert await sagas(system) == 1
        assert await charges(system) == 1
    finally:
        await system.close()


async def test_at_the_in_flight_limit_a_request_id_lookup_is_shed_by_a_full_log_queue(
    tmp_path: Path,
) -> None:
    """At the in-flight limit a start with a request_id looks its saga up in the
    log; with the log's queue full that read is shed at once, not queued behind
    the saga log's own writes."""
    system = await start_system(
        tmp_path, max_db_queue=1, engine_limits=EngineLimits(max_sagas_in_flight=1)
    )
    try:
        reserve = system.inventory.faults.park("Reserve")
        system.place_in_background(request_id="order-1")
        await reserve.reached(1)
        log = cast(SqliteSagaStore, system.orchestrator.store)
        async with writer_held(log.db):
            error = await asyncio.wait_for(rpc_error(system.place(request_id="order-2")), 60)
        info = assert_rejected(error, grpc.StatusCode.RESOURCE_EXHAUSTED, "OVERLOADED")
        assert info.metadata["limit"] == "max-db-queue"
        reserve.release()
        assert await sagas(system) == 1
    finally:
        await system.close()


async def test_a_saga_in_flight_waits_for_room_in_a_full_log_queue(tmp_path: Path) -> None:
    system = await start_system(tmp_path, max_db_queue=1)
    try:
        reserve = system.inventory.faults.park("Reserve")
        placing = system.place_in_background()
        await reserve.reached(1)
        log = cast(SqliteSagaStore, system.orchestrator.store)
        async with writer_held(log.db):
            reserve.release()  # the saga's next log write finds the queue full
            await wait_until(lambda: log.db.waiting == 1)
        assert (await placing).status == pb.SAGA_STATUS_COMPLETED  # waited, never dropped
    finally:
        await system.close()


async def test_the_change_feed_keeps_nothing_for_an_ended_saga(system: System) -> None:
    engine = system.orchestrator.engine
    saga_id = (await system.place()).saga_id

    for timeout in (None, 0.0, 5.0, None):
        assert (await engine.wait(saga_id, timeout)) is not None
    watched = [reply async for reply in system.api.WatchSaga(pb.WatchSagaRequest(saga_id=saga_id))]

    assert watched[-1].saga.status == pb.SAGA_STATUS_COMPLETED
    assert len(engine.changes) == 0


async def test_a_change_wakes_every_watcher_and_a_watcher_leaves_nothing() -> None:
    feed = ChangeFeed()
    with feed.watch("s1") as one, feed.watch("s1") as two, feed.watch("s2") as other:
        assert len(feed) == 2
        feed.notify("s1")
        await asyncio.gather(one.wait(), two.wait())  # both set already
        assert not other.is_set()
    assert len(feed) == 0
    feed.notify("s1")  # nobody watches: nothing to keep
    assert len(feed) == 0


async def test_a_new_saga_that_would_be_recorded_too_late_for_its_caller_is_refused(
    tmp_path: Path,
) -> None:
    system = await start_system(tmp_path)
    try:
        await system.place()  # the product is known: only the log stands in the way
        engine = system.orchestrator.engine
        log = cast(SqliteSagaStore, system.orchestrator.store)
        async with writer_held(log.db):
            waiting = system.place_in_background(timeout=120.0)  # patient: it waits its turn
            await wait_until(lambda: engine.recording.seconds() >= 0.5)

            error = await rpc_error(system.place(timeout=0.5))  # could not be answered in time

            info = assert_rejected(error, grpc.StatusCode.RESOURCE_EXHAUSTED, "OVERLOADED")
            assert info.metadata["limit"] == "deadline"
            assert retry_delay(error) == limits.RETRY_AFTER_SECONDS
        assert (await waiting).status == pb.SAGA_STATUS_COMPLETED
        assert await sagas(system) == 2  # the refused one wrote nothing
        assert await charges(system) == 2
        assert engine.recording.seconds() == 0.0  # nothing waits: the next one goes in
        assert (await system.place(timeout=5.0)).status == pb.SAGA_STATUS_COMPLETED
    finally:
        await system.close()


def test_recording_time_is_the_mean_or_the_oldest_wait_and_zero_when_none_waits() -> None:
    now = [100.0]
    recording = RecordingTime(clock=lambda: now[0])
    assert recording.seconds() == 0.0
    with recording.timing():
        now[0] += 2.0
        assert recording.seconds() == 2.0  # no mean yet: the wait so far
    assert recording.seconds() == 0.0  # nothing waits: whatever the mean says
    first, second = recording.timing(), recording.timing()
    first.__enter__()
    now[0] += 1.0
    second.__enter__()
    assert recording.seconds() == 1.0  # the oldest waits 1 s; the mean is 0.4
    first.__exit__(None, None, None)  # took 1 s: the mean is now 0.4 + 0.2 * 0.6
    assert recording.seconds() == pytest.approx(0.52)  # the other has waited 0 s
    now[0] += 3.0
    assert recording.seconds() == 3.0
    second.__exit__(None, None, None)
