"""PostgresSagaStore against a real PostgreSQL server: leases, fencing, migrations
(what only a shared log has; tests/store/test_contract.py checks what every store does).

Two store instances on one database play two replicas. No test waits for a
lease to run out: `Replicas.expire` ends it by the database's clock (an
UPDATE) and by the store's own (a `Clock` the test moves), as if the replica
had been paused longer than its TTL. So a stall of the machine can only make
a lease look *more* expired, never break a test: every lease is 30 s long.
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
    LeaseLost,
    Phase,
    SagaIdConflict,
    SagaRecord,
    SagaStatus,
    StatusChange,
)
from service_kit.clock import now_ms
from tests.harness import wait_until

TTL = timedelta(seconds=30)


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


def ok(attempt: AttemptRecord) -> AttemptRecord:
    attempt.code, attempt.finished_at_ms = "OK", now_ms()
    return attempt


class Clock:
    """A replica's own monotonic clock, which only the test moves."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


class Replicas:
    """Opens stores on one database (each its own replica) and closes them all."""

    def __init__(self, url: str, stack: AsyncExitStack) -> None:
        self.url = url
        self._stack = stack
        self.clocks: dict[int, Clock] = {}

    async def open(self, owner: str | None = None) -> PostgresSagaStore:
        """A replica; `owner` reuses an identity (a replica restarted under the same name)."""
        clock = Clock()
        store = await PostgresSagaStore(self.url, lease_ttl=TTL, owner=owner, clock=clock).open()
        self.clocks[id(store)] = clock
        self._stack.push_async_callback(store.close)
        return store

    async def sql(self, query: str, *args: object) -> object:
        conn = await asyncpg.connect(self.url)
        try:
            return await conn.fetchval(query, *args)
        finally:
            await conn.close()

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

    async def expire(self, store: PostgresSagaStore, saga_id: str) -> None:
        """The saga's lease runs out by the database's clock and by the store's own, as
        if `store` had been paused longer than its TTL."""
        await self.sql(
            "UPDATE sagas SET lease_expires_at = now() - interval '1 second' WHERE saga_id = $1",
            saga_id,
        )
        self.clocks[id(store)].now += store.lease_ttl.total_seconds()

    async def renewed_for(self, saga_id: str) -> float:
        """Seconds the lease still lasts by the database's clock."""
        left = await self.sql(
            "SELECT extract(epoch FROM lease_expires_at - now()) FROM sagas WHERE saga_id = $1",
            saga_id,
        )
        return float(left)  # type: ignore[arg-type]


@pytest.fixture
async def replicas(postgres_url: str) -> AsyncIterator[Replicas]:
    async with AsyncExitStack() as stack:
        yield Replicas(postgres_url, stack)


async def test_a_former_owner_is_fenced_out(replicas: Replicas) -> None:
    a = await replicas.open()
    b = await replicas.open()
    creator = await PostgresSagaStore(replicas.url).open()
    saga, created = await creator.create(a_saga())
    assert created
    assert await a.claim(saga.saga_id) is None  # the creator holds it
    await creator.close()  # and hands it over

    claimed = await a.claim(saga.saga_id)
    assert claimed is not None and claimed.saga_id == saga.saga_id
    assert a.holds_lease(saga.saga_id)
    await a.write(saga.saga_id, begun=an_attempt(1))

    await replicas.expire(a, saga.saga_id)  # A is paused past its lease...
    assert not a.holds_lease(saga.saga_id)
    assert await b.claim(saga.saga_id) is not None  # ...and B takes the saga over
    assert b.holds_lease(saga.saga_id)
    assert await replicas.lease(saga.saga_id) == (b.owner, 3)

    with pytest.raises(LeaseLost):
        await a.write(saga.saga_id, finished=ok(an_attempt(1)), begun=an_attempt(1, "reserve"))
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


