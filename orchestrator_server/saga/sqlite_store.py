"""The saga log in SQLite (WAL, synchronous=FULL), written with group commit.

Schema (three small tables):

    sagas                  one row per saga: identity, input, status, cause
    attempts               the write-ahead log: one row per RPC, its outcome
                           filled in after the call (NULL code = in flight)
    compensation_failures  compensations that ran out of attempts
"""

from __future__ import annotations

import fcntl
import math
import sqlite3
from collections.abc import Callable, Collection
from pathlib import Path
from typing import IO, TypeVar

from orchestrator_server.saga import sql
from orchestrator_server.saga.store import (
    AttemptRecord,
    Page,
    Renewal,
    SagaFilter,
    SagaRecord,
    SagaStatus,
    StatusChange,
)
from service_kit.database import Database, Synchronous
from service_kit.limits import MAX_DB_QUEUE

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS sagas (
    saga_id             TEXT PRIMARY KEY,
    saga_type           TEXT NOT NULL,
    business_key        TEXT NOT NULL,
    request_id          TEXT UNIQUE,           -- client idempotency key, NULL if none
    input               BLOB NOT NULL,         -- the saga's input message, serialized
    status              TEXT NOT NULL,         -- RUNNING, COMPENSATING, COMPLETED, ...
    cancel_requested    INTEGER NOT NULL DEFAULT 0,
    cause_step          TEXT,                  -- what started compensation
    cause_code          TEXT,
    cause_message       TEXT,
    cause_reason        TEXT,
    cause_at_epoch_ms   INTEGER,
    created_at_epoch_ms INTEGER NOT NULL,
    updated_at_epoch_ms INTEGER NOT NULL,  -- last status change; attempts carry their own times
    deadline_epoch_ms   INTEGER NOT NULL,
    ended_at_epoch_ms   INTEGER
);
CREATE INDEX IF NOT EXISTS sagas_by_status ON sagas (status, created_at_epoch_ms, saga_id);
CREATE INDEX IF NOT EXISTS sagas_by_created ON sagas (created_at_epoch_ms, saga_id);
CREATE INDEX IF NOT EXISTS sagas_by_business_key ON sagas (business_key);

CREATE TABLE IF NOT EXISTS attempts (
    seq                  INTEGER PRIMARY KEY AUTOINCREMENT,  -- log order
    saga_id              TEXT NOT NULL REFERENCES sagas (saga_id),
    step                 TEXT NOT NULL,
    phase                TEXT NOT NULL,        -- action | compensation
    number               INTEGER NOT NULL,     -- 1, 2, ... per (step, phase)
    method               TEXT NOT NULL,
    started_at_epoch_ms  INTEGER NOT NULL,
    finished_at_epoch_ms INTEGER,
    code                 TEXT,                 -- NULL until the outcome is recorded
    message              TEXT NOT NULL DEFAULT '',
    reason               TEXT NOT NULL DEFAULT '',
    UNIQUE (saga_id, step, phase, number)
);

