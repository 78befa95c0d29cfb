"""The requests' failure switches are a development feature: honoured only with
--allow-failure-switches (make run sets it); otherwise refused, nothing written."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path

import grpc
import pytest
from minisaga.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from minisaga.orchestrator.v1 import orchestrator_pb2 as pb
from minisaga.payment.v1 import payment_pb2, payment_pb2_grpc
from minisaga.shipping.v1 import shipping_pb2, shipping_pb2_grpc

import inventory_server.__main__ as inventory_main
import orchestrator_server.__main__ as orchestrator_main
import payment_server.__main__ as payment_main
import shipping_server.__main__ as shipping_main
from inventory_server.service import SCHEMA as INVENTORY_SCHEMA
from inventory_server.service import InventoryService, seed_stock
from payment_server.service import SCHEMA as PAYMENT_SCHEMA
from payment_server.service import PaymentService
from service_kit import run_all
from service_kit.faults import FaultConfig, faults_from_flags
from shipping_server.service import SCHEMA as SHIPPING_SCHEMA
from shipping_server.service import ShippingService
from tests.harness import InProcess, serve_in_process
from tests.orchestrator.conftest import System, start_system
from tests.rich_errors import assert_rejected, rpc_error

OFF = FaultConfig(allow_failure_switches=False)


@pytest.fixture
async def participants(tmp_path: Path) -> AsyncIterator[dict[str, InProcess]]:
    """The three participants with the switches off, as in production."""
    started = {
        "payment": await serve_in_process(
            tmp_path / "payment.db",
            PAYMENT_SCHEMA,
            lambda db, faults: PaymentService(db, faults=faults),
            payment_pb2_grpc.add_PaymentServiceServicer_to_server,
            "minisaga.payment.v1.PaymentService",
            OFF,
        ),
        "inventory": await serve_in_process(
            tmp_path / "inventory.db",
            INVENTORY_SCHEMA,
            lambda db, faults: InventoryService(db, faults=faults),
            inventory_pb2_grpc.add_InventoryServiceServicer_to_server,
            "minisaga.inventory.v1.InventoryService",
            OFF,
        ),
        "shipping": await serve_in_process(
            tmp_path / "shipping.db",
            SHIPPING_SCHEMA,
            lambda db, faults: ShippingService(db, faults=faults),
            shipping_pb2_grpc.add_ShippingServiceServicer_to_server,
            "minisaga.shipping.v1.ShippingService",
            OFF,
        ),
    }
    await seed_stock(started["inventory"].db, {"apple": 10})
    yield started
    for server in started.values():
        await server.stop()


async def rows(server: InProcess, table: str) -> int:
    row = await server.db.run(lambda conn: conn.execute(f"SELECT count(*) FROM {table}").fetchone())
    return int(row[0])


async def test_participants_refuse_fail_without_the_flag_and_write_nothing(
    participants: dict[str, InProcess],
) -> None:
    saga_id = str(uuid.uuid4())
    payment = payment_pb2_grpc.PaymentServiceStub(participants["payment"].channel)
    inventory = inventory_pb2_grpc.InventoryServiceStub(participants["inventory"].channel)
    shipping = shipping_pb2_grpc.ShippingServiceStub(participants["shipping"].channel)
    calls: list[Awaitable[object]] = [
        payment.Charge(
            payment_pb2.ChargeRequest(saga_id=saga_id, order_id="o1", amount=100, fail=True)
        ),
        inventory.Reserve(
            inventory_pb2.ReserveRequest(saga_id=saga_id, product_id="apple", quantity=1, fail=True)
        ),
        shipping.CreateShipment(
            shipping_pb2.CreateShipmentRequest(
                saga_id=saga_id, order_id="o1", address="somewhere", fail=True
            )
        ),
    ]
    for call in calls:
        error = await rpc_error(call)
        info = assert_rejected(
            error, grpc.StatusCode.FAILED_PRECONDITION, "FAILURE_SWITCHES_DISABLED"
        )
        assert info.metadata["fields"] == "fail"
    assert await rows(participants["payment"], "payments") == 0
    assert await rows(participants["inventory"], "reservations") == 0
    assert await rows(participants["shipping"], "shipments") == 0
    stock = await inventory.GetStock(inventory_pb2.GetStockRequest(product_id="apple"))
    assert (stock.stock.quantity, stock.stock.reserved) == (10, 0)
    # The same requests without the switch go through.
    ok = await payment.Charge(payment_pb2.ChargeRequest(saga_id=saga_id, order_id="o1", amount=1))
    assert ok.payment.status == payment_pb2.PAYMENT_STATUS_CHARGED


@pytest.fixture
async def production(tmp_path: Path) -> AsyncIterator[System]:
    """An orchestrator (SQLite log) started without --allow-failure-switches."""
    system = await start_system(tmp_path, allow_failure_switches=False)
    yield system
    await system.close()


@pytest.mark.parametrize("switch", ["fail_payment", "fail_inventory", "fail_shipping"])
async def test_place_order_refuses_a_switch_without_the_flag_and_writes_nothing(
    production: System, switch: str
) -> None:
    error = await rpc_error(production.place(**{switch: True}))

    info = assert_rejected(error, grpc.StatusCode.FAILED_PRECONDITION, "FAILURE_SWITCHES_DISABLED")
    assert info.metadata["fields"] == switch
    listed = await production.api.ListSagas(pb.ListSagasRequest())
    assert list(listed.sagas) == []
    assert await rows(production.payment, "payments") == 0
    assert (await production.place()).status == pb.SAGA_STATUS_COMPLETED


def test_the_flag_is_off_by_default_and_on_in_make_run(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ORCHESTRATOR", "PAYMENT", "INVENTORY", "SHIPPING"):
        monkeypatch.delenv(f"MINISAGA_{name}_ALLOW_FAILURE_SWITCHES", raising=False)
    for module in (payment_main, inventory_main, shipping_main):
        assert not faults_from_flags(module.parse_args([])).allow_failure_switches
        assert faults_from_flags(
            module.parse_args(["--allow-failure-switches"])
        ).allow_failure_switches
    config = orchestrator_main.config_from_args(orchestrator_main.parse_args([]))
    assert not config.allow_failure_switches
    monkeypatch.setenv("MINISAGA_ORCHESTRATOR_ALLOW_FAILURE_SWITCHES", "true")
    config = orchestrator_main.config_from_args(orchestrator_main.parse_args([]))
    assert config.allow_failure_switches
    monkeypatch.setenv("MINISAGA_PAYMENT_ALLOW_FAILURE_SWITCHES", "maybe")
    with pytest.raises(SystemExit, match="MINISAGA_PAYMENT_ALLOW_FAILURE_SWITCHES"):
        faults_from_flags(payment_main.parse_args([]))

    children = run_all.plan(run_all.parse_args(["--data-dir", "data"]))
    servers = [child for child in children if not child.url]  # not the web console
    assert [child.name for child in servers] == ["payment", "inventory", "shipping", "orchestrator"]
    assert all("--allow-failure-switches" in child.args for child in servers)
