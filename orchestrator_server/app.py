"""Assembling the orchestrator: store, channels, engine, service, server."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import grpc
from minisaga.inventory.v1 import inventory_pb2_grpc
from minisaga.orchestrator.v1 import orchestrator_pb2, orchestrator_pb2_grpc

from orchestrator_server.order_saga import place_order_saga
from orchestrator_server.saga.definition import DEFAULT_SAGA_DEADLINE, SagaDefinition
from orchestrator_server.saga.engine import EngineLimits, SagaEngine
from orchestrator_server.saga.retry import (
    DEFAULT_ACTION_RETRY,
    DEFAULT_COMPENSATION_RETRY,
    RetryPolicy,
)
from orchestrator_server.saga.sqlite_store import SqliteSagaStore
from orchestrator_server.saga.store import DEFAULT_LEASE_TTL, SagaStore
from orchestrator_server.service import OrchestratorService
from service_kit import limits, telemetry
from service_kit.database import Synchronous
from service_kit.metrics import Metrics, SagaMetrics, serve_metrics
from service_kit.server import DEFAULT_MAX_MESSAGE_BYTES, RunningServer, start_server
from service_kit.tls import Security, TlsFiles

SERVICE = orchestrator_pb2.DESCRIPTOR.services_by_name["OrchestratorService"].full_name
POSTGRES_SCHEMES = ("postgresql://", "postgres://")

log = logging.getLogger(__name__)


class ClosableStore(SagaStore, Protocol):
    async def close(self) -> None: ...


def is_postgres(store: str) -> bool:
    return store.startswith(POSTGRES_SCHEMES)


@dataclass(frozen=True)
class OrchestratorConfig:
    db: Path
    """The SQLite saga log, when `store` is "" or "sqlite"."""
    participants: Mapping[str, str]
    """Address of each participant: "payment", "inventory", "shipping"."""
    listen: str = "127.0.0.1:7001"
    saga_deadline: timedelta = DEFAULT_SAGA_DEADLINE
    action_retry: RetryPolicy = DEFAULT_ACTION_RETRY
    compensation_retry: RetryPolicy = DEFAULT_COMPENSATION_RETRY
    synchronous: Synchronous = "FULL"
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    channel_options: tuple[tuple[str, int], ...] = field(default=())
    store: str = ""
    """Where the saga log lives: "" or "sqlite" for the SQLite file `db`; a
    postgresql://… URL for PostgreSQL, shared by several replicas."""
    lease_ttl: timedelta = DEFAULT_LEASE_TTL
    """How long a replica owns a saga without renewing (shared stores)."""
    lease_renew_every: timedelta = timedelta(seconds=2)
    """How often the leases of sagas in flight are renewed (shared stores)."""
    recover_every: timedelta = timedelta(seconds=10)
    """How often to look for sagas nobody drives: a dead replica's, say."""
    checkpoint: Callable[[str], None] | None = None
    """Called at each crash-relevant point of the engine (crash tests only)."""
    rng: random.Random | None = None
    """Draws the jitter of every backoff; tests pass one that pins it."""
    security: Security = field(default_factory=Security)
    """TLS, authorization and reflection of the orchestrator's own port."""
    participant_tls: TlsFiles | None = None
    """The client certificate, key and CA the channels to the participants use (None: plaintext)."""
    allow_failure_switches: bool = False
    """Whether PlaceOrder honours fail_payment/fail_inventory/fail_shipping (development)."""
    sagas: tuple[SagaDefinition[Any], ...] = ()
    """Definitions hosted beside the built-in place_order version 1 (--saga): other
    sagas, or other versions of place_order (PlaceOrder starts the newest)."""
    # Limits that shed load (service_kit/limits.py, docs/security.md#limits).
    engine_limits: EngineLimits = field(default_factory=EngineLimits)
    """Sagas in flight, calls per participant, sagas recovered at once."""
    max_concurrent_rpcs: int = limits.MAX_CONCURRENT_RPCS
    max_db_queue: int = limits.MAX_DB_QUEUE
    """Jobs queued for the SQLite saga log's writer; a new saga is refused above it."""
    max_watch_streams: int = limits.MAX_WATCH_STREAMS
    place_order_max_wait: timedelta = timedelta(seconds=limits.PLACE_ORDER_MAX_WAIT_SECONDS)
    """PlaceOrder's longest wait for the saga to end, whatever the caller's deadline."""
    metrics_listen: str = ""
    """Where to serve Prometheus metrics (HOST:PORT; "" for none)."""


