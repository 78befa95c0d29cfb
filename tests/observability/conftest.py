"""The in-process OTLP receiver the observability tests export their spans to."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.observability.system import Receiver, start_receiver


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    server, receiver, address = await start_receiver()
    try:
        yield receiver, address
    finally:
        await server.stop(0)
