"""Business errors as types, and their translation to rich gRPC statuses.

A servicer raises `ServiceError` (or one of the helpers below); `rpc_errors`
turns it into a gRPC status carrying `google.rpc.ErrorInfo` and, for
INVALID_ARGUMENT, `google.rpc.BadRequest` field violations. Any other exception
is a bug or a sick store: the caller gets INTERNAL (or UNAVAILABLE for the
store) with an incident id that is also in the server's log, never the
exception's own text, which may name files, SQL or data.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

# ErrorInfo reasons (docs/design.md §2), one place for their spelling.
INVALID_ARGUMENT = "INVALID_ARGUMENT"
INSUFFICIENT_STOCK = "INSUFFICIENT_STOCK"
PAYMENT_DECLINED = "PAYMENT_DECLINED"
INJECTED_FAILURE = "INJECTED_FAILURE"
IDEMPOTENCY_KEY_REUSED = "IDEMPOTENCY_KEY_REUSED"
ALREADY_COMPENSATED = "ALREADY_COMPENSATED"
RECEIPT_MISMATCH = "RECEIPT_MISMATCH"
NOT_FOUND = "NOT_FOUND"
INTERNAL = "INTERNAL"
STORE_UNAVAILABLE = "STORE_UNAVAILABLE"
FAILURE_SWITCHES_DISABLED = "FAILURE_SWITCHES_DISABLED"
OVERLOADED = "OVERLOADED"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


@dataclass
class ServiceError(Exception):
    """A business error: a gRPC code, a message, an ErrorInfo reason."""

    code: grpc.StatusCode
    message: str
    reason: str
    metadata: Mapping[str, str] = field(default_factory=dict)
    violations: Sequence[FieldViolation] = ()
    retry_after: float | None = None
    """Seconds after which a retry may succeed: sent as google.rpc.RetryInfo."""

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"

    def to_status(self, domain: str) -> grpc.Status:
        info = error_details_pb2.ErrorInfo(
            reason=self.reason, domain=domain, metadata=dict(self.metadata)
        )
        details = [_pack(info)]
        if self.violations:
            bad_request = error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=v.field, description=v.description
                    )
                    for v in self.violations
                ]
            )
            details.append(_pack(bad_request))
        if self.retry_after is not None:
            delay = duration_pb2.Duration()
            delay.FromTimedelta(timedelta(seconds=self.retry_after))
            details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
        status = status_pb2.Status(
            code=_CODE_NUMBER[self.code], message=self.message, details=details
        )
        result: grpc.Status = rpc_status.to_status(status)
        return result


def _pack(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


_CODE_NUMBER: dict[grpc.StatusCode, int] = {code: code.value[0] for code in grpc.StatusCode}
assert _CODE_NUMBER[grpc.StatusCode.INVALID_ARGUMENT] == code_pb2.INVALID_ARGUMENT


def invalid_argument(*violations: FieldViolation) -> ServiceError:
    fields = ", ".join(v.field for v in violations)
    detail = "; ".join(f"{v.field}: {v.description}" for v in violations)
    return ServiceError(
        grpc.StatusCode.INVALID_ARGUMENT,
        f"invalid {fields}: {detail}",
        INVALID_ARGUMENT,
        {"fields": fields},
        violations,
    )


def failed_precondition(reason: str, message: str, **metadata: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.FAILED_PRECONDITION, message, reason, metadata)


def already_exists(reason: str, message: str, **metadata: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.ALREADY_EXISTS, message, reason, metadata)


def overloaded(message: str, retry_after: float, **metadata: str) -> ServiceError:
    """RESOURCE_EXHAUSTED: a limit that sheds load was reached; nothing was done,
    and google.rpc.RetryInfo says when to try again."""
    return ServiceError(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        message,
        OVERLOADED,
        metadata,
        retry_after=retry_after,
    )


def not_found(message: str, **metadata: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.NOT_FOUND, message, NOT_FOUND, metadata)


def unexpected(error: Exception, where: str) -> ServiceError:
    """What a caller is told of an exception no handler expected: an incident id
    to quote, logged here with the whole traceback, and no more."""
    incident = uuid.uuid4().hex[:16]
    # A busy or failing database (SQLite's "database is locked", a full disk, a
    # lost connection) is worth retrying; anything else is a bug of ours.
    if isinstance(error, sqlite3.OperationalError | OSError):
        log.warning("%s: store unavailable (incident %s)", where, incident, exc_info=error)
        return ServiceError(
            grpc.StatusCode.UNAVAILABLE,
            f"the service's database is unavailable; try again (incident {incident})",
            STORE_UNAVAILABLE,
            {"incident": incident},
        )
    log.error("%s: unexpected error (incident %s)", where, incident, exc_info=error)
    return ServiceError(
        grpc.StatusCode.INTERNAL,
        f"internal error (incident {incident}); the server's log has the details",
        INTERNAL,
        {"incident": incident},
    )


def _as_service_error(error: Exception, where: str) -> ServiceError:
    """A business error as it is; anything else as `unexpected` makes it."""
    return error if isinstance(error, ServiceError) else unexpected(error, where)


async def abort(context: Context, error: ServiceError, domain: str) -> None:
    """Ends the call with `error` as a rich status (raises grpc's AbortError)."""
    status = error.to_status(domain)
    # abort() with the status's trailers is abort_with_status(), typed.
    await context.abort(status.code, status.details, status.trailing_metadata)


Context = grpc.aio.ServicerContext[Any, Any]
_Self = TypeVar("_Self")
_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")
Handler = Callable[[_Self, _Req, Context], Awaitable[_Resp]]
StreamHandler = Callable[[_Self, _Req, Context], AsyncIterator[_Resp]]


def rpc_errors(
    domain: str,
) -> Callable[[Handler[_Self, _Req, _Resp]], Handler[_Self, _Req, _Resp]]:
    """Decorates a servicer method: a raised ServiceError becomes a rich status,
    any other exception INTERNAL or UNAVAILABLE with an incident id."""

    def decorate(method: Handler[_Self, _Req, _Resp]) -> Handler[_Self, _Req, _Resp]:
        @functools.wraps(method)
        async def wrapper(self: _Self, request: _Req, context: Context) -> _Resp:
            try:
                return await method(self, request, context)
            except grpc.aio.AbortError:
                raise  # the handler ended the call itself
            except Exception as error:
                await abort(context, _as_service_error(error, method.__qualname__), domain)
                raise AssertionError("abort returned") from error

        return wrapper

    return decorate


def stream_errors(
    domain: str,
) -> Callable[[StreamHandler[_Self, _Req, _Resp]], StreamHandler[_Self, _Req, _Resp]]:
    """`rpc_errors` for a server-streaming method (an async generator)."""

    def decorate(method: StreamHandler[_Self, _Req, _Resp]) -> StreamHandler[_Self, _Req, _Resp]:
        @functools.wraps(method)
        async def wrapper(self: _Self, request: _Req, context: Context) -> AsyncIterator[_Resp]:
            try:
                async for item in method(self, request, context):
                    yield item
            except grpc.aio.AbortError:
                raise
            except Exception as error:
                await abort(context, _as_service_error(error, method.__qualname__), domain)

        return wrapper

    return decorate


def code_of(context: Context, error: BaseException | None = None) -> grpc.StatusCode:
    """The status the caller gets for a call whose handler returned (`error` None) or
    raised `error`, as an interceptor around the handler sees it: the code the
    handler aborted with or set, else OK when it returned; UNKNOWN when it raised
    anything else; DEADLINE_EXCEEDED or CANCELLED when gRPC cancelled it (its
    deadline passed, or its caller went away)."""
    code = _as_code(context.code())
    if error is None:
        return code or grpc.StatusCode.OK
    if code is not None and code is not grpc.StatusCode.OK:  # an abort, or set, then raised
        return code
    if isinstance(error, (asyncio.CancelledError, GeneratorExit)):
        remaining = context.time_remaining()
        if remaining is not None and remaining <= _DEADLINE_SLACK:
            return grpc.StatusCode.DEADLINE_EXCEEDED
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN


# The caller's own timer fires first and cancels the call a little before the
# server's copy of its deadline passes: within this, a cancel is the deadline.
_DEADLINE_SLACK = 0.05


def _as_code(code: Any) -> grpc.StatusCode | None:
    """grpc.aio gives a StatusCode, its number, or None."""
    if code is None or isinstance(code, grpc.StatusCode):
        return code
    return _BY_NUMBER.get(code, grpc.StatusCode.UNKNOWN)


_BY_NUMBER = {status.value[0]: status for status in grpc.StatusCode}
