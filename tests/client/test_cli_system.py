"""`minisaga` against a real system: every command, as an operator uses it."""

from __future__ import annotations

import asyncio
import json
import re

import grpc
from minisaga.orchestrator.v1 import orchestrator_pb2 as pb

from tests.client.conftest import Cli
from tests.harness import wait_until
from tests.orchestrator.conftest import STOCK, System

ORDER = ["place-order", "--product-id", "apple", "--quantity", "2", "--amount", "1200"]
SAGA_ID = re.compile(r"^saga ([0-9a-f-]{36})  place_order$", re.MULTILINE)


def saga_id_of(text: str) -> str:
    match = SAGA_ID.search(text)
    assert match, text
    return match.group(1)


async def test_place_an_order_and_read_it_back(cli: Cli) -> None:
    placed = await cli(*ORDER, "--address", "Kyoto", "--request-id", "req-42", "--json")
    assert placed.code == 0
    response = json.loads(placed.out)
    saga_id = response["saga_id"]
    assert response["status"] == "SAGA_STATUS_COMPLETED"
    assert response["saga"]["request_id"] == "req-42"

    shown = await cli("saga", "get", saga_id)
    assert shown.code == 0
    assert shown.out.splitlines()[1] == "COMPLETED — every step succeeded"
    for line in ("✓ charge", "✓ reserve", "✓ ship"):
        assert line in shown.out
    assert json.loads((await cli("saga", "get", saga_id, "--json")).out)["saga_id"] == saga_id

    shipment = await cli("shipment", "get", saga_id)
    assert re.search(r"^address +Kyoto$", shipment.out, re.MULTILINE), shipment.out
    assert "SHIPMENT_STATUS_CREATED" in shipment.out
    payment = json.loads((await cli("payment", "get", saga_id, "--json")).out)
    assert (payment["status"], payment["amount"]) == ("PAYMENT_STATUS_CHARGED", "1200")
    reservation = json.loads((await cli("reservation", "get", saga_id, "--json")).out)
    assert reservation["status"] == "RESERVATION_STATUS_RESERVED"


async def test_a_compensated_order_says_what_failed_and_what_was_undone(cli: Cli) -> None:
    placed = await cli(*ORDER, "--fail-shipping")

    assert placed.code == 0
    assert placed.out.splitlines()[1] == (
        "COMPENSATED — ship failed (FAILED_PRECONDITION INJECTED_FAILURE); "
        "every step done was undone (undo reserve, undo charge)"
    )
    steps = [line.split()[:3] for line in placed.out.splitlines() if line.startswith("  ")]
    assert steps == [
        ["✓", "charge", "PaymentService.Charge"],
        ["✓", "reserve", "InventoryService.Reserve"],
        ["✗", "ship", "ShippingService.CreateShipment"],
        ["↩", "compensation", "started:"],
        ["✓", "undo", "reserve"],
        ["✓", "undo", "charge"],
    ]
    saga_id = saga_id_of(placed.out)
    assert "RESERVATION_STATUS_RELEASED" in (await cli("reservation", "get", saga_id)).out
    missing = await cli("shipment", "get", saga_id)
    assert (missing.code, missing.err) == (
        4,
        f"minisaga: not found: no shipment for saga {saga_id}\n",
    )


async def test_resume_every_failed_saga_at_once(system: System, cli: Cli) -> None:
    system.payment.faults.error_rate = 1.0  # down longer than the undos' budget
    system.payment.faults.error_code = grpc.StatusCode.UNAVAILABLE
    system.payment.faults.methods = frozenset({"Refund"})
    failed = [saga_id_of((await cli(*ORDER, "--fail-inventory")).out) for _ in range(3)]
    listed = await cli("saga", "list", "--status", "failed", "--json")
    assert sorted(s["saga_id"] for s in json.loads(listed.out)["sagas"]) == sorted(failed)

    system.payment.faults.error_rate = 0.0  # Payment is back
    none = await cli("saga", "resume", "--all-failed", "--saga-type", "no_such_saga")
    assert (none.code, none.out) == (0, "resumed 0 FAILED sagas\n")
    resumed = await cli("saga", "resume", "--all-failed", "--page-size", "2")
    assert resumed.code == 0, resumed.err
    assert resumed.out.splitlines()[0] == "resumed 3 FAILED sagas"

    async def compensated() -> bool:
        listed = await cli("saga", "list", "--status", "compensated", "--json")
        return len(json.loads(listed.out).get("sagas", [])) == 3

    await wait_until(compensated)
    again = await cli("saga", "resume", "--all-failed", "--json")
    assert (again.code, json.loads(again.out)) == (0, {})

    both = await cli("saga", "resume", failed[0], "--all-failed")
    neither = await cli("saga", "resume")
    assert (both.code, neither.code) == (2, 2)
    assert "--all-failed" in both.err and "SAGA_ID" in neither.err


