"""The saga log: its records, and the boundary every store implements.

The log is written ahead: an attempt is recorded before its RPC is sent and
its outcome after, so after a crash the engine knows exactly which calls may
have happened. A saga's state is derived from its attempts; the `status`
column is kept alongside so that listing and recovery need no replay.
"""

from __future__ import annotations

import base64
import enum
import json
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Protocol

from service_kit.validation import check_saga_id

MAX_STEP_OUTPUT_BYTES = 64 * 1024
"""The largest response an action may return: it is kept in the log with the
attempt's outcome. A larger one fails the step (reason STEP_OUTPUT_TOO_LARGE,
not retried: the same reply would come back) and the saga compensates it."""

DEFAULT_LEASE_TTL = timedelta(seconds=10)
"""How long a replica owns a saga without renewing, on a store replicas share."""


class SagaStatus(enum.StrEnum):
    RUNNING = "RUNNING"
    COMPENSATING = "COMPENSATING"
    COMPLETED = "COMPLETED"
    COMPENSATED = "COMPENSATED"
    FAILED = "FAILED"

    @property
    def terminal(self) -> bool:
        return self in (SagaStatus.COMPLETED, SagaStatus.COMPENSATED, SagaStatus.FAILED)


class Phase(enum.StrEnum):
    ACTION = "action"
    COMPENSATION = "compensation"


@dataclass
class AttemptRecord:
    step: str
    phase: Phase
    number: int
    method: str
    started_at_ms: int
    finished_at_ms: int | None = None
    code: str | None = None
    """Status code name; None while the RPC is in flight (or was, at a crash)."""
    message: str = ""
    reason: str = ""
    output: bytes | None = None
    """An OK action's response, serialized: recorded with its outcome, in the
    same write, and read back by later steps (`SagaContext.output`)."""


@dataclass(frozen=True)
class Cause:
    """What made the saga compensate."""

    step: str
    code: str
    message: str
    reason: str
    at_ms: int


@dataclass(frozen=True)
class CompensationFailure:
    step: str
    method: str
    code: str
    message: str
    attempts: int
    at_ms: int


@dataclass
class SagaRecord:
    saga_id: str
    saga_type: str
    business_key: str
    request_id: str | None
    input: bytes
    status: SagaStatus
    created_at_ms: int
    updated_at_ms: int
    deadline_ms: int
    ended_at_ms: int | None = None
    saga_version: int = 1
    """The version of its definition the saga started on, and finishes on."""
    cause: Cause | None = None
    cancel_requested: bool = False
    attempts: list[AttemptRecord] = field(default_factory=list)
    failures: list[CompensationFailure] = field(default_factory=list)
    trace_id: str = ""
    """The saga's OpenTelemetry trace (32 hex digits), "" when it began untraced."""
    trace_span_id: str = ""
    """Its root span (16 hex digits): attempts made after a recovery are its children."""

    def attempts_of(self, step: str, phase: Phase) -> list[AttemptRecord]:
        return [a for a in self.attempts if a.step == step and a.phase == phase]

    def succeeded(self, step: str, phase: Phase) -> bool:
        return any(a.code == "OK" for a in self.attempts_of(step, phase))


@dataclass(frozen=True)
class StatusChange:
    status: SagaStatus
    at_ms: int
    cause: Cause | None = None
    """Set when the saga starts compensating."""
    failures: Sequence[CompensationFailure] = ()
    """Compensations that ran out of attempts, appended to the saga's list."""


class LeaseLost(Exception):
    """Another replica owns the saga now: this one must not act on it again."""


@dataclass(frozen=True)
class Renewal:
    lost: frozenset[str] = frozenset()
    """Sagas whose lease this replica no longer holds."""
    cancel_requested: frozenset[str] = frozenset()
    """Sagas an operator asked, through any replica, to cancel."""


class BadPageToken(ValueError):
    """A page_token this server did not give out."""


def encode_page_token(created_at_ms: int, saga_id: str) -> str:
    """Keyset pagination: the position after the last saga of a page."""
    return base64.urlsafe_b64encode(json.dumps([created_at_ms, saga_id]).encode()).decode()


MAX_PAGE_TOKEN_LENGTH = 128
"""Longer than any token encode_page_token makes (about 80 characters)."""
_PAGE_TOKEN = re.compile(r"[A-Za-z0-9_-]+={0,2}")


def decode_page_token(token: str) -> tuple[int, str] | None:
    """The position a token stands for. Strict: only a token encode_page_token
    could have made passes, and the error never repeats the token."""
    if not token:
        return None
    bad = BadPageToken("page_token is not one this server gave out")
    if len(token) > MAX_PAGE_TOKEN_LENGTH or not _PAGE_TOKEN.fullmatch(token):
        raise bad
    try:
        created_at_ms, saga_id = json.loads(base64.urlsafe_b64decode(token.encode("ascii")))
    except (ValueError, TypeError) as error:  # binascii.Error is a ValueError
        raise bad from error
    if (
        type(created_at_ms) is not int
        or not 0 <= created_at_ms < 2**63
        or not isinstance(saga_id, str)
        or check_saga_id("page_token", saga_id) is not None
        or encode_page_token(created_at_ms, saga_id) != token  # one spelling per position
    ):
        raise bad
    return created_at_ms, saga_id


