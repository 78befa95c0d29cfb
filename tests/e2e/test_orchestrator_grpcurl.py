"""The tutorial's scenarios, end to end: four real processes driven with grpcurl."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from service_kit.health import wait_until_serving
from tests.e2e.conftest import require_main
from tests.e2e.grpcurl import EXIT_STATUS_BASE, Grpcurl
from tests.harness import Subprocess

ORCHESTRATOR = "minisaga.orchestrator.v1.OrchestratorService"
APPLES = {"product_id": "apple", "quantity": 2, "amount": 1200}


@pytest.fixture(scope="module")
def orchestrator(
    tmp_path_factory: pytest.TempPathFactory, payment: str, inventory: str, shipping: str
) -> Iterator[str]:
    require_main("orchestrator_server")
    folder = tmp_path_factory.mktemp("orchestrator")
    process = Subprocess(
        "orchestrator_server",
        [
            "--listen",
            "127.0.0.1:0",
            "--db",
            str(folder / "orchestrator.db"),
            "--payment",
            payment,
            "--inventory",
            inventory,
            "--shipping",
            shipping,
            "--reflection",
        ],
        folder / "orchestrator.log",
    ).start()
    try:
        with grpc.insecure_channel(process.address) as channel:
            wait_until_serving(channel, ORCHESTRATOR, timeout=20)
        yield process.address
    finally:
        code = process.terminate()
    assert code == 0, f"orchestrator did not stop cleanly ({code}):\n{process.log()}"


def place(grpcurl: Grpcurl, orchestrator: str, **switches: Any) -> dict[str, Any]:
    result: dict[str, Any] = grpcurl.call(
        orchestrator, f"{ORCHESTRATOR}/PlaceOrder", {**APPLES, **switches}
    ).json()
    return result


def steps(saga: dict[str, Any]) -> list[str]:
    return [
        ("undo " if s["phase"] == "STEP_PHASE_COMPENSATION" else "")
        + s["step"]
        + " "
        + s["attempts"][-1]["code"]
        for s in saga["steps"]
    ]


def test_the_orchestrator_is_listed_through_reflection(grpcurl: Grpcurl, orchestrator: str) -> None:
    listed = grpcurl(orchestrator, "list")
    assert listed.code == 0, listed.output
    assert ORCHESTRATOR in listed.stdout.split()
    methods = grpcurl(orchestrator, "list", ORCHESTRATOR).stdout
    for rpc in (
        "PlaceOrder",
        "GetSaga",
        "ListSagas",
        "WatchSaga",
        "GetOrder",
        "ResumeSaga",
        "ResumeSagas",
        "CancelSaga",
    ):
        assert f"{ORCHESTRATOR}.{rpc}" in methods


def test_success(grpcurl: Grpcurl, orchestrator: str, payment: str) -> None:
    placed = place(grpcurl, orchestrator)

    assert placed["status"] == "SAGA_STATUS_COMPLETED"
    assert steps(placed["saga"]) == ["charge OK", "reserve OK", "ship OK"]
    saga = grpcurl.call(
        orchestrator, f"{ORCHESTRATOR}/GetSaga", {"saga_id": placed["saga_id"]}
    ).json()["saga"]
    assert saga["status"] == "SAGA_STATUS_COMPLETED"
    order = grpcurl.call(
        orchestrator, f"{ORCHESTRATOR}/GetOrder", {"order_id": placed["order_id"]}
    ).json()["order"]
    assert order["status"] == "ORDER_STATUS_COMPLETED"
    charged = grpcurl.call(
        payment, "minisaga.payment.v1.PaymentService/GetPayment", {"saga_id": placed["saga_id"]}
    ).json()["payment"]
    assert (charged["status"], charged["amount"]) == ("PAYMENT_STATUS_CHARGED", "1200")


def test_inventory_failure_refunds(grpcurl: Grpcurl, orchestrator: str, payment: str) -> None:
    placed = place(grpcurl, orchestrator, fail_inventory=True)

    assert placed["status"] == "SAGA_STATUS_COMPENSATED"
    assert steps(placed["saga"]) == ["charge OK", "reserve FAILED_PRECONDITION", "undo charge OK"]
    assert placed["saga"]["compensation_cause"]["reason"] == "INJECTED_FAILURE"
    refunded = grpcurl.call(
        payment, "minisaga.payment.v1.PaymentService/GetPayment", {"saga_id": placed["saga_id"]}
    ).json()["payment"]
    assert refunded["status"] == "PAYMENT_STATUS_REFUNDED"


def test_payment_failure_compensates_nothing(
    grpcurl: Grpcurl, orchestrator: str, payment: str
) -> None:
    placed = place(grpcurl, orchestrator, fail_payment=True)

    assert placed["status"] == "SAGA_STATUS_COMPENSATED"
    assert steps(placed["saga"]) == ["charge FAILED_PRECONDITION"]
    missing = grpcurl.call(
        payment, "minisaga.payment.v1.PaymentService/GetPayment", {"saga_id": placed["saga_id"]}
    )
    assert missing.code == EXIT_STATUS_BASE + grpc.StatusCode.NOT_FOUND.value[0]


def test_shipping_failure_releases_and_refunds(
    grpcurl: Grpcurl, orchestrator: str, inventory: str
) -> None:
    placed = place(grpcurl, orchestrator, fail_shipping=True)

    assert placed["status"] == "SAGA_STATUS_COMPENSATED"
    assert steps(placed["saga"]) == [
        "charge OK",
        "reserve OK",
        "ship FAILED_PRECONDITION",
        "undo reserve OK",
        "undo charge OK",
    ]
    released = grpcurl.call(
        inventory,
        "minisaga.inventory.v1.InventoryService/GetReservation",
        {"saga_id": placed["saga_id"]},
    ).json()["reservation"]
    assert released["status"] == "RESERVATION_STATUS_RELEASED"


def test_bad_input_names_the_field(grpcurl: Grpcurl, orchestrator: str) -> None:
    refused = grpcurl.call(orchestrator, f"{ORCHESTRATOR}/PlaceOrder", {**APPLES, "quantity": 0})
    assert refused.code == EXIT_STATUS_BASE + grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "quantity" in refused.output


def test_list_and_watch(grpcurl: Grpcurl, orchestrator: str) -> None:
    placed = place(grpcurl, orchestrator, fail_inventory=True, request_id="e2e-watch")

    listed = grpcurl.call(
        orchestrator,
        f"{ORCHESTRATOR}/ListSagas",
        {"status": "SAGA_STATUS_COMPENSATED", "page_size": 100},
    ).json()
    assert placed["saga_id"] in [s["saga_id"] for s in listed["sagas"]]
    assert {s["status"] for s in listed["sagas"]} == {"SAGA_STATUS_COMPENSATED"}

    watched = grpcurl(
        "-d", json.dumps({"saga_id": placed["saga_id"]}), orchestrator, f"{ORCHESTRATOR}/WatchSaga"
    )
    assert watched.code == 0, watched.output
    assert "saga place_order started" in watched.stdout
    assert "saga COMPENSATED" in watched.stdout

    again = place(grpcurl, orchestrator, fail_inventory=True, request_id="e2e-watch")
    assert again["saga_id"] == placed["saga_id"]
