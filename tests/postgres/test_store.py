"""PostgresSagaStore against a real PostgreSQL server: leases, fencing, migrations.

Two store instances on one database play two replicas. Leases are short
here (a fraction of a second) so that expiry can be waited for.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from datetime import timedelta

import asyncpg
import pytest

from orchestrator_server.saga.postgres_store import (
    MIGRATIONS,
    PostgresSagaStore,
    SchemaTooNew,
)
from orchestrator_server.saga.store import (
    AttemptRecord,
    IdempotencyConflict,
    LeaseLost,
    Phase,
    SagaRecord,
    SagaStatus,
    StatusChange,
)
from service_kit.clock import now_ms
from tests.harness import wait_until

SHORT = timedelta(milliseconds=300)
LONG = timedelta(seconds=30)


def a_saga(request_id: str | None = None, payload: bytes = b"order") -> SagaRecord:
    now = now_ms()
    return SagaRecord(
        saga_id=str(uuid.uuid4()),
        saga_type="place_order",
        business_key=f"ord_{uuid.uuid4().hex}",
        request_id=request_id,
        input=payload,
        status=SagaStatus.RUNNING,
        created_at_ms=now,
        updated_at_ms=now,
        deadline_ms=now + 60_000,
    )


def an_attempt(number: int = 1, step: str = "charge") -> AttemptRecord:
    return AttemptRecord(step, Phase.ACTION, number, "/p.Payment/Charge", now_ms())


class Replicas:
    """Opens stores on one database (each its own replica) and closes them all."""

    def __init__(self, url: str, stack: AsyncExitStack) -> None:
        self.url = url
        self._stack = stack

    async def open(self, lease_ttl: timedelta = LONG) -> PostgresSagaStore:
        store = await PostgresSagaStore(self.url, lease_ttl=lease_ttl).open()
        self._stack.push_async_callback(store.close)
        return store

    async def lease(self, saga_id: str) -> tuple[str | None, int]:
        conn = await asyncpg.connect(self.url)
        try:
            row = await conn.fetchrow(
                "SELECT lease_owner, lease_epoch FROM sagas WHERE saga_id = $1", saga_id
            )
        finally:
            await conn.close()
        assert row is not None
        return row["lease_owner"], int(row["lease_epoch"])


@pytest.fixture
async def replicas(postgres_url: str) -> AsyncIterator[Replicas]:
    async with AsyncExitStack() as stack:
        yield Replicas(postgres_url, stack)


async def past_expiry(store: PostgresSagaStore, saga_id: str) -> None:
    """Waits until the saga's lease has run out by the database's clock and,
    so, by this store's own (which trusts a lease for less than its TTL)."""

    async def expired() -> bool:
        by_database = await store.pool.fetchval(
            "SELECT lease_expires_at < now() FROM sagas WHERE saga_id = $1", saga_id
        )
        return bool(by_database) and not store.holds_lease(saga_id)

    await wait_until(expired, timeout=10 * store.lease_ttl.total_seconds())


async def test_a_former_owner_is_fenced_out(replicas: Replicas) -> None:
    a = await replicas.open(lease_ttl=SHORT)
    b = await replicas.open(lease_ttl=SHORT)
    creator = await PostgresSagaStore(replicas.url).open()
    saga, created = await creator.create(a_saga())
    assert created
    assert await a.claim(saga.saga_id) is None  # the creator holds it
    await creator.close()  # and hands it over

    claimed = await a.claim(saga.saga_id)
    assert claimed is not None and claimed.saga_id == saga.saga_id
    assert a.holds_lease(saga.saga_id)
    await a.write(saga.saga_id, begun=an_attempt(1))

    await past_expiry(a, saga.saga_id)  # A is paused past its lease...
    assert not a.holds_lease(saga.saga_id)
    assert await b.claim(saga.saga_id) is not None  # ...and B takes the saga over
    assert b.holds_lease(saga.saga_id)
    assert await replicas.lease(saga.saga_id) == (b.owner, 3)

    finished = an_attempt(1)
    finished.code, finished.finished_at_ms = "OK", now_ms()
    with pytest.raises(LeaseLost):
        await a.write(saga.saga_id, finished=finished, begun=an_attempt(1, "reserve"))
    with pytest.raises(LeaseLost):
        await a.close_unrecorded_attempts(saga.saga_id, now_ms(), "UNRECORDED")
    assert not a.holds_lease(saga.saga_id)

    record = await b.load(saga.saga_id)
    assert record is not None
    assert [(x.step, x.number, x.code) for x in record.attempts] == [("charge", 1, None)]
    assert await b.close_unrecorded_attempts(saga.saga_id, now_ms(), "UNRECORDED") == 1
    await b.write(saga.saga_id, begun=an_attempt(2))
    record = await b.load(saga.saga_id)
    assert record is not None
    assert [(x.number, x.code) for x in record.attempts] == [(1, "UNRECORDED"), (2, None)]


async def test_the_fence_holds_even_when_clocks_disagree(replicas: Replicas) -> None:
    """A believes (by its own clock) that its lease lasts; by the database's clock it
    has run out and B has claimed the saga: A's write is refused all the same."""
    a = await replicas.open()
    b = await replicas.open()
    saga, _ = await a.create(a_saga())
    conn = await asyncpg.connect(replicas.url)
    try:
        await conn.execute(
            "UPDATE sagas SET lease_expires_at = now() - interval '1 second' WHERE saga_id = $1",
            saga.saga_id,
        )
    finally:
        await conn.close()
    assert await b.claim(saga.saga_id) is not None
    assert a.holds_lease(saga.saga_id)  # A cannot know yet

    with pytest.raises(LeaseLost):
        await a.write(saga.saga_id, begun=an_attempt())

    assert not a.holds_lease(saga.saga_id)  # it knows now
    record = await b.load(saga.saga_id)
    assert record is not None and not record.attempts


