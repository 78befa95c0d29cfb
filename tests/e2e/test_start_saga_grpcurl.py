"""StartSaga and a saga loaded with --saga, end to end with grpcurl: the input is
an Any in JSON, its @type resolved through the orchestrator's reflection."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from service_kit.health import wait_until_serving
from tests.e2e.conftest import require_main
from tests.e2e.grpcurl import EXIT_STATUS_BASE, Grpcurl
from tests.harness import Subprocess

ORCHESTRATOR = "minisaga.orchestrator.v1.OrchestratorService"
ORDER_TYPE = "type.googleapis.com/minisaga.orchestrator.v1.PlaceOrderRequest"


@pytest.fixture(scope="module")
def orchestrator(
    tmp_path_factory: pytest.TempPathFactory, payment: str, inventory: str, shipping: str
) -> Iterator[str]:
    """place_order version 1 built in, version 2 loaded from examples/order_v2.py."""
    require_main("orchestrator_server")
    folder = tmp_path_factory.mktemp("orchestrator")
    process = Subprocess(
        "orchestrator_server",
        [
            "--listen", "127.0.0.1:0",
            "--db", str(folder / "orchestrator.db"),
            "--participant", f"payment={payment}",
            "--participant", f"inventory={inventory}",
            "--participant", f"shipping={shipping}",
            "--saga", "examples.order_v2:PLACE_ORDER_V2",
            "--reflection",
        ],
        folder / "orchestrator.log",
    ).start()  # fmt: skip
    try:
        with grpc.insecure_channel(process.address) as channel:
            wait_until_serving(channel, ORCHESTRATOR, timeout=20)
        yield process.address
    finally:
        code = process.terminate()
    assert code == 0, f"orchestrator did not stop cleanly ({code}):\n{process.log()}"


def start_saga(grpcurl: Grpcurl, orchestrator: str, data: dict[str, Any]) -> Any:
    return grpcurl.call(orchestrator, f"{ORCHESTRATOR}/StartSaga", data)


def test_start_saga_runs_the_newest_version_from_an_any(
    grpcurl: Grpcurl, orchestrator: str
) -> None:
    started = start_saga(
        grpcurl,
        orchestrator,
        {
            "sagaType": "place_order",
            "requestId": "e2e-start-1",
            "input": {"@type": ORDER_TYPE, "productId": "apple", "quantity": 1, "amount": 500},
        },
    )
    assert started.code == 0, started.output
    reply = started.json()
    assert reply["status"] == "SAGA_STATUS_COMPLETED", reply
    saga = reply["saga"]
    assert saga["saga_version"] == 2
    assert [s["step"] for s in saga["steps"]] == ["reserve", "charge", "ship"]

    again = start_saga(
        grpcurl,
        orchestrator,
        {
            "sagaType": "place_order",
            "requestId": "e2e-start-1",
            "input": {"@type": ORDER_TYPE, "productId": "apple", "quantity": 1, "amount": 500},
        },
    )
    assert again.json()["saga_id"] == reply["saga_id"]  # the request_id's saga, not a new one

    got = grpcurl.call(orchestrator, f"{ORCHESTRATOR}/GetSaga", {"sagaId": reply["saga_id"]})
    assert got.json()["saga"]["saga_version"] == 2


def test_start_saga_refuses_an_any_of_another_type(grpcurl: Grpcurl, orchestrator: str) -> None:
    refused = start_saga(
        grpcurl,
        orchestrator,
        {
            "sagaType": "place_order",
            "input": {
                "@type": "type.googleapis.com/minisaga.payment.v1.ChargeRequest",
                "amount": 5,
            },
        },
    )
    assert refused.code == EXIT_STATUS_BASE + grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "minisaga.orchestrator.v1.PlaceOrderRequest" in refused.output

    unknown = start_saga(
        grpcurl, orchestrator, {"sagaType": "no_such_saga", "input": {"@type": ORDER_TYPE}}
    )
    assert unknown.code == EXIT_STATUS_BASE + grpc.StatusCode.NOT_FOUND.value[0]


def test_both_versions_are_hosted_and_place_order_starts_the_newest(
    grpcurl: Grpcurl, orchestrator: str
) -> None:
    definition = grpcurl.call(
        orchestrator, f"{ORCHESTRATOR}/GetSagaDefinition", {"sagaType": "place_order"}
    ).json()["definition"]
    assert definition["version"] == "2"
    assert [s["name"] for s in definition["steps"]] == ["reserve", "charge", "ship"]

    placed = grpcurl.call(
        orchestrator,
        f"{ORCHESTRATOR}/PlaceOrder",
        {"productId": "apple", "quantity": 1, "amount": 500},
    ).json()
    assert placed["status"] == "SAGA_STATUS_COMPLETED"
    assert placed["saga"]["saga_version"] == 2
