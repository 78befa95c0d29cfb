"""Inventory's own rules: stock per product, reservations take it, releases give it back."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest
from minisaga.inventory.v1 import inventory_pb2 as pb
from minisaga.inventory.v1 import inventory_pb2_grpc

from inventory_server.__main__ import parse_args
from inventory_server.service import parse_stock, seed_stock
from tests.conftest import start_inventory
from tests.harness import InProcess
from tests.rich_errors import assert_invalid, assert_rejected, rpc_error

if TYPE_CHECKING:  # the async stub type exists for type checkers only
    from minisaga.inventory.v1.inventory_pb2_grpc import InventoryServiceAsyncStub as Stub


def new_saga() -> str:
    return str(uuid.uuid4())


async def stock_of(stub: Stub, product_id: str) -> tuple[int, int]:
    """(available, reserved) of a product."""
    stock = (await stub.GetStock(pb.GetStockRequest(product_id=product_id))).stock
    return stock.quantity, stock.reserved


async def reserve(stub: Stub, product_id: str, quantity: int, saga_id: str = "") -> pb.Reservation:
    request = pb.ReserveRequest(
        saga_id=saga_id or new_saga(), product_id=product_id, quantity=quantity
    )
    return (await stub.Reserve(request)).reservation


async def test_set_stock_creates_a_product_and_get_stock_reads_it(inventory_stub: Stub) -> None:
    response = await inventory_stub.SetStock(pb.SetStockRequest(product_id="apple", quantity=7))
    assert (response.stock.product_id, response.stock.quantity, response.stock.reserved) == (
        "apple",
        7,
        0,
    )
    assert await stock_of(inventory_stub, "apple") == (7, 0)
    await inventory_stub.SetStock(pb.SetStockRequest(product_id="apple", quantity=0))
    assert await stock_of(inventory_stub, "apple") == (0, 0)


async def test_set_stock_sets_available_and_keeps_reserved(inventory_stub: Stub) -> None:
    await inventory_stub.SetStock(pb.SetStockRequest(product_id="apple", quantity=10))
    held = await reserve(inventory_stub, "apple", 4)
    await inventory_stub.SetStock(pb.SetStockRequest(product_id="apple", quantity=20))
    assert await stock_of(inventory_stub, "apple") == (20, 4)
    await inventory_stub.Release(pb.ReleaseRequest(saga_id=held.saga_id))
    assert await stock_of(inventory_stub, "apple") == (24, 0)


async def test_get_stock_of_an_unknown_product_is_not_found(inventory_stub: Stub) -> None:
    error = await rpc_error(inventory_stub.GetStock(pb.GetStockRequest(product_id="durian")))
    info = assert_rejected(error, grpc.StatusCode.NOT_FOUND, "NOT_FOUND")
    assert info.metadata["product_id"] == "durian"


@pytest.mark.parametrize(
    ("product_id", "quantity", "fields"),
    [
        ("", 5, ["product_id"]),
        ("p" * 65, 5, ["product_id"]),
        ("apple", -1, ["quantity"]),
        ("apple", 10**9, ["quantity"]),
        ("", -1, ["product_id", "quantity"]),
    ],
    ids=["empty id", "over-long id", "negative", "absurd", "both"],
)
async def test_set_stock_bad_input_is_invalid_argument_and_sets_nothing(
    inventory_stub: Stub, product_id: str, quantity: int, fields: list[str]
) -> None:
    await inventory_stub.SetStock(pb.SetStockRequest(product_id="apple", quantity=3))
    await assert_invalid(
        inventory_stub.SetStock(pb.SetStockRequest(product_id=product_id, quantity=quantity)),
        *fields,
    )
    assert await stock_of(inventory_stub, "apple") == (3, 0)


async def test_get_stock_bad_product_id_is_invalid_argument(inventory_stub: Stub) -> None:
    await assert_invalid(inventory_stub.GetStock(pb.GetStockRequest(product_id="")), "product_id")


async def test_insufficient_stock_commits_nothing(inventory_stub: Stub) -> None:
    await inventory_stub.SetStock(pb.SetStockRequest(product_id="apple", quantity=5))
    saga_id = new_saga()

    error = await rpc_error(reserve(inventory_stub, "apple", 6, saga_id))

    info = assert_rejected(error, grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_STOCK")
    assert dict(info.metadata) == {"product_id": "apple", "requested": "6", "available": "5"}
    assert await stock_of(inventory_stub, "apple") == (5, 0)
    missing = await rpc_error(
        inventory_stub.GetReservation(pb.GetReservationRequest(saga_id=saga_id))
    )
    assert missing.code() == grpc.StatusCode.NOT_FOUND
    # Not a tombstone: once there is stock, the same saga may reserve.
    await inventory_stub.SetStock(pb.SetStockRequest(product_id="apple", quantity=6))
    held = await reserve(inventory_stub, "apple", 6, saga_id)
    assert held.status == pb.RESERVATION_STATUS_RESERVED
    assert await stock_of(inventory_stub, "apple") == (0, 6)


async def test_reserve_takes_stock_and_release_gives_it_back(inventory_stub: Stub) -> None:
    await inventory_stub.SetStock(pb.SetStockRequest(product_id="apple", quantity=10))
    await inventory_stub.SetStock(pb.SetStockRequest(product_id="banana", quantity=10))
    held = await reserve(inventory_stub, "apple", 3)
    other = await reserve(inventory_stub, "banana", 4)
    assert held.reservation_id.startswith("rsv_")
    assert (held.product_id, held.quantity) == ("apple", 3)
    assert await stock_of(inventory_stub, "apple") == (7, 3)

    released = await inventory_stub.Release(pb.ReleaseRequest(saga_id=held.saga_id))
    again = await inventory_stub.Release(pb.ReleaseRequest(saga_id=held.saga_id))

    assert released.outcome == pb.RELEASE_OUTCOME_RELEASED
    assert released.reservation.status == pb.RESERVATION_STATUS_RELEASED
    assert again.outcome == pb.RELEASE_OUTCOME_ALREADY_RELEASED
    assert await stock_of(inventory_stub, "apple") == (10, 0)  # given back once, not twice
    assert await stock_of(inventory_stub, "banana") == (6, 4)  # another product untouched
    assert other.status == pb.RESERVATION_STATUS_RESERVED


async def test_empty_release_changes_no_stock(inventory_stub: Stub) -> None:
    await inventory_stub.SetStock(pb.SetStockRequest(product_id="apple", quantity=10))
    released = await inventory_stub.Release(pb.ReleaseRequest(saga_id=new_saga()))
    assert released.outcome == pb.RELEASE_OUTCOME_NOTHING_TO_RELEASE
    assert released.reservation.status == pb.RESERVATION_STATUS_VOIDED
    assert await stock_of(inventory_stub, "apple") == (10, 0)


async def test_a_rejected_late_reserve_takes_no_stock(inventory_stub: Stub) -> None:
    await inventory_stub.SetStock(pb.SetStockRequest(product_id="apple", quantity=10))
    saga_id = new_saga()
    await inventory_stub.Release(pb.ReleaseRequest(saga_id=saga_id))
    error = await rpc_error(reserve(inventory_stub, "apple", 2, saga_id))
    assert_rejected(error, grpc.StatusCode.FAILED_PRECONDITION, "ALREADY_COMPENSATED")
    assert await stock_of(inventory_stub, "apple") == (10, 0)


async def test_concurrent_reserves_never_oversell(
    inventory: InProcess, inventory_stub: Stub
) -> None:
    await inventory_stub.SetStock(pb.SetStockRequest(product_id="apple", quantity=50))
    saga_ids = [new_saga() for _ in range(200)]

    results = await asyncio.gather(
        *(reserve(inventory_stub, "apple", 1, saga_id) for saga_id in saga_ids),
        return_exceptions=True,
    )

    won = [r for r in results if isinstance(r, pb.Reservation)]
    lost = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert (len(won), len(lost)) == (50, 150)
    for error in lost:
        assert_rejected(error, grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_STOCK")
    assert await stock_of(inventory_stub, "apple") == (0, 50)
    assert len({r.reservation_id for r in won}) == 50
    rows = await inventory.db.run(
        lambda conn: conn.execute("SELECT COUNT(*), SUM(quantity) FROM reservations").fetchone()
    )
    assert tuple(rows) == (50, 50)


# --- seeding stock at start-up ---------------------------------------------


async def test_seeding_creates_missing_products_only(tmp_path: Path) -> None:
    server = await start_inventory(tmp_path / "inventory.db", {"apple": 5})
    try:
        stub = inventory_pb2_grpc.InventoryServiceStub(server.channel)
        await reserve(stub, "apple", 2)
        created = await seed_stock(server.db, {"apple": 5, "banana": 9})
        assert created == ["banana"]
        assert await stock_of(stub, "apple") == (3, 2)  # not reset to 5
        assert await stock_of(stub, "banana") == (9, 0)
    finally:
        await server.stop()


def test_parse_stock_reads_product_quantity_pairs() -> None:
    assert parse_stock("apple=1000, banana=0,,") == {"apple": 1000, "banana": 0}
    assert parse_stock("") == {}


@pytest.mark.parametrize(
    "text", ["apple", "apple=", "apple=-1", "apple=lots", "=5", "a b=1", "apple=1000001"]
)
def test_parse_stock_refuses_bad_items(text: str) -> None:
    with pytest.raises(ValueError, match=r"apple|a b|=5"):
        parse_stock(text)


def test_stock_flag_defaults_repeats_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MINISAGA_INVENTORY_STOCK", raising=False)
    assert parse_args([]).stock == {"apple": 1000, "banana": 1000, "cherry": 1000}
    assert parse_args(["--stock", "kiwi=3", "--stock", "fig=1,kiwi=4"]).stock == {
        "kiwi": 4,
        "fig": 1,
    }
    monkeypatch.setenv("MINISAGA_INVENTORY_STOCK", "apple=5,banana=6")
    assert parse_args([]).stock == {"apple": 5, "banana": 6}
    assert parse_args(["--stock", "fig=2"]).stock == {"fig": 2}  # the flag wins
    monkeypatch.setenv("MINISAGA_INVENTORY_STOCK", "")
    assert parse_args([]).stock == {}


@pytest.mark.parametrize(
    ("argv", "env"), [(["--stock", "apple"], None), ([], "apple=-3")], ids=["flag", "env"]
)
def test_bad_stock_flag_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    env: str | None,
) -> None:
    if env is not None:
        monkeypatch.setenv("MINISAGA_INVENTORY_STOCK", env)
    with pytest.raises(SystemExit) as exited:
        parse_args(argv)
    assert exited.value.code == 2
    assert "apple" in capsys.readouterr().err


async def test_concurrent_identical_reserves_take_stock_once(inventory_stub: Stub) -> None:
    await inventory_stub.SetStock(pb.SetStockRequest(product_id="apple", quantity=100))
    saga_id = new_saga()
    held = await asyncio.gather(*(reserve(inventory_stub, "apple", 2, saga_id) for _ in range(20)))
    assert len({r.reservation_id for r in held}) == 1
    assert await stock_of(inventory_stub, "apple") == (98, 2)
