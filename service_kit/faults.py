"""Fault injection for participants: failures a request switch cannot show.

Set by flags (docs/design.md §3.6): an error rate with a chosen code, the first N
calls of each saga failing, added latency, and "commit, then answer
UNAVAILABLE" — the in-doubt case where the work is done but the caller
never hears so. Tests may change a running server's `FaultConfig` in place.
"""

from __future__ import annotations

import argparse
import asyncio
import random
from collections import Counter
from dataclasses import dataclass, field

import grpc

from service_kit.errors import (
    FAILURE_SWITCHES_DISABLED,
    INJECTED_FAILURE,
    ServiceError,
    failed_precondition,
)
from service_kit.flags import env_default
from service_kit.tls import switch


class Park:
    """Holds every call to one method until `release()`; counts who is held."""

    def __init__(self, method: str) -> None:
        self.method = method
        self.saga_ids: list[str] = []
        """The saga of each call that arrived, parked or not, in arrival order."""
        self._released = asyncio.Event()
        self._arrived = asyncio.Event()

    async def hold(self, saga_id: str) -> None:
        self.saga_ids.append(saga_id)
        self._arrived.set()
        await self._released.wait()

    async def reached(self, calls: int = 1) -> list[str]:
        """Waits until `calls` calls have arrived; returns their sagas."""
        while len(self.saga_ids) < calls:
            self._arrived.clear()
            await self._arrived.wait()
        return self.saga_ids[:calls]

    def release(self) -> None:
        """Lets the held calls and every later one through."""
        self._released.set()


@dataclass
class FaultConfig:
    error_rate: float = 0.0
    """Fraction of calls (0..1) that fail with error_code before doing anything."""
    error_code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE
    """The status code of an injected error."""
    fail_first: int = 0
    """The first N calls of each saga to a faulty method fail with error_code."""
    latency_ms: int = 0
    """Delay added before every call to a faulty method."""
    commit_then_unavailable_rate: float = 0.0
    """Fraction of calls that commit their work, then answer UNAVAILABLE."""
    methods: frozenset[str] = frozenset()
    """Method names the faults apply to (such as "Charge"); empty means all."""
    allow_failure_switches: bool = False
    """Whether a request's `fail` field is honoured (--allow-failure-switches);
    when not, a request that sets it is refused with FAILURE_SWITCHES_DISABLED."""
    _calls: Counter[tuple[str, str]] = field(default_factory=Counter, repr=False)
    _parks: dict[str, Park] = field(default_factory=dict, repr=False)

    def park(self, method: str) -> Park:
        """From now on, calls to `method` wait until the returned Park is released."""
        self._parks[method] = Park(method)
        return self._parks[method]

    def applies_to(self, method: str) -> bool:
        return not self.methods or method in self.methods

    async def before(self, method: str, saga_id: str) -> None:
        """Called first in a handler: a park, latency, then an injected error."""
        park = self._parks.get(method)
        if park is not None:
            await park.hold(saga_id)
        if not self.applies_to(method):
            return
        if self.latency_ms > 0:
            await asyncio.sleep(self.latency_ms / 1000)
        failing_first = False
        if self.fail_first > 0:  # counts only while asked to, so memory stays bounded
            self._calls[(method, saga_id)] += 1
            failing_first = self._calls[(method, saga_id)] <= self.fail_first
        if failing_first or (self.error_rate > 0 and random.random() < self.error_rate):
            raise ServiceError(
                self.error_code,
                f"injected {self.error_code.name} on {method}",
                INJECTED_FAILURE,
                {"method": method},
            )

    def check_switches(self, **switches: bool) -> None:
        """Refuses a request that sets a failure switch on a service not started
        with --allow-failure-switches: a development feature, off in production."""
        refuse_failure_switches(self.allow_failure_switches, **switches)

    def after_commit(self, method: str) -> None:
        """Called once the work is committed: maybe pretend the reply was lost."""
        if (
            self.applies_to(method)
            and self.commit_then_unavailable_rate > 0
            and random.random() < self.commit_then_unavailable_rate
        ):
            raise ServiceError(
                grpc.StatusCode.UNAVAILABLE,
                f"injected UNAVAILABLE after {method} committed",
                INJECTED_FAILURE,
                {"method": method, "committed": "true"},
            )


