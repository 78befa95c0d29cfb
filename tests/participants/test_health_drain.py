"""Health follows the server's life: SERVING once ready, NOT_SERVING while draining."""

from __future__ import annotations

import asyncio
from pathlib import Path

from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.conftest import start_payment

SERVICE = "minisaga.payment.v1.PaymentService"


async def test_a_watcher_sees_not_serving_when_the_server_drains(tmp_path: Path) -> None:
    server = await start_payment(tmp_path / "payment.db")
    health = health_pb2_grpc.HealthStub(server.channel)
    watch = health.Watch(health_pb2.HealthCheckRequest(service=SERVICE))
    first = await watch.read()
    assert first.status == health_pb2.HealthCheckResponse.SERVING

    stopping = asyncio.create_task(server.running.stop(grace=1.0))
    second = await watch.read()

    assert second.status == health_pb2.HealthCheckResponse.NOT_SERVING
    await stopping
    await server.channel.close(None)
    await server.db.close()
