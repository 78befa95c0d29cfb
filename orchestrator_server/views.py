"""How sagas look from outside: saga log records turned into API messages."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from minisaga.orchestrator.v1 import orchestrator_pb2 as pb

from orchestrator_server.saga.definition import SagaDefinition
from orchestrator_server.saga.store import AttemptRecord, Phase, SagaRecord, SagaStatus
from service_kit.clock import duration, timestamp

_PHASE = {Phase.ACTION: pb.STEP_PHASE_ACTION, Phase.COMPENSATION: pb.STEP_PHASE_COMPENSATION}
_ORDER_STATUS = {
    SagaStatus.RUNNING: pb.ORDER_STATUS_PENDING,
    SagaStatus.COMPENSATING: pb.ORDER_STATUS_PENDING,
    SagaStatus.COMPLETED: pb.ORDER_STATUS_COMPLETED,
    SagaStatus.COMPENSATED: pb.ORDER_STATUS_CANCELLED,
    SagaStatus.FAILED: pb.ORDER_STATUS_FAILED,
}


def saga_status(status: SagaStatus) -> pb.SagaStatus.ValueType:
    return pb.SagaStatus.Value(f"SAGA_STATUS_{status.value}")


def status_from_proto(value: pb.SagaStatus.ValueType) -> SagaStatus | None:
    if value == pb.SAGA_STATUS_UNSPECIFIED:
        return None
    return SagaStatus(pb.SagaStatus.Name(value).removeprefix("SAGA_STATUS_"))


def saga_view(
    record: SagaRecord, definition: SagaDefinition[Any] | None, not_driven_reason: str = ""
) -> pb.Saga:
    """`definition` is the saga's own version's (None when this orchestrator
    lacks it: the steps not yet run are then not listed)."""
    saga = pb.Saga(
        saga_id=record.saga_id,
        saga_type=record.saga_type,
        saga_version=record.saga_version,
        not_driven_reason=not_driven_reason,
        status=saga_status(record.status),
        order_id=record.business_key,
        request_id=record.request_id or "",
        steps=_executions(record, definition),
        compensation_failures=[
            pb.CompensationFailure(
                step=f.step,
                method=f.method,
                code=f.code,
                message=f.message,
                attempts=f.attempts,
                at=timestamp(f.at_ms),
            )
            for f in record.failures
        ],
        created_at=timestamp(record.created_at_ms),
        updated_at=timestamp(record.updated_at_ms),
        deadline=timestamp(record.deadline_ms),
        ended_at=timestamp(record.ended_at_ms),
        trace_id=record.trace_id,
    )
    if record.cause is not None:
        cause = record.cause
        saga.compensation_cause.CopyFrom(
            pb.CompensationCause(
                step=cause.step,
                code=cause.code,
                message=cause.message,
                reason=cause.reason,
                at=timestamp(cause.at_ms),
            )
        )
    return saga


def _executions(
    record: SagaRecord, definition: SagaDefinition[Any] | None
) -> list[pb.StepExecution]:
    """Every step and compensation in the order they ran, then the steps still to run."""
    groups: dict[tuple[str, Phase], list[AttemptRecord]] = {}
    for attempt in record.attempts:
        groups.setdefault((attempt.step, attempt.phase), []).append(attempt)
    executions = []
    keys = list(groups)
    for index, (step, phase) in enumerate(keys):
        attempts = groups[(step, phase)]
        last = attempts[-1]
        current = (
            index == len(keys) - 1
            and not record.status.terminal
            and (phase is Phase.ACTION) == (record.status is SagaStatus.RUNNING)
        )
        if last.code == "OK":
            state = pb.STEP_STATE_SUCCEEDED
        elif last.code is None or current:
            state = pb.STEP_STATE_RUNNING
        else:
            state = pb.STEP_STATE_FAILED
        executions.append(
            pb.StepExecution(
                step=step,
                phase=_PHASE[phase],
                method=last.method,
                state=state,
                attempts=[_attempt(a) for a in attempts],
                started_at=timestamp(attempts[0].started_at_ms),
                finished_at=(
                    timestamp(last.finished_at_ms) if state != pb.STEP_STATE_RUNNING else None
                ),
            )
        )
    if record.status is SagaStatus.RUNNING and definition is not None:
        for step_def in definition.steps:
            if (step_def.name, Phase.ACTION) not in groups:
                executions.append(
                    pb.StepExecution(
                        step=step_def.name,
                        phase=pb.STEP_PHASE_ACTION,
                        method=step_def.action.rpc.method,
                        state=pb.STEP_STATE_PENDING,
                    )
                )
    return executions


def _attempt(attempt: AttemptRecord) -> pb.Attempt:
    finished = attempt.finished_at_ms
    return pb.Attempt(
        number=attempt.number,
        code=attempt.code or "",
        message=attempt.message,
        reason=attempt.reason,
        started_at=timestamp(attempt.started_at_ms),
        finished_at=timestamp(finished),
        duration=duration(finished - attempt.started_at_ms) if finished is not None else None,
    )


def order_view(record: SagaRecord, order: pb.PlaceOrderRequest) -> pb.Order:
    return pb.Order(
        order_id=record.business_key,
        saga_id=record.saga_id,
        status=_ORDER_STATUS[record.status],
        product_id=order.product_id,
        quantity=order.quantity,
        amount=order.amount,
        currency=order.currency or "JPY",
        address=order.address,
        created_at=timestamp(record.created_at_ms),
        updated_at=timestamp(record.updated_at_ms),
    )


def saga_events(record: SagaRecord) -> list[tuple[Hashable, pb.SagaEvent]]:
    """The saga's history as events, in log order, each with a key that never changes.

    WatchSaga sends each key once, so a watcher sees every event exactly once
    however the saga changes between two reads.
    """
    status = saga_status(record.status)
    events: list[tuple[float, Hashable, pb.SagaEvent]] = []

    def add(
        position: float,
        at_ms: int,
        key: Hashable,
        text: str,
        step: str = "",
        phase: Phase | None = None,
    ) -> None:
        event = pb.SagaEvent(
            time=timestamp(at_ms),
            description=text,
            step=step,
            phase=_PHASE[phase] if phase else pb.STEP_PHASE_UNSPECIFIED,
            status=status,
        )
        events.append((position, key, event))

    # Positions follow the log, where attempts stand in the order they were
    # recorded; the compensation cause goes just before the first undo.
    attempts = record.attempts
    add(-1, record.created_at_ms, ("started",), f"saga {record.saga_type} started")
    first_undo = next(
        (i for i, a in enumerate(attempts) if a.phase is Phase.COMPENSATION), len(attempts)
    )
    for i, a in enumerate(attempts):
        what = a.step if a.phase is Phase.ACTION else f"{a.step} (compensation)"
        add(
            i,
            a.started_at_ms,
            ("sent", a.step, a.phase, a.number),
            f"{what}: attempt {a.number} sent to {a.method}",
            a.step,
            a.phase,
        )
        if a.code is not None and a.finished_at_ms is not None:
            took = a.finished_at_ms - a.started_at_ms
            detail = f" {a.reason}" if a.reason else ""
            detail += f": {a.message}" if a.message else ""
            add(
                i + 0.25,
                a.finished_at_ms,
                ("done", a.step, a.phase, a.number),
                f"{what}: attempt {a.number} {a.code} in {took} ms{detail}",
                a.step,
                a.phase,
            )
    if record.cause is not None:
        c = record.cause
        text = f"compensating: {c.step or 'saga'} ended {c.code}"
        text += (f" {c.reason}" if c.reason else "") + (f": {c.message}" if c.message else "")
        add(first_undo - 0.5, c.at_ms, ("compensating",), text, c.step)
    for index, f in enumerate(record.failures):
        last_try = max(
            (
                i
                for i, a in enumerate(attempts)
                if a.step == f.step and a.phase is Phase.COMPENSATION and a.started_at_ms <= f.at_ms
            ),
            default=len(attempts),
        )
        add(
            last_try + 0.5,
            f.at_ms,
            ("failure", index),
            f"compensation of {f.step} failed after {f.attempts} attempts: {f.code} {f.message}",
            f.step,
            Phase.COMPENSATION,
        )
    if record.ended_at_ms is not None:
        add(
            len(attempts) + 1,
            record.ended_at_ms,
            ("ended", record.status, record.ended_at_ms),
            f"saga {record.status.value}",
        )
    events.sort(key=lambda e: e[0])
    return [(key, event) for _, key, event in events]


def definition_view(definition: SagaDefinition[Any]) -> pb.SagaDefinition:
    """The definition as GetSagaDefinition returns it: its steps, their RPCs and undos."""
    deadline = int(definition.deadline.total_seconds() * 1000)
    return pb.SagaDefinition(
        saga_type=definition.name,
        version=str(definition.version),
        steps=[
            pb.StepDefinition(
                name=step.name,
                participant=step.action.rpc.participant,
                method=step.action.rpc.method,
                compensation_method=(
                    step.compensation.rpc.method if step.compensation is not None else ""
                ),
            )
            for step in definition.steps
        ],
        deadline=duration(deadline),
    )
