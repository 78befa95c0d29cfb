"""Fixtures: a whole system in-process, and the `minisaga` command run against it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from minisaga_client.cli import main
from tests.orchestrator.conftest import System, start_system


@pytest.fixture
async def system(tmp_path: Path) -> AsyncIterator[System]:
    started = await start_system(tmp_path)
    yield started
    await started.close()


def addresses(system: System) -> list[str]:
    """The address flags of every service of `system`."""
    return [
        "--orchestrator",
        system.orchestrator.address,
        "--payment",
        system.payment.address,
        "--inventory",
        system.inventory.address,
        "--shipping",
        system.shipping.address,
    ]


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str


@dataclass
class Cli:
    """`minisaga ARGS` against `system`, in a thread: the servers run on this test's loop."""

    system: System
    capsys: pytest.CaptureFixture[str]

    async def __call__(self, *args: str) -> Run:
        self.capsys.readouterr()  # start from empty output
        code = await asyncio.to_thread(main, [*addresses(self.system), *args])
        captured = self.capsys.readouterr()
        assert "Traceback" not in captured.err, captured.err
        return Run(code, captured.out, captured.err)


@pytest.fixture
def cli(system: System, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(system, capsys)
