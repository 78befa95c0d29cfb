"""Each service's /metrics, scraped over HTTP and parsed with prometheus_client's
parser: the counters move by exactly what a success, an inventory failure and a
compensation failure should add, and nothing else moves."""

from __future__ import annotations

from pathlib import Path

import pytest
from minisaga.orchestrator.v1 import orchestrator_pb2 as pb

from tests.observability.deploy import named_metrics
from tests.observability.system import Services

pytestmark = pytest.mark.slow

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
COUNTED = (
    "minisaga_sagas_started_total",
    "minisaga_sagas_ended_total",
    "minisaga_step_retries_total",
    "minisaga_compensation_failures_total",
    "minisaga_sagas_recovered_total",
    "minisaga_step_attempt_duration_seconds_count",
    "minisaga_saga_duration_seconds_count",
    "minisaga_participant_calls_total",
)


def moved(before: Samples, after: Samples) -> dict[str, float]:
    """What each counted series moved by, as 'name{k=v,...}' -> delta (zeros left out)."""
    deltas = {}
    for key, value in after.items():
        name, labels = key
        if name not in COUNTED:
            continue
        delta = value - before.get(key, 0.0)
        if delta:
            shown = ",".join(f"{k}={v}" for k, v in labels)
            deltas[f"{name}{{{shown}}}"] = delta
    return deltas


SERVICES = ("orchestrator", "payment", "inventory", "shipping")


async def scrape_all(services: Services) -> dict[str, Samples]:
    return {name: await services.scrape(name) for name in SERVICES}


def saga(status: str, **attempts: float) -> dict[str, float]:
    """The orchestrator's counters for one saga of place_order ending `status`, with
    attempts given as step_phase_CODE=count."""
    moves = {
        "minisaga_sagas_started_total{saga_type=place_order}": 1.0,
        f"minisaga_sagas_ended_total{{saga_type=place_order,status={status}}}": 1.0,
        f"minisaga_saga_duration_seconds_count{{saga_type=place_order,status={status}}}": 1.0,
    }
    for key, count in attempts.items():
        step, phase, code = key.split("_", 2)
        moves[
            "minisaga_step_attempt_duration_seconds_count"
            f"{{code={code},phase={phase},saga_type=place_order,step={step}}}"
        ] = count
    return moves


def calls(**counts: float) -> dict[str, float]:
    """A participant's calls, given as Method_CODE=count."""
    moves = {}
    for key, count in counts.items():
        method, code = key.split("_", 1)
        moves[f"minisaga_participant_calls_total{{code={code},method={method}}}"] = count
    return moves


async def test_counters_move_by_exactly_what_each_saga_did(tmp_path: Path) -> None:
    # Release always refused, and two attempts per compensation: a shipping failure
    # makes the saga FAILED with one compensation failure and one retry.
    services = Services(
        tmp_path,
        orchestrator_flags=("--compensation-max-attempts", "2"),
        inventory_flags=(
            "--fault-methods",
            "Release",
            "--fault-error-rate",
            "1",
            "--fault-error-code",
            "FAILED_PRECONDITION",
        ),
    ).start()
    try:
        before = await scrape_all(services)
        assert (await services.place()).status == pb.SAGA_STATUS_COMPLETED
        # (The first order of a product asks Inventory's GetStock: an unknown one is refused.)
        after = await scrape_all(services)
        assert moved(before["orchestrator"], after["orchestrator"]) == saga(
            "COMPLETED", charge_action_OK=1, reserve_action_OK=1, ship_action_OK=1
        )
        assert moved(before["payment"], after["payment"]) == calls(Charge_OK=1)
        assert moved(before["inventory"], after["inventory"]) == calls(GetStock_OK=1, Reserve_OK=1)
        assert moved(before["shipping"], after["shipping"]) == calls(CreateShipment_OK=1)

        before = after
        reply = await services.place(fail_inventory=True)
        assert reply.status == pb.SAGA_STATUS_COMPENSATED
        after = await scrape_all(services)
        assert moved(before["orchestrator"], after["orchestrator"]) == saga(
            "COMPENSATED",
            charge_action_OK=1,
            reserve_action_FAILED_PRECONDITION=1,
            charge_compensation_OK=1,
        )
        assert moved(before["payment"], after["payment"]) == calls(Charge_OK=1, Refund_OK=1)
        assert moved(before["inventory"], after["inventory"]) == calls(
            Reserve_FAILED_PRECONDITION=1
        )
        assert moved(before["shipping"], after["shipping"]) == {}

        before = after
        assert (await services.place(fail_shipping=True)).status == pb.SAGA_STATUS_FAILED
        after = await scrape_all(services)
        expected = saga(
            "FAILED",
            charge_action_OK=1,
            reserve_action_OK=1,
            ship_action_FAILED_PRECONDITION=1,
            reserve_compensation_FAILED_PRECONDITION=2,
            charge_compensation_OK=1,
        )
        expected[
            "minisaga_step_retries_total{phase=compensation,saga_type=place_order,step=reserve}"
        ] = 1
        expected["minisaga_compensation_failures_total{saga_type=place_order,step=reserve}"] = 1
        assert moved(before["orchestrator"], after["orchestrator"]) == expected
        assert moved(before["payment"], after["payment"]) == calls(Charge_OK=1, Refund_OK=1)
        assert moved(before["inventory"], after["inventory"]) == calls(
            Reserve_OK=1, Release_FAILED_PRECONDITION=2
        )
        assert moved(before["shipping"], after["shipping"]) == calls(
            CreateShipment_FAILED_PRECONDITION=1
        )

        # The gauges and the saga log's group commits.
        orchestrator = after["orchestrator"]
        assert orchestrator[("minisaga_sagas_in_flight", ())] == 0
        assert orchestrator[("minisaga_sagas_past_deadline", ())] == 0
        for name in SERVICES:
            commits = after[name][("minisaga_db_commit_duration_seconds_count", ())]
            batches = after[name][("minisaga_db_commit_batch_size_count", ())]
            assert commits == batches > 0

        # Every metric deploy/'s dashboard and alerts name is in these scrapes.
        served = {name for samples in after.values() for name, _ in samples}
        missing = {name: where for name, where in named_metrics().items() if name not in served}
        assert not missing, f"deploy/ names metrics no service serves: {missing}"
    finally:
        await services.terminate()
