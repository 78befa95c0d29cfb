"""A WatchSaga stream that breaks on something unexpected ends INTERNAL with an
incident id, never with the exception's text (as unary calls do)."""

from __future__ import annotations

import grpc
import pytest
from minisaga.orchestrator.v1 import orchestrator_pb2 as pb

from tests.orchestrator.conftest import System
from tests.participants.test_unexpected_errors import SECRET
from tests.rich_errors import error_info


async def test_a_stream_that_breaks_is_internal_too(system: System) -> None:
    placed = await system.place()

    async def broken_load(saga_id: str) -> None:
        raise RuntimeError(SECRET)

    system.orchestrator.engine.store.load = broken_load  # type: ignore[method-assign]
    with pytest.raises(grpc.aio.AioRpcError) as broken:
        async for _ in system.api.WatchSaga(pb.WatchSagaRequest(saga_id=placed.saga_id)):
            pass

    assert broken.value.code() == grpc.StatusCode.INTERNAL
    assert SECRET not in (broken.value.details() or "")
    assert error_info(broken.value).reason == "INTERNAL"
