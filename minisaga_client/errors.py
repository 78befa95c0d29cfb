"""Typed errors of the minisaga client, translated once from gRPC at the boundary.

Every failed call raises a `MinisagaError` subclass named after its gRPC
status code (`InvalidArgument`, `NotFound`, `FailedPrecondition`, ...), with
the `google.rpc` details the server sent in `grpc-status-details-bin`:

    try:
        client.cancel_saga(saga_id)
    except FailedPrecondition as error:
        print(error.reason)  # "SAGA_NOT_CANCELLABLE"

`from_grpc_error` is the one place a `grpc.RpcError` becomes one of these.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2

STATUS_DETAILS_KEY = "grpc-status-details-bin"


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request, from `google.rpc.BadRequest`."""

    field: str
    description: str


class MinisagaError(Exception):
    """A call to a minisaga service failed; subclasses name the status code."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN
    """The gRPC status code (each subclass has its own)."""

    def __init__(
        self,
        message: str,
        *,
        reason: str = "",
        domain: str = "",
        metadata: Mapping[str, str] | None = None,
        field_violations: Iterable[FieldViolation] = (),
        service: str = "",
        address: str = "",
    ) -> None:
        super().__init__(message)
        self.message = message
        """The status message the server (or gRPC itself) gave."""
        self.reason = reason
        """`google.rpc.ErrorInfo.reason`, such as "INSUFFICIENT_STOCK"; empty if none."""
        self.domain = domain
        """`google.rpc.ErrorInfo.domain`, such as "minisaga.inventory.v1"; empty if none."""
        self.metadata: Mapping[str, str] = MappingProxyType(dict(metadata or {}))
        """`google.rpc.ErrorInfo.metadata`, such as {"available": "8"}."""
        self.field_violations = tuple(field_violations)
        """`google.rpc.BadRequest` field violations, on INVALID_ARGUMENT."""
        self.service = service
        """Which service was called: "orchestrator", "payment", "inventory", "shipping"."""
        self.address = address
        """The address the call went to, such as "127.0.0.1:7001"."""

    @property
    def fields(self) -> tuple[str, ...]:
        """The names of the bad fields, in the order the server gave them."""
        return tuple(v.field for v in self.field_violations)

    def __str__(self) -> str:
        reason = f" {self.reason}" if self.reason else ""
        return f"{self.code.name}{reason}: {self.message}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(message={self.message!r}, reason={self.reason!r}, "
            f"service={self.service!r}, address={self.address!r})"
        )


class Cancelled(MinisagaError):
    code = grpc.StatusCode.CANCELLED


class Unknown(MinisagaError):
    code = grpc.StatusCode.UNKNOWN


class InvalidArgument(MinisagaError):
    """The request was refused as malformed; `field_violations` says which fields."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class DeadlineExceeded(MinisagaError):
    """No answer before the call's deadline (the work may still have happened)."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class NotFound(MinisagaError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(MinisagaError):
    """Such as a request_id or saga_id reused with other parameters (IDEMPOTENCY_KEY_REUSED)."""

    code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDenied(MinisagaError):
    code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(MinisagaError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPrecondition(MinisagaError):
    """A business rule refused the call; `reason` says which (INSUFFICIENT_STOCK, ...)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class Aborted(MinisagaError):
    code = grpc.StatusCode.ABORTED


class OutOfRange(MinisagaError):
    code = grpc.StatusCode.OUT_OF_RANGE


class Unimplemented(MinisagaError):
    code = grpc.StatusCode.UNIMPLEMENTED


class Internal(MinisagaError):
    code = grpc.StatusCode.INTERNAL


class Unavailable(MinisagaError):
    """The service could not be reached, or said it cannot serve now (after retries)."""

    code = grpc.StatusCode.UNAVAILABLE


class DataLoss(MinisagaError):
    code = grpc.StatusCode.DATA_LOSS


class Unauthenticated(MinisagaError):
    code = grpc.StatusCode.UNAUTHENTICATED


ERROR_CLASSES: Mapping[grpc.StatusCode, type[MinisagaError]] = MappingProxyType(
    {
        cls.code: cls
        for cls in (
            Cancelled,
            Unknown,
            InvalidArgument,
            DeadlineExceeded,
            NotFound,
            AlreadyExists,
            PermissionDenied,
            ResourceExhausted,
            FailedPrecondition,
            Aborted,
            OutOfRange,
            Unimplemented,
            Internal,
            Unavailable,
            DataLoss,
            Unauthenticated,
        )
    }
)


def from_grpc_error(error: grpc.RpcError, *, service: str = "", address: str = "") -> MinisagaError:
    """The typed exception for a failed call (sync or grpc.aio), with its google.rpc details."""
    code, message, trailers = _status_of(error)
    reason = domain = ""
    metadata: dict[str, str] = {}
    violations: list[FieldViolation] = []
    status = _rich_status(trailers)
    if status is not None:
        message = message or status.message
        for packed in status.details:
            info = error_details_pb2.ErrorInfo()
            bad_request = error_details_pb2.BadRequest()
            if packed.Unpack(info):
                reason, domain, metadata = info.reason, info.domain, dict(info.metadata)
            elif packed.Unpack(bad_request):
                violations.extend(
                    FieldViolation(v.field, v.description) for v in bad_request.field_violations
                )
    cls = ERROR_CLASSES.get(code, Unknown)
    return cls(
        message,
        reason=reason,
        domain=domain,
        metadata=metadata,
        field_violations=violations,
        service=service,
        address=address,
    )


def _status_of(error: grpc.RpcError) -> tuple[grpc.StatusCode, str, Any]:
    """Code, message and trailing metadata; grpc.aio errors and sync calls both have them."""
    code = getattr(error, "code", None)
    details = getattr(error, "details", None)
    trailing = getattr(error, "trailing_metadata", None)
    status_code = code() if callable(code) else None
    return (
        status_code if isinstance(status_code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN,
        str((details() if callable(details) else None) or ""),
        trailing() if callable(trailing) else None,
    )


def _rich_status(trailers: Any) -> status_pb2.Status | None:
    """The google.rpc.Status in `grpc-status-details-bin`, if the server sent one."""
    for key, value in trailers or ():
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            try:
                return status_pb2.Status.FromString(value)
            except DecodeError:
                return None  # a garbled detail must not hide the status code itself
    return None
