"""The saga log on PostgreSQL, shared by several orchestrator replicas.

The same three tables as the SQLite store (sqlite_store.py), plus a lease on
every saga: `lease_owner` (the replica, a UUID per store instance),
`lease_epoch` (bumped by every claim) and `lease_expires_at` (by the database
server's clock, so the replicas' clocks never matter).

Ownership, and why a former owner can never act again:

- `create` inserts a saga already leased to this replica (epoch 1);
  `claim` takes a lease that is free, expired or already ours, bumping the
  epoch. The store remembers, per saga, the epoch it holds.
- `write` is ONE statement (one round trip, one transaction): its first
  part is the fence, which extends the lease only where owner AND epoch are
  still ours, and every other change it makes is conditioned on the fence's
  row. Zero rows means another replica claimed the saga: LeaseLost is raised
  and nothing was written. (`close_unrecorded_attempts`, rare, runs the fence
  and its change as two statements of one transaction.) Because an attempt
  is written ahead of its RPC, a fenced-out owner never records, and so never
  sends, another attempt.
- `lease_left` is the check right before an RPC is sent, by this process's
  own monotonic clock: the lease was last extended no earlier than when that
  statement was sent, so it surely lasts until then + TTL; a safety margin
  (a third of the TTL by default) covers clock rate drift and the RPC itself.
- A terminal status clears the lease; `resume` clears it too (any replica
  may then claim the saga); `close` gives up every lease still held, so a
  replica stopped cleanly hands its sagas over at once instead of after TTL.

Migrations are an ordered list of SQL scripts, applied at start-up inside a
transaction holding a constant advisory lock, and recorded in
`schema_migrations`: replicas starting together apply each version once.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import asyncpg

from orchestrator_server.saga import sql
from orchestrator_server.saga.store import (
    DEFAULT_LEASE_TTL,
    AttemptRecord,
    LeaseLost,
    Page,
    Renewal,
    SagaFilter,
    SagaRecord,
    SagaStatus,
    StatusChange,
)

if TYPE_CHECKING:  # asyncpg-stubs types it as generic; at run time it is not
    from asyncpg.pool import PoolConnectionProxy

    Connection = PoolConnectionProxy[asyncpg.Record]

MIGRATION_LOCK = 0x6D696E6973616761  # "minisaga": pg_advisory_xact_lock key of migrations

MIGRATIONS: Sequence[str] = (
    # 1: the saga log, with a lease on every saga.
    """
    CREATE TABLE sagas (
        saga_id             TEXT PRIMARY KEY,
        saga_type           TEXT NOT NULL,
        business_key        TEXT NOT NULL,
        request_id          TEXT UNIQUE,           -- client idempotency key, NULL if none
        input               BYTEA NOT NULL,        -- the saga's input message, serialized
        status              TEXT NOT NULL,         -- RUNNING, COMPENSATING, COMPLETED, ...
        cancel_requested    BOOLEAN NOT NULL DEFAULT false,
        cause_step          TEXT,                  -- what started compensation
        cause_code          TEXT,
        cause_message       TEXT,
        cause_reason        TEXT,
        cause_at_epoch_ms   BIGINT,
        created_at_epoch_ms BIGINT NOT NULL,
        updated_at_epoch_ms BIGINT NOT NULL,
        deadline_epoch_ms   BIGINT NOT NULL,
        ended_at_epoch_ms   BIGINT,
        lease_owner         TEXT,                  -- replica driving the saga, NULL if none
        lease_epoch         BIGINT NOT NULL DEFAULT 0,  -- +1 at every claim: the fence
        lease_expires_at    TIMESTAMPTZ            -- by the database server's clock
    );
    CREATE INDEX sagas_by_status ON sagas (status, created_at_epoch_ms, saga_id);
    CREATE INDEX sagas_by_created ON sagas (created_at_epoch_ms, saga_id);
    CREATE INDEX sagas_by_business_key ON sagas (business_key);
    CREATE INDEX sagas_active ON sagas (created_at_epoch_ms)
        WHERE status IN ('RUNNING', 'COMPENSATING');

    CREATE TABLE attempts (
        seq                  BIGSERIAL PRIMARY KEY,  -- log order
        saga_id              TEXT NOT NULL REFERENCES sagas (saga_id),
        step                 TEXT NOT NULL,
        phase                TEXT NOT NULL,        -- action | compensation
        number               INTEGER NOT NULL,     -- 1, 2, ... per (step, phase)
        method               TEXT NOT NULL,
        started_at_epoch_ms  BIGINT NOT NULL,
        finished_at_epoch_ms BIGINT,
        code                 TEXT,                 -- NULL until the outcome is recorded
        message              TEXT NOT NULL DEFAULT '',
        reason               TEXT NOT NULL DEFAULT '',
        UNIQUE (saga_id, step, phase, number)
    );

    CREATE TABLE compensation_failures (
        seq          BIGSERIAL PRIMARY KEY,
        saga_id      TEXT NOT NULL REFERENCES sagas (saga_id),
        step         TEXT NOT NULL,
        method       TEXT NOT NULL,
        code         TEXT NOT NULL,
        message      TEXT NOT NULL,
        attempts     INTEGER NOT NULL,
        at_epoch_ms  BIGINT NOT NULL
    );
    CREATE INDEX compensation_failures_by_saga ON compensation_failures (saga_id);
    """,
    # 2: the filters of ListSagas and CountSagas, each by an index that leads
    # with its column (status, business_key, request_id, created time had one).
    """
    CREATE INDEX sagas_by_type ON sagas (saga_type, created_at_epoch_ms, saga_id);
    """,
    # 3: step outputs (an OK action's response, kept with its outcome) and the
    # version of its definition each saga started on (the sagas before it: 1).
    """
    ALTER TABLE attempts ADD COLUMN output BYTEA;
    ALTER TABLE sagas ADD COLUMN saga_version INTEGER NOT NULL DEFAULT 1;
    """,
    # 4: the saga's trace (docs/observability.md): its trace id and root span
    # id, so that attempts made after a recovery, on any replica, join its trace.
    """
    ALTER TABLE sagas ADD COLUMN trace_id TEXT NOT NULL DEFAULT '';
    ALTER TABLE sagas ADD COLUMN trace_span_id TEXT NOT NULL DEFAULT '';
    """,
)

_ACTIVE = sql.ACTIVE
_EXPIRY = "now() + $%d::bigint * interval '1 millisecond'"
_LEASE = ("lease_owner", "lease_expires_at")

# A new saga, leased to its creator ($13) at epoch 1 for $14 ms, with the
# attempts it carries ($15 to $19, as arrays).
_CREATE = (
    "WITH s AS ("
    + sql.insert_saga(
        (("lease_owner", "$13"), ("lease_epoch", "1"), ("lease_expires_at", _EXPIRY % 14)),
        returning="saga_id, lease_epoch",
    )
    + "), a AS (INSERT INTO attempts (saga_id, step, phase, number, method,"
    " started_at_epoch_ms)"
    " SELECT s.saga_id, b.* FROM s,"
    " unnest($15::text[], $16::text[], $17::int[], $18::text[], $19::bigint[]) AS b)"
    " SELECT lease_epoch FROM s"
)
_RESUME = sql.resume(clear=_LEASE)  # any replica may claim it

# One statement reads a saga with its attempts and failures: one snapshot, one round trip.
_ATTEMPT_ARRAY = ", ".join(
    "encode(a.output, 'base64')" if c == "output" else f"a.{c}" for c in sql.ATTEMPT_COLUMNS
)
_SELECT = f"""
SELECT s.*,
    (SELECT COALESCE(json_agg(json_build_array({_ATTEMPT_ARRAY}) ORDER BY a.seq), '[]')
        FROM attempts a WHERE a.saga_id = s.saga_id) AS attempt_rows,
    (SELECT COALESCE(json_agg(json_build_array(
            {", ".join(f"f.{c}" for c in sql.FAILURE_COLUMNS)}) ORDER BY f.seq), '[]')
        FROM compensation_failures f WHERE f.saga_id = s.saga_id) AS failure_rows