async def test_find_a_failed_saga_read_it_and_resume_it(system: System, cli: Cli) -> None:
    system.payment.faults.error_rate = 1.0
    system.payment.faults.error_code = grpc.StatusCode.INTERNAL
    system.payment.faults.methods = frozenset({"Refund"})
    await cli(*ORDER)  # a completed saga, which the filter must leave out
    failed = await cli(*ORDER, "--fail-inventory")
    saga_id = saga_id_of(failed.out)
    assert failed.out.splitlines()[2].startswith("needs an operator: once PaymentService")

    listed = await cli("saga", "list", "--status", "failed")
    assert listed.code == 0
    [header, row] = listed.out.splitlines()
    assert header.split()[:3] == ["SAGA", "STATUS", "ORDER"]
    assert row.split()[:2] == [saga_id, "FAILED"]
    assert row.endswith("reserve FAILED_PRECONDITION INJECTED_FAILURE; undo failed: charge")

    shown = await cli("saga", "get", saga_id)
    assert "✗ undo charge    PaymentService.Refund           INTERNAL after 4 attempts" in shown.out
    assert "compensation failures (kept after a resume)" in shown.out

    system.payment.faults.error_rate = 0.0  # the operator heals Payment
    resumed = await cli("saga", "resume", saga_id, "--wait")
    assert resumed.code == 0
    assert resumed.out.splitlines()[1].startswith("COMPENSATED — reserve failed")
    assert "✓ undo charge    PaymentService.Refund           OK after 5 attempts" in resumed.out
    payment = await cli("payment", "get", saga_id)
    assert "PAYMENT_STATUS_REFUNDED" in payment.out
    assert (await cli("saga", "list", "--status", "failed")).out == "no FAILED sagas\n"


async def test_cancel_a_running_saga(system: System, cli: Cli) -> None:
    reserve = system.inventory.faults.park("Reserve")  # the cancel lands during Reserve
    # The saga waits in Reserve: the orchestrator answers before the deadline, saga RUNNING.
    placed = await cli(*ORDER, "--timeout", "3")
    assert placed.code == 0
    assert placed.out.splitlines()[1].startswith("RUNNING")
    assert "the saga goes on. Follow it: minisaga saga watch" in placed.out
    saga_id = saga_id_of(placed.out)

    cancelling = asyncio.create_task(cli("saga", "cancel", saga_id, "--wait"))
    await wait_until(lambda: _cancel_seen(system, saga_id))
    reserve.release()
    cancelled = await cancelling

    assert cancelled.code == 0
    assert cancelled.out.splitlines()[1] == (
        "COMPENSATED — cancelled by an operator before ship; "
        "every step done was undone (undo reserve, undo charge)"
    )
    shown = await cli("saga", "get", saga_id)
    assert "  ↩ compensation started: cancelled by an operator before ship\n" in shown.out
    listed = await cli("saga", "list")
    row = listed.out.splitlines()[1]
    assert row.split()[:2] == [saga_id, "COMPENSATED"]
    assert row.endswith("  cancelled by an operator before ship")
    again = await cli("saga", "resume", saga_id)
    assert again.code == 5
    assert again.err.startswith("minisaga: refused (SAGA_NOT_RESUMABLE): ")
    assert await system.available() == (STOCK, 0)


async def test_watch_follows_a_saga_to_its_end(system: System, cli: Cli) -> None:
    ship = system.shipping.faults.park("CreateShipment")
    system.place_in_background()
    [saga_id] = await ship.reached()

    watching = asyncio.create_task(cli("saga", "watch", saga_id))
    await wait_until(lambda: _is_watched(system, saga_id))  # the stream is open mid-saga
    ship.release()
    watched = await watching

    assert watched.code == 0
    lines = watched.out.splitlines()
    assert lines[0].endswith("saga place_order started")
    assert lines[-3].endswith("saga COMPLETED")
    assert lines[-1] == "COMPLETED — every step succeeded"
    streamed = await cli("saga", "watch", saga_id, "--json")
    events = [json.loads(line) for line in streamed.out.splitlines()]
    assert [e["event"]["sequence"] for e in events] == [str(n) for n in range(1, len(events) + 1)]
    assert events[-1]["saga"]["status"] == "SAGA_STATUS_COMPLETED"


