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

from orchestrator_server.saga.store import (
    AttemptRecord,
    Cause,
    CompensationFailure,
    IdempotencyConflict,
    Page,
    Phase,
    Renewal,
    SagaFilter,
    SagaRecord,
    SagaStatus,
    StatusChange,
    decode_page_token,
    encode_page_token,
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

_ACTIVE = (SagaStatus.RUNNING.value, SagaStatus.COMPENSATING.value)


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
            if saga.request_id is not None:
                existing = _load_where(conn, "request_id = ?", (saga.request_id,))
                if existing is not None:
                    if existing.input != saga.input or existing.saga_type != saga.saga_type:
                        raise IdempotencyConflict(existing)
                    return existing, False
            conn.execute(
                "INSERT INTO sagas (saga_id, saga_type, business_key, request_id, input, status,"
                " created_at_epoch_ms, updated_at_epoch_ms, deadline_epoch_ms, trace_id,"
                " trace_span_id, saga_version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    saga.saga_id,
                    saga.saga_type,
                    saga.business_key,
                    saga.request_id,
                    saga.input,
                    saga.status.value,
                    saga.created_at_ms,
                    saga.updated_at_ms,
                    saga.deadline_ms,
                    saga.trace_id,
                    saga.trace_span_id,
                    saga.saga_version,
                ),
            )
            for attempt in saga.attempts:
                _insert_attempt(conn, saga.saga_id, attempt)
            return saga, True

        return await self.db.run(create)  # shed when the queue is full

    async def load(self, saga_id: str) -> SagaRecord | None:
        return await self._run(lambda conn: _load_where(conn, "saga_id = ?", (saga_id,)))

    async def load_by_business_key(self, business_key: str) -> SagaRecord | None:
        return await self._run(lambda conn: _load_where(conn, "business_key = ?", (business_key,)))

    async def load_by_request_id(self, request_id: str) -> SagaRecord | None:
        return await self._run(lambda conn: _load_where(conn, "request_id = ?", (request_id,)))

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
                conn.execute(
                    "UPDATE attempts SET finished_at_epoch_ms = ?, code = ?, message = ?,"
                    " reason = ?, output = ?"
                    " WHERE saga_id = ? AND step = ? AND phase = ? AND number = ?",
                    (
                        finished.finished_at_ms,
                        finished.code,
                        finished.message,
                        finished.reason,
                        finished.output,
                        saga_id,
                        finished.step,
                        finished.phase.value,
                        finished.number,
                    ),
                )
            if begun is not None:
                _insert_attempt(conn, saga_id, begun)
            if status is not None:
                _change_status(conn, saga_id, status)

        await self._run(write)

    async def request_cancel(self, saga_id: str, at_ms: int) -> SagaRecord | None:
        def cancel(conn: sqlite3.Connection) -> SagaRecord | None:
            conn.execute(
                "UPDATE sagas SET cancel_requested = 1, updated_at_epoch_ms = ?"
                " WHERE saga_id = ? AND status = ?",
                (at_ms, saga_id, SagaStatus.RUNNING.value),
            )
            return _load_where(conn, "saga_id = ?", (saga_id,))

        return await self._run(cancel)

    async def resume(self, saga_id: str, at_ms: int) -> SagaRecord | None:
        def resume(conn: sqlite3.Connection) -> SagaRecord | None:
            conn.execute(
                "UPDATE sagas SET status = ?, updated_at_epoch_ms = ?, ended_at_epoch_ms = NULL"
                " WHERE saga_id = ? AND status = ?",
                (SagaStatus.COMPENSATING.value, at_ms, saga_id, SagaStatus.FAILED.value),
            )
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
                "SELECT saga_id FROM sagas WHERE status IN (?, ?) ORDER BY created_at_epoch_ms",
                _ACTIVE,
            ).fetchall()
            return [row["saga_id"] for row in rows]

        return await self._run(unfinished)

    async def close_unrecorded_attempts(self, saga_id: str, at_ms: int, code: str) -> int:
        def close(conn: sqlite3.Connection) -> int:
            cursor = conn.execute(
                "UPDATE attempts SET finished_at_epoch_ms = ?, code = ?, message = ?"
                " WHERE saga_id = ? AND code IS NULL",
                (
                    at_ms,
                    code,
                    "outcome never recorded: the orchestrator stopped during the call",
                    saga_id,
                ),
            )
            return cursor.rowcount

        return await self._run(close)

    async def list(self, where: SagaFilter, page_size: int, page_token: str) -> Page:
        after = decode_page_token(page_token)

        def page(conn: sqlite3.Connection) -> Page:
            conditions = [sql.format("?") for sql, _ in where.conditions()]
            params = [value for _, value in where.conditions()]
            if after is not None:
                conditions.append("(created_at_epoch_ms, saga_id) < (?, ?)")
                params.extend(after)
            sql = "SELECT * FROM sagas"
            if conditions:
                sql += " WHERE " + " AND ".join(conditions)
            sql += " ORDER BY created_at_epoch_ms DESC, saga_id DESC LIMIT ?"
            rows = conn.execute(sql, (*params, page_size + 1)).fetchall()
            records = [_hydrate(conn, row) for row in rows[:page_size]]
            token = ""
            if len(rows) > page_size:
                last = records[-1]
                token = encode_page_token(last.created_at_ms, last.saga_id)
            return Page(records, token)

        return await self._run(page)

    async def count(self, where: SagaFilter) -> dict[SagaStatus, int]:
        def count(conn: sqlite3.Connection) -> dict[SagaStatus, int]:
            conditions = [sql.format("?") for sql, _ in where.conditions()]
            params = [value for _, value in where.conditions()]
            sql = "SELECT status, count(*) AS n FROM sagas"
            if conditions:
                sql += " WHERE " + " AND ".join(conditions)
            rows = conn.execute(sql + " GROUP BY status", params).fetchall()
            return {SagaStatus(row["status"]): row["n"] for row in rows}

        return await self._run(count)


