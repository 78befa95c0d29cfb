"""minisaga's saga engine: the public API (docs/writing-a-saga.md).

Import from here, and only from here: the submodules (`definition`, `engine`,
`store`, `sqlite_store`, `postgres_store`, `policy`, `retry`, `runtime`) are
internal, and their names and layout may change.

    from orchestrator_server.saga import Rpc, Saga, SagaContext, SqliteSagaStore, open_engine

    CHARGE = Rpc.of("payment", PAYMENT, "Charge", ChargeRequest, ChargeResponse)
    ORDER = Saga("order", OrderRequest).step("charge").invoke(CHARGE, charge)...build()

    async with open_engine(SqliteSagaStore("sagas.db"), {"payment": address}, [ORDER]) as engine:
        ended = await engine.run(ORDER, OrderRequest(...), request_id="order-42")

- definitions: `Saga` builds a `SagaDefinition` (typed steps, a `version`);
  builders get a `SagaContext` (`ctx.input`, `ctx.output(RPC)`).
- retries and status codes: `RetryPolicy`, `StatusPolicy`, `Outcome`.
- running: `open_engine` (store opened, sagas recovered, maintenance on),
  `SagaEngine.run` / `start` / `wait` / `cancel` / `resume`.
- the log: `SqliteSagaStore` (one orchestrator), `PostgresSagaStore` (replicas;
  needs the `postgres` extra), and the records they return.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orchestrator_server.saga.definition import (
    DEFAULT_SAGA_DEADLINE,
    Rpc,
    Saga,
    SagaContext,
    SagaDefinition,
    Step,
    StepOutputMissing,
)
from orchestrator_server.saga.engine import (
    EngineLimits,
    SagaEngine,
    SagaLimitReached,
    UnknownDefinition,
)
from orchestrator_server.saga.policy import Outcome, StatusPolicy
from orchestrator_server.saga.retry import (
    DEFAULT_ACTION_RETRY,
    DEFAULT_COMPENSATION_RETRY,
    RetryPolicy,
)
from orchestrator_server.saga.runtime import OpenableStore, open_engine
from orchestrator_server.saga.sqlite_store import SqliteSagaStore, StoreInUse
from orchestrator_server.saga.store import (
    MAX_STEP_OUTPUT_BYTES,
    AttemptRecord,
    Cause,
    CompensationFailure,
    IdempotencyConflict,
    LeaseLost,
    Phase,
    SagaFilter,
    SagaIdConflict,
    SagaRecord,
    SagaStatus,
    SagaStore,
)

if TYPE_CHECKING:
    from orchestrator_server.saga.postgres_store import PostgresSagaStore

__all__ = [
    "DEFAULT_ACTION_RETRY",
    "DEFAULT_COMPENSATION_RETRY",
    "DEFAULT_SAGA_DEADLINE",
    "MAX_STEP_OUTPUT_BYTES",
    "AttemptRecord",
    "Cause",
    "CompensationFailure",
    "EngineLimits",
    "IdempotencyConflict",
    "LeaseLost",
    "OpenableStore",
    "Outcome",
    "Phase",
    "PostgresSagaStore",
    "RetryPolicy",
    "Rpc",
    "Saga",
    "SagaContext",
    "SagaDefinition",
    "SagaEngine",
    "SagaFilter",
    "SagaIdConflict",
    "SagaLimitReached",
    "SagaRecord",
    "SagaStatus",
    "SagaStore",
    "SqliteSagaStore",
    "StatusPolicy",
    "Step",
    "StepOutputMissing",
    "StoreInUse",
    "UnknownDefinition",
    "open_engine",
]


def __getattr__(name: str) -> Any:
    """PostgresSagaStore is imported on first use: asyncpg is the `postgres` extra's."""
    if name == "PostgresSagaStore":
        from orchestrator_server.saga.postgres_store import PostgresSagaStore

        return PostgresSagaStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