CREATE TABLE IF NOT EXISTS compensation_failures (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    saga_id      TEXT NOT NULL REFERENCES sagas (saga_id),
    step         TEXT NOT NULL,
    method       TEXT NOT NULL,
    code         TEXT NOT NULL,
    message      TEXT NOT NULL,
    attempts     INTEGER NOT NULL,
    at_epoch_ms  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS compensation_failures_by_saga ON compensation_failures (saga_id);
"""

# 2: the filters of ListSagas and CountSagas, each by an index that leads with
# its column (status, business_key, request_id and created time had one already).
BY_SAGA_TYPE = """
CREATE INDEX IF NOT EXISTS sagas_by_type ON sagas (saga_type, created_at_epoch_ms, saga_id);
"""

# 3: step outputs (an OK action's response, kept with its outcome) and the
# version of its definition each saga started on (the sagas before it: 1).
OUTPUTS_AND_VERSIONS = """
ALTER TABLE attempts ADD COLUMN output BLOB;
ALTER TABLE sagas ADD COLUMN saga_version INTEGER NOT NULL DEFAULT 1;
"""

# 4: the saga's trace (docs/observability.md): its trace id and root span id,
# so that attempts after a recovery land in the same trace.
TRACE = """
ALTER TABLE sagas ADD COLUMN trace_id TEXT NOT NULL DEFAULT '';
ALTER TABLE sagas ADD COLUMN trace_span_id TEXT NOT NULL DEFAULT '';
"""

# Schema versions, oldest first: a change is a new entry, never an edit.
MIGRATIONS = (SCHEMA, BY_SAGA_TYPE, OUTPUTS_AND_VERSIONS, TRACE)

# The statements both stores share (sql.py), in SQLite's placeholders.
_INSERT_SAGA = sql.qmark(sql.insert_saga())
_FINISH_ATTEMPT = sql.qmark(sql.FINISH_ATTEMPT)
_BEGIN_ATTEMPT = sql.qmark(sql.BEGIN_ATTEMPT)
_CHANGE_STATUS = sql.qmark(sql.change_status())
_SET_CAUSE = sql.qmark(sql.SET_CAUSE)
_ADD_FAILURE = sql.qmark(sql.ADD_FAILURE)
_CLOSE_UNRECORDED = sql.qmark(sql.CLOSE_UNRECORDED)
_REQUEST_CANCEL = sql.qmark(sql.REQUEST_CANCEL)
_RESUME = sql.qmark(sql.resume())
_ATTEMPTS = f"SELECT {', '.join(sql.ATTEMPT_COLUMNS)} FROM attempts WHERE saga_id = ? ORDER BY seq"
_FAILURES = (
    f"SELECT {', '.join(sql.FAILURE_COLUMNS)} FROM compensation_failures"
    " WHERE saga_id = ? ORDER BY seq"
)


class StoreInUse(RuntimeError):
    """Another orchestrator process already drives the sagas of this file."""


class SqliteSagaStore:
    """The saga log of ONE orchestrator: it holds every lease, so a second
    process on the same file would drive the same sagas. An exclusive lock on
    `<db>.lock` (released by the kernel when the process dies) refuses it."""

    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: Synchronous = "FULL",
        max_queue: int = MAX_DB_QUEUE,
        on_commit: Callable[[float, int], None] | None = None,
    ) -> None:
        self.db = Database(
            path,
            schema=MIGRATIONS,
            synchronous=synchronous,
            max_queue=max_queue,
            on_commit=on_commit,
        )
        self._lock_path = Path(f"{path}.lock")
        self._lock: IO[bytes] | None = None

    async def open(self) -> SqliteSagaStore:
        self._lock = self._lock_path.open("ab")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            self._lock = None
            raise StoreInUse(
                f"another orchestrator is using {self.db.path}; one process per SQLite saga "
                "log (run several replicas on PostgreSQL instead)"
            ) from None
        await self.db.open()
        return self

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """A job of the log that waits for room in the writer's queue: only
        `create`, which would add a saga, is refused when the queue is full."""
        return await self.db.run(fn, wait_for_room=True)

    async def close(self) -> None:
        await self.db.close()
        if self._lock is not None:
            self._lock.close()  # closing the file releases the lock
            self._lock = None

    async def create(self, saga: SagaRecord) -> tuple[SagaRecord, bool]:
        def create(conn: sqlite3.Connection) -> tuple[SagaRecord, bool]:
            if conn.execute(_INSERT_SAGA, sql.saga_values(saga)).rowcount == 1:
                for attempt in saga.attempts:
                    conn.execute(_BEGIN_ATTEMPT, sql.begin_values(saga.saga_id, attempt))
                return saga, True
            by_id = _load_where(conn, "saga_id = ?", (saga.saga_id,))
            by_request = None
            if by_id is None and saga.request_id is not None:
                by_request = _load_where(conn, "request_id = ?", (saga.request_id,))
            return sql.taken(saga, by_id, by_request), False

        return await self.db.run(create)  # shed when the queue is full

    async def load(self, saga_id: str) -> SagaRecord | None:
        return await self._run(lambda conn: _load_where(conn, "saga_id = ?", (saga_id,)))

    async def load_by_business_key(self, business_key: str) -> SagaRecord | None:
        return await self._run(lambda conn: _load_where(conn, "business_key = ?", (business_key,)))

    async def load_by_request_id(self, request_id: str) -> SagaRecord | None:
        # Asked by a start at the in-flight limit: shed like `create` when the
        # queue is full, rather than queue reads behind the saga log's writes.
        return await self.db.run(lambda conn: _load_where(conn, "request_id = ?", (request_id,)))

    async def write(
        self,
        saga_id: str,
        *,
        finished: AttemptRecord | None = None,
        begun: AttemptRecord | None = None,
        status: StatusChange | None = None,
    ) -> None:
        def write(conn: sqlite3.Connection) -> None:
            if finished is not None:
                conn.execute(_FINISH_ATTEMPT, sql.finish_values(saga_id, finished))
            if begun is not None:
                conn.execute(_BEGIN_ATTEMPT, sql.begin_values(saga_id, begun))
            if status is not None:
                conn.execute(_CHANGE_STATUS, sql.status_values(saga_id, status))
                if status.cause is not None:
                    conn.execute(_SET_CAUSE, sql.cause_values(saga_id, status.cause))
                if status.failures:
                    conn.executemany(_ADD_FAILURE, sql.failure_values(saga_id, status.failures))

        await self._run(write)

    async def request_cancel(self, saga_id: str, at_ms: int) -> SagaRecord | None:
        def cancel(conn: sqlite3.Connection) -> SagaRecord | None:
            conn.execute(_REQUEST_CANCEL, (at_ms, saga_id))
            return _load_where(conn, "saga_id = ?", (saga_id,))

        return await self._run(cancel)

    async def resume(self, saga_id: str, at_ms: int) -> SagaRecord | None:
        def resume(conn: sqlite3.Connection) -> SagaRecord | None:
            conn.execute(_RESUME, (at_ms, saga_id))
            return _load_where(conn, "saga_id = ?", (saga_id,))

        return await self._run(resume)

    # One orchestrator per SQLite file: it holds every lease.

    async def claim(self, saga_id: str) -> SagaRecord | None:
        record = await self.load(saga_id)
        return None if record is None or record.status.terminal else record

    async def renew(self, saga_ids: Collection[str]) -> Renewal:
        return Renewal()

    async def release(self, saga_id: str) -> None:
        return None

    def lease_left(self, saga_id: str) -> float:
        return math.inf

    async def claimable(self) -> list[str]:
        def unfinished(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute(
                f"SELECT saga_id FROM sagas WHERE status IN {sql.ACTIVE}"
                " ORDER BY created_at_epoch_ms"
            ).fetchall()
            return [row["saga_id"] for row in rows]

        return await self._run(unfinished)

    async def close_unrecorded_attempts(self, saga_id: str, at_ms: int, code: str) -> int:
        return await self._run(
            lambda conn: (
                conn.execute(_CLOSE_UNRECORDED, sql.close_values(saga_id, at_ms, code)).rowcount
            )
        )

    async def list(self, where: SagaFilter, page_size: int, page_token: str) -> Page:
        query, values = sql.page_query(where, page_size, page_token)

        def page(conn: sqlite3.Connection) -> Page:
            rows = conn.execute(sql.qmark(query), values).fetchall()
            return sql.page_of(rows, page_size, lambda row: _read(conn, row))

        return await self._run(page)

    async def count(self, where: SagaFilter) -> dict[SagaStatus, int]:
        query, values = sql.count_query(where)
        return await self._run(lambda conn: sql.counts(conn.execute(sql.qmark(query), values)))


def _load_where(conn: sqlite3.Connection, where: str, params: tuple[str, ...]) -> SagaRecord | None:
    row = conn.execute(f"SELECT * FROM sagas WHERE {where}", params).fetchone()
    return None if row is None else _read(conn, row)


def _read(conn: sqlite3.Connection, row: sqlite3.Row) -> SagaRecord:
    """The saga of a `sagas` row, with its attempts and compensation failures."""
    saga_id = (row["saga_id"],)
    return sql.record(row, conn.execute(_ATTEMPTS, saga_id), conn.execute(_FAILURES, saga_id))