def refuse_failure_switches(allowed: bool, **switches: bool) -> None:
    """FAILED_PRECONDITION FAILURE_SWITCHES_DISABLED when a switch is set but not allowed."""
    used = sorted(name for name, value in switches.items() if value)
    if used and not allowed:
        raise failed_precondition(
            FAILURE_SWITCHES_DISABLED,
            f"{', '.join(used)}: failure switches are a development feature; this service "
            "runs without --allow-failure-switches",
            fields=",".join(used),
        )


def add_failure_switches_flag(parser: argparse._ActionsContainer, env_prefix: str) -> None:
    """--allow-failure-switches: honour the requests' fail fields (make run sets it)."""
    variable = f"{env_prefix}_ALLOW_FAILURE_SWITCHES"
    parser.add_argument(
        "--allow-failure-switches",
        action="store_true",
        default=env_default(variable, "false"),
        help="honour the failure switches of requests (fail, fail_payment, ...), a "
        "development feature that make run turns on; without it a request that sets one "
        f"is refused with FAILED_PRECONDITION (default off, env {variable}=true)",
    )


def failure_switches_allowed(args: argparse.Namespace) -> bool:
    """The value of --allow-failure-switches, or of its environment variable."""
    return switch(args.allow_failure_switches, "--allow-failure-switches")


def add_fault_flags(parser: argparse.ArgumentParser, env_prefix: str) -> None:
    group = parser.add_argument_group(
        "fault injection", "make this service misbehave on purpose, for tests and demos"
    )
    add_failure_switches_flag(group, env_prefix)
    group.add_argument(
        "--fault-error-rate",
        type=float,
        default=env_default(f"{env_prefix}_FAULT_ERROR_RATE", "0"),
        help="fraction of calls (0..1) failing with --fault-error-code (default 0)",
    )
    group.add_argument(
        "--fault-error-code",
        choices=[c.name for c in grpc.StatusCode if c.name != "OK"],
        default=env_default(f"{env_prefix}_FAULT_ERROR_CODE", "UNAVAILABLE"),
        help="status code of injected errors (default UNAVAILABLE)",
    )
    group.add_argument(
        "--fault-fail-first",
        type=int,
        default=env_default(f"{env_prefix}_FAULT_FAIL_FIRST", "0"),
        help="the first N calls of each saga to a faulty method fail (default 0)",
    )
    group.add_argument(
        "--fault-latency-ms",
        type=int,
        default=env_default(f"{env_prefix}_FAULT_LATENCY_MS", "0"),
        help="milliseconds added to every call to a faulty method (default 0)",
    )
    group.add_argument(
        "--fault-commit-then-unavailable",
        type=float,
        default=env_default(f"{env_prefix}_FAULT_COMMIT_THEN_UNAVAILABLE", "0"),
        help="fraction of calls that commit, then answer UNAVAILABLE (default 0)",
    )
    group.add_argument(
        "--fault-methods",
        default=env_default(f"{env_prefix}_FAULT_METHODS", ""),
        help="comma-separated methods the faults apply to, such as Charge,Refund (default all)",
    )


def faults_from_flags(args: argparse.Namespace) -> FaultConfig:
    for name in ("fault_error_rate", "fault_commit_then_unavailable"):
        if not 0.0 <= getattr(args, name) <= 1.0:
            raise SystemExit(f"--{name.replace('_', '-')} must be between 0 and 1")
    return FaultConfig(
        error_rate=args.fault_error_rate,
        error_code=grpc.StatusCode[args.fault_error_code],
        fail_first=args.fault_fail_first,
        latency_ms=args.fault_latency_ms,
        commit_then_unavailable_rate=args.fault_commit_then_unavailable,
        methods=frozenset(m.strip() for m in args.fault_methods.split(",") if m.strip()),
        allow_failure_switches=failure_switches_allowed(args),
    )
