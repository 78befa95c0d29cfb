"""The engine waits out each retry's backoff, for actions and compensations.

Full jitter draws a backoff in [0, bound]; a `random.Random` pinned to the
top of the range makes every backoff its bound, so the gap between one
attempt's recorded end and the next one's recorded start must be at least
that. Only a lower bound is asserted: a busy machine may wait longer.
"""

from __future__ import annotations

import itertools
import random
from datetime import timedelta
from pathlib import Path

from minisaga.orchestrator.v1 import orchestrator_pb2 as pb

from orchestrator_server.saga.retry import RetryPolicy
from tests.orchestrator.conftest import start_system, timeline

RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=100),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(milliseconds=300),
    maximum_attempts=4,
    attempt_timeout=timedelta(seconds=10),
)
BOUNDS_MS = [100, 200, 300]
"""The backoff after failed attempts 1, 2 and 3: doubling, capped at 300 ms."""
CLOCK_SLACK_MS = 2
"""Recorded times are whole wall-clock milliseconds; timers use the monotonic clock."""


class TopOfRange(random.Random):
    """Full jitter at its top: every backoff is its upper bound."""

    def uniform(self, a: float, b: float) -> float:
        return b


def gaps_ms(execution: pb.StepExecution) -> list[int]:
    """From each attempt's end to the next one's start, as recorded."""
    return [
        later.started_at.ToMilliseconds() - earlier.finished_at.ToMilliseconds()
        for earlier, later in itertools.pairwise(execution.attempts)
    ]


def execution(saga: pb.Saga, step: str, phase: pb.StepPhase.ValueType) -> pb.StepExecution:
    return next(e for e in saga.steps if (e.step, e.phase) == (step, phase))


async def test_action_and_compensation_retries_wait_at_least_their_backoff(
    tmp_path: Path,
) -> None:
    system = await start_system(
        tmp_path, action_retry=RETRY, compensation_retry=RETRY, rng=TopOfRange()
    )
    try:
        system.payment.faults.fail_first = 3  # Charge fails 3 times, then succeeds
        system.payment.faults.methods = frozenset({"Charge"})
        system.inventory.faults.fail_first = 3  # and so does Release, undoing Reserve
        system.inventory.faults.methods = frozenset({"Release"})

        placed = await system.place(fail_shipping=True)

        assert placed.status == pb.SAGA_STATUS_COMPENSATED
        assert timeline(placed.saga) == [
            *["charge UNAVAILABLE"] * 3,
            "charge OK",
            "reserve OK",
            "ship FAILED_PRECONDITION",
            *["undo reserve UNAVAILABLE"] * 3,
            "undo reserve OK",
            "undo charge OK",
        ]
        charge = gaps_ms(execution(placed.saga, "charge", pb.STEP_PHASE_ACTION))
        release = gaps_ms(execution(placed.saga, "reserve", pb.STEP_PHASE_COMPENSATION))
        for kind, gaps in (("action", charge), ("compensation", release)):
            short = [
                (gap, bound)
                for gap, bound in zip(gaps, BOUNDS_MS, strict=True)
                if gap < bound - CLOCK_SLACK_MS
            ]
            assert not short, f"{kind} retries came before their backoff (ms): {short}"
    finally:
        await system.close()