def _change_status(conn: sqlite3.Connection, saga_id: str, change: StatusChange) -> None:
    conn.execute(
        "UPDATE sagas SET status = ?, updated_at_epoch_ms = ?,"
        " ended_at_epoch_ms = CASE WHEN ? THEN ? ELSE NULL END WHERE saga_id = ?",
        (change.status.value, change.at_ms, change.status.terminal, change.at_ms, saga_id),
    )
    if change.cause is not None:
        cause = change.cause
        conn.execute(
            "UPDATE sagas SET cause_step = ?, cause_code = ?, cause_message = ?,"
            " cause_reason = ?, cause_at_epoch_ms = ? WHERE saga_id = ?",
            (cause.step, cause.code, cause.message, cause.reason, cause.at_ms, saga_id),
        )
    conn.executemany(
        "INSERT INTO compensation_failures (saga_id, step, method, code, message,"
        " attempts, at_epoch_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            (saga_id, f.step, f.method, f.code, f.message, f.attempts, f.at_ms)
            for f in change.failures
        ],
    )


def _load_where(conn: sqlite3.Connection, where: str, params: tuple[str, ...]) -> SagaRecord | None:
    row = conn.execute(f"SELECT * FROM sagas WHERE {where}", params).fetchone()
    return None if row is None else _hydrate(conn, row)


def _hydrate(conn: sqlite3.Connection, row: sqlite3.Row) -> SagaRecord:
    saga_id = row["saga_id"]
    cause = None
    if row["cause_code"] is not None:
        cause = Cause(
            row["cause_step"],
            row["cause_code"],
            row["cause_message"],
            row["cause_reason"],
            row["cause_at_epoch_ms"],
        )
    attempts = [
        AttemptRecord(
            a["step"],
            Phase(a["phase"]),
            a["number"],
            a["method"],
            a["started_at_epoch_ms"],
            a["finished_at_epoch_ms"],
            a["code"],
            a["message"],
            a["reason"],
            a["output"],
        )
        for a in conn.execute("SELECT * FROM attempts WHERE saga_id = ? ORDER BY seq", (saga_id,))
    ]
    failures = [
        CompensationFailure(
            f["step"], f["method"], f["code"], f["message"], f["attempts"], f["at_epoch_ms"]
        )
        for f in conn.execute(
            "SELECT * FROM compensation_failures WHERE saga_id = ? ORDER BY seq", (saga_id,)
        )
    ]
    latest_attempt = max((a.finished_at_ms or a.started_at_ms for a in attempts), default=0)
    return SagaRecord(
        saga_id=saga_id,
        saga_type=row["saga_type"],
        business_key=row["business_key"],
        request_id=row["request_id"],
        input=row["input"],
        status=SagaStatus(row["status"]),
        created_at_ms=row["created_at_epoch_ms"],
        updated_at_ms=max(row["updated_at_epoch_ms"], latest_attempt),
        deadline_ms=row["deadline_epoch_ms"],
        ended_at_ms=row["ended_at_epoch_ms"],
        saga_version=row["saga_version"],
        cause=cause,
        cancel_requested=bool(row["cancel_requested"]),
        attempts=attempts,
        failures=failures,
        trace_id=row["trace_id"],
        trace_span_id=row["trace_span_id"],
    )


def _insert_attempt(conn: sqlite3.Connection, saga_id: str, begun: AttemptRecord) -> None:
    conn.execute(
        "INSERT INTO attempts (saga_id, step, phase, number, method, started_at_epoch_ms)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (saga_id, begun.step, begun.phase.value, begun.number, begun.method, begun.started_at_ms),
    )