async def test_an_expired_lease_nobody_claimed_is_still_ours(replicas: Replicas) -> None:
    """The fence is the epoch, not the clock: a late owner may still write as long as
    no one else has claimed the saga (and then it holds the lease again)."""
    a = await replicas.open(lease_ttl=SHORT)
    saga, _ = await a.create(a_saga())
    await past_expiry(a, saga.saga_id)
    assert not a.holds_lease(saga.saga_id)

    await a.write(saga.saga_id, begun=an_attempt(1))

    assert a.holds_lease(saga.saga_id)
    assert await replicas.lease(saga.saga_id) == (a.owner, 1)


async def test_a_live_lease_is_not_claimable_by_others(replicas: Replicas) -> None:
    a = await replicas.open()
    b = await replicas.open()
    saga, _ = await a.create(a_saga())

    assert await b.claim(saga.saga_id) is None
    assert saga.saga_id not in await b.claimable()
    assert saga.saga_id in await a.claimable()  # its own: claimable again if its runner died
    assert await a.claim(saga.saga_id) is not None
    assert await replicas.lease(saga.saga_id) == (a.owner, 2)

    renewal = await b.renew([saga.saga_id])  # B never held it: nothing to say
    assert not renewal.lost


async def test_renew_extends_reports_losses_and_cancels(replicas: Replicas) -> None:
    a = await replicas.open(lease_ttl=SHORT)
    b = await replicas.open(lease_ttl=SHORT)
    kept, _ = await a.create(a_saga())
    taken, _ = await a.create(a_saga())
    await b.request_cancel(kept.saga_id, now_ms())

    for _ in range(4):  # renewing every TTL/3 keeps both leases well past the TTL
        await asyncio.sleep(SHORT.total_seconds() / 3)
        renewal = await a.renew([kept.saga_id, taken.saga_id])
        assert not renewal.lost
        assert renewal.cancel_requested == {kept.saga_id}
    assert await b.claim(kept.saga_id) is None

    await past_expiry(a, taken.saga_id)
    assert await b.claim(taken.saga_id) is not None
    renewal = await a.renew([kept.saga_id, taken.saga_id])
    assert renewal.lost == {taken.saga_id}
    assert not a.holds_lease(taken.saga_id)
    with pytest.raises(LeaseLost):
        await a.write(taken.saga_id, begun=an_attempt())


async def test_a_terminal_status_and_resume_free_the_lease(replicas: Replicas) -> None:
    a = await replicas.open()
    b = await replicas.open()
    saga, _ = await a.create(a_saga())

    await a.write(saga.saga_id, status=StatusChange(SagaStatus.FAILED, now_ms()))

    assert await replicas.lease(saga.saga_id) == (None, 1)
    assert not a.holds_lease(saga.saga_id)
    assert await b.claim(saga.saga_id) is None  # ended
    assert saga.saga_id not in await b.claimable()

    resumed = await b.resume(saga.saga_id, now_ms())
    assert resumed is not None and resumed.status is SagaStatus.COMPENSATING
    assert saga.saga_id in await b.claimable()
    assert await b.claim(saga.saga_id) is not None
    assert await replicas.lease(saga.saga_id) == (b.owner, 2)


async def test_close_hands_every_lease_over(replicas: Replicas) -> None:
    a = await PostgresSagaStore(replicas.url).open()
    b = await replicas.open()
    sagas = [(await a.create(a_saga()))[0] for _ in range(3)]
    await a.close()

    assert {s.saga_id for s in sagas} <= set(await b.claimable())
    for saga in sagas:
        assert await b.claim(saga.saga_id) is not None


async def test_concurrent_creates_with_one_request_id_make_one_saga(replicas: Replicas) -> None:
    a = await replicas.open()
    b = await replicas.open()

    results = await asyncio.gather(
        *(store.create(a_saga("req-1")) for _ in range(10) for store in (a, b))
    )

    assert len({record.saga_id for record, _ in results}) == 1
    assert [created for _, created in results].count(True) == 1
    winner = next(record for record, created in results if created)
    owner, epoch = await replicas.lease(winner.saga_id)
    assert (owner, epoch) in ((a.owner, 1), (b.owner, 1))
    creator = a if owner == a.owner else b
    assert creator.holds_lease(winner.saga_id)
    with pytest.raises(IdempotencyConflict) as conflict:
        await b.create(a_saga("req-1", payload=b"another order"))
    assert conflict.value.existing.saga_id == winner.saga_id


async def test_replicas_starting_together_migrate_once(postgres_url: str) -> None:
    stores = await asyncio.gather(
        *(PostgresSagaStore(postgres_url).open() for _ in range(4)), return_exceptions=True
    )
    try:
        failures = [s for s in stores if isinstance(s, BaseException)]
        assert not failures, failures
        conn = await asyncpg.connect(postgres_url)
        try:
            versions = [
                r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")
            ]
            assert sorted(versions) == list(range(1, len(MIGRATIONS) + 1))

            await conn.execute("INSERT INTO schema_migrations (version) VALUES (999)")
            with pytest.raises(SchemaTooNew):
                await PostgresSagaStore(postgres_url).open()
        finally:
            await conn.close()
    finally:
        for store in stores:
            if isinstance(store, PostgresSagaStore):
                await store.close()