async def test_a_stale_epoch_of_the_same_owner_is_fenced_out(replicas: Replicas) -> None:
    """A replica restarted under the same identity claims its saga again: the owner
    matches the old incarnation's, only the epoch tells them apart. The old one's
    write in flight (an outcome and the next attempt) is refused, and writes nothing."""
    old = await replicas.open(owner="replica-1")
    saga, _ = await old.create(a_saga())
    await old.write(saga.saga_id, begun=an_attempt(1))

    new = await replicas.open(owner="replica-1")
    assert await new.claim(saga.saga_id) is not None  # its own name: no need to wait
    assert await replicas.lease(saga.saga_id) == ("replica-1", 2)
    assert old.holds_lease(saga.saga_id)  # by its own clock: it cannot know yet

    with pytest.raises(LeaseLost):
        await old.write(saga.saga_id, finished=ok(an_attempt(1)), begun=an_attempt(1, "reserve"))
    with pytest.raises(LeaseLost):
        await old.write(saga.saga_id, status=StatusChange(SagaStatus.COMPLETED, now_ms()))
    assert not old.holds_lease(saga.saga_id)  # it knows now

    record = await new.load(saga.saga_id)
    assert record is not None and record.status is SagaStatus.RUNNING
    assert [(x.step, x.number, x.code) for x in record.attempts] == [("charge", 1, None)]
    assert await new.close_unrecorded_attempts(saga.saga_id, now_ms(), "UNRECORDED") == 1
    await new.write(saga.saga_id, begun=an_attempt(2))
    assert await replicas.lease(saga.saga_id) == ("replica-1", 2)


async def test_a_stale_epoch_cannot_close_attempts_or_renew(replicas: Replicas) -> None:
    old = await replicas.open(owner="replica-1")
    saga, _ = await old.create(a_saga())
    await old.write(saga.saga_id, begun=an_attempt(1))
    new = await replicas.open(owner="replica-1")
    assert await new.claim(saga.saga_id) is not None

    renewal = await old.renew([saga.saga_id])
    assert renewal.lost == {saga.saga_id}
    assert not old.holds_lease(saga.saga_id)
    other = await replicas.open(owner="replica-1")  # the same name, yet another epoch
    assert await other.claim(saga.saga_id) is not None
    with pytest.raises(LeaseLost):
        await new.close_unrecorded_attempts(saga.saga_id, now_ms(), "UNRECORDED")

    record = await other.load(saga.saga_id)
    assert record is not None
    assert [(x.number, x.code) for x in record.attempts] == [(1, None)]


async def test_a_lease_given_up_is_not_taken_back_by_a_late_write(replicas: Replicas) -> None:
    """A lease with no owner (handed over by `close`, freed by `resume`) is anyone's to
    claim: a write of the former owner still in flight is refused, though its epoch is
    still the saga's, and leaves the lease free."""
    a = await replicas.open()
    saga, _ = await a.create(a_saga())
    await replicas.sql(  # what `close` does to every lease it holds
        "UPDATE sagas SET lease_owner = NULL, lease_expires_at = NULL WHERE saga_id = $1",
        saga.saga_id,
    )

    with pytest.raises(LeaseLost):
        await a.write(saga.saga_id, begun=an_attempt())

    assert await replicas.lease(saga.saga_id) == (None, 1)
    record = await a.load(saga.saga_id)
    assert record is not None and not record.attempts


async def test_the_fence_holds_even_when_clocks_disagree(replicas: Replicas) -> None:
    """A believes (by its own clock) that its lease lasts; by the database's clock it
    has run out and B has claimed the saga: A's write is refused all the same."""
    a = await replicas.open()
    b = await replicas.open()
    saga, _ = await a.create(a_saga())
    await replicas.sql(
        "UPDATE sagas SET lease_expires_at = now() - interval '1 second' WHERE saga_id = $1",
        saga.saga_id,
    )
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
    a = await replicas.open()
    saga, _ = await a.create(a_saga())
    await replicas.expire(a, saga.saga_id)
    assert not a.holds_lease(saga.saga_id)

    await a.write(saga.saga_id, begun=an_attempt(1))

    assert a.holds_lease(saga.saga_id)
    assert await replicas.lease(saga.saga_id) == (a.owner, 1)
    assert await replicas.renewed_for(saga.saga_id) > TTL.total_seconds() / 2


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