"""


class SchemaTooNew(RuntimeError):
    """The database was migrated by a newer orchestrator than this one."""


@dataclass
class _Lease:
    epoch: int
    valid_until: float
    """By the store's clock (time.monotonic): until when the lease surely has not run out."""


class PostgresSagaStore:
    """SagaStore on PostgreSQL for several replicas: leases, fenced writes."""

    def __init__(
        self,
        dsn: str,
        *,
        lease_ttl: timedelta = DEFAULT_LEASE_TTL,
        safety_margin: timedelta | None = None,
        owner: str | None = None,
        min_connections: int = 1,
        max_connections: int = 10,
        clock: Callable[[], float] = time.monotonic,
        on_commit: Callable[[float, int], None] | None = None,
    ) -> None:
        """`clock` is this replica's own monotonic clock (seconds), by which it
        trusts a lease; tests pass one they can move. `on_commit` (metrics) is
        called after each committed write of the log with its duration in
        seconds and the writes it committed (one: each is its own transaction;
        PostgreSQL itself groups concurrent commits into one WAL flush)."""
        if lease_ttl <= timedelta(0):
            raise ValueError("lease_ttl must be positive")
        self.dsn = dsn
        self.owner = owner or str(uuid.uuid4())
        """This replica's identity in `lease_owner`."""
        self.lease_ttl = lease_ttl
        margin = lease_ttl / 3 if safety_margin is None else safety_margin
        if not timedelta(0) <= margin < lease_ttl:
            raise ValueError("safety_margin must be at least 0 and below lease_ttl")
        self._ttl_ms = max(1, int(lease_ttl.total_seconds() * 1000))
        self._trusted_for = (lease_ttl - margin).total_seconds()
        self._min_connections = min_connections
        self._max_connections = max_connections
        self._pool: asyncpg.Pool[asyncpg.Record] | None = None
        self._leases: dict[str, _Lease] = {}
        self._clock = clock
        self._on_commit = on_commit

    async def open(self) -> PostgresSagaStore:
        pool = await asyncpg.create_pool(
            self.dsn,
            min_size=self._min_connections,
            max_size=self._max_connections,
            reset=_keep_session,
        )
        try:
            async with pool.acquire() as conn:
                await migrate(conn)
        except BaseException:
            await pool.close()
            raise
        self._pool = pool
        return self

    async def close(self) -> None:
        """Gives up every lease still held (another replica may claim those sagas at
        once) and closes the pool. Call it once nothing drives sagas any more."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            await pool.execute(
                "UPDATE sagas SET lease_owner = NULL, lease_expires_at = NULL"
                f" WHERE lease_owner = $1 AND status IN {_ACTIVE}",
                self.owner,
            )
        finally:
            self._leases.clear()
            await pool.close()

    @property
    def pool(self) -> asyncpg.Pool[asyncpg.Record]:
        if self._pool is None:
            raise RuntimeError("the store is not open")
        return self._pool

    # --- creating and reading ----------------------------------------------

    async def create(self, saga: SagaRecord) -> tuple[SagaRecord, bool]:
        started = self._clock()
        async with self.pool.acquire() as conn:
            timer = time.perf_counter()
            # One statement, one round trip: the saga and the attempts it
            # carries (the attempts' insert sees only the saga row just made).
            epoch = await conn.fetchval(
                _CREATE,
                *sql.saga_values(saga),
                self.owner,
                self._ttl_ms,
                [a.step for a in saga.attempts],
                [a.phase.value for a in saga.attempts],
                [a.number for a in saga.attempts],
                [a.method for a in saga.attempts],
                [a.started_at_ms for a in saga.attempts],
            )
            if self._on_commit is not None:
                self._on_commit(time.perf_counter() - timer, 1)
            if epoch is not None:
                if not saga.status.terminal:
                    self._leases[saga.saga_id] = _Lease(int(epoch), started + self._trusted_for)
                return saga, True
            # Its saga id or request id was taken (the insert waited for a racing one).
            by_id = await _load_where(conn, "s.saga_id = $1", saga.saga_id)
            by_request = None
            if by_id is None and saga.request_id is not None:
                by_request = await _load_where(conn, "s.request_id = $1", saga.request_id)
        return sql.taken(saga, by_id, by_request), False

    async def load(self, saga_id: str) -> SagaRecord | None:
        async with self.pool.acquire() as conn:
            return await _load_where(conn, "s.saga_id = $1", saga_id)

    async def load_by_business_key(self, business_key: str) -> SagaRecord | None:
        async with self.pool.acquire() as conn:
            return await _load_where(conn, "s.business_key = $1", business_key)

    async def load_by_request_id(self, request_id: str) -> SagaRecord | None:
        async with self.pool.acquire() as conn:
            return await _load_where(conn, "s.request_id = $1", request_id)

    # --- ownership ----------------------------------------------------------

    async def claim(self, saga_id: str) -> SagaRecord | None:
        started = self._clock()
        async with self.pool.acquire() as conn:
            epoch = await conn.fetchval(
                f"UPDATE sagas SET lease_owner = $2, lease_epoch = lease_epoch + 1,"
                f" lease_expires_at = {_EXPIRY % 3}"
                f" WHERE saga_id = $1 AND status IN {_ACTIVE}"
                " AND (lease_owner IS NULL OR lease_owner = $2 OR lease_expires_at < now())"
                " RETURNING lease_epoch",
                saga_id,
                self.owner,
                self._ttl_ms,
            )
            if epoch is None:
                return None  # another replica holds it, or it has ended
            self._leases[saga_id] = _Lease(int(epoch), started + self._trusted_for)
            # Ours now: nothing but a cancel request changes it until we write.
            return await _load_where(conn, "s.saga_id = $1", saga_id)

    async def release(self, saga_id: str) -> None:
        lease = self._leases.pop(saga_id, None)
        if lease is None:
            return
        await self.pool.execute(
            "UPDATE sagas SET lease_owner = NULL, lease_expires_at = NULL"
            " WHERE saga_id = $1 AND lease_owner = $2 AND lease_epoch = $3",
            saga_id,
            self.owner,
            lease.epoch,
        )

    async def renew(self, saga_ids: Collection[str]) -> Renewal:
        held = {s: self._leases[s].epoch for s in saga_ids if s in self._leases}
        if not held:
            return Renewal()
        started = self._clock()
        # Rows are locked in saga_id order, so two replicas renewing never deadlock.
        rows = await self.pool.fetch(
            "WITH mine AS ("
            " SELECT s.saga_id FROM sagas s"
            " JOIN unnest($1::text[], $2::bigint[]) AS l (saga_id, epoch)"
            " ON s.saga_id = l.saga_id AND s.lease_epoch = l.epoch"
            " WHERE s.lease_owner = $3"
            " ORDER BY s.saga_id FOR UPDATE OF s)"
            f" UPDATE sagas s SET lease_expires_at = {_EXPIRY % 4}"
            " FROM mine WHERE s.saga_id = mine.saga_id"
            " RETURNING s.saga_id, s.cancel_requested",
            list(held),
            list(held.values()),
            self.owner,
            self._ttl_ms,
        )
        renewed = {str(row["saga_id"]) for row in rows}
        lost: set[str] = set()
        for saga_id, epoch in held.items():
            lease = self._leases.get(saga_id)
            if lease is None or lease.epoch != epoch:
                continue  # ended or re-claimed meanwhile: not this renewal's to judge
            if saga_id in renewed:
                lease.valid_until = max(lease.valid_until, started + self._trusted_for)
            else:
                del self._leases[saga_id]
                lost.add(saga_id)
        cancels = frozenset(str(row["saga_id"]) for row in rows if row["cancel_requested"])
        return Renewal(lost=frozenset(lost), cancel_requested=cancels)

    def lease_left(self, saga_id: str) -> float:
        lease = self._leases.get(saga_id)
        return 0.0 if lease is None else max(0.0, lease.valid_until - self._clock())

    def holds_lease(self, saga_id: str) -> bool:
        return self.lease_left(saga_id) > 0

    async def claimable(self) -> list[str]:
        """Sagas not yet ended that this replica may claim: their lease is free,
        expired, or its own (its runner ended without finishing the saga)."""
        rows = await self.pool.fetch(
            f"SELECT saga_id FROM sagas WHERE status IN {_ACTIVE}"
            " AND (lease_owner IS NULL OR lease_owner = $1 OR lease_expires_at < now())"
            " ORDER BY created_at_epoch_ms",
            self.owner,
        )
        return [str(row["saga_id"]) for row in rows]

    # --- fenced writes --------------------------------------------------------

    async def write(
        self,
        saga_id: str,
        *,
        finished: AttemptRecord | None = None,
        begun: AttemptRecord | None = None,
        status: StatusChange | None = None,
    ) -> None:
        lease = self._leases.get(saga_id)
        if lease is None:
            raise LeaseLost(f"saga {saga_id}: this replica holds no lease on it")
        sql, args = _fenced_write(
            [saga_id, self.owner, lease.epoch], self._ttl_ms, finished, begun, status
        )
        started = self._clock()
        async with self.pool.acquire() as conn:
            timer = time.perf_counter()
            fenced = await conn.fetchval(sql, *args)
            if self._on_commit is not None:
                self._on_commit(time.perf_counter() - timer, 1)
        self._after_fence(saga_id, lease, started, fenced=bool(fenced), ends=_ends(status))

    async def close_unrecorded_attempts(self, saga_id: str, at_ms: int, code: str) -> int:
        """Fenced like `write`: only the saga's owner closes its open attempts."""
        closed = 0

        async def close(conn: Connection) -> None:
            nonlocal closed
            closed = len(
                await conn.fetch(
                    sql.CLOSE_UNRECORDED + " RETURNING seq",
                    *sql.close_values(saga_id, at_ms, code),
                )
            )

        await self._fenced(saga_id, close, ends=False)
        return closed

    async def _fenced(
        self, saga_id: str, changes: Callable[[Connection], Awaitable[None]], *, ends: bool
    ) -> None:
        """Runs changes in one transaction after the fence: the lease, extended, must
        still be ours (owner and epoch); otherwise LeaseLost and nothing is written."""
        lease = self._leases.get(saga_id)
        if lease is None:
            raise LeaseLost(f"saga {saga_id}: this replica holds no lease on it")
        started = self._clock()
        async with self.pool.acquire() as conn:
            timer = time.perf_counter()
            async with conn.transaction():
                fenced = await conn.fetchval(
                    f"UPDATE sagas SET lease_expires_at = {_EXPIRY % 4}"
                    " WHERE saga_id = $1 AND lease_owner = $2 AND lease_epoch = $3"
                    " RETURNING true",
                    saga_id,
                    self.owner,
                    lease.epoch,
                    self._ttl_ms,
                )
                if fenced:
                    await changes(conn)
            if self._on_commit is not None:
                self._on_commit(time.perf_counter() - timer, 1)
        self._after_fence(saga_id, lease, started, fenced=bool(fenced), ends=ends)

    def _after_fence(
        self, saga_id: str, lease: _Lease, started: float, *, fenced: bool, ends: bool
    ) -> None:
        """Keeps the lease's bookkeeping after a fenced write: LeaseLost if the fence
        found it taken (the write changed nothing)."""
        if not fenced:
            if self._leases.get(saga_id) is lease:
                del self._leases[saga_id]
            raise LeaseLost(f"saga {saga_id}: another replica took it over")
        if ends:
            self._leases.pop(saga_id, None)  # the terminal status cleared the lease
        else:
            lease.valid_until = max(lease.valid_until, started + self._trusted_for)

    # --- operator actions, from any replica -------------------------------------

    async def request_cancel(self, saga_id: str, at_ms: int) -> SagaRecord | None:
        async with self.pool.acquire() as conn:
            await conn.execute(sql.REQUEST_CANCEL, at_ms, saga_id)
            return await _load_where(conn, "s.saga_id = $1", saga_id)

    async def resume(self, saga_id: str, at_ms: int) -> SagaRecord | None:
        """Moves a FAILED saga back to COMPENSATING with no owner: any replica may claim it."""
        async with self.pool.acquire() as conn:
            await conn.execute(_RESUME, at_ms, saga_id)
            return await _load_where(conn, "s.saga_id = $1", saga_id)

    # Last in the class: inside it, `list` names this method, not the builtin.
    async def list(self, where: SagaFilter, page_size: int, page_token: str) -> Page:
        inner, values = sql.page_query(where, page_size, page_token)
        query = f"{_SELECT} FROM ({inner}) s ORDER BY s.created_at_epoch_ms DESC, s.saga_id DESC"
        return sql.page_of(await self.pool.fetch(query, *values), page_size, _read)

    async def count(self, where: SagaFilter) -> dict[SagaStatus, int]:
        query, values = sql.count_query(where)
        return sql.counts(await self.pool.fetch(query, *values))


