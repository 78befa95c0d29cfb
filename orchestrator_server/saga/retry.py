"""Retry policies as data: exponential backoff with full jitter."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how fast a step's RPC is tried again."""

    initial_interval: timedelta = timedelta(milliseconds=100)
    """Upper bound of the first backoff; later ones grow by backoff_coefficient."""
    backoff_coefficient: float = 2.0
    """Each retry's upper bound is the previous one times this."""
    maximum_interval: timedelta = timedelta(seconds=2)
    """No backoff is longer than this."""
    maximum_attempts: int = 5
    """Attempts in all, the first included, before the step gives up; 0 for no
    limit (then `horizon` must be set)."""
    attempt_timeout: timedelta = timedelta(seconds=5)
    """The deadline of each attempt's RPC."""
    horizon: timedelta | None = None
    """Give up once this long has passed since this run's first attempt of the
    step (None: no time limit). Like the attempt count it starts afresh when
    the saga is taken up again: after a restart, a take-over or ResumeSaga."""

    def __post_init__(self) -> None:
        if self.initial_interval <= timedelta(0):
            raise ValueError("initial_interval must be positive")
        if self.backoff_coefficient < 1.0:
            raise ValueError("backoff_coefficient must be at least 1")
        if self.maximum_interval < self.initial_interval:
            raise ValueError("maximum_interval must be at least initial_interval")
        if self.maximum_attempts < 0:
            raise ValueError("maximum_attempts must be at least 1, or 0 for no limit")
        if self.attempt_timeout <= timedelta(0):
            raise ValueError("attempt_timeout must be positive")
        if self.horizon is not None and self.horizon <= timedelta(0):
            raise ValueError("horizon must be positive")
        if self.maximum_attempts == 0 and self.horizon is None:
            raise ValueError("with no attempt limit (maximum_attempts 0) a horizon is required")

    def exhausted(self, attempts: int, elapsed: timedelta) -> bool:
        """Whether a step that has made `attempts` attempts in this run, the
        first of them `elapsed` ago, gives up rather than try again."""
        if self.maximum_attempts and attempts >= self.maximum_attempts:
            return True
        return self.horizon is not None and elapsed >= self.horizon

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based).

        Full jitter: uniform in [0, min(maximum, initial * coefficient^(attempt-1))],
        so retries of many sagas hitting one participant spread out.
        """
        cap = min(
            self.maximum_interval.total_seconds(),
            self.initial_interval.total_seconds() * self.backoff_coefficient ** (attempt - 1),
        )
        return (rng or random).uniform(0.0, cap)


DEFAULT_ACTION_RETRY = RetryPolicy()
"""Actions: 5 attempts, backoff 0.1 s doubling to at most 2 s, 5 s per attempt."""

DEFAULT_COMPENSATION_RETRY = RetryPolicy(
    maximum_attempts=0, maximum_interval=timedelta(seconds=60), horizon=timedelta(hours=6)
)
"""Compensations outlast an outage: no attempt limit, backoff up to 60 s, for 6 hours.

An undo left undone leaves money charged and stock held, so a participant that
is down (a deploy, a failover, an afternoon's incident) is waited for rather
than handed to a person: 6 hours covers an outage noticed and repaired within a
working shift, at no more than one attempt a minute per saga. After that the
saga is FAILED, which then means a person is really needed (ResumeSaga takes
it up again, with a fresh horizon; ResumeSagas every FAILED saga at once)."""
