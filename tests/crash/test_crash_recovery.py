"""SIGKILL the orchestrator with dozens of sagas in flight; a restart finishes them all.

Each case starts `python -m orchestrator_server --crash-at CHECKPOINT:N` on a
fresh saga log, fires 36 PlaceOrders at once (a third failing at Reserve, a
third at Ship) and waits for the process to kill itself. At that moment every
call the participants received must be an attempt the log recorded (written
ahead of its RPC). The orchestrator is restarted on the same log without
--crash-at and nobody sends it anything (its sweep for stray sagas is an hour
away): start-up recovery alone must finish every saga in the log. Then for
every saga: it is COMPLETED or COMPENSATED, its log has no attempt without a
code, and Payment, Inventory and Shipping agree with it (charged, reserved and
shipped exactly when COMPLETED); the stock held is what the COMPLETED sagas
took, and the log holds one saga per request_id. Last, each order is sent
again and answers its saga as it ended.

The participants are real processes shared by the module, with faults that
widen the crash windows and force retries and compensations: Payment adds
20 ms to Charge and Refund, Inventory fails 30 % of Reserves with UNAVAILABLE,
and Shipping commits 30 % of CreateShipments and then answers UNAVAILABLE.
Each case has its own orchestrator database and its own product.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import closing
from pathlib import Path

import grpc
import pytest
from minisaga.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from minisaga.orchestrator.v1 import orchestrator_pb2 as pb
from minisaga.shipping.v1 import shipping_pb2, shipping_pb2_grpc

from tests.crash.system import STOCK, Participants, Scenario, make_orders
from tests.harness import Subprocess, wait_until

pytestmark = pytest.mark.slow

ORDERS = 36

PARTICIPANT_FLAGS = {
    "payment_server": ["--fault-latency-ms", "20"],
    "inventory_server": [
        "--stock", "apple=100000",
        "--fault-error-rate", "0.3", "--fault-methods", "Reserve",
    ],
    "shipping_server": [
        "--fault-commit-then-unavailable", "0.3", "--fault-methods", "CreateShipment",
    ],
}  # fmt: skip

# (checkpoint, N): N is well below how often 36 such sagas pass the checkpoint
# (about 100 actions, 130 outcomes, 36 compensations, 24 compensating, 12 completed).
KILLS = [
    ("action-attempt-recorded", 5),
    ("action-attempt-recorded", 40),
    ("action-rpc-returned", 17),
    ("action-rpc-returned", 60),
    ("outcome-recorded", 5),
    ("outcome-recorded", 40),
    ("outcome-recorded", 90),
    # A step's output is durable and the next step's attempt, built from it, is
    # recorded but not sent: the restart rebuilds that request from the log.
    ("output-recorded", 5),
    ("output-recorded", 40),
    ("compensation-attempt-recorded", 5),
    ("compensation-attempt-recorded", 17),
    ("compensation-rpc-returned", 5),
    ("compensation-rpc-returned", 17),
    ("status-recorded-compensating", 5),
    ("status-recorded-compensating", 17),
    ("status-recorded-completed", 3),
    ("status-recorded-completed", 9),
]

# A kill between a write-ahead attempt and its outcome leaves that attempt open.
LEAVES_AN_OPEN_ATTEMPT = {
    "action-attempt-recorded",
    "action-rpc-returned",
    "compensation-attempt-recorded",
    "compensation-rpc-returned",
}


@pytest.fixture(scope="module")
def participants(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Participants]:
    folder = tmp_path_factory.mktemp("participants")
    processes: list[Subprocess] = []
    call_logs = tuple(folder / f"{module}.calls" for module in PARTICIPANT_FLAGS)
    try:
        for (module, flags), calls in zip(PARTICIPANT_FLAGS.items(), call_logs, strict=True):
            args = [
                "--listen", "127.0.0.1:0",
                "--db", str(folder / f"{module}.db"),
                "--call-log", str(calls),
                *flags,
            ]  # fmt: skip
            processes.append(Subprocess(module, args, folder / f"{module}.log").start())
        payment, inventory, shipping = (p.address for p in processes)
        yield Participants(payment, inventory, shipping, call_logs)
    finally:
        codes = {}
        for process in processes:
            try:
                codes[process.module] = process.terminate()
            finally:
                process.kill()  # only if SIGTERM did not stop it
    assert all(code == 0 for code in codes.values()), f"participants stopped with {codes}"


@pytest.fixture
async def scenario(tmp_path: Path, participants: Participants) -> AsyncIterator[Scenario]:
    """A fresh orchestrator db and a fresh product with STOCK units for this case only."""
    product_id = f"crash-{uuid.uuid4().hex[:12]}"
    async with grpc.aio.insecure_channel(participants.inventory) as channel:
        await inventory_pb2_grpc.InventoryServiceStub(channel).SetStock(
            inventory_pb2.SetStockRequest(product_id=product_id, quantity=STOCK)
        )
    started = Scenario(tmp_path, participants, make_orders(tmp_path.name, product_id, ORDERS))
    try:
        yield started
    finally:
        started.kill_all()  # only processes still running: after a failure


@pytest.mark.parametrize(("checkpoint", "n"), KILLS, ids=[f"{c}:{n}" for c, n in KILLS])
async def test_a_kill_at_any_checkpoint_is_recovered(
    scenario: Scenario, checkpoint: str, n: int
) -> None:
    crash = await scenario.crash_round(f"{checkpoint}:{n}")

    assert crash.replies, "the first orchestrator on an empty log died before it served"
    assert crash.log.unfinished >= 1, f"the kill landed with no saga in flight: {crash.log}"
    if checkpoint in LEAVES_AN_OPEN_ATTEMPT:
        assert crash.log.open_attempts >= 1, f"no attempt was written ahead: {crash.log}"
    await scenario.recover_and_verify()


async def test_three_kills_in_a_row_then_a_clean_restart(scenario: Scenario) -> None:
    """Each restart recovers the last one's sagas by itself (no order is sent again)
    and is killed again while it does."""
    rounds = [
        "action-rpc-returned:20",
        "action-attempt-recorded:1",  # dies on the first saga it recovers
        "compensation-rpc-returned:4",
    ]
    crashes = [await scenario.crash_round(crash_at) for crash_at in rounds]

    for crash in crashes:
        assert crash.log.unfinished >= 1, f"{crash.crash_at} killed no saga in flight"
    await scenario.recover_and_verify()


async def test_in_doubt_steps_are_undone_when_the_deadline_passes_while_down(
    scenario: Scenario,
) -> None:
    """Killed mid-RPC, and down until every unfinished saga's deadline has passed: the
    restart goes no further forward and compensates, including each step whose outcome
    was never recorded (its RPC may have taken effect; docs/design.md §4)."""
    scenario.saga_deadline_seconds = 2.0
    scenario.deadline_passes = True
    crash = await scenario.crash_round("action-rpc-returned:30")
    assert crash.log.open_attempts >= 1, crash.log
    await wait_until(lambda: time.time() * 1000 > crash.log.latest_deadline_ms, timeout=10)

    verdict = await scenario.recover_and_verify()

    in_doubt = [
        (saga, step)
        for saga in verdict.sagas.values()
        if saga.compensation_cause.code == "DEADLINE_EXCEEDED"
        for step in _unrecorded_steps(saga)
    ]
    assert in_doubt, "no step was left in doubt by the kill"
    for saga, step in in_doubt:
        undone = [
            attempt.code
            for execution in saga.steps
            if (execution.step, execution.phase) == (step, pb.STEP_PHASE_COMPENSATION)
            for attempt in execution.attempts
        ]
        assert "OK" in undone, f"saga {saga.saga_id}: in-doubt {step} was not compensated"


def _unrecorded_steps(saga: pb.Saga) -> list[str]:
    """Actions the kill left in doubt: an attempt's outcome was never recorded, and no
    later attempt succeeded."""
    steps = []
    for execution in saga.steps:
        codes = [attempt.code for attempt in execution.attempts]
        if execution.phase == pb.STEP_PHASE_ACTION and "UNRECORDED" in codes and "OK" not in codes:
            steps.append(execution.step)
    return steps


async def test_a_kill_between_an_output_and_the_step_built_from_it(scenario: Scenario) -> None:
    """One order, killed at the second output it records: the reserve step's OK
    outcome and its ReserveResponse are durable, and the ship attempt whose request
    was built from that output is recorded but was never sent. The restart rebuilds
    the request from the log alone: the shipment names the reservation."""
    scenario.orders = scenario.orders[:1]  # an ordinary order: charge, reserve, ship
    [order] = scenario.orders
    crash = await scenario.crash_round("output-recorded:2")

    saga_id = crash.log.saga_ids[order.request_id]
    with closing(sqlite3.connect(f"file:{scenario.db}?mode=ro", uri=True)) as conn:
        open_attempts = conn.execute(
            "SELECT step, phase, number FROM attempts WHERE saga_id = ? AND code IS NULL",
            (saga_id,),
        ).fetchall()
        [(reserved,)] = conn.execute(
            "SELECT output FROM attempts WHERE saga_id = ? AND step = 'reserve' AND code = 'OK'",
            (saga_id,),
        ).fetchall()
    assert open_attempts == [("ship", "action", 1)], open_attempts
    reservation_id = inventory_pb2.ReserveResponse.FromString(reserved).reservation.reservation_id
    assert reservation_id.startswith("rsv_")

    await scenario.recover_and_verify()

    async with grpc.aio.insecure_channel(scenario.participants.shipping) as shipping:
        shipment = await shipping_pb2_grpc.ShippingServiceStub(shipping).GetShipment(
            shipping_pb2.GetShipmentRequest(saga_id=saga_id)
        )
    assert shipment.shipment.reservation_id == reservation_id
    # Shipping heard only the restart's attempts: the one built before the kill was never sent.
    ship_calls = [a for _, a, _ in scenario.participants.calls({saga_id}) if a.startswith("ship/")]
    assert ship_calls and "ship/action/1" not in ship_calls, ship_calls


async def test_a_kill_while_both_versions_are_in_flight(scenario: Scenario) -> None:
    """Half the orders start on place_order version 1 and are killed mid-way; the
    orchestrator comes back with version 2 loaded beside it (--saga) and takes the
    other half while it recovers the first, and is killed again with both versions
    in flight. After a clean restart every saga ended on the version it started on:
    version 1 charges first, version 2 reserves first (examples/order_v2.py)."""
    half = len(scenario.orders) // 2
    old, new = scenario.orders[:half], scenario.orders[half:]
    first = await scenario.crash_round("outcome-recorded:20", old)
    assert first.log.unfinished >= 1, first.log

    scenario.extra_flags = ["--saga", "examples.order_v2:PLACE_ORDER_V2"]
    second = await scenario.crash_round("outcome-recorded:45", new)
    assert second.replies, "the orchestrator with both versions died before it served"
    in_flight = _versions_in_flight(scenario.db)
    assert in_flight == {1, 2}, f"versions in flight at the kill: {in_flight}"

    verdict = await scenario.recover_and_verify()

    for order in scenario.orders:
        saga = verdict.sagas.get(order.request_id)
        if saga is None:  # never created: the kill came before its PlaceOrder
            continue
        version = 1 if order in old else 2
        first_step = "charge" if version == 1 else "reserve"
        assert saga.saga_version == version, (order.request_id, saga.saga_version)
        assert saga.steps[0].step == first_step, (order.request_id, [s.step for s in saga.steps])


def _versions_in_flight(db: Path) -> set[int]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT DISTINCT saga_version FROM sagas WHERE status IN ('RUNNING', 'COMPENSATING')"
        ).fetchall()
    return {int(row[0]) for row in rows}
