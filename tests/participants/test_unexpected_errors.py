"""An exception no handler expected never reaches the caller as it is: the caller
gets INTERNAL (or UNAVAILABLE when the database is what failed) with an incident
id, and the server's log has the same id with the whole traceback."""

from __future__ import annotations

import logging
import sqlite3
import uuid
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from minisaga.payment.v1 import payment_pb2, payment_pb2_grpc

from tests.harness import InProcess
from tests.rich_errors import error_info, rpc_error

SECRET = "/var/lib/secret.db: SELECT card_number FROM payments"


def failing_database(error: Exception) -> Callable[..., Any]:
    async def run(fn: Any) -> Any:
        raise error

    return run


async def test_a_bug_is_internal_with_an_incident_id_and_no_exception_text(
    payment: InProcess,
    payment_stub: payment_pb2_grpc.PaymentServiceAsyncStub,
    caplog: pytest.LogCaptureFixture,
) -> None:
    payment.db.run = failing_database(RuntimeError(SECRET))  # type: ignore[method-assign]
    request = payment_pb2.ChargeRequest(saga_id=str(uuid.uuid4()), order_id="ord_1", amount=100)

    with caplog.at_level(logging.ERROR):
        error = await rpc_error(payment_stub.Charge(request))

    assert error.code() == grpc.StatusCode.INTERNAL
    assert SECRET not in (error.details() or "")
    assert "RuntimeError" not in (error.details() or "")
    info = error_info(error)
    assert info.reason == "INTERNAL"
    incident = info.metadata["incident"]
    assert incident in (error.details() or "")
    logged = [r for r in caplog.records if incident in r.getMessage()]
    assert logged and logged[0].exc_info is not None  # the log keeps what the reply hides


async def test_a_locked_database_is_unavailable_so_callers_retry(
    payment: InProcess, payment_stub: payment_pb2_grpc.PaymentServiceAsyncStub
) -> None:
    locked = sqlite3.OperationalError("database is locked")
    payment.db.run = failing_database(locked)  # type: ignore[method-assign]
    request = payment_pb2.GetPaymentRequest(saga_id=str(uuid.uuid4()))

    error = await rpc_error(payment_stub.GetPayment(request))

    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert error_info(error).reason == "STORE_UNAVAILABLE"
    assert "locked" not in (error.details() or "")
