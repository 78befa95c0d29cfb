"""The limits every server has: RPCs at once, and the queue in front of the
database writer. Each is driven past, and refuses with nothing written."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from minisaga.payment.v1 import payment_pb2, payment_pb2_grpc

import inventory_server.__main__ as inventory_main
import orchestrator_server.__main__ as orchestrator_main
import payment_server.__main__ as payment_main
import shipping_server.__main__ as shipping_main
from orchestrator_server.saga.engine import EngineLimits
from payment_server.service import SCHEMA as PAYMENT_SCHEMA
from payment_server.service import PaymentService
from service_kit import limits
from service_kit.database import Database
from service_kit.errors import ServiceError
from tests.harness import InProcess, serve_in_process, wait_until
from tests.rich_errors import assert_rejected, rich_status, rpc_error


def retry_delay(error: grpc.aio.AioRpcError) -> float:
    """The google.rpc.RetryInfo delay of a refusal, in seconds."""
    for packed in rich_status(error).details:
        info = error_details_pb2.RetryInfo()
        if packed.Unpack(info):
            return float(info.retry_delay.ToTimedelta().total_seconds())
    raise AssertionError(f"no RetryInfo on {error.code()}: {error.details()}")


@asynccontextmanager
async def writer_held(db: Database) -> AsyncIterator[None]:
    """Holds the database's writer thread inside a job until the block ends."""
    started, release = threading.Event(), threading.Event()

    def hold(conn: sqlite3.Connection) -> None:
        started.set()
        release.wait()

    holding = asyncio.ensure_future(db.run(hold, wait_for_room=True))
    try:
        await asyncio.to_thread(started.wait)
        yield
    finally:
        release.set()
        await holding


async def start_payment(tmp_path: Path, **options: int) -> InProcess:
    return await serve_in_process(
        tmp_path / "payment.db",
        PAYMENT_SCHEMA,
        lambda db, faults: PaymentService(db, faults=faults),
        payment_pb2_grpc.add_PaymentServiceServicer_to_server,
        "minisaga.payment.v1.PaymentService",
        **options,  # type: ignore[arg-type]
    )


def charge() -> payment_pb2.ChargeRequest:
    return payment_pb2.ChargeRequest(saga_id=str(uuid.uuid4()), order_id="o1", amount=100)


async def payments(server: InProcess) -> int:
    row = await server.db.run(lambda c: c.execute("SELECT count(*) FROM payments").fetchone())
    return int(row[0])


async def test_a_full_database_queue_sheds_a_request_and_waits_with_wait_for_room(
    tmp_path: Path,
) -> None:
    db = await Database(tmp_path / "x.db", schema="CREATE TABLE t (x);", max_queue=2).open()
    try:
        async with writer_held(db):
            queued = asyncio.ensure_future(db.run(lambda c: c.execute("INSERT INTO t VALUES (1)")))
            await wait_until(lambda: db.pending == 2)  # the held job and the queued one
            with pytest.raises(ServiceError) as shed:
                await db.run(lambda c: c.execute("INSERT INTO t VALUES (2)"))
            assert shed.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert shed.value.retry_after == limits.RETRY_AFTER_SECONDS
            waiting = asyncio.ensure_future(
                db.run(lambda c: c.execute("INSERT INTO t VALUES (3)"), wait_for_room=True)
            )
        await asyncio.gather(queued, waiting)
        rows = await db.run(lambda c: [r[0] for r in c.execute("SELECT x FROM t ORDER BY x")])
        assert rows == [1, 3]
        assert db.pending == 0
    finally:
        await db.close()


async def test_a_participant_with_its_database_queue_full_refuses_and_writes_nothing(
    tmp_path: Path,
) -> None:
    payment = await start_payment(tmp_path, max_db_queue=1)
    stub = payment_pb2_grpc.PaymentServiceStub(payment.channel)
    try:
        async with writer_held(payment.db):
            error = await rpc_error(stub.Charge(charge()))
        assert_rejected(error, grpc.StatusCode.RESOURCE_EXHAUSTED, "OVERLOADED")
        assert retry_delay(error) == limits.RETRY_AFTER_SECONDS
        assert await payments(payment) == 0
        await stub.Charge(charge())  # room again
        assert await payments(payment) == 1
    finally:
        await payment.stop()


async def test_above_max_concurrent_rpcs_a_call_is_refused_and_writes_nothing(
    tmp_path: Path,
) -> None:
    payment = await start_payment(tmp_path, maximum_concurrent_rpcs=2)
    stub = payment_pb2_grpc.PaymentServiceStub(payment.channel)
    park = payment.faults.park("Charge")
    try:
        held = [asyncio.ensure_future(stub.Charge(charge())) for _ in range(2)]
        await park.reached(2)
        error = await rpc_error(stub.Charge(charge()))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        park.release()
        await asyncio.gather(*held)
        assert await payments(payment) == 2
        assert len(park.saga_ids) == 2  # the third never reached the handler
    finally:
        park.release()
        await payment.stop()


@pytest.fixture
def no_limit_variables(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for service in ("ORCHESTRATOR", "PAYMENT", "INVENTORY", "SHIPPING"):
        for flag in ("MAX_CONCURRENT_RPCS", "MAX_DB_QUEUE"):
            monkeypatch.delenv(f"MINISAGA_{service}_{flag}", raising=False)
    yield


@pytest.mark.usefixtures("no_limit_variables")
def test_every_server_has_the_limit_flags_with_their_defaults() -> None:
    for main in (payment_main, inventory_main, shipping_main, orchestrator_main):
        args = main.parse_args([])
        assert args.max_concurrent_rpcs == limits.MAX_CONCURRENT_RPCS
        assert args.max_db_queue == limits.MAX_DB_QUEUE
        with pytest.raises(SystemExit):
            main.parse_args(["--max-db-queue", "0"])
    config = orchestrator_main.config_from_args(orchestrator_main.parse_args([]))
    assert config.engine_limits == EngineLimits(
        max_sagas_in_flight=limits.MAX_SAGAS_IN_FLIGHT,
        max_calls_per_participant=limits.MAX_CALLS_PER_PARTICIPANT,
        max_recovering_sagas=limits.MAX_RECOVERING_SAGAS,
    )
    assert config.max_watch_streams == limits.MAX_WATCH_STREAMS
    assert config.place_order_max_wait.total_seconds() == limits.PLACE_ORDER_MAX_WAIT_SECONDS
    config = orchestrator_main.config_from_args(
        orchestrator_main.parse_args(
            ["--max-sagas-in-flight", "7", "--place-order-max-wait-seconds", "0.5"]
        )
    )
    assert config.engine_limits.max_sagas_in_flight == 7
    assert config.place_order_max_wait.total_seconds() == 0.5