@dataclass
class Orchestrator:
    server: RunningServer
    engine: SagaEngine
    store: ClosableStore
    channels: dict[str, grpc.aio.Channel]
    metrics: Metrics | None = None

    @property
    def address(self) -> str:
        return self.server.address

    async def stop(self, grace: float = 0.0) -> None:
        """Drains calls, stops driving sagas (they stay durable), closes everything."""
        await self.server.stop(grace)
        await self.engine.close()
        for channel in self.channels.values():
            await channel.close(None)
        await self.store.close()
        if self.metrics is not None:
            self.metrics.close()


async def open_store(config: OrchestratorConfig, metrics: Metrics | None = None) -> ClosableStore:
    if is_postgres(config.store):
        # Imported here: asyncpg comes with the `postgres` extra, not with every install.
        from orchestrator_server.saga.postgres_store import PostgresSagaStore

        store = await PostgresSagaStore(
            config.store,
            lease_ttl=config.lease_ttl,
            on_commit=metrics.database.observe if metrics else None,
        ).open()
        where = urlsplit(config.store)
        log.info(
            "saga log on PostgreSQL %s%s as replica %s (lease %.1fs)",
            where.hostname or "",
            where.path,
            store.owner,
            config.lease_ttl.total_seconds(),
        )
        return store
    if config.store not in ("", "sqlite"):
        raise ValueError(f"unknown store {config.store!r}: use sqlite or a postgresql:// URL")
    config.db.parent.mkdir(parents=True, exist_ok=True)
    return await SqliteSagaStore(
        config.db,
        synchronous=config.synchronous,
        max_queue=config.max_db_queue,
        on_commit=metrics.database.observe if metrics else None,
    ).open()


async def start(config: OrchestratorConfig) -> Orchestrator:
    """Opens the log, recovers unfinished sagas, and serves OrchestratorService.
    Traces when service_kit.telemetry.configure_tracing found them wanted."""
    metrics = serve_metrics(config.metrics_listen)
    try:
        store = await open_store(config, metrics)
    except BaseException:
        if metrics is not None:
            metrics.close()
        raise
    channels = {name: _channel(address, config) for name, address in config.participants.items()}
    definition = place_order_saga(
        deadline=config.saga_deadline,
        action_retry=config.action_retry,
        compensation_retry=config.compensation_retry,
    )
    engine = SagaEngine(
        store,
        channels,
        [definition, *config.sagas],
        rng=config.rng,
        checkpoint=config.checkpoint,
        limits=config.engine_limits,
        metrics=SagaMetrics(metrics.registry) if metrics else None,
        tracing=telemetry.enabled(),
    )
    service = OrchestratorService(
        engine,
        definition,
        inventory_pb2_grpc.InventoryServiceStub(channels["inventory"]),
        allow_failure_switches=config.allow_failure_switches,
        max_watch_streams=config.max_watch_streams,
        place_order_max_wait=config.place_order_max_wait.total_seconds(),
    )
    try:  # listen first: a port in use must not leave recovered sagas claimed by nobody
        server = await start_server(
            lambda s: orchestrator_pb2_grpc.add_OrchestratorServiceServicer_to_server(service, s),
            [SERVICE],
            config.listen,
            max_message_bytes=config.max_message_bytes,
            maximum_concurrent_rpcs=config.max_concurrent_rpcs,
            security=config.security,
        )
    except BaseException:
        for channel in channels.values():
            await channel.close(None)
        await store.close()
        if metrics is not None:
            metrics.close()
        raise
    await engine.recover()
    engine.start_maintenance(
        renew_every=config.lease_renew_every.total_seconds(),
        recover_every=config.recover_every.total_seconds(),
    )
    return Orchestrator(server, engine, store, channels, metrics)


def _channel(address: str, config: OrchestratorConfig) -> grpc.aio.Channel:
    """A channel to a participant: mTLS with `participant_tls`, else plaintext."""
    options = list(config.channel_options)
    if config.participant_tls is None:
        return grpc.aio.insecure_channel(address, options=options)
    credentials = config.participant_tls.channel_credentials()
    return grpc.aio.secure_channel(address, credentials, options=options)
