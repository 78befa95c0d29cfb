"""Fixtures: participants served in-process on free loopback ports."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path

import pytest
from minisaga.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from minisaga.loyalty.v1 import loyalty_pb2, loyalty_pb2_grpc
from minisaga.payment.v1 import payment_pb2, payment_pb2_grpc
from minisaga.shipping.v1 import shipping_pb2, shipping_pb2_grpc

from examples.loyalty.service import SCHEMA as LOYALTY_SCHEMA
from examples.loyalty.service import LoyaltyService
from inventory_server.service import SCHEMA as INVENTORY_SCHEMA
from inventory_server.service import InventoryService, seed_stock
from payment_server.service import SCHEMA as PAYMENT_SCHEMA
from payment_server.service import PaymentService
from shipping_server.service import SCHEMA as SHIPPING_SCHEMA
from shipping_server.service import ShippingService
from tests.harness import InProcess, serve_in_process
from tests.pg import PostgresCluster, PostgresUnavailable, start_cluster

PAYMENT_LIMIT = 100_000


async def start_payment(path: Path, limit: int = PAYMENT_LIMIT) -> InProcess:
    return await serve_in_process(
        path,
        PAYMENT_SCHEMA,
        lambda db, faults: PaymentService(db, limit=limit, faults=faults),
        payment_pb2_grpc.add_PaymentServiceServicer_to_server,
        payment_pb2.DESCRIPTOR.services_by_name["PaymentService"].full_name,
    )


async def start_inventory(path: Path, stock: Mapping[str, int] | None = None) -> InProcess:
    """An Inventory server; `stock` seeds products as `--stock` does (none by default)."""
    server = await serve_in_process(
        path,
        INVENTORY_SCHEMA,
        lambda db, faults: InventoryService(db, faults=faults),
        inventory_pb2_grpc.add_InventoryServiceServicer_to_server,
        inventory_pb2.DESCRIPTOR.services_by_name["InventoryService"].full_name,
    )
    if stock:
        await seed_stock(server.db, stock)
    return server


async def start_shipping(path: Path) -> InProcess:
    return await serve_in_process(
        path,
        SHIPPING_SCHEMA,
        lambda db, faults: ShippingService(db, faults=faults),
        shipping_pb2_grpc.add_ShippingServiceServicer_to_server,
        shipping_pb2.DESCRIPTOR.services_by_name["ShippingService"].full_name,
    )


async def start_loyalty(path: Path) -> InProcess:
    """The example's Loyalty server (examples/loyalty/service.py), in this process."""
    return await serve_in_process(
        path,
        LOYALTY_SCHEMA,
        lambda db, faults: LoyaltyService(db, faults=faults),
        loyalty_pb2_grpc.add_LoyaltyServiceServicer_to_server,
        loyalty_pb2.DESCRIPTOR.services_by_name["LoyaltyService"].full_name,
    )


@pytest.fixture
async def payment(tmp_path: Path) -> AsyncIterator[InProcess]:
    server = await start_payment(tmp_path / "payment.db")
    yield server
    await server.stop()


@pytest.fixture
def payment_stub(payment: InProcess) -> payment_pb2_grpc.PaymentServiceAsyncStub:
    return payment_pb2_grpc.PaymentServiceStub(payment.channel)


@pytest.fixture
async def inventory(tmp_path: Path) -> AsyncIterator[InProcess]:
    server = await start_inventory(tmp_path / "inventory.db")
    yield server
    await server.stop()


@pytest.fixture
def inventory_stub(inventory: InProcess) -> inventory_pb2_grpc.InventoryServiceAsyncStub:
    return inventory_pb2_grpc.InventoryServiceStub(inventory.channel)


@pytest.fixture
async def shipping(tmp_path: Path) -> AsyncIterator[InProcess]:
    server = await start_shipping(tmp_path / "shipping.db")
    yield server
    await server.stop()


@pytest.fixture
def shipping_stub(shipping: InProcess) -> shipping_pb2_grpc.ShippingServiceAsyncStub:
    return shipping_pb2_grpc.ShippingServiceStub(shipping.channel)


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """One throwaway PostgreSQL server for the whole run (tests/pg.py); every test
    that needs it is skipped, saying why, where none can be started."""
    try:
        cluster = start_cluster()
    except PostgresUnavailable as error:
        pytest.skip(f"PostgreSQL unavailable: {error}")
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
async def postgres_url(postgres_cluster: PostgresCluster) -> str:
    """The URL of a fresh, empty database of its own for this test."""
    return await postgres_cluster.create_database()