async def test_an_expired_lease_is_claimable_by_others(replicas: Replicas) -> None:
    a = await replicas.open()
    b = await replicas.open()
    saga, _ = await a.create(a_saga())

    await replicas.expire(a, saga.saga_id)

    assert saga.saga_id in await b.claimable()
    assert await b.claim(saga.saga_id) is not None
    assert await replicas.lease(saga.saga_id) == (b.owner, 2)


async def test_renew_extends_reports_losses_and_cancels(replicas: Replicas) -> None:
    """Renewal moves the expiry on by the database's clock, even of a lease that ran
    out while nobody claimed it; a lease another replica claimed meanwhile is lost."""
    a = await replicas.open()
    b = await replicas.open()
    kept, _ = await a.create(a_saga())
    taken, _ = await a.create(a_saga())
    await b.request_cancel(kept.saga_id, now_ms())
    await replicas.expire(a, kept.saga_id)  # A was paused: both leases ran out...
    await replicas.expire(a, taken.saga_id)
    assert not a.holds_lease(kept.saga_id)
    assert await b.claim(taken.saga_id) is not None  # ...and B took one of them

    renewal = await a.renew([kept.saga_id, taken.saga_id])

    assert renewal.lost == {taken.saga_id}
    assert renewal.cancel_requested == {kept.saga_id}
    assert a.holds_lease(kept.saga_id)
    assert not a.holds_lease(taken.saga_id)
    assert await replicas.renewed_for(kept.saga_id) > TTL.total_seconds() / 2
    assert await b.claim(kept.saga_id) is None
    assert await replicas.lease(kept.saga_id) == (a.owner, 1)
    with pytest.raises(LeaseLost):
        await a.write(taken.saga_id, begun=an_attempt())
    renewal = await a.renew([kept.saga_id])
    assert not renewal.lost and renewal.cancel_requested == {kept.saga_id}


async def test_a_terminal_status_and_resume_free_the_lease(replicas: Replicas) -> None:
    """The lease's side of what tests/store/test_contract.py checks of every store:
    an ended saga has no owner, and a resumed one is any replica's to claim."""
    a = await replicas.open()
    b = await replicas.open()
    saga, _ = await a.create(a_saga())

    await a.write(saga.saga_id, status=StatusChange(SagaStatus.FAILED, now_ms()))

    assert await replicas.lease(saga.saga_id) == (None, 1)
    assert not a.holds_lease(saga.saga_id)

    await b.resume(saga.saga_id, now_ms())
    assert await b.claim(saga.saga_id) is not None
    assert await replicas.lease(saga.saga_id) == (b.owner, 2)


async def test_close_hands_every_lease_over(replicas: Replicas) -> None:
    a = await PostgresSagaStore(replicas.url, lease_ttl=TTL).open()
    b = await replicas.open()
    sagas = [(await a.create(a_saga()))[0] for _ in range(3)]
    await a.close()

    assert {s.saga_id for s in sagas} <= set(await b.claimable())
    for saga in sagas:
        assert await b.claim(saga.saga_id) is not None


async def test_a_create_racing_an_uncommitted_insert_of_its_saga_id_waits_then_conflicts(
    replicas: Replicas,
) -> None:
    """The other insert is held open in a transaction: the store's insert waits for
    it (a row lock), and once it commits finds the id taken by another saga."""
    a = await replicas.open()
    saga = a_saga()
    conn = await asyncpg.connect(replicas.url)
    try:
        other = conn.transaction()
        await other.start()
        await conn.execute(
            "INSERT INTO sagas (saga_id, saga_type, business_key, input, status,"
            " created_at_epoch_ms, updated_at_epoch_ms, deadline_epoch_ms)"
            " VALUES ($1, 'place_order', 'ord_other', 'other order', 'RUNNING', 1, 1, 1)",
            saga.saga_id,
        )
        racing = asyncio.create_task(a.create(saga))
        await wait_until(
            lambda: replicas.sql(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE wait_event_type = 'Lock' AND datname = current_database()"
            )
        )
        assert not racing.done()
        await other.commit()
        with pytest.raises(SagaIdConflict) as conflict:
            await racing
    finally:
        await conn.close()
    assert conflict.value.existing.business_key == "ord_other"
    assert not a.holds_lease(saga.saga_id)


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
