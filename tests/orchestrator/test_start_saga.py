"""StartSaga on a user saga hosted beside place_order (OrchestratorConfig.sagas,
what --saga fills): the Any must hold the definition's input type, and GetSaga
and ListSagas show the saga's version and, for one this orchestrator does not
host, why it is not driven."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path

import grpc
import pytest
from google.protobuf import any_pb2
from google.protobuf.message import Message
from minisaga.orchestrator.v1 import orchestrator_pb2 as pb

from tests.orchestrator.conftest import start_system
from tests.orchestrator.test_definition import HOLD_THEN_PAY
from tests.rich_errors import bad_request_fields


def packed(message: Message) -> any_pb2.Any:
    found = any_pb2.Any()
    found.Pack(message)
    return found


async def test_start_saga_runs_a_hosted_user_saga(tmp_path: Path) -> None:
    system = await start_system(tmp_path, sagas=(HOLD_THEN_PAY,))
    try:
        order = pb.Order(product_id="apple", quantity=1, amount=300)
        started = await system.api.StartSaga(
            pb.StartSagaRequest(saga_type="hold_then_pay", input=packed(order), request_id="u-1")
        )
        assert started.status == pb.SAGA_STATUS_COMPLETED
        assert [s.step for s in started.saga.steps] == ["hold", "pay"]
        assert started.saga.saga_version == 1 and started.saga.not_driven_reason == ""
        again = await system.api.StartSaga(
            pb.StartSagaRequest(saga_type="hold_then_pay", input=packed(order), request_id="u-1")
        )
        assert again.saga_id == started.saga_id

        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await system.api.StartSaga(
                pb.StartSagaRequest(
                    saga_type="hold_then_pay", input=packed(pb.PlaceOrderRequest(quantity=1))
                )
            )
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert bad_request_fields(refused.value) == ["input"]
        assert "minisaga.orchestrator.v1.Order" in (refused.value.details() or "")
    finally:
        await system.close()


async def test_a_saga_of_a_type_not_hosted_shows_why_it_is_not_driven(tmp_path: Path) -> None:
    system = await start_system(tmp_path, sagas=(HOLD_THEN_PAY,), place_order_max_wait=timedelta(0))
    park = system.inventory.faults.park("Reserve")  # the saga's first step waits
    try:
        order = pb.Order(product_id="apple", quantity=1, amount=300)
        started = await system.api.StartSaga(
            pb.StartSagaRequest(saga_type="hold_then_pay", input=packed(order))
        )
        assert started.status == pb.SAGA_STATUS_RUNNING
        await park.reached()
        # Deployed again without the saga's definition: it is left alone, and says why.
        await system.restart_orchestrator(dataclasses.replace(system.config, sagas=()))
        park.release()

        saga = (await system.api.GetSaga(pb.GetSagaRequest(saga_id=started.saga_id))).saga
        assert saga.status == pb.SAGA_STATUS_RUNNING
        assert saga.not_driven_reason == (
            "saga type 'hold_then_pay' is not registered on this orchestrator"
        )
        listed = await system.api.ListSagas(pb.ListSagasRequest(saga_type="hold_then_pay"))
        assert [s.not_driven_reason for s in listed.sagas] == [saga.not_driven_reason]
        assert dict(system.orchestrator.engine.not_driven) == {
            started.saga_id: saga.not_driven_reason
        }
        assert await system.orchestrator.engine.recover() == []  # not retried in a loop
    finally:
        await system.close()
