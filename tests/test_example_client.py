"""The README's client example: scripted replies with grpc-testing, then a real system."""

from __future__ import annotations

import argparse
import threading
from pathlib import Path

import grpc
import grpc_testing
import pytest
from minisaga.orchestrator.v1 import orchestrator_pb2 as pb

from examples import place_order
from tests.orchestrator.conftest import start_system

SERVICE = pb.DESCRIPTOR.services_by_name["OrchestratorService"]
ARGS = argparse.Namespace(
    product="apple",
    quantity=2,
    amount=1200,
    address="Tokyo",
    fail_payment=False,
    fail_inventory=True,
    fail_shipping=False,
)


def test_the_example_sends_the_order_and_describes_the_compensation() -> None:
    channel = grpc_testing.channel(
        [pb.DESCRIPTOR.services_by_name["OrchestratorService"]], grpc_testing.strict_real_time()
    )
    result: list[pb.PlaceOrderResponse] = []
    caller = threading.Thread(target=lambda: result.append(place_order.place_order(channel, ARGS)))
    caller.start()
    _, request, rpc = channel.take_unary_unary(SERVICE.methods_by_name["PlaceOrder"])
    assert (request.product_id, request.quantity, request.amount) == ("apple", 2, 1200)
    assert request.fail_inventory and not request.fail_payment
    saga = pb.Saga(
        status=pb.SAGA_STATUS_COMPENSATED,
        steps=[
            pb.StepExecution(
                step="charge",
                phase=pb.STEP_PHASE_ACTION,
                attempts=[pb.Attempt(number=1, code="OK")],
            ),
            pb.StepExecution(
                step="reserve",
                phase=pb.STEP_PHASE_ACTION,
                attempts=[pb.Attempt(number=1, code="FAILED_PRECONDITION")],
            ),
            pb.StepExecution(
                step="charge",
                phase=pb.STEP_PHASE_COMPENSATION,
                attempts=[pb.Attempt(number=1, code="OK")],
            ),
        ],
        compensation_cause=pb.CompensationCause(
            step="reserve", code="FAILED_PRECONDITION", reason="INJECTED_FAILURE"
        ),
    )
    rpc.terminate(
        pb.PlaceOrderResponse(
            order_id="ord_1", saga_id="s-1", status=pb.SAGA_STATUS_COMPENSATED, saga=saga
        ),
        (),
        grpc.StatusCode.OK,
        "",
    )
    caller.join(timeout=10)

    text = place_order.describe(result[0])
    assert "status SAGA_STATUS_COMPENSATED" in text
    assert "undo charge   OK" in text
    assert "compensated because reserve ended FAILED_PRECONDITION INJECTED_FAILURE" in text


def test_the_example_reports_an_unreachable_orchestrator(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert place_order.main(["--orchestrator", "127.0.0.1:1"]) == 1
    assert "PlaceOrder failed: UNAVAILABLE" in capsys.readouterr().err


async def test_the_example_against_a_real_system(tmp_path: Path) -> None:
    system = await start_system(tmp_path)
    try:
        with grpc.insecure_channel(system.orchestrator.address) as channel:
            import asyncio

            response = await asyncio.to_thread(place_order.place_order, channel, ARGS)
        assert response.status == pb.SAGA_STATUS_COMPENSATED
        assert "undo charge" in place_order.describe(response)
    finally:
        await system.close()
