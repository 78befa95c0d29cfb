"""The web console against a real system, in a real browser.

The system (participants and orchestrator) and the console run in this test's
event loop; headless Chromium, Debian's `chromium` (`make chromium` installs
it), is driven by Playwright for Python. Where either cannot be had, the
browser tests are skipped, saying why. Playwright's own browser download is
never used: it is launched on the system's Chromium by `executable_path`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from minisaga_client.console import RunningConsole, Settings, start
from tests.orchestrator.conftest import System, start_system

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

CHROMIUM_FLAGS = [
    "--no-sandbox",  # as root, Chromium refuses to start without it
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",  # no calls to the internet at start
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 60_000
"""How long an expectation waits for the page to reach its state before failing."""


def chromium() -> str:
    """The Chromium to drive: $MINISAGA_CHROMIUM, else Debian's; skips saying why if none."""
    found = os.environ.get("MINISAGA_CHROMIUM") or shutil.which("chromium")
    if not found and Path("/usr/bin/chromium").exists():
        found = "/usr/bin/chromium"
    if not found:
        pytest.skip("no Chromium: `make chromium` (apt-get install chromium) for the browser tests")
    return found


@dataclass
class Console:
    system: System
    running: RunningConsole

    @property
    def url(self) -> str:
        return self.running.url.rstrip("/")


async def start_console(system: System, *, read_only: bool) -> RunningConsole:
    settings = Settings(system.orchestrator.address, read_only=read_only, counts_refresh=0.5)
    return await start(settings)


@pytest.fixture
async def system(tmp_path: Path) -> AsyncIterator[System]:
    started = await start_system(tmp_path)
    yield started
    await started.close()


@pytest.fixture
async def console(system: System) -> AsyncIterator[Console]:
    running = await start_console(system, read_only=False)
    yield Console(system, running)
    await running.stop()


@pytest.fixture
async def read_only_console(system: System) -> AsyncIterator[Console]:
    running = await start_console(system, read_only=True)
    yield Console(system, running)
    await running.stop()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    executable = chromium()
    try:
        from playwright.async_api import async_playwright, expect
    except ImportError:
        pytest.skip("Playwright for Python is not installed (pip install -e '.[dev]')")
    expect.set_options(timeout=WAIT_MS)
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_FLAGS
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport={"width": 1200, "height": 900})
    opened = await context.new_page()
    opened.set_default_timeout(WAIT_MS)
    yield opened
    await context.close()
