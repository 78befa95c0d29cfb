"""Reading google.rpc error details off a failed call, written once for every test."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar, cast

import grpc
import pytest
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

M = TypeVar("M", bound=Message)


async def rpc_error(call: Awaitable[object]) -> grpc.aio.AioRpcError:
    """Awaits a call that must fail; returns its error."""
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    return raised.value


def rich_status(error: grpc.aio.AioRpcError) -> status_pb2.Status:
    # AioRpcError has everything from_call reads (code, details, trailing
    # metadata), though grpc-stubs types from_call for the sync grpc.Call only.
    status: status_pb2.Status | None = rpc_status.from_call(cast(grpc.Call, error))
    assert status is not None, f"no google.rpc.Status on {error.code()}: {error.details()}"
    return status


def _unpack(error: grpc.aio.AioRpcError, message_type: type[M]) -> list[M]:
    found = []
    for packed in rich_status(error).details:
        message = message_type()
        if packed.Unpack(message):  # False when the detail is of another type
            found.append(message)
    return found


def error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    """The one ErrorInfo of a failed call."""
    infos = _unpack(error, error_details_pb2.ErrorInfo)
    assert len(infos) == 1, f"expected one ErrorInfo, got {infos}"
    return infos[0]


def bad_request_fields(error: grpc.aio.AioRpcError) -> list[str]:
    """The fields named by the one BadRequest of a failed call, in order."""
    found = _unpack(error, error_details_pb2.BadRequest)
    assert len(found) == 1, f"expected one BadRequest, got {found}"
    violations = found[0].field_violations
    assert all(v.description for v in violations), "a violation without a description"
    return [v.field for v in violations]


def assert_rejected(
    error: grpc.aio.AioRpcError, code: grpc.StatusCode, reason: str
) -> error_details_pb2.ErrorInfo:
    """Asserts the status code and ErrorInfo reason; returns the ErrorInfo."""
    assert error.code() == code, f"{error.code()}: {error.details()}"
    info = error_info(error)
    assert info.reason == reason, info
    assert info.domain.startswith("minisaga."), info
    return info


async def assert_invalid(call: Awaitable[object], *fields: str) -> None:
    """Awaits a call that must be INVALID_ARGUMENT naming exactly `fields`."""
    error = await rpc_error(call)
    assert_rejected(error, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    assert bad_request_fields(error) == list(fields)
