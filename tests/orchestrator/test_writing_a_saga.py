"""docs/writing-a-saga.md shows code from examples/order_v2.py and
examples/loyalty/saga.py, and those files work: every python block of the page
is in one of them (each top-level part word for word), and order_v2's main
places an order on place_order version 2 against real participants.
(tests/orchestrator/test_adding_a_step.py deploys examples/loyalty/saga.py.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from minisaga.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from minisaga.shipping.v1 import shipping_pb2, shipping_pb2_grpc

from examples import order_v2
from orchestrator_server.saga import SqliteSagaStore
from tests.conftest import start_inventory, start_payment, start_shipping

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "writing-a-saga.md"
EXAMPLE = ROOT / "examples" / "order_v2.py"
ADDED_STEP = ROOT / "examples" / "loyalty" / "saga.py"


def test_every_python_block_of_the_guide_is_in_the_example() -> None:
    blocks = re.findall(r"```python\n(.*?)```", PAGE.read_text(), flags=re.S)
    sources = {path: path.read_text() for path in (EXAMPLE, ADDED_STEP)}
    shown = {path: 0 for path in sources}
    for block in blocks:
        for part in block.split("\n\n\n"):  # top-level definitions, each word for word
            found = [path for path, source in sources.items() if part in source]
            assert found, f"not in examples/order_v2.py nor examples/loyalty/saga.py:\n{part}"
            shown[found[0]] += 1
    assert shown[EXAMPLE] >= 5 and shown[ADDED_STEP] >= 3, shown


async def test_the_example_places_an_order_on_version_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    payment = await start_payment(tmp_path / "p.db")
    inventory = await start_inventory(tmp_path / "i.db", {"apple": 10})
    shipping = await start_shipping(tmp_path / "s.db")
    try:
        args = [
            "--db", str(tmp_path / "order_v2.db"),
            "--payment", payment.address,
            "--inventory", inventory.address,
            "--shipping", shipping.address,
            "--request-id", "guide-1",
        ]  # fmt: skip
        code = await _in_thread(order_v2.main, args)
        out = capsys.readouterr().out
        assert code == 0, out
        saga_id = out.split()[1]
        assert f"saga {saga_id} version 2: COMPLETED" in out
        steps = [line.split()[0] for line in out.splitlines()[1:]]
        assert steps == ["reserve", "charge", "ship"]

        reservation = await inventory_pb2_grpc.InventoryServiceStub(
            inventory.channel
        ).GetReservation(inventory_pb2.GetReservationRequest(saga_id=saga_id))
        shipment = await shipping_pb2_grpc.ShippingServiceStub(shipping.channel).GetShipment(
            shipping_pb2.GetShipmentRequest(saga_id=saga_id)
        )
        assert shipment.shipment.reservation_id == reservation.reservation.reservation_id
        assert shipment.shipment.reservation_id.startswith("rsv_")

        store = await SqliteSagaStore(tmp_path / "order_v2.db").open()
        try:
            record = await store.load(saga_id)
        finally:
            await store.close()
        assert record is not None and record.saga_version == 2
    finally:
        for server in (payment, inventory, shipping):
            await server.stop()


async def _in_thread(main: object, args: list[str]) -> int:
    """main() runs its own event loop (asyncio.run): give it a thread of its own."""
    import asyncio

    assert callable(main)
    result: int = await asyncio.to_thread(main, args)
    return result
