"""The `participant` fixture: each test that takes it runs once per participant."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.participants.drivers import STARTERS, Driver, start_driver


@pytest.fixture(params=sorted(STARTERS))
async def participant(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Driver]:
    driver = await start_driver(request.param, tmp_path)
    yield driver
    await driver.server.stop()
