"""`open_engine`: a store, channels and definitions, running, in one `async with`.

Internal module: import `open_engine` from `orchestrator_server.saga`.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from datetime import timedelta
from typing import Any, Protocol, Self

import grpc

from orchestrator_server.saga.definition import SagaDefinition
from orchestrator_server.saga.engine import EngineLimits, SagaEngine
from orchestrator_server.saga.store import SagaStore


class OpenableStore(SagaStore, Protocol):
    """A store `open_engine` opens and closes: SqliteSagaStore, PostgresSagaStore."""

    async def open(self) -> Self: ...

    async def close(self) -> None: ...


@contextlib.asynccontextmanager
async def open_engine(
    store: OpenableStore,
    participants: Mapping[str, grpc.aio.Channel | str],
    definitions: Iterable[SagaDefinition[Any]],
    *,
    limits: EngineLimits | None = None,
    renew_every: timedelta = timedelta(seconds=2),
    recover_every: timedelta = timedelta(seconds=10),
    rng: random.Random | None = None,
    checkpoint: Callable[[str], None] | None = None,
) -> AsyncIterator[SagaEngine]:
    """Opens `store`, recovers the sagas left unfinished, keeps leases and
    recovery going in the background, and yields the engine; on leaving, stops
    driving (every saga stays durable) and closes what it opened.

    `participants` maps each participant name the definitions call to a
    channel (yours to close) or an address (a plaintext channel made and
    closed here).

        async with open_engine(SqliteSagaStore("sagas.db"), {"payment": "127.0.0.1:7002"},
                               [PLACE_ORDER]) as engine:
            ended = await engine.run(PLACE_ORDER, order, request_id="order-1")
    """
    made: list[grpc.aio.Channel] = []
    channels: dict[str, grpc.aio.Channel] = {}
    for name, target in participants.items():
        if isinstance(target, str):
            channel = grpc.aio.insecure_channel(target)
            made.append(channel)
            channels[name] = channel
        else:
            channels[name] = target
    try:
        opened = await store.open()
        try:
            engine = SagaEngine(
                opened,
                channels,
                definitions,
                rng=rng,
                checkpoint=checkpoint,
                limits=limits or EngineLimits(),
            )
            try:
                await engine.recover()
                engine.start_maintenance(
                    renew_every=renew_every.total_seconds(),
                    recover_every=recover_every.total_seconds(),
                )
                yield engine
            finally:
                await engine.close()
        finally:
            await opened.close()
    finally:
        for channel in made:
            await channel.close(None)