async def migrate(conn: Connection) -> list[int]:
    """Applies the migrations this database lacks, in order; returns their versions.

    The transaction-scoped advisory lock makes replicas that start together take
    turns: the first applies, the others find everything applied.
    """
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version INTEGER PRIMARY KEY,"
            " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        done = {
            int(row["version"]) for row in await conn.fetch("SELECT version FROM schema_migrations")
        }
        if done and max(done) > len(MIGRATIONS):
            raise SchemaTooNew(
                f"the saga log is at schema version {max(done)}; this orchestrator knows "
                f"versions up to {len(MIGRATIONS)}: upgrade it"
            )
        applied = []
        for version, script in enumerate(MIGRATIONS, start=1):
            if version in done:
                continue
            await conn.execute(script)
            await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
            applied.append(version)
        return applied


def _ends(status: StatusChange | None) -> bool:
    return status is not None and status.status.terminal


def _fenced_write(
    args: list[object],
    ttl_ms: int,
    finished: AttemptRecord | None,
    begun: AttemptRecord | None,
    status: StatusChange | None,
) -> tuple[str, list[object]]:
    """`write` as one statement, and its arguments after `args` ($1 saga_id,
    $2 owner, $3 epoch).

    The fence is the UPDATE of the saga's row (it carries the status change
    too: a row is updated once per statement); every other part reads the
    fence's RETURNING, so it writes nothing when the fence matched no row. One
    statement is one transaction: all of it is committed, or none. The
    statement returns whether the fence held."""
    args = list(args)

    def arg(value: object, cast: str) -> str:
        args.append(value)
        return f"${len(args)}::{cast}"

    def expiry() -> str:
        return f"now() + {arg(ttl_ms, 'bigint')} * interval '1 millisecond'"

    if status is None:
        sets = [f"lease_expires_at = {expiry()}"]
    else:
        at = arg(status.at_ms, "bigint")
        sets = [f"status = {arg(status.status.value, 'text')}", f"updated_at_epoch_ms = {at}"]
        if status.status.terminal:  # the saga has ended: nobody owns it any more
            sets += [f"ended_at_epoch_ms = {at}", "lease_owner = NULL", "lease_expires_at = NULL"]
        else:
            sets += ["ended_at_epoch_ms = NULL", f"lease_expires_at = {expiry()}"]
        if status.cause is not None:
            cause = status.cause
            sets += [
                f"cause_step = {arg(cause.step, 'text')}",
                f"cause_code = {arg(cause.code, 'text')}",
                f"cause_message = {arg(cause.message, 'text')}",
                f"cause_reason = {arg(cause.reason, 'text')}",
                f"cause_at_epoch_ms = {arg(cause.at_ms, 'bigint')}",
            ]
    parts = [
        f"fence AS (UPDATE sagas SET {', '.join(sets)}"
        " WHERE saga_id = $1 AND lease_owner = $2 AND lease_epoch = $3 RETURNING saga_id)"
    ]
    if finished is not None:
        parts.append(
            "finished AS (UPDATE attempts SET"
            f" finished_at_epoch_ms = {arg(finished.finished_at_ms, 'bigint')},"
            f" code = {arg(finished.code, 'text')}, message = {arg(finished.message, 'text')},"
            f" reason = {arg(finished.reason, 'text')}, output = {arg(finished.output, 'bytea')}"
            f" WHERE saga_id = (SELECT saga_id FROM fence) AND step = {arg(finished.step, 'text')}"
            f" AND phase = {arg(finished.phase.value, 'text')}"
            f" AND number = {arg(finished.number, 'integer')})"
        )
    if begun is not None:
        parts.append(
            "begun AS (INSERT INTO attempts (saga_id, step, phase, number, method,"
            f" started_at_epoch_ms) SELECT saga_id, {arg(begun.step, 'text')},"
            f" {arg(begun.phase.value, 'text')}, {arg(begun.number, 'integer')},"
            f" {arg(begun.method, 'text')}, {arg(begun.started_at_ms, 'bigint')} FROM fence)"
        )
    if status is not None and status.failures:
        failures = status.failures
        parts.append(
            "failures AS (INSERT INTO compensation_failures (saga_id, step, method, code,"
            " message, attempts, at_epoch_ms) SELECT fence.saga_id, f.step, f.method, f.code,"
            " f.message, f.attempts, f.at_epoch_ms FROM fence, unnest("
            f"{arg([f.step for f in failures], 'text[]')}, "
            f"{arg([f.method for f in failures], 'text[]')}, "
            f"{arg([f.code for f in failures], 'text[]')}, "
            f"{arg([f.message for f in failures], 'text[]')}, "
            f"{arg([f.attempts for f in failures], 'integer[]')}, "
            f"{arg([f.at_ms for f in failures], 'bigint[]')}) WITH ORDINALITY"
            " AS f (step, method, code, message, attempts, at_epoch_ms, n) ORDER BY f.n)"
        )
    return f"WITH {', '.join(parts)} SELECT EXISTS (SELECT FROM fence)", args


async def _keep_session(conn: object) -> None:
    """The pool's reset: nothing. The store changes no session state (no SET,
    LISTEN, cursor or session-level advisory lock; open transactions asyncpg
    rolls back itself), so asyncpg's default reset query would only cost a
    round trip every time a connection goes back to the pool."""


async def _load_where(conn: Connection, where: str, value: object) -> SagaRecord | None:
    row = await conn.fetchrow(f"{_SELECT} FROM sagas s WHERE {where}", value)
    return None if row is None else _read(row)


def _read(row: asyncpg.Record) -> SagaRecord:
    """The saga of a `_SELECT` row: its attempts and failures came as JSON arrays."""
    return sql.record(
        row,
        _json_rows(row["attempt_rows"]),
        _json_rows(row["failure_rows"]),
        output=base64.b64decode,
    )


def _json_rows(value: Any) -> list[list[Any]]:
    rows = json.loads(value) if isinstance(value, str) else value
    assert isinstance(rows, list)
    return rows
