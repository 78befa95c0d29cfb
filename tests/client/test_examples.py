"""examples/client_async.py, the README's async client example, against a real system."""

from __future__ import annotations

import argparse

import pytest

from examples import client_async
from tests.orchestrator.conftest import System


def arguments(system: System, **changes: object) -> argparse.Namespace:
    args = argparse.Namespace(
        orchestrator=system.orchestrator.address,
        payment=system.payment.address,
        quantity=2,
        fail_shipping=False,
    )
    for name, value in changes.items():
        setattr(args, name, value)
    return args


async def test_a_shipping_failure_is_replayed_and_refunded(
    system: System, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await client_async.run(arguments(system, fail_shipping=True)) == 0

    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith(" SAGA_STATUS_COMPENSATED")
    assert "  charge (compensation): attempt 1 OK" in "\n".join(lines)
    assert lines[-2] == "  saga COMPENSATED"
    assert lines[-1] == "payment PAYMENT_STATUS_REFUNDED"


async def test_bad_input_is_refused_by_field(
    system: System, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await client_async.run(arguments(system, quantity=0)) == 3
    assert capsys.readouterr().err == "refused: quantity must be positive\n"


def test_an_unreachable_orchestrator(capsys: pytest.CaptureFixture[str]) -> None:
    assert client_async.main(["--orchestrator", "127.0.0.1:1"]) == 1
    assert capsys.readouterr().err.startswith("orchestrator at 127.0.0.1:1: UNAVAILABLE")
