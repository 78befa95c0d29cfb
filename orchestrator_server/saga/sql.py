"""What the two SQL saga stores share: statements on the tables and columns both
have, the list and count queries, and rows turned into records.

Written once so that a fix lands once (sqlite_store.py, postgres_store.py).
Statements use PostgreSQL's numbered placeholders ($1, $2, ...); the SQLite
store renders them once, at import, as its own numbered ones (`qmark`: ?1,
?2, ...), so a placeholder may stand twice. They use only SQL both dialects
read: no `::` casts, `true`/`false`, `ON CONFLICT DO NOTHING`.

What differs stays in each store: DDL and migrations, leases and fencing
(PostgreSQL only), how a saga's attempts are fetched (one statement with
json_agg on PostgreSQL, three on SQLite's writer thread), and transactions.

Internal module.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol, TypeVar

from orchestrator_server.saga.store import (
    AttemptRecord,
    Cause,
    CompensationFailure,
    IdempotencyConflict,
    Page,
    Phase,
    SagaFilter,
    SagaIdConflict,
    SagaRecord,
    SagaStatus,
    StatusChange,
    decode_page_token,
    encode_page_token,
)

R = TypeVar("R")
_NUMBERED = re.compile(r"\$(\d+)")


def qmark(sql: str) -> str:
    """`sql` with SQLite's numbered placeholders (?1) for PostgreSQL's ($1)."""
    return _NUMBERED.sub(r"?\1", sql)


ACTIVE = f"('{SagaStatus.RUNNING.value}', '{SagaStatus.COMPENSATING.value}')"
"""Statuses of a saga not yet ended, as an SQL list."""

# --- writing ---------------------------------------------------------------

SAGA_COLUMNS = (
    "saga_id",
    "saga_type",
    "business_key",
    "request_id",
    "input",
    "status",
    "created_at_epoch_ms",
    "updated_at_epoch_ms",
    "deadline_epoch_ms",
    "trace_id",
    "trace_span_id",
    "saga_version",
)


def saga_values(saga: SagaRecord) -> tuple[object, ...]:
    """The values of SAGA_COLUMNS, in order: $1 to $12 of `insert_saga`."""
    return (
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
    )


def insert_saga(also: Sequence[tuple[str, str]] = (), returning: str = "") -> str:
    """INSERT of a new saga ($1... its `saga_values`, then the columns `also` sets,
    each with its SQL), doing nothing when its saga id or request id is taken: the
    store then looks the saga up and calls `taken`."""
    columns = [*SAGA_COLUMNS, *(name for name, _ in also)]
    values = [f"${n}" for n in range(1, len(SAGA_COLUMNS) + 1)] + [sql for _, sql in also]
    returned = f" RETURNING {returning}" if returning else ""
    return (
        f"INSERT INTO sagas ({', '.join(columns)}) VALUES ({', '.join(values)})"
        f" ON CONFLICT DO NOTHING{returned}"
    )


def taken(saga: SagaRecord, by_id: SagaRecord | None, by_request: SagaRecord | None) -> SagaRecord:
    """Which saga an insert that did nothing ran into: the same saga made before
    (a retry), returned; or another one, refused. `by_id` is the saga under
    `saga`'s id, `by_request` the one under its request id (each None if none)."""
    if by_id is not None:
        if not _same(by_id, saga):
            raise SagaIdConflict(by_id)
        return by_id
    if by_request is None:  # pragma: no cover - rows are never deleted
        raise RuntimeError(f"saga {saga.saga_id} was not inserted, yet nothing holds its keys")
    if not _same(by_request, saga):
        raise IdempotencyConflict(by_request)
    return by_request


def _same(existing: SagaRecord, saga: SagaRecord) -> bool:
    return existing.saga_type == saga.saga_type and existing.input == saga.input


FINISH_ATTEMPT = (
    "UPDATE attempts SET finished_at_epoch_ms = $1, code = $2, message = $3, reason = $4,"
    " output = $5 WHERE saga_id = $6 AND step = $7 AND phase = $8 AND number = $9"
)


def finish_values(saga_id: str, attempt: AttemptRecord) -> tuple[object, ...]:
    return (
        attempt.finished_at_ms,
        attempt.code,
        attempt.message,
        attempt.reason,
        attempt.output,
        saga_id,
        attempt.step,
        attempt.phase.value,
        attempt.number,
    )


BEGIN_ATTEMPT = (
    "INSERT INTO attempts (saga_id, step, phase, number, method, started_at_epoch_ms)"
    " VALUES ($1, $2, $3, $4, $5, $6)"
)


