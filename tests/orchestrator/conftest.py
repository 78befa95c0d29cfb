"""A whole system in-process: three participants and an orchestrator with fast retries.

Every test that starts an orchestrator runs twice: on the SQLite saga log and
on PostgreSQL (a fresh database of the test's own; skipped, saying why, where
no PostgreSQL server can be started). Take the `store` fixture and pass it to
`start_system`, or take `system`, which does.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from minisaga.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from minisaga.orchestrator.v1 import orchestrator_pb2 as pb
from minisaga.orchestrator.v1 import orchestrator_pb2_grpc
from minisaga.payment.v1 import payment_pb2_grpc
from minisaga.shipping.v1 import shipping_pb2_grpc

from orchestrator_server.app import Orchestrator, OrchestratorConfig, start
from orchestrator_server.saga import OpenableStore, SqliteSagaStore
from orchestrator_server.saga.postgres_store import PostgresSagaStore
from orchestrator_server.saga.retry import RetryPolicy
from tests.conftest import start_inventory, start_payment, start_shipping
from tests.harness import InProcess
from tests.pg import PostgresCluster

STOCK = 100
FAST_ACTIONS = RetryPolicy(
    initial_interval=timedelta(milliseconds=5),
    maximum_interval=timedelta(milliseconds=20),
    maximum_attempts=5,
    attempt_timeout=timedelta(seconds=2),
)
FAST_COMPENSATIONS = RetryPolicy(
    initial_interval=timedelta(milliseconds=5),
    maximum_interval=timedelta(milliseconds=20),
    maximum_attempts=4,
    attempt_timeout=timedelta(seconds=2),
)


@dataclass
class System:
    tmp: Path
    payment: InProcess
    inventory: InProcess
    shipping: InProcess
    config: OrchestratorConfig
    orchestrator: Orchestrator
    channel: grpc.aio.Channel = field(init=False)
    _placing: list[asyncio.Task[Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._connect()

    def _connect(self) -> None:
        self.channel = grpc.aio.insecure_channel(self.orchestrator.address)

    @property
    def api(self) -> orchestrator_pb2_grpc.OrchestratorServiceAsyncStub:
        return orchestrator_pb2_grpc.OrchestratorServiceStub(self.channel)

    @property
    def payments(self) -> payment_pb2_grpc.PaymentServiceAsyncStub:
        return payment_pb2_grpc.PaymentServiceStub(self.payment.channel)

    @property
    def stock(self) -> inventory_pb2_grpc.InventoryServiceAsyncStub:
        return inventory_pb2_grpc.InventoryServiceStub(self.inventory.channel)

    @property
    def shipments(self) -> shipping_pb2_grpc.ShippingServiceAsyncStub:
        return shipping_pb2_grpc.ShippingServiceStub(self.shipping.channel)

    async def place(self, timeout: float = 30.0, **fields: Any) -> pb.PlaceOrderResponse:
        request = pb.PlaceOrderRequest(
            product_id="apple", quantity=2, amount=1200, address="1-2-3 Shibuya, Tokyo"
        )
        for name, value in fields.items():
            setattr(request, name, value)
        return await self.api.PlaceOrder(request, timeout=timeout)

    def place_in_background(self, **fields: Any) -> asyncio.Task[pb.PlaceOrderResponse]:
        """PlaceOrder as a task: with a participant parked, the test learns the
        saga id from the park and goes on while the saga waits there."""
        task = asyncio.create_task(self.place(**fields))
        self._placing.append(task)
        return task

    async def saga(self, saga_id: str) -> pb.Saga:
        return (await self.api.GetSaga(pb.GetSagaRequest(saga_id=saga_id))).saga

    async def available(self, product_id: str = "apple") -> tuple[int, int]:
        stock = (
            await self.stock.GetStock(inventory_pb2.GetStockRequest(product_id=product_id))
        ).stock
        return stock.quantity, stock.reserved

    async def restart_orchestrator(self, config: OrchestratorConfig | None = None) -> None:
        """Stops the orchestrator (its sagas stay in the log) and starts it again."""
        await self.channel.close(None)
        await self.orchestrator.stop()
        self.config = config or self.config
        self.orchestrator = await start(self.config)
        self._connect()

    async def close(self) -> None:
        for task in self._placing:
            task.cancel()
        await asyncio.gather(*self._placing, return_exceptions=True)
        await self.channel.close(None)
        await self.orchestrator.stop()
        for participant in (self.payment, self.inventory, self.shipping):
            await participant.stop()


def timeline(saga: pb.Saga) -> list[str]:
    """The saga's RPCs as a script: "charge OK", "reserve FAILED_PRECONDITION", "undo charge OK"."""
    lines = []
    for execution in saga.steps:
        prefix = "undo " if execution.phase == pb.STEP_PHASE_COMPENSATION else ""
        for attempt in execution.attempts:
            lines.append(f"{prefix}{execution.step} {attempt.code}")
    return lines


async def start_system(tmp: Path, store: str = "", **config: Any) -> System:
    """Participants and an orchestrator on `store` ("" for SQLite, or a
    postgresql:// URL); `config` overrides OrchestratorConfig's fields."""
    payment = await start_payment(tmp / "payment.db")
    inventory = await start_inventory(tmp / "inventory.db", {"apple": STOCK, "banana": STOCK})
    shipping = await start_shipping(tmp / "shipping.db")
    settings: dict[str, Any] = {
        "action_retry": FAST_ACTIONS,
        "compensation_retry": FAST_COMPENSATIONS,
        "saga_deadline": timedelta(seconds=30),
        "allow_failure_switches": True,
    }
    settings.update(config)
    orchestrator_config = OrchestratorConfig(
        db=tmp / "orchestrator.db",
        store=store,
        participants={
            "payment": payment.address,
            "inventory": inventory.address,
            "shipping": shipping.address,
        },
        listen="127.0.0.1:0",
        **settings,
    )
    orchestrator = await start(orchestrator_config)
    return System(tmp, payment, inventory, shipping, orchestrator_config, orchestrator)


@pytest.fixture(params=["sqlite", "postgres"])
def store_server(request: pytest.FixtureRequest) -> PostgresCluster | None:
    if request.param == "sqlite":
        return None
    cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
    return cluster


@pytest.fixture
async def store(store_server: PostgresCluster | None) -> str:
    """The saga log of this test's orchestrator: "" (SQLite) or a fresh PostgreSQL database."""
    return "" if store_server is None else await store_server.create_database()


def saga_log(tmp: Path, store: str) -> OpenableStore:
    """The saga log `store` names (as the `store` fixture gives it), not yet open:
    SQLite in `tmp`, or the PostgreSQL database at that URL."""
    return PostgresSagaStore(store) if store else SqliteSagaStore(tmp / "log.db")


@pytest.fixture
async def system(tmp_path: Path, store: str) -> AsyncIterator[System]:
    started = await start_system(tmp_path, store)
    yield started
    await started.close()
