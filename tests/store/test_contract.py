"""The saga store contract (orchestrator_server/saga/store.py): what every store
must do, checked against each one: SQLite (a file of its own per test) and
PostgreSQL (a database of its own per test; skipped, saying why, where no
server can be started).

Stores differ in how many replicas share a log: a SQLite log has one owner
(it holds every lease, and a second opener is refused), a PostgreSQL one is
shared (leases, fenced writes; tests/postgres/test_store.py goes into their
details). `Log.replicas` gives as many stores on one log as the kind allows.
"""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest

from orchestrator_server.saga import (
    OpenableStore,
    SagaIdConflict,
    SqliteSagaStore,
    StoreInUse,
    postgres_store,
    sqlite_store,
)
from orchestrator_server.saga.postgres_store import PostgresSagaStore
from orchestrator_server.saga.store import (
    AttemptRecord,
    BadPageToken,
    Cause,
    CompensationFailure,
    IdempotencyConflict,
    LeaseLost,
    Phase,
    SagaFilter,
    SagaRecord,
    SagaStatus,
    StatusChange,
)
from tests.pg import PostgresCluster

TTL = timedelta(seconds=30)  # no test waits for a lease to run out


class Log:
    """One saga log of the kind under test, and the stores opened on it."""

    def __init__(self, kind: str, where: str, stack: AsyncExitStack) -> None:
        self.kind = kind
        self.where = where
        """A file path (sqlite) or a database URL (postgres)."""
        self._stack = stack

    @property
    def shared(self) -> bool:
        """Whether several replicas may open this log at once."""
        return self.kind == "postgres"

    def store(self) -> OpenableStore:
        if self.shared:
            return PostgresSagaStore(self.where, lease_ttl=TTL)
        return SqliteSagaStore(self.where)

    async def open(self) -> OpenableStore:
        store = await self.store().open()
        self._stack.push_async_callback(store.close)
        return store

    async def replicas(self) -> list[OpenableStore]:
        """Two stores on the log where it is shared, else its one store."""
        return [await self.open() for _ in range(2 if self.shared else 1)]

    async def write_previous_schema(self) -> None:
        """The log as an orchestrator before step outputs and versions left it:
        schema version 2, with one ended saga and its one attempt."""
        saga = (
            "INSERT INTO sagas (saga_id, saga_type, business_key, input, status,"
            " created_at_epoch_ms, updated_at_epoch_ms, deadline_epoch_ms)"
            " VALUES ('old', 'place_order', 'ord_1', '', 'COMPLETED', 1, 2, 3)"
        )
        attempt = (
            "INSERT INTO attempts (saga_id, step, phase, number, method, started_at_epoch_ms,"
            " finished_at_epoch_ms, code) VALUES ('old', 'charge', 'action', 1, '/m', 1, 2, 'OK')"
        )
        if not self.shared:
            conn = sqlite3.connect(self.where)
            for script in sqlite_store.MIGRATIONS[:2]:
                conn.executescript(script)
            conn.execute("PRAGMA user_version = 2")
            conn.execute(saga.replace("''", "x''"))  # a BLOB, as the store writes input
            conn.execute(attempt)
            conn.commit()
            conn.close()
            return
        pg = await asyncpg.connect(self.where)
        try:
            await pg.execute(
                "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY,"
                " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            for version, script in enumerate(postgres_store.MIGRATIONS[:2], start=1):
                await pg.execute(script)
                await pg.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
            await pg.execute(saga)
            await pg.execute(attempt)
        finally:
            await pg.close()


@pytest.fixture(params=["sqlite", "postgres"])
async def log(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Log]:
    if request.param == "sqlite":
        where = str(tmp_path / "log.db")
    else:
        cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
        where = await cluster.create_database()
    async with AsyncExitStack() as stack:
        yield Log(request.param, where, stack)


def a_saga(
    *,
    saga_id: str | None = None,
    request_id: str | None = None,
    payload: bytes = b"\x00order",
    saga_type: str = "place_order",
    status: SagaStatus = SagaStatus.RUNNING,
    business_key: str = "",
    created_at_ms: int = 1_000,
) -> SagaRecord:
    chosen = saga_id or str(uuid.uuid4())
    return SagaRecord(
        saga_id=chosen,
        saga_type=saga_type,
        business_key=business_key or f"ord_{chosen}",
        request_id=request_id,
        input=payload,
        status=status,
        created_at_ms=created_at_ms,
        updated_at_ms=created_at_ms,
        deadline_ms=created_at_ms + 60_000,
    )


def attempt(
    step: str, number: int = 1, phase: Phase = Phase.ACTION, at: int = 2_000
) -> AttemptRecord:
    return AttemptRecord(step, phase, number, f"/p.S/{step}", at)


def outcome(
    begun: AttemptRecord, code: str, at: int, *, output: bytes | None = None
) -> AttemptRecord:
    return AttemptRecord(
        begun.step,
        begun.phase,
        begun.number,
        begun.method,
        begun.started_at_ms,
        finished_at_ms=at,
        code=code,
        message="" if code == "OK" else f"{code} from {begun.step}",
        reason="" if code == "OK" else "A_REASON",
        output=output,
    )


# --- creating and reading --------------------------------------------------------


async def test_a_saga_reads_back_as_it_was_created(log: Log) -> None:
    store = await log.open()
    saga = a_saga(request_id="req-1")
    saga.saga_version, saga.trace_id, saga.trace_span_id = 3, "ab" * 16, "cd" * 8

    made, created = await store.create(saga)

    assert created and made == saga
    assert await store.load(saga.saga_id) == saga
    assert await store.load_by_business_key(saga.business_key) == saga
    assert await store.load(str(uuid.uuid4())) is None
    assert await store.load_by_business_key("ord_none") is None
    bare = a_saga()  # no request id, no trace, version 1
    await store.create(bare)
    assert await store.load(bare.saga_id) == bare


async def test_a_saga_is_created_with_the_attempts_it_carries_and_only_once(log: Log) -> None:
    """The first step's first attempt is written with the saga (one write fewer);
    a create that finds its saga made before writes none of its attempts."""
    store = await log.open()
    saga = a_saga(request_id="req-1")
    saga.attempts.append(attempt("charge", at=saga.created_at_ms))  # begun at creation

    await store.create(saga)
    retry = a_saga(request_id="req-1")
    retry.attempts.append(attempt("charge", at=3_000))
    made, created = await store.create(retry)

    assert not created and made == saga
    assert await store.load(saga.saga_id) == saga  # the attempt open: code None
    assert await store.load(retry.saga_id) is None


async def test_the_log_reads_back_in_order_with_outputs_causes_and_failures(log: Log) -> None:
    store = await log.open()
    saga, _ = await store.create(a_saga())
    charge, reserve, refund = attempt("charge"), attempt("reserve", at=2_200), attempt("charge")
    refund.phase = Phase.COMPENSATION
    cause = Cause("reserve", "FAILED_PRECONDITION", "no stock", "INSUFFICIENT_STOCK", 2_400)
    failures = (
        CompensationFailure(
            "ship", "/p.S/unship", "NO_COMPENSATION", "nothing undoes it", 0, 2_600
        ),
        CompensationFailure("charge", "/p.S/refund", "UNAVAILABLE", "down", 7, 2_700),
    )

    await store.write(saga.saga_id, begun=charge)
    # An OK outcome rides with the next attempt; an empty output is an output.
    await store.write(
        saga.saga_id, finished=outcome(charge, "OK", 2_100, output=b""), begun=reserve
    )
    await store.write(saga.saga_id, finished=outcome(reserve, "FAILED_PRECONDITION", 2_300))
    compensating = StatusChange(SagaStatus.COMPENSATING, 2_400, cause)
    await store.write(saga.saga_id, begun=refund, status=compensating)
    mid = await store.load(saga.saga_id)
    assert mid is not None and mid.status is SagaStatus.COMPENSATING and mid.ended_at_ms is None
    assert mid.cause == cause and mid.updated_at_ms == 2_400
    await store.write(
        saga.saga_id,
        finished=outcome(refund, "OK", 2_500, output=b"\x00\xffreceipt"),
        status=StatusChange(SagaStatus.FAILED, 2_800, failures=failures[:1]),
    )

    ended = await store.load(saga.saga_id)
    assert ended is not None
    assert ended.attempts == [
        outcome(charge, "OK", 2_100, output=b""),
        outcome(reserve, "FAILED_PRECONDITION", 2_300),
        outcome(refund, "OK", 2_500, output=b"\x00\xffreceipt"),
    ]
    assert (ended.status, ended.ended_at_ms, ended.updated_at_ms) == (
        SagaStatus.FAILED,
        2_800,
        2_800,
    )
    assert ended.cause == cause  # kept once set
    assert ended.failures == list(failures[:1])
    assert ended.succeeded("charge", Phase.ACTION) and not ended.succeeded("reserve", Phase.ACTION)

    # Resumed, then failed again: failures are appended, the end moves on.
    assert (await store.resume(saga.saga_id, 2_900)) is not None
    assert (await store.claim(saga.saga_id)) is not None
    await store.write(
        saga.saga_id, status=StatusChange(SagaStatus.FAILED, 3_000, failures=failures[1:])
    )
    again = await store.load(saga.saga_id)
    assert again is not None and again.failures == list(failures)
    assert (again.ended_at_ms, again.updated_at_ms) == (3_000, 3_000)


async def test_updated_at_is_the_latest_of_a_status_change_and_an_attempt(log: Log) -> None:
    store = await log.open()
    saga, _ = await store.create(a_saga(created_at_ms=1_000))
    charge = attempt("charge", at=5_000)
    await store.write(saga.saga_id, begun=charge)
    assert (await store.load(saga.saga_id)).updated_at_ms == 5_000  # type: ignore[union-attr]
    await store.write(saga.saga_id, finished=outcome(charge, "UNAVAILABLE", 6_000))
    assert (await store.load(saga.saga_id)).updated_at_ms == 6_000  # type: ignore[union-attr]


async def test_attempts_never_recorded_are_closed_once(log: Log) -> None:
    store = await log.open()
    saga, _ = await store.create(a_saga())
    charge, reserve = attempt("charge"), attempt("reserve")
    await store.write(saga.saga_id, begun=charge)
    await store.write(saga.saga_id, finished=outcome(charge, "OK", 2_100), begun=reserve)
    await store.write(saga.saga_id, begun=attempt("ship"))

    assert await store.close_unrecorded_attempts(saga.saga_id, 9_000, "UNRECORDED") == 2
    assert await store.close_unrecorded_attempts(saga.saga_id, 9_500, "UNRECORDED") == 0

    record = await store.load(saga.saga_id)
    assert record is not None
    assert [(a.step, a.code, a.finished_at_ms) for a in record.attempts] == [
        ("charge", "OK", 2_100),
        ("reserve", "UNRECORDED", 9_000),
        ("ship", "UNRECORDED", 9_000),
    ]
    assert "never recorded" in record.attempts[1].message


async def test_a_cancel_marks_only_a_running_saga(log: Log) -> None:
    store = await log.open()
    running, _ = await store.create(a_saga())
    done, _ = await store.create(a_saga(status=SagaStatus.COMPLETED))

    marked = await store.request_cancel(running.saga_id, 7_000)
    assert marked is not None and marked.cancel_requested and marked.updated_at_ms == 7_000
    unmarked = await store.request_cancel(done.saga_id, 7_000)
    assert unmarked is not None and not unmarked.cancel_requested
    assert await store.request_cancel(str(uuid.uuid4()), 7_000) is None


async def test_resume_reopens_only_a_failed_saga(log: Log) -> None:
    store = await log.open()
    failed, _ = await store.create(a_saga())
    await store.write(failed.saga_id, status=StatusChange(SagaStatus.FAILED, 3_000))
    completed, _ = await store.create(a_saga(status=SagaStatus.COMPLETED))

    resumed = await store.resume(failed.saga_id, 4_000)
    assert resumed is not None
    assert (resumed.status, resumed.ended_at_ms, resumed.updated_at_ms) == (
        SagaStatus.COMPENSATING,
        None,
        4_000,
    )
    untouched = await store.resume(completed.saga_id, 4_000)
    assert untouched is not None and untouched.status is SagaStatus.COMPLETED
    assert await store.resume(str(uuid.uuid4()), 4_000) is None


# --- idempotency: request ids and chosen saga ids ------------------------------------


async def test_a_request_id_makes_one_saga_and_refuses_another(log: Log) -> None:
    store = await log.open()
    first, created = await store.create(a_saga(request_id="req-1"))
    assert created

    again, created = await store.create(a_saga(request_id="req-1"))  # a retry: another id
    assert not created and again == first
    for other in (
        a_saga(request_id="req-1", payload=b"another"),
        a_saga(request_id="req-1", saga_type="x"),
    ):
        with pytest.raises(IdempotencyConflict) as conflict:
            await store.create(other)
        assert conflict.value.existing == first
        assert await store.load(other.saga_id) is None


async def test_a_saga_id_makes_one_saga_and_refuses_another(log: Log) -> None:
    store = await log.open()
    chosen = str(uuid.uuid4())
    first, created = await store.create(a_saga(saga_id=chosen, request_id="req-1"))
    assert created

    again, created = await store.create(a_saga(saga_id=chosen))  # the same saga, no request id
    assert not created and again == first
    again, created = await store.create(a_saga(saga_id=chosen, request_id="req-2"))
    assert not created and again == first
    with pytest.raises(SagaIdConflict) as conflict:
        await store.create(a_saga(saga_id=chosen, payload=b"another"))
    assert conflict.value.existing == first
    assert await store.load_by_business_key(f"ord_{chosen}") == first


@pytest.mark.parametrize("key", ["request_id", "saga_id"])
async def test_concurrent_creates_on_one_key_make_one_saga(log: Log, key: str) -> None:
    """Ten creates per replica at once, half of them another saga under the same
    key: one is made; the same saga comes back to its twins, a conflict to the others."""
    stores = await log.replicas()
    chosen = str(uuid.uuid4())

    def contender(n: int) -> SagaRecord:
        payload = b"order" if n % 2 else b"another order"
        if key == "request_id":
            return a_saga(request_id=chosen, payload=payload)
        return a_saga(saga_id=chosen, payload=payload)

    results = await asyncio.gather(
        *(store.create(contender(n)) for n in range(10) for store in stores),
        return_exceptions=True,
    )

    made = [r[0] for r in results if isinstance(r, tuple) and r[1]]
    assert len(made) == 1
    winner = made[0]
    assert [store.lease_left(winner.saga_id) > 0 for store in stores].count(True) == 1
    expected = IdempotencyConflict if key == "request_id" else SagaIdConflict
    for result in results:
        if isinstance(result, tuple):
            assert result[0] == winner
        else:
            assert isinstance(result, expected), result
            assert result.existing == winner
    assert Counter(type(r).__name__ for r in results)[expected.__name__] == len(results) // 2


# --- listing and counting --------------------------------------------------------


async def _listing(log: Log) -> tuple[OpenableStore, list[SagaRecord]]:
    """Seven sagas, created at known times (two at the same ms), newest first."""
    store = await log.open()
    specs = [
        ("order", SagaStatus.COMPLETED, "ord_a", 1_000),
        ("order", SagaStatus.RUNNING, "ord_b", 2_000),
        ("refund", SagaStatus.FAILED, "ord_a", 3_000),
        ("order", SagaStatus.COMPENSATED, "ord_c", 3_000),
        ("refund", SagaStatus.RUNNING, "ord_d", 4_000),
        ("order", SagaStatus.COMPLETED, "ord_e", 5_000),
        ("order", SagaStatus.FAILED, "ord_f", 6_000),
    ]
    sagas = []
    for n, (saga_type, status, key, at) in enumerate(specs):
        saga = a_saga(
            saga_type=saga_type,
            status=status,
            business_key=key,
            created_at_ms=at,
            request_id=f"r{n}",
        )
        sagas.append((await store.create(saga))[0])
    return store, sorted(sagas, key=lambda s: (s.created_at_ms, s.saga_id), reverse=True)


async def _all(store: OpenableStore, where: SagaFilter, page_size: int = 100) -> list[SagaRecord]:
    found: list[SagaRecord] = []
    token = ""
    while True:
        page = await store.list(where, page_size, token)
        assert len(page.sagas) <= page_size
        found.extend(page.sagas)
        if not page.next_page_token:
            return found
        assert len(page.sagas) == page_size
        token = page.next_page_token


async def test_each_filter_takes_only_its_sagas_newest_first(log: Log) -> None:
    store, sagas = await _listing(log)
    cases: list[tuple[SagaFilter, Callable[[SagaRecord], bool]]] = [
        (SagaFilter(), lambda s: True),
        (SagaFilter(status=SagaStatus.RUNNING), lambda s: s.status is SagaStatus.RUNNING),
        (SagaFilter(saga_type="refund"), lambda s: s.saga_type == "refund"),
        (SagaFilter(business_key="ord_a"), lambda s: s.business_key == "ord_a"),
        (SagaFilter(request_id="r3"), lambda s: s.request_id == "r3"),
        (SagaFilter(created_from_ms=3_000), lambda s: s.created_at_ms >= 3_000),
        (SagaFilter(created_before_ms=3_000), lambda s: s.created_at_ms < 3_000),
        (
            SagaFilter(saga_type="order", status=SagaStatus.COMPLETED, created_from_ms=2_000),
            lambda s: (
                s.saga_type == "order"
                and s.status is SagaStatus.COMPLETED
                and s.created_at_ms >= 2_000
            ),
        ),
        (SagaFilter(saga_type="none"), lambda s: False),
    ]
    for where, takes in cases:
        assert await _all(store, where) == [s for s in sagas if takes(s)], where


@pytest.mark.parametrize("page_size", [1, 2, 3, 7])
async def test_pages_give_every_saga_once_in_order(log: Log, page_size: int) -> None:
    store, sagas = await _listing(log)
    assert await _all(store, SagaFilter(), page_size) == sagas
    orders = [s for s in sagas if s.saga_type == "order"]
    assert await _all(store, SagaFilter(saga_type="order"), page_size) == orders


async def test_a_page_token_not_given_out_is_refused(log: Log) -> None:
    store, _ = await _listing(log)
    for token in ("x", "bm90IGEgdG9rZW4=", "W1siMSJdXQ=="):
        with pytest.raises(BadPageToken):
            await store.list(SagaFilter(), 2, token)


async def test_counts_per_status_under_a_filter(log: Log) -> None:
    store, sagas = await _listing(log)
    assert await store.count(SagaFilter()) == Counter(s.status for s in sagas)
    assert await store.count(SagaFilter(saga_type="order", created_before_ms=6_000)) == {
        SagaStatus.COMPLETED: 2,
        SagaStatus.RUNNING: 1,
        SagaStatus.COMPENSATED: 1,
    }
    assert await store.count(SagaFilter(business_key="none")) == {}


# --- leases and claims ------------------------------------------------------------


async def test_the_creator_holds_a_new_saga_and_an_ended_one_is_nobodys(log: Log) -> None:
    store = await log.open()
    running, _ = await store.create(a_saga(created_at_ms=2_000))
    older, _ = await store.create(a_saga(created_at_ms=1_000, status=SagaStatus.COMPENSATING))
    ended, _ = await store.create(a_saga(status=SagaStatus.COMPLETED))

    assert store.lease_left(running.saga_id) > 0
    if log.shared:  # a SQLite log's one owner holds every lease
        assert store.lease_left(ended.saga_id) == 0
    assert await store.claimable() == [older.saga_id, running.saga_id]  # oldest first
    claimed = await store.claim(running.saga_id)
    assert claimed == running
    assert await store.claim(ended.saga_id) is None
    assert await store.claim(str(uuid.uuid4())) is None
    assert not (await store.renew([running.saga_id, older.saga_id])).lost

    await store.write(running.saga_id, status=StatusChange(SagaStatus.COMPLETED, 3_000))
    assert await store.claim(running.saga_id) is None
    assert await store.claimable() == [older.saga_id]


async def test_a_released_saga_is_claimable_and_claimed_again(log: Log) -> None:
    store = await log.open()
    saga, _ = await store.create(a_saga())
    await store.release(saga.saga_id)

    assert saga.saga_id in await store.claimable()
    assert await store.claim(saga.saga_id) == saga
    assert store.lease_left(saga.saga_id) > 0
    await store.write(saga.saga_id, begun=attempt("charge"))  # ours again


async def test_a_second_replica_never_drives_a_saga_the_first_holds(log: Log) -> None:
    """SQLite: no second replica opens the log at all. PostgreSQL: it may not claim
    the saga, and a write of its own is fenced out (it holds no lease)."""
    first = await log.open()
    saga, _ = await first.create(a_saga())
    if not log.shared:
        with pytest.raises(StoreInUse):
            await log.store().open()
        return
    second = await log.open()
    assert await second.claim(saga.saga_id) is None
    assert saga.saga_id not in await second.claimable()
    with pytest.raises(LeaseLost):
        await second.write(saga.saga_id, begun=attempt("charge"))
    with pytest.raises(LeaseLost):
        await second.close_unrecorded_attempts(saga.saga_id, 9_000, "UNRECORDED")
    await first.write(saga.saga_id, begun=attempt("charge"))  # the holder still writes
    record = await second.load(saga.saga_id)  # and anyone reads
    assert record is not None and [a.step for a in record.attempts] == ["charge"]


# --- schema ---------------------------------------------------------------------


async def test_a_log_of_the_previous_schema_is_upgraded_in_place(log: Log) -> None:
    """A log migrated to version 2 (before step outputs and versions), with a saga
    in it, opens: the later migrations run, and the old saga reads as version 1."""
    await log.write_previous_schema()

    store = await log.open()

    record = await store.load("old")
    assert record is not None and record.saga_version == 1
    assert (record.trace_id, record.trace_span_id) == ("", "")
    assert [(a.code, a.output) for a in record.attempts] == [("OK", None)]