def begin_values(saga_id: str, attempt: AttemptRecord) -> tuple[object, ...]:
    return (
        saga_id,
        attempt.step,
        attempt.phase.value,
        attempt.number,
        attempt.method,
        attempt.started_at_ms,
    )


def change_status(clear_when_ended: Sequence[str] = ()) -> str:
    """UPDATE of a saga's status: $1 status, $2 at (ms), $3 whether it is terminal,
    $4 the saga id. The columns `clear_when_ended` become NULL at a terminal status."""
    ended = "CAST($3 AS BOOLEAN)"
    sets = [
        "status = $1",
        "updated_at_epoch_ms = CAST($2 AS BIGINT)",
        f"ended_at_epoch_ms = CASE WHEN {ended} THEN CAST($2 AS BIGINT) ELSE NULL END",
        *(f"{c} = CASE WHEN {ended} THEN NULL ELSE {c} END" for c in clear_when_ended),
    ]
    return f"UPDATE sagas SET {', '.join(sets)} WHERE saga_id = $4"


def status_values(saga_id: str, change: StatusChange) -> tuple[object, ...]:
    return (change.status.value, change.at_ms, change.status.terminal, saga_id)


SET_CAUSE = (
    "UPDATE sagas SET cause_step = $1, cause_code = $2, cause_message = $3, cause_reason = $4,"
    " cause_at_epoch_ms = $5 WHERE saga_id = $6"
)


def cause_values(saga_id: str, cause: Cause) -> tuple[object, ...]:
    return (cause.step, cause.code, cause.message, cause.reason, cause.at_ms, saga_id)


ADD_FAILURE = (
    "INSERT INTO compensation_failures (saga_id, step, method, code, message, attempts,"
    " at_epoch_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)"
)


def failure_values(
    saga_id: str, failures: Iterable[CompensationFailure]
) -> list[tuple[object, ...]]:
    return [(saga_id, f.step, f.method, f.code, f.message, f.attempts, f.at_ms) for f in failures]


CLOSE_UNRECORDED = (
    "UPDATE attempts SET finished_at_epoch_ms = $1, code = $2, message = $3"
    " WHERE saga_id = $4 AND code IS NULL"
)


def close_values(saga_id: str, at_ms: int, code: str) -> tuple[object, ...]:
    message = "outcome never recorded: the orchestrator stopped during the call"
    return (at_ms, code, message, saga_id)


REQUEST_CANCEL = (
    "UPDATE sagas SET cancel_requested = true, updated_at_epoch_ms = $1"
    f" WHERE saga_id = $2 AND status = '{SagaStatus.RUNNING.value}'"
)
"""$1 at (ms), $2 the saga id: marks a RUNNING saga to be compensated."""


def resume(clear: Sequence[str] = ()) -> str:
    """UPDATE moving a FAILED saga ($2) back to COMPENSATING at $1 (ms); the
    columns `clear` become NULL."""
    sets = [
        f"status = '{SagaStatus.COMPENSATING.value}'",
        "updated_at_epoch_ms = $1",
        "ended_at_epoch_ms = NULL",
        *(f"{c} = NULL" for c in clear),
    ]
    return (
        f"UPDATE sagas SET {', '.join(sets)}"
        f" WHERE saga_id = $2 AND status = '{SagaStatus.FAILED.value}'"
    )


# --- listing -------------------------------------------------------------------


def filter_sql(where: SagaFilter) -> tuple[list[str], list[object]]:
    """The filter's conditions ($1, $2, ...) and their values.

    Each has an index that leads with its column (sagas_by_status, sagas_by_type,
    sagas_by_business_key, request_id's unique index, sagas_by_created), ending
    in the list's order (created time, saga id).
    """
    found: list[tuple[str, object]] = []
    if where.status is not None:
        found.append(("status", where.status.value))
    if where.saga_type:
        found.append(("saga_type", where.saga_type))
    if where.business_key:
        found.append(("business_key", where.business_key))
    if where.request_id:
        found.append(("request_id", where.request_id))
    conditions = [f"{column} = ${n}" for n, (column, _) in enumerate(found, start=1)]
    values = [value for _, value in found]
    for op, bound in ((">=", where.created_from_ms), ("<", where.created_before_ms)):
        if bound is not None:
            values.append(bound)
            conditions.append(f"created_at_epoch_ms {op} ${len(values)}")
    return conditions, values


