"""Fixtures: participants served in-process on free loopback ports."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from minisaga.payment.v1 import payment_pb2, payment_pb2_grpc

from payment_server.service import SCHEMA as PAYMENT_SCHEMA
from payment_server.service import PaymentService
from tests.harness import InProcess, serve_in_process

PAYMENT_LIMIT = 100_000


async def start_payment(path: Path, limit: int = PAYMENT_LIMIT) -> InProcess:
    return await serve_in_process(
        path,
        PAYMENT_SCHEMA,
        lambda db, faults: PaymentService(db, limit=limit, faults=faults),
        payment_pb2_grpc.add_PaymentServiceServicer_to_server,
        payment_pb2.DESCRIPTOR.services_by_name["PaymentService"].full_name,
    )


@pytest.fixture
async def payment(tmp_path: Path) -> AsyncIterator[InProcess]:
    server = await start_payment(tmp_path / "payment.db")
    yield server
    await server.stop()


@pytest.fixture
def payment_stub(payment: InProcess) -> payment_pb2_grpc.PaymentServiceAsyncStub:
    return payment_pb2_grpc.PaymentServiceStub(payment.channel)