def _cancel_seen(system: System, saga_id: str) -> bool:
    """The saga's runner has been told to stop (before its Reserve returns)."""
    asked = system.orchestrator.engine._cancels.get(saga_id)
    return asked is not None and asked.is_set()


def _is_watched(system: System, saga_id: str) -> bool:
    """Someone waits on the saga's change feed: a WatchSaga stream is open."""
    return system.orchestrator.engine.changes.watched(saga_id)


async def test_list_pages_and_all(cli: Cli) -> None:
    ids = [saga_id_of((await cli(*ORDER, "--fail-payment")).out) for _ in range(3)]
    newest_first = ids[::-1]

    first = await cli("saga", "list", "--page-size", "2")
    rows = first.out.splitlines()
    assert [row.split()[0] for row in rows[1:3]] == newest_first[:2]
    token = re.search(r"--page-token (\S+)", first.out)
    assert token, first.out
    second = await cli("saga", "list", "--page-size", "2", "--page-token", token.group(1))
    assert [row.split()[0] for row in second.out.splitlines()[1:]] == newest_first[2:]
    everything = json.loads((await cli("saga", "list", "--all", "--page-size", "1", "--json")).out)
    assert [s["saga_id"] for s in everything["sagas"]] == newest_first
    assert "next_page_token" not in everything
    compensated = await cli("saga", "list", "--status", "COMPENSATED", "--json")
    assert len(json.loads(compensated.out)["sagas"]) == 3


async def test_stock_set_and_get(cli: Cli) -> None:
    assert (await cli("stock", "set", "kiwi", "7")).code == 0
    shown = await cli("stock", "get", "kiwi")
    assert re.search(r"^quantity +7$", shown.out, re.MULTILINE), shown.out
    stock = json.loads((await cli("stock", "get", "kiwi", "--json")).out)
    assert (stock["product_id"], stock["quantity"]) == ("kiwi", "7")
    unknown = await cli("stock", "get", "durian")
    assert (unknown.code, unknown.err) == (4, "minisaga: not found: no product 'durian'\n")
    invalid = await cli("stock", "set", "kiwi", "-1")
    assert invalid.code == 3
    assert invalid.err.startswith("minisaga: invalid argument — quantity: ")


async def test_bad_input_names_the_fields(cli: Cli) -> None:
    refused = await cli("place-order", "--product-id", "apple", "--quantity", "0", "--amount", "0")
    assert refused.code == 3
    assert refused.err.startswith("minisaga: invalid argument — quantity: ")
    assert "; amount: " in refused.err
    assert refused.out == ""


async def test_demo_runs_the_tutorial_scenarios(system: System, cli: Cli) -> None:
    shown = await cli("demo")

    assert shown.code == 0, shown.out
    assert shown.out.count("✓ as in the tutorial") == 4
    for title in ("success", "inventory failure", "payment failure", "shipping failure"):
        assert f"/4 {title}: " in shown.out
    assert "participants: payment REFUNDED · reservation RELEASED · shipment none" in shown.out
    assert shown.out.rstrip().endswith(
        "all 4 scenarios ended as in the tutorial; read any saga again with: "
        "minisaga saga get SAGA_ID"
    )
    listed = await system.api.ListSagas(pb.ListSagasRequest())
    assert len(listed.sagas) == 4


async def test_demo_says_when_the_system_does_not_behave_as_the_tutorial(
    system: System, cli: Cli
) -> None:
    system.shipping.faults.error_rate = 1.0  # Shipping refuses everything
    system.shipping.faults.error_code = grpc.StatusCode.PERMISSION_DENIED
    system.shipping.faults.methods = frozenset({"CreateShipment"})

    shown = await cli("demo")

    assert shown.code == 1
    assert shown.out.count("✗ the tutorial expects COMPLETED") == 1  # success
    assert shown.out.count("✗ the tutorial expects COMPENSATED") == 1  # shipping failure
    assert shown.out.count("✓ as in the tutorial") == 2  # the others never reach Shipping
    assert "2 of 4 scenarios differ from the tutorial" in shown.out