def page_query(where: SagaFilter, page_size: int, page_token: str) -> tuple[str, list[object]]:
    """SELECT * FROM sagas for one page of `list`, newest first, and its values:
    one row more than `page_size`, which tells whether another page follows.
    Raises BadPageToken for a token this server did not give out."""
    after = decode_page_token(page_token)
    conditions, values = filter_sql(where)
    if after is not None:
        values.extend(after)
        conditions.append(f"(created_at_epoch_ms, saga_id) < (${len(values) - 1}, ${len(values)})")
    values.append(page_size + 1)
    sql = "SELECT * FROM sagas"
    if conditions:
        sql += " WHERE " + " AND ".join(conditions)
    sql += f" ORDER BY created_at_epoch_ms DESC, saga_id DESC LIMIT ${len(values)}"
    return sql, values


def page_of(rows: Sequence[R], page_size: int, read: Callable[[R], SagaRecord]) -> Page:
    """The page of `page_query`'s rows, each made a record by `read` (but the one
    past `page_size`, which only says that another page follows)."""
    records = [read(row) for row in rows[:page_size]]
    token = ""
    if len(rows) > page_size:
        last = records[-1]
        token = encode_page_token(last.created_at_ms, last.saga_id)
    return Page(records, token)


def count_query(where: SagaFilter) -> tuple[str, list[object]]:
    """SELECT of (status, n) for `count`, and its values."""
    conditions, values = filter_sql(where)
    sql = "SELECT status, count(*) AS n FROM sagas"
    if conditions:
        sql += " WHERE " + " AND ".join(conditions)
    return sql + " GROUP BY status", values


def counts(rows: Iterable[Row]) -> dict[SagaStatus, int]:
    return {SagaStatus(row["status"]): int(row["n"]) for row in rows}


# --- reading -----------------------------------------------------------------


class Row(Protocol):
    """A row by column name: sqlite3.Row, asyncpg.Record."""

    def __getitem__(self, key: str, /) -> Any: ...


ATTEMPT_COLUMNS = (
    "step",
    "phase",
    "number",
    "method",
    "started_at_epoch_ms",
    "finished_at_epoch_ms",
    "code",
    "message",
    "reason",
    "output",
)
"""The columns of an attempt, in the order `record` reads them."""

FAILURE_COLUMNS = ("step", "method", "code", "message", "attempts", "at_epoch_ms")
"""The columns of a compensation failure, in the order `record` reads them."""


def record(
    saga: Row,
    attempts: Iterable[Sequence[Any]],
    failures: Iterable[Sequence[Any]],
    *,
    output: Callable[[Any], bytes] | None = None,
) -> SagaRecord:
    """A saga's record: its `sagas` row, its attempts in log order (ATTEMPT_COLUMNS)
    and its compensation failures (FAILURE_COLUMNS). `output` decodes a stored
    output that is not bytes as read (PostgreSQL's json_agg gives base64)."""
    found = [
        AttemptRecord(
            step=str(a[0]),
            phase=Phase(a[1]),
            number=int(a[2]),
            method=str(a[3]),
            started_at_ms=int(a[4]),
            finished_at_ms=_int_or_none(a[5]),
            code=None if a[6] is None else str(a[6]),
            message=str(a[7]),
            reason=str(a[8]),
            output=a[9] if a[9] is None or output is None else output(a[9]),
        )
        for a in attempts
    ]
    cause = None
    if saga["cause_code"] is not None:
        cause = Cause(
            str(saga["cause_step"]),
            str(saga["cause_code"]),
            str(saga["cause_message"]),
            str(saga["cause_reason"]),
            int(saga["cause_at_epoch_ms"]),
        )
    latest_attempt = max((a.finished_at_ms or a.started_at_ms for a in found), default=0)
    return SagaRecord(
        saga_id=str(saga["saga_id"]),
        saga_type=str(saga["saga_type"]),
        business_key=str(saga["business_key"]),
        request_id=None if saga["request_id"] is None else str(saga["request_id"]),
        input=bytes(saga["input"]),
        status=SagaStatus(saga["status"]),
        created_at_ms=int(saga["created_at_epoch_ms"]),
        updated_at_ms=max(int(saga["updated_at_epoch_ms"]), latest_attempt),
        deadline_ms=int(saga["deadline_epoch_ms"]),
        ended_at_ms=_int_or_none(saga["ended_at_epoch_ms"]),
        saga_version=int(saga["saga_version"]),
        cause=cause,
        cancel_requested=bool(saga["cancel_requested"]),
        attempts=found,
        failures=[
            CompensationFailure(str(f[0]), str(f[1]), str(f[2]), str(f[3]), int(f[4]), int(f[5]))
            for f in failures
        ],
        trace_id=str(saga["trace_id"]),
        trace_span_id=str(saga["trace_span_id"]),
    )


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)
