"""The console in headless Chromium against a real system: find sagas by filter, read
their timelines and paths, watch one move live, resume a FAILED one, and read-only mode.

Every wait is for a state of the page (Playwright's `expect`), never for a time.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest
from minisaga.orchestrator.v1 import orchestrator_pb2 as pb

from tests.console.conftest import Console
from tests.orchestrator.conftest import System

if TYPE_CHECKING:
    from playwright.async_api import Page

pytest.importorskip("playwright", reason="Playwright for Python is not installed")
from playwright.async_api import expect

ROOT = Path(__file__).resolve().parents[2]


def refund_fails(system: System) -> None:
    faults = system.payment.faults
    faults.error_rate = 1.0
    faults.error_code = grpc.StatusCode.INTERNAL
    faults.methods = frozenset({"Refund"})


def heal(system: System) -> None:
    system.payment.faults.error_rate = 0.0


async def place_three(system: System) -> tuple[pb.PlaceOrderResponse, ...]:
    """A success, an inventory failure, and a compensation failure (Refund failing)."""
    success = await system.place(request_id="req-success")
    inventory = await system.place(request_id="req-inventory", fail_inventory=True)
    refund_fails(system)
    failed = await system.place(request_id="req-refund", fail_inventory=True)
    heal(system)
    assert [p.status for p in (success, inventory, failed)] == [
        pb.SAGA_STATUS_COMPLETED,
        pb.SAGA_STATUS_COMPENSATED,
        pb.SAGA_STATUS_FAILED,
    ]
    return success, inventory, failed


async def open_by_filter(page: Page, console: Console, label: str, value: str) -> None:
    """From the list, filters by one field, then opens the one saga found."""
    await page.goto(console.url + "/")
    await page.get_by_label(label, exact=True).fill(value)
    await page.get_by_role("button", name="Filter").click()
    rows = page.locator("table.sagas tbody tr")
    await expect(rows).to_have_count(1)
    await rows.first.get_by_role("link").click()
    await expect(page.get_by_role("heading", name="Timeline")).to_be_visible()


async def codes(page: Page, phase: str, step: str) -> list[str]:
    found = page.locator(f'.bar[data-phase="{phase}"][data-step="{step}"]')
    return [await found.nth(i).get_attribute("data-code") or "" for i in range(await found.count())]


async def test_find_each_saga_by_filter_and_read_its_timeline_and_path(
    console: Console, page: Page
) -> None:
    success, inventory, failed = await place_three(console.system)

    # The counts at the top, and the status filter.
    await page.goto(console.url + "/")
    await expect(page.locator('[data-count="ALL"]')).to_have_text("3")
    await expect(page.locator('[data-count="FAILED"]')).to_have_text("1")
    await page.get_by_label("Status", exact=True).select_option("failed")
    await page.get_by_role("button", name="Filter").click()
    await expect(page.locator("table.sagas tbody tr")).to_have_count(1)
    await expect(page.locator(f'tr[data-saga-id="{failed.saga_id}"]')).to_be_visible()

    # The success, found by its order id: three OK bars, the straight path.
    await open_by_filter(page, console, "Order id", success.order_id)
    await expect(page.locator("#summary")).to_contain_text("COMPLETED")
    for step in ("charge", "reserve", "ship"):
        assert await codes(page, "action", step) == ["OK"]
    await expect(page.locator(".bar.ok")).to_have_count(3)
    await expect(page.locator('.bar[data-phase="compensation"]')).to_have_count(0)
    for node in ("step_charge", "step_reserve", "step_ship"):
        await expect(page.locator(f'[data-node="{node}"]')).to_have_attribute("data-state", "ok")
    await expect(page.locator('[data-node="completed"]')).to_have_attribute("data-state", "reached")
    await expect(page.locator('[data-edge="step_ship-completed"]')).to_have_class("edge taken")
    await expect(page.locator('[data-node="undo_charge"]')).not_to_have_attribute(
        "data-state", "ok"
    )

    # The inventory failure, found by its request id: reserve refused, the charge undone.
    await open_by_filter(page, console, "Request id", "req-inventory")
    assert await codes(page, "action", "charge") == ["OK"]
    assert await codes(page, "action", "reserve") == ["FAILED_PRECONDITION"]
    assert await codes(page, "compensation", "charge") == ["OK"]
    await expect(page.locator(".row.undo")).to_have_count(1)  # the compensation's own band
    await expect(page.locator("#cause")).to_contain_text("reserve")
    await expect(page.locator("#cause")).to_contain_text("FAILED_PRECONDITION")
    await expect(page.locator('[data-node="step_reserve"]')).to_have_attribute(
        "data-state", "rejected"
    )
    await expect(page.locator('[data-node="undo_charge"]')).to_have_attribute("data-state", "ok")
    await expect(page.locator('[data-edge="step_reserve-undo_charge"]')).to_have_class(
        "edge failure taken"
    )
    await expect(page.locator('[data-edge="undo_charge-compensated"]')).to_have_class("edge taken")
    await expect(page.locator('[data-node="step_ship"]')).not_to_have_attribute("data-state", "ok")

    # The compensation failure, found by its order id: the Refund's attempts, each INTERNAL.
    await open_by_filter(page, console, "Order id", failed.order_id)
    await expect(page.locator("#summary")).to_contain_text("FAILED")
    refunds = await codes(page, "compensation", "charge")
    assert refunds and set(refunds) == {"INTERNAL"}, refunds
    await expect(page.locator(".failures li")).to_have_count(1)
    await expect(page.locator(".failures")).to_contain_text("PaymentService.Refund")
    await expect(page.locator('[data-node="undo_charge"]')).to_have_attribute(
        "data-state", "rejected"
    )
    await expect(page.locator('[data-node="failed"]')).to_have_attribute("data-state", "reached")
    await expect(page.locator('[data-edge="undo_charge-failed"]')).to_have_class(
        "edge failure taken"
    )
    assert inventory.saga_id != failed.saga_id


async def test_pages_follow_the_next_page_token_under_a_filter(
    console: Console, page: Page
) -> None:
    placed = [await console.system.place(fail_inventory=i % 3 == 0) for i in range(7)]
    completed = [p.saga_id for p in reversed(placed) if p.status == pb.SAGA_STATUS_COMPLETED]
    assert len(completed) == 4
    await page.goto(console.url + "/?status=completed&page_size=3")

    seen: list[str] = []
    rows = page.locator("table.sagas tbody tr")
    await expect(rows).to_have_count(3)
    seen += [await rows.nth(i).get_attribute("data-saga-id") or "" for i in range(3)]
    await page.get_by_role("link", name="Next page").click()
    await expect(rows).to_have_count(1)
    seen.append(await rows.first.get_attribute("data-saga-id") or "")
    await expect(page.get_by_role("link", name="Next page")).to_have_count(0)
    assert seen == completed  # newest first, each once, only the filter's
    await expect(page.get_by_label("Status", exact=True)).to_have_value("completed")

    await page.get_by_role("link", name="First page").click()
    await expect(rows).to_have_count(3)


async def test_a_running_saga_turns_completed_without_a_reload(
    console: Console, page: Page
) -> None:
    system = console.system
    park = system.shipping.faults.park("CreateShipment")
    system.place_in_background()
    await park.reached()

    # The list's counts follow too.
    await page.goto(console.url + "/")
    await expect(page.locator('[data-count="RUNNING"]')).to_have_text("1")
    await page.evaluate("window.sameDocument = true")
    park.release()
    await expect(page.locator('[data-count="COMPLETED"]')).to_have_text("1")
    await expect(page.locator('[data-count="RUNNING"]')).to_have_text("0")
    assert await page.evaluate("window.sameDocument === true")

    park = system.shipping.faults.park("CreateShipment")
    system.place_in_background()
    [saga_id] = await park.reached()
    await page.goto(f"{console.url}/sagas/{saga_id}")
    await expect(page.locator("#summary")).to_contain_text("RUNNING")
    await expect(page.locator('.bar[data-step="ship"][data-code=""]')).to_have_count(1)
    await expect(page.get_by_role("link", name="Cancel…")).to_be_visible()
    await page.evaluate("window.sameDocument = true")

    park.release()

    await expect(page.locator("#summary")).to_contain_text("COMPLETED")
    await expect(page.locator("#announce")).to_contain_text("COMPLETED")  # for screen readers
    await expect(page.locator('.bar[data-step="ship"]')).to_have_attribute("data-code", "OK")
    await expect(page.locator('[data-node="completed"]')).to_have_attribute("data-state", "reached")
    await expect(page.get_by_role("link", name="Cancel…")).to_have_count(0)
    assert await page.evaluate("window.sameDocument === true")


async def test_resume_a_failed_saga_once_the_participant_is_healthy(
    console: Console, page: Page
) -> None:
    system = console.system
    refund_fails(system)
    failed = await system.place(fail_inventory=True)
    assert failed.status == pb.SAGA_STATUS_FAILED
    await page.goto(f"{console.url}/sagas/{failed.saga_id}")
    await expect(page.locator("#summary")).to_contain_text("FAILED")
    await expect(page.get_by_role("link", name="Cancel…")).to_have_count(0)
    heal(system)

    await page.get_by_role("link", name="Resume…").click()
    await expect(page.get_by_role("heading", level=1)).to_contain_text("Resume saga")
    await page.get_by_role("button", name="Yes, resume this saga").click()

    await expect(page.get_by_role("status")).to_contain_text("Resumed")
    await expect(page.locator("#summary")).to_contain_text("COMPENSATED")
    await expect(page.locator('[data-node="compensated"]')).to_have_attribute(
        "data-state", "reached"
    )
    assert (await system.saga(failed.saga_id)).status == pb.SAGA_STATUS_COMPENSATED
    await expect(page.get_by_role("link", name="Resume…")).to_have_count(0)

    # Resuming again is refused by the orchestrator, and the page says why.
    await page.goto(f"{console.url}/sagas/{failed.saga_id}/resume")
    await page.get_by_role("button", name="Yes, resume this saga").click()
    await expect(page.get_by_role("alert")).to_contain_text("FAILED_PRECONDITION")


async def test_read_only_shows_neither_resume_nor_cancel(
    read_only_console: Console, page: Page
) -> None:
    system = read_only_console.system
    url = read_only_console.url
    refund_fails(system)
    failed = await system.place(fail_inventory=True)
    heal(system)
    park = system.shipping.faults.park("CreateShipment")
    system.place_in_background()
    [running] = await park.reached()

    await page.goto(f"{url}/sagas/{running}")
    await expect(page.locator("#summary")).to_contain_text("RUNNING")
    await expect(page.get_by_role("link", name="Cancel…")).to_have_count(0)
    await page.goto(f"{url}/sagas/{failed.saga_id}")
    await expect(page.locator("#summary")).to_contain_text("FAILED")
    await expect(page.get_by_role("link", name="Resume…")).to_have_count(0)
    refused = await page.goto(f"{url}/sagas/{running}/cancel")
    assert refused is not None and refused.status == 403
    park.release()


async def test_screenshots_of_the_list_and_of_a_compensated_saga(
    console: Console, page: Page, tmp_path: Path
) -> None:
    """Taken on every run; `make screenshots` writes them into docs/ (MINISAGA_SCREENSHOTS)."""
    where = Path(os.environ.get("MINISAGA_SCREENSHOTS") or tmp_path)
    system = console.system
    _, inventory, _ = await place_three(system)
    shipping = await system.place(fail_shipping=True)
    await page.set_viewport_size({"width": 1280, "height": 720})
    await page.goto(console.url + "/")
    await expect(page.locator("table.sagas tbody tr")).to_have_count(4)
    await page.screenshot(path=str(where / "console-list.png"), full_page=True)
    await page.goto(f"{console.url}/sagas/{shipping.saga_id}")
    await expect(page.locator("#summary")).to_contain_text("COMPENSATED")
    await page.screenshot(path=str(where / "console-saga.png"), full_page=True)
    assert inventory.status == pb.SAGA_STATUS_COMPENSATED
    for name in ("console-list.png", "console-saga.png"):
        assert (where / name).stat().st_size > 10_000


async def test_a_narrow_screen_and_the_keyboard(console: Console, page: Page) -> None:
    await place_three(console.system)
    await page.set_viewport_size({"width": 380, "height": 800})
    await page.goto(console.url + "/")
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 400, width  # the page itself fits; the wide table scrolls in its box
    await page.keyboard.press("Tab")
    await expect(page.locator(".skip")).to_be_focused()
    await page.get_by_label("Request id", exact=True).focus()
    await page.keyboard.type("req-success")
    await page.keyboard.press("Enter")
    await expect(page.locator("table.sagas tbody tr")).to_have_count(1)
    assert ROOT.is_dir()
