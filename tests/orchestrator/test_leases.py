"""The engine acts on a saga only within its lease, by its own clock."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path

from minisaga.orchestrator.v1.orchestrator_pb2 import PlaceOrderRequest

from orchestrator_server.order_saga import place_order_saga
from orchestrator_server.saga.engine import SagaEngine
from orchestrator_server.saga.sqlite_store import SqliteSagaStore
from orchestrator_server.saga.store import Phase, SagaStatus
from tests.conftest import start_inventory, start_payment, start_shipping
from tests.harness import InProcess, wait_until
from tests.orchestrator.conftest import FAST_ACTIONS, FAST_COMPENSATIONS


class ShortLeases(SqliteSagaStore):
    """A store whose leases always have `left` seconds to go."""

    left = 0.2

    def lease_left(self, saga_id: str) -> float:
        return self.left


async def test_an_attempt_never_outlives_the_lease(tmp_path: Path) -> None:
    payment = await start_payment(tmp_path / "p.db")
    inventory = await start_inventory(tmp_path / "i.db", {"apple": 10})
    shipping = await start_shipping(tmp_path / "s.db")
    store = ShortLeases(tmp_path / "log.db")
    await store.open()
    # Only the lease can end an attempt: without its cap, a parked Charge would wait an hour.
    patient = dataclasses.replace(FAST_ACTIONS, attempt_timeout=timedelta(hours=1))
    definition = place_order_saga(action_retry=patient, compensation_retry=FAST_COMPENSATIONS)
    channels = {
        "payment": payment.channel,
        "inventory": inventory.channel,
        "shipping": shipping.channel,
    }
    engine = SagaEngine(store, channels, [definition])
    try:
        charge = payment.faults.park("Charge")  # answers only when the test says so
        order = PlaceOrderRequest(product_id="apple", quantity=1, amount=100, address="x")
        saga, _ = await engine.start(definition, order, business_key="ord_1")
        ended = await engine.wait(saga.saga_id, timeout=60)

        assert ended is not None and ended.status is SagaStatus.COMPENSATED
        charges = ended.attempts_of("charge", Phase.ACTION)
        assert {a.code for a in charges} == {"DEADLINE_EXCEEDED"}
        assert len(charges) == FAST_ACTIONS.maximum_attempts
        charge.release()

        store.left = 0.0  # the lease is gone: nothing is sent at all
        second, _ = await engine.start(definition, order, business_key="ord_2")
        await wait_until(lambda: second.saga_id not in engine._tasks)  # its runner gave up
        stuck = await store.load(second.saga_id)
        assert stuck is not None and stuck.status is SagaStatus.RUNNING
        assert [a.code for a in stuck.attempts] == [None]  # recorded, never sent
        assert not await _charged(payment, second.saga_id)
    finally:
        await engine.close()
        await store.close()
        for server in (payment, inventory, shipping):
            await server.stop()


async def _charged(payment: InProcess, saga_id: str) -> bool:
    row = await payment.db.run(
        lambda conn: conn.execute("SELECT 1 FROM payments WHERE saga_id = ?", (saga_id,)).fetchone()
    )
    return row is not None