class SagaIdConflict(Exception):
    """The saga id a caller chose belongs to another saga (another type or input)."""

    def __init__(self, existing: SagaRecord) -> None:
        super().__init__(f"saga id {existing.saga_id} is taken by another saga")
        self.existing = existing


class IdempotencyConflict(Exception):
    """A request_id was used before with a different input."""

    def __init__(self, existing: SagaRecord) -> None:
        super().__init__(f"request_id {existing.request_id} belongs to saga {existing.saga_id}")
        self.existing = existing


@dataclass(frozen=True)
class Page:
    sagas: Sequence[SagaRecord]
    next_page_token: str


@dataclass(frozen=True)
class SagaFilter:
    """Which sagas a list or a count takes: every field given must match."""

    status: SagaStatus | None = None
    saga_type: str = ""
    business_key: str = ""
    request_id: str = ""
    created_from_ms: int | None = None
    """Created at or after this (epoch ms)."""
    created_before_ms: int | None = None
    """Created before this (epoch ms)."""


class SagaStore(Protocol):
    """Durable storage of sagas. Every method's write is durable when it returns.

    Ownership: a replica acts on a saga only while it holds the saga's lease
    (`create` and `claim` take it, `renew` keeps it, a terminal status gives
    it up). A store shared by several replicas fences `write`: it raises
    LeaseLost when the lease has passed to another replica, so a paused
    former owner never records, and so never sends, another attempt. A store
    for one replica (SQLite) may grant every lease.
    """

    async def create(self, saga: SagaRecord) -> tuple[SagaRecord, bool]:
        """Inserts saga, with the attempts it carries (the first step's first
        attempt, begun at creation: one write fewer), or returns the same saga
        made before: under its saga_id or its request_id (same type and input;
        a retry, or a racing twin).

        Returns (record, created). Raises SagaIdConflict when the saga_id belongs
        to another saga, IdempotencyConflict when the request_id does. Decided
        by the database in one step, so of concurrent creates exactly one
        inserts and the others get its saga or the conflict, never a
        unique-key error.
        """
        ...

    async def load(self, saga_id: str) -> SagaRecord | None: ...

    async def claim(self, saga_id: str) -> SagaRecord | None:
        """Takes the saga's lease if it is free, expired or already ours and
        returns the saga; None when another replica holds it or it has ended."""
        ...

    async def renew(self, saga_ids: Collection[str]) -> Renewal:
        """Extends the leases of the sagas this replica drives."""
        ...

    async def release(self, saga_id: str) -> None:
        """Gives up the saga's lease, if this replica holds it, so another replica
        may claim it at once: one that has the saga's definition, say."""
        ...

    def lease_left(self, saga_id: str) -> float:
        """Seconds this replica may still act on the saga, by its own clock
        (0 when it holds no lease; infinity for a one-replica store). Checked
        right before each RPC, whose deadline it also caps, so no call of a
        former owner is still in flight once another replica may claim the saga."""
        ...

    async def claimable(self) -> list[str]:
        """Every saga not yet ended whose lease is free, expired or this
        replica's own (the engine skips those it drives; the others' runners
        ended early) — for a one-replica store: every saga not yet ended."""
        ...

    async def load_by_business_key(self, business_key: str) -> SagaRecord | None: ...

    async def load_by_request_id(self, request_id: str) -> SagaRecord | None:
        """The saga made for request_id, if any. Like `create`, it may be refused
        (RESOURCE_EXHAUSTED) when the store is overloaded: it serves new requests."""
        ...

    async def write(
        self,
        saga_id: str,
        *,
        finished: AttemptRecord | None = None,
        begun: AttemptRecord | None = None,
        status: StatusChange | None = None,
    ) -> None:
        """Records, in one transaction: an attempt's outcome, a new attempt
        (before its RPC is sent), and a status change — whichever are given.

        One transaction for "step k succeeded, step k+1 is being sent" halves
        the commits a saga waits for, and is just as safe: an outcome lost in
        a crash is an in-doubt attempt, re-sent at recovery. Raises LeaseLost
        when another replica owns the saga.
        """
        ...

    async def request_cancel(self, saga_id: str, at_ms: int) -> SagaRecord | None:
        """Marks a RUNNING saga to be compensated; returns the saga as it is now."""
        ...

    async def resume(self, saga_id: str, at_ms: int) -> SagaRecord | None:
        """Moves a FAILED saga back to COMPENSATING; returns the saga as it is now."""
        ...

    async def close_unrecorded_attempts(self, saga_id: str, at_ms: int, code: str) -> int:
        """Closes attempts whose outcome was never recorded (found at recovery).
        Fenced like `write` (LeaseLost)."""
        ...

    async def list(self, where: SagaFilter, page_size: int, page_token: str) -> Page:
        """The sagas `where` takes, newest first, from after `page_token`."""
        ...

    async def count(self, where: SagaFilter) -> dict[SagaStatus, int]:
        """How many sagas `where` takes, per status (a status with none is left out)."""
        ...
