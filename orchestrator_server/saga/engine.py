"""Drives sagas: forward through their steps, backward through compensations.

One asyncio task per saga in flight. Every attempt is written to the log
before its RPC and its outcome after (write-ahead), so `recover()` after a
crash can drive each unfinished saga on from exactly where it was; re-sending
an attempt whose outcome was never recorded is safe because participants are
idempotent by saga_id. Recovery is the same path as a fresh start: `drive()`.

`checkpoint` is called with a name at each point where a crash matters
("action-attempt-recorded", "action-rpc-returned", "outcome-recorded",
"output-recorded", "compensation-attempt-recorded",
"status-recorded-compensating", ...); crash tests use it to SIGKILL the
process at exactly that point.

An OK action's response is its step's output: recorded with the outcome (in
the same write), handed to later builders and every compensation through
`SagaContext.output`, and restored from the log at recovery.

Definitions are registered by (name, version): a saga is driven on the version
it started on; one whose type or version this engine lacks is left alone (it
says why in `not_driven_reason`) for a replica that has it.

Internal module: import the engine from `orchestrator_server.saga`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from types import MappingProxyType
from typing import Any, cast

import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from opentelemetry import propagate, trace

from orchestrator_server.saga import sql
from orchestrator_server.saga.definition import Invocation, Rpc, SagaContext, SagaDefinition, Step
from orchestrator_server.saga.policy import NOT_SENT, UNRECORDED
from orchestrator_server.saga.store import (
    MAX_STEP_OUTPUT_BYTES,
    AttemptRecord,
    Cause,
    CompensationFailure,
    LeaseLost,
    Phase,
    Renewal,
    SagaRecord,
    SagaStatus,
    SagaStore,
    StatusChange,
)
from service_kit import limits, telemetry
from service_kit.clock import now_ms
from service_kit.logs import saga_fields
from service_kit.metrics import SagaMetrics
from service_kit.validation import check_saga_id

log = logging.getLogger(__name__)

CANCELLED_BY_OPERATOR = "cancelled by an operator (CancelSaga)"
# Cause reasons when no participant refused: the saga itself stopped going forward.
SAGA_CANCELLED = "SAGA_CANCELLED"
SAGA_DEADLINE_EXCEEDED = "SAGA_DEADLINE_EXCEEDED"
# The code of a compensation failure for a step that has no compensation.
NO_COMPENSATION = "NO_COMPENSATION"
# The reason of an action attempt whose OK response was over MAX_STEP_OUTPUT_BYTES.
STEP_OUTPUT_TOO_LARGE = "STEP_OUTPUT_TOO_LARGE"
# The cause reason when an action's request builder raised (docs/design.md §4).
REQUEST_BUILD_FAILED = "REQUEST_BUILD_FAILED"


class _BuildFailed(Exception):
    """A request builder raised: a bug in the saga's definition, which would
    raise again on every try. The message is what the saga's log may show."""


class ChangeFeed:
    """Wakes whoever watches a saga when its log changes (in this process).

    A watcher holds its event only inside `watch`, so nothing stays behind for a
    saga nobody watches any more, however it ended."""

    def __init__(self) -> None:
        self._watchers: dict[str, set[asyncio.Event]] = {}

    @contextlib.contextmanager
    def watch(self, saga_id: str) -> Iterator[asyncio.Event]:
        """An event set at each change of the saga while the block runs. Clear it
        *before* reading the saga, then wait on it: no change is missed."""
        event = asyncio.Event()
        self._watchers.setdefault(saga_id, set()).add(event)
        try:
            yield event
        finally:
            watchers = self._watchers.get(saga_id)
            if watchers is not None:
                watchers.discard(event)
                if not watchers:
                    del self._watchers[saga_id]

    def notify(self, saga_id: str) -> None:
        for event in self._watchers.get(saga_id, ()):
            event.set()

    def watched(self, saga_id: str) -> bool:
        return saga_id in self._watchers

    def __len__(self) -> int:
        """Sagas being watched: what the feed holds in memory."""
        return len(self._watchers)


class UnknownDefinition(LookupError):
    """`start` was given a definition this engine did not register (by name
    and version, and the very object: a look-alike is refused too)."""

    def __init__(self, name: str, version: int) -> None:
        super().__init__(f"saga {name} version {version} is not registered on this engine")
        self.name = name
        self.version = version


class SagaLimitReached(Exception):
    """--max-sagas-in-flight sagas are in flight here: a new one is refused."""

    def __init__(self, in_flight: int, limit: int) -> None:
        super().__init__(f"{in_flight} sagas in flight (--max-sagas-in-flight {limit})")
        self.in_flight = in_flight
        self.limit = limit


class RecordingTime:
    """How long recording a new saga takes now: the longer of the recent mean
    (an exponentially weighted one) and the age of the oldest creation still
    waiting for the log. With no creation waiting it is 0: the next one goes
    straight to the log, and its own time refreshes the mean. PlaceOrder sheds
    a call whose deadline this would not leave time for (service.py)."""

    WEIGHT = 0.2  # of the newest creation in the mean

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._mean = 0.0
        self._waiting: dict[int, float] = {}  # token -> start; insertion order is age order
        self._tokens = 0

    @contextlib.contextmanager
    def timing(self) -> Iterator[None]:
        """Times one creation, from the request to the log's answer."""
        self._tokens += 1
        token = self._tokens
        self._waiting[token] = self._clock()
        try:
            yield
            self._mean += self.WEIGHT * (self._clock() - self._waiting[token] - self._mean)
        finally:
            del self._waiting[token]

    def seconds(self) -> float:
        if not self._waiting:
            return 0.0
        oldest = next(iter(self._waiting.values()))
        return max(self._mean, self._clock() - oldest)


@dataclass(frozen=True)
class EngineLimits:
    """What one orchestrator takes on at once (service_kit/limits.py has the reasons)."""

    max_sagas_in_flight: int = limits.MAX_SAGAS_IN_FLIGHT
    """Sagas driven, being created, or waiting for recovery; start() refuses more."""
    max_calls_per_participant: int = limits.MAX_CALLS_PER_PARTICIPANT
    """RPCs in flight to one participant; a saga's next attempt waits for a slot."""
    max_recovering_sagas: int = limits.MAX_RECOVERING_SAGAS
    """Sagas found by recover() that are driven at once; the rest wait in line."""


class SagaEngine:
    def __init__(
        self,
        store: SagaStore,
        channels: Mapping[str, grpc.aio.Channel],
        definitions: Iterable[SagaDefinition[Any]],
        *,
        rng: random.Random | None = None,
        checkpoint: Callable[[str], None] | None = None,
        limits: EngineLimits = EngineLimits(),
        metrics: SagaMetrics | None = None,
        tracing: bool = False,
    ) -> None:
        """`metrics` (--metrics-listen) is observed when given; with `tracing`
        (service_kit.telemetry) each saga has a trace: its root span, and a
        child span per attempt."""
        self.store = store
        self.metrics = metrics
        self._tracer = trace.get_tracer(__name__) if tracing else None
        self._spans: dict[str, trace.Span] = {}  # root spans of sagas started here, not yet run
        if metrics is not None:
            metrics.in_flight.set_function(lambda: self.in_flight)
            metrics.past_deadline.set_function(self._past_deadline)
            metrics.not_driven.set_function(lambda: len(self._undriven))
        self.limits = limits
        self._starting = 0  # start() calls between the limit check and their task
        self.recording = RecordingTime()
        """How long a new saga takes to be recorded now (PlaceOrder sheds on it)."""
        self._slots: dict[str, asyncio.Semaphore] = {}  # per participant
        self._waiting: Counter[str] = Counter()  # attempts waiting for a participant's slot
        self._recovery_line: deque[str] = deque()  # found by recover(), not driven yet
        self._recovery_slots = asyncio.Semaphore(limits.max_recovering_sagas)
        self._pacer: asyncio.Task[None] | None = None
        self._checkpoint = checkpoint or (lambda name: None)
        self.changes = ChangeFeed()
        self._channels = channels
        self._definitions: dict[tuple[str, int], SagaDefinition[Any]] = {}
        self._newest: dict[str, SagaDefinition[Any]] = {}
        for definition in definitions:
            key = (definition.name, definition.version)
            if key in self._definitions:
                raise ValueError(f"saga {key[0]} version {key[1]} is registered twice")
            self._definitions[key] = definition
            newest = self._newest.get(definition.name)
            if newest is None or newest.version < definition.version:
                self._newest[definition.name] = definition
        self._undriven: dict[str, str] = {}  # saga id -> why this engine leaves it alone
        self._rng = rng or random.Random()
        self._tasks: dict[str, asyncio.Task[SagaRecord | None]] = {}
        self._live: dict[str, SagaRecord] = {}  # the runner's own copy of each saga in flight
        # The first attempt of each saga just created here, recorded with the
        # saga itself and not yet sent: its runner sends it without a write.
        self._prerecorded: dict[str, AttemptRecord] = {}
        self._maintenance: asyncio.Task[None] | None = None
        self._cancels: dict[str, asyncio.Event] = {}
        self._calls: dict[str, grpc.aio.UnaryUnaryMultiCallable[Any, Any]] = {}
        for definition in self._definitions.values():
            for step in definition.steps:
                for invocation in (step.action, step.compensation):
                    if invocation and invocation.rpc.participant not in channels:
                        raise ValueError(
                            f"step {step.name!r} calls {invocation.rpc.participant!r}, "
                            "which has no channel"
                        )

    def definition(self, name: str, version: int | None = None) -> SagaDefinition[Any]:
        """The definition registered as `name` (its newest version, unless
        `version` is given); KeyError when there is none."""
        if version is None:
            return self._newest[name]
        return self._definitions[(name, version)]

    @property
    def definitions(self) -> list[SagaDefinition[Any]]:
        """Every definition registered, by name then version."""
        return [self._definitions[key] for key in sorted(self._definitions)]

    @property
    def not_driven(self) -> Mapping[str, str]:
        """The sagas this engine found unfinished and left alone, each with why."""
        return MappingProxyType(self._undriven)

    def not_driven_reason(self, record: SagaRecord) -> str:
        """Why this engine does not drive the saga ("" when it would): its type
        or version is not registered here. A replica that has it drives it."""
        if record.status.terminal or (record.saga_type, record.saga_version) in self._definitions:
            return ""
        if record.saga_type not in self._newest:
            return f"saga type {record.saga_type!r} is not registered on this orchestrator"
        return (
            f"saga {record.saga_type} version {record.saga_version} is not registered on this "
            f"orchestrator (it has {_versions(self._definitions, record.saga_type)})"
        )

    @property
    def in_flight(self) -> int:
        """Sagas this engine drives, is creating, or has in line for recovery."""
        return len(self._tasks) + self._starting + len(self._recovery_line)

    @property
    def recovery_backlog(self) -> int:
        """Sagas found by recover() still waiting for a recovery slot."""
        return len(self._recovery_line)

    def _past_deadline(self) -> int:
        now = now_ms()
        return sum(1 for r in list(self._live.values()) if r.deadline_ms < now)

    def waiting_for(self, participant: str) -> int:
        """Attempts waiting for a free call slot to `participant`."""
        return self._waiting[participant]

    # --- the API the service uses -----------------------------------------

    async def start(
        self,
        definition: SagaDefinition[Any],
        saga_input: Message,
        *,
        business_key: str = "",
        request_id: str | None = None,
        saga_id: str | None = None,
    ) -> tuple[SagaRecord, bool]:
        """Records a new saga on `definition` and starts driving it; with a
        known request_id (or a chosen `saga_id` already used for the same
        saga), returns that saga instead (created=False).

        Raises UnknownDefinition when `definition` is not the one registered
        under its name and version; SagaIdConflict when `saga_id` belongs to
        another saga; SagaLimitReached, having written nothing, when
        max_sagas_in_flight are in flight. `business_key` defaults to the saga id."""
        if self._definitions.get((definition.name, definition.version)) is not definition:
            raise UnknownDefinition(definition.name, definition.version)
        if not isinstance(saga_input, definition.input_type):
            raise TypeError(
                f"saga {definition.name} takes {definition.input_type.DESCRIPTOR.full_name}, "
                f"not {saga_input.DESCRIPTOR.full_name}"
            )
        if saga_id is not None:
            problem = check_saga_id("saga_id", saga_id)
            if problem is not None:
                raise ValueError(problem)
        now = now_ms()
        chosen = saga_id or str(uuid.uuid4())
        record = SagaRecord(
            saga_id=chosen,
            saga_type=definition.name,
            saga_version=definition.version,
            business_key=business_key or chosen,
            request_id=request_id,
            input=saga_input.SerializeToString(deterministic=True),
            status=SagaStatus.RUNNING,
            created_at_ms=now,
            updated_at_ms=now,
            deadline_ms=now + int(definition.deadline.total_seconds() * 1000),
        )
        if self.in_flight >= self.limits.max_sagas_in_flight:
            # A resent request adds no saga: it gets its saga back, not a refusal
            # (a client that timed out while we were full would never learn it).
            existing = await self.store.load_by_request_id(request_id) if request_id else None
            if existing is None:
                raise SagaLimitReached(self.in_flight, self.limits.max_sagas_in_flight)
            existing = sql.taken(record, None, existing)  # the stores' rule of "the same saga"
            if not existing.status.terminal:
                self.drive(existing.saga_id)  # a no-op if it runs here
            return existing, False
        if definition.steps:  # written with the saga: one write fewer per saga
            first = definition.steps[0]
            record.attempts.append(
                AttemptRecord(first.name, Phase.ACTION, 1, first.action.rpc.method, now)
            )
        span = None
        if self._tracer is not None:
            span = self._root_span(record)
            context = span.get_span_context()
            record.trace_id = trace.format_trace_id(context.trace_id)
            record.trace_span_id = trace.format_span_id(context.span_id)
        # Shielded: once the row is committed, the saga must be driven even if
        # our caller gives up meanwhile (its deadline, say). A saga id or
        # request_id already taken is the store's to judge, in the insert
        # itself: two racing starts cannot both find it free.
        self._starting += 1
        return await asyncio.shield(self._create_and_drive(record, span))

    def _root_span(self, record: SagaRecord) -> trace.Span:
        """A new trace for a new saga: a saga outlives the request that started it
        (retries, recoveries), so it is a root, linked to that request's span."""
        assert self._tracer is not None
        caller = trace.get_current_span().get_span_context()
        return self._tracer.start_span(
            f"saga {record.saga_type}",
            context=trace.set_span_in_context(trace.INVALID_SPAN),
            links=[trace.Link(caller)] if caller.is_valid else None,
            attributes={"saga.id": record.saga_id, "saga.type": record.saga_type},
        )

    async def _create_and_drive(
        self, record: SagaRecord, span: trace.Span | None
    ) -> tuple[SagaRecord, bool]:
        try:
            try:
                with self.recording.timing():
                    record, created = await self.store.create(record)
            except BaseException:
                if span is not None:
                    span.set_status(trace.StatusCode.ERROR, "not recorded")
                    span.end()
                raise
            if span is not None and not created:  # a retried request: its saga exists
                span.set_attribute("saga.replayed", True)
                span.end()
            if created:
                if record.attempts:
                    self._prerecorded[record.saga_id] = record.attempts[0]
                if span is not None:
                    self._spans[record.saga_id] = span
                if self.metrics is not None:
                    self.metrics.started.labels(record.saga_type).inc()
                log.info("saga started", extra=_fields(record))
                self.drive(record.saga_id, record)
            elif not record.status.terminal:
                self.drive(record.saga_id)  # a no-op if it runs here; claims it if nobody does
        finally:
            self._starting -= 1
        return record, created

    def drive(
        self, saga_id: str, record: SagaRecord | None = None
    ) -> asyncio.Task[SagaRecord | None]:
        """Drives the saga on in the background (at most one task per saga).

        `record`, when the caller has just written it, saves reading it back.
        """
        task = self._tasks.get(saga_id)
        if task is None or task.done():  # a finished task drives nothing any more
            task = asyncio.create_task(self._run(saga_id, record), name=f"saga:{saga_id}")
            self._tasks[saga_id] = task
            task.add_done_callback(lambda t: self._finished(saga_id, t))
        return task

    async def recover(self) -> list[str]:
        """Drives every saga that is not terminal and that no live replica owns:
        at start-up, and then now and again to take over from replicas that
        died. Running it twice is harmless. The sagas found are driven at most
        max_recovering_sagas at a time, oldest first: a restart with 10,000
        unfinished sagas does not send 10,000 calls at once."""
        queued = set(self._recovery_line)
        claimable = await self.store.claimable()
        for gone in self._undriven.keys() - set(claimable):  # ended, or driven by a replica
            del self._undriven[gone]
        saga_ids = [
            s
            for s in claimable
            if s not in self._tasks and s not in queued and s not in self._undriven
        ]
        self._recovery_line.extend(saga_ids)
        if saga_ids and (self._pacer is None or self._pacer.done()):
            self._pacer = asyncio.create_task(self._pace_recovery(), name="saga-recovery")
        if saga_ids:
            log.info("recovering %d unfinished saga(s)", len(saga_ids))
        return saga_ids

    async def _pace_recovery(self) -> None:
        while self._recovery_line:
            await self._recovery_slots.acquire()
            saga_id = self._recovery_line.popleft()
            if saga_id in self._tasks:  # driven meanwhile (ResumeSaga, say)
                self._recovery_slots.release()
                continue
            self.drive(saga_id).add_done_callback(lambda _: self._recovery_slots.release())

    def start_maintenance(self, *, renew_every: float, recover_every: float) -> None:
        """Runs `maintain` in the background until `close`."""
        self._maintenance = asyncio.create_task(
            self.maintain(renew_every=renew_every, recover_every=recover_every),
            name="saga-maintenance",
        )

    async def maintain(self, *, renew_every: float, recover_every: float) -> None:
        """Keeps the leases of the sagas in flight, passes on cancels asked
        through other replicas, and takes over sagas whose owner died."""
        loop = asyncio.get_running_loop()
        next_recovery = loop.time() + recover_every
        while True:
            await asyncio.sleep(renew_every)
            try:  # a database hiccup must not end maintenance for good
                renewal = await self.store.renew(list(self._tasks))
            except Exception:
                log.exception("renewing leases failed; trying again in %.1fs", renew_every)
                renewal = Renewal()
            for saga_id in renewal.lost:
                task = self._tasks.get(saga_id)
                if task is not None:
                    log.warning("saga %s: lease lost to another replica; letting go", saga_id)
                    task.cancel()
            for saga_id in renewal.cancel_requested:
                if saga_id in self._tasks:
                    self._cancel_event(saga_id).set()
            if loop.time() >= next_recovery:
                next_recovery = loop.time() + recover_every
                try:
                    await self.recover()
                except Exception:
                    log.exception("looking for sagas to recover failed; trying again later")

    async def run(
        self,
        definition: SagaDefinition[Any],
        saga_input: Message,
        *,
        business_key: str = "",
        request_id: str | None = None,
        saga_id: str | None = None,
    ) -> SagaRecord:
        """`start`, then `wait` for the saga's end: its terminal record (a saga
        recorded before, by request_id or saga_id, is waited for the same way)."""
        record, _ = await self.start(
            definition,
            saga_input,
            business_key=business_key,
            request_id=request_id,
            saga_id=saga_id,
        )
        ended = await self.wait(record.saga_id, None)
        return record if ended is None else ended

    async def wait(self, saga_id: str, timeout: float | None = None) -> SagaRecord | None:
        """The saga once it is terminal, or as it is when timeout runs out."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        task = self._tasks.get(saga_id)
        if task is not None:
            try:
                ended = await asyncio.wait_for(asyncio.shield(task), timeout)
            except TimeoutError:
                live = self._live.get(saga_id)
                return live if live is not None else await self.store.load(saga_id)
            except LeaseLost:
                ended = None  # another replica drives it now
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if not task.cancelled() or (current is not None and current.cancelling()):
                    raise  # it is our caller who gave up
                ended = None  # this replica let go of the saga: another one drives it
            if ended is not None and ended.status.terminal:
                return ended
        with self.changes.watch(saga_id) as changed:
            while True:  # the saga is driven elsewhere: follow it through the log
                changed.clear()
                record = await self.store.load(saga_id)
                if record is None or record.status.terminal:
                    return record
                left = 1.0 if deadline is None else min(1.0, deadline - loop.time())
                if left <= 0:
                    return record
                # Poll as well as listen: another process may be driving the saga.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), left)

    async def cancel(self, saga_id: str) -> SagaRecord | None:
        """Asks a RUNNING saga to stop and compensate; durable before it returns."""
        record = await self.store.request_cancel(saga_id, now_ms())
        if record is not None and record.status is SagaStatus.RUNNING:
            self._cancel_event(saga_id).set()
            self.drive(saga_id)
            self.changes.notify(saga_id)
        return record

    async def resume(self, saga_id: str) -> SagaRecord | None:
        """Retries a FAILED saga's compensations (and re-drives an orphaned active one)."""
        record = await self.store.resume(saga_id, now_ms())
        if record is not None and not record.status.terminal:
            self.drive(saga_id)
            self.changes.notify(saga_id)
        return record

    async def close(self) -> None:
        """Stops driving; every saga stays durable and is recovered at the next start."""
        tasks = list(self._tasks.values())
        for helper in (self._maintenance, self._pacer):
            if helper is not None:
                tasks.append(helper)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- driving one saga -------------------------------------------------

    def _finished(self, saga_id: str, task: asyncio.Task[SagaRecord | None]) -> None:
        if self._tasks.get(saga_id) is task:  # not a newer run of the same saga
            del self._tasks[saga_id]
            self._live.pop(saga_id, None)
            self._cancels.pop(saga_id, None)
            self._prerecorded.pop(saga_id, None)
        if task.cancelled():
            return
        if isinstance(task.exception(), LeaseLost):
            log.info("saga %s: another replica took it over", saga_id)
        elif task.exception() is not None:
            log.error(
                "saga %s stopped on an unexpected error; ResumeSaga drives it again",
                saga_id,
                exc_info=task.exception(),
            )

    def _cancel_event(self, saga_id: str) -> asyncio.Event:
        return self._cancels.setdefault(saga_id, asyncio.Event())

    async def _run(self, saga_id: str, record: SagaRecord | None) -> SagaRecord | None:
        span = self._spans.pop(saga_id, None)
        try:
            fresh = record is not None  # just created here, or else claimed from the log
            if record is None:
                record = await self.store.claim(saga_id)
            if record is None or record.status.terminal:
                return record  # ended, or another replica drives it
            if not fresh:  # recovered, taken over, or resumed
                log.info("saga taken up (%s)", record.status.value, extra=_fields(record))
                if self.metrics is not None:
                    self.metrics.recovered.inc()
                span = self._resumed_span(record)
            if span is None:
                return await self._run_claimed(saga_id, record)
            with trace.use_span(span, end_on_exit=False, record_exception=False):
                ended = await self._run_claimed(saga_id, record)
            span.set_attribute("saga.status", ended.status.value)
            return ended
        finally:
            if span is not None:
                span.end()

    def _resumed_span(self, record: SagaRecord) -> trace.Span | None:
        """The span of a saga driven on after a recovery, a takeover or a resume: a
        child of the saga's root span (as the log recorded it), so in its trace."""
        if self._tracer is None:
            return None
        context = None
        if record.trace_id and record.trace_span_id:
            trace_id = int(record.trace_id, 16)
            # Sampled or not as the saga's root was: the log keeps its ids, not its flag.
            sampled = telemetry.samples_new_trace(trace_id)
            root = trace.SpanContext(
                trace_id,
                int(record.trace_span_id, 16),
                is_remote=True,
                trace_flags=trace.TraceFlags(
                    trace.TraceFlags.SAMPLED if sampled else trace.TraceFlags.DEFAULT
                ),
            )
            context = trace.set_span_in_context(trace.NonRecordingSpan(root))
        else:  # begun untraced: a trace of its own from here on
            context = trace.set_span_in_context(trace.INVALID_SPAN)
        return self._tracer.start_span(
            f"saga {record.saga_type} resumed",
            context=context,
            attributes={
                "saga.id": record.saga_id,
                "saga.type": record.saga_type,
                "saga.resumed": True,
            },
        )

    async def _run_claimed(self, saga_id: str, record: SagaRecord) -> SagaRecord:
        definition = self._definitions.get((record.saga_type, record.saga_version))
        if definition is None:  # not ours to drive: left for a replica that has it
            reason = self.not_driven_reason(record)
            if saga_id not in self._undriven:
                log.warning("saga %s is not driven here: %s", saga_id, reason)
            self._undriven[saga_id] = reason
            await self.store.release(saga_id)  # a replica that has it may take it at once
            return record
        self._undriven.pop(saga_id, None)
        self._live[saga_id] = record
        pending = self._prerecorded.get(saga_id)
        if any(a.code is None and a is not pending for a in record.attempts):
            # Only this task makes attempts for this saga: these are from before a crash.
            now = now_ms()
            await self.store.close_unrecorded_attempts(saga_id, now, UNRECORDED)
            for attempt in record.attempts:
                if attempt.code is None:
                    attempt.code, attempt.finished_at_ms = UNRECORDED, now
        context = SagaContext(
            saga_id,
            record.business_key,
            definition.input_type.FromString(record.input),
            _outputs(record),
        )
        if record.cancel_requested:
            self._cancel_event(saga_id).set()
        if record.status is SagaStatus.RUNNING:
            cause, last = await self._forward(definition, context, record)
            if cause is None:
                await self._change_status(record, SagaStatus.COMPLETED, finished=last)
                return record
            log.info(
                "saga compensating: %s %s %s",
                cause.step,
                cause.code,
                cause.message,
                extra=_fields(record, step=cause.step, code=cause.code),
            )
            # COMPENSATING is recorded with the first undo's attempt (or, with
            # nothing to undo, straight as the end): one commit fewer per failure.
            starting = StatusChange(SagaStatus.COMPENSATING, now_ms(), cause)
            await self._backward(definition, context, record, starting=starting, unsaved=last)
        else:
            await self._backward(definition, context, record)
        return record

    async def _forward(
        self, definition: SagaDefinition[Any], context: SagaContext[Any], record: SagaRecord
    ) -> tuple[Cause | None, AttemptRecord | None]:
        """Runs the actions in order. Returns why to compensate (None when every
        step succeeded) and the attempt whose outcome is still to be written,
        which goes with the status change."""
        cancel = self._cancel_event(record.saga_id)
        unsaved: AttemptRecord | None = None  # an OK outcome rides with the next write
        for step in definition.steps:
            if record.succeeded(step.name, Phase.ACTION):
                continue
            retry = step.action.retry
            tries = 0
            first = time.monotonic()
            while True:
                stop = self._stop_cause(step, record, cancel)
                if stop is not None:
                    return stop, unsaved or self._never_sent(record)
                tries += 1
                try:
                    attempt = await self._attempt(
                        context, record, step, Phase.ACTION, step.action, unsaved
                    )
                except _BuildFailed as failed:  # nothing sent: undo the steps before
                    internal = grpc.StatusCode.INTERNAL.name
                    cause = Cause(step.name, internal, str(failed), REQUEST_BUILD_FAILED, now_ms())
                    return cause, unsaved or self._never_sent(record)
                unsaved = attempt
                assert attempt.code is not None
                if attempt.code == "OK":
                    break
                outcome = step.policy.classify(attempt.code)
                final = attempt.reason == STEP_OUTPUT_TOO_LARGE  # the same reply each time
                if not outcome.retryable or final or retry.exhausted(tries, _since(first)):
                    cause = Cause(
                        step.name, attempt.code, attempt.message, attempt.reason, now_ms()
                    )
                    return cause, attempt
                await self._write(record, finished=attempt)  # visible while we back off
                unsaved = None
                self._retrying(record, attempt)
                pause = min(
                    retry.backoff(tries, self._rng),
                    max(0.0, (record.deadline_ms - now_ms()) / 1000),
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(cancel.wait(), pause)
        if cancel.is_set():  # asked while the last step ran: honour it, undo everything
            return _cancelled(""), unsaved
        return None, unsaved

    def _stop_cause(
        self, step: Step[Any], record: SagaRecord, cancel: asyncio.Event
    ) -> Cause | None:
        if cancel.is_set():
            return _cancelled(step.name)
        if now_ms() >= record.deadline_ms:
            return Cause(
                step.name,
                grpc.StatusCode.DEADLINE_EXCEEDED.name,
                "the saga's deadline passed before this step succeeded",
                SAGA_DEADLINE_EXCEEDED,
                now_ms(),
            )
        return None

    async def _backward(
        self,
        definition: SagaDefinition[Any],
        context: SagaContext[Any],
        record: SagaRecord,
        *,
        starting: StatusChange | None = None,
        unsaved: AttemptRecord | None = None,
    ) -> None:
        """Compensates, in reverse order, every step that may have taken effect."""
        failures: list[CompensationFailure] = []
        for step in reversed(definition.steps):
            compensation = step.compensation
            if record.succeeded(step.name, Phase.COMPENSATION):
                continue
            if not self._may_have_taken_effect(step, record):
                continue
            if compensation is None:  # done, maybe, and nothing can undo it: an operator must
                failures.append(
                    CompensationFailure(
                        step.name,
                        step.action.rpc.method,
                        NO_COMPENSATION,
                        "the step may have taken effect and has no compensation",
                        0,
                        now_ms(),
                    )
                )
                continue
            tries = 0
            first = time.monotonic()  # a horizon counts from this run's first attempt
            while True:
                tries += 1
                try:
                    attempt = await self._attempt(
                        context, record, step, Phase.COMPENSATION, compensation, unsaved, starting
                    )
                except _BuildFailed as failed:  # no undo can be sent: a person must fix it
                    code = grpc.StatusCode.INTERNAL.name
                    failures.append(self._gave_up(record, step, code, str(failed), tries - 1))
                    break
                starting = None
                unsaved = attempt
                assert attempt.code is not None
                if attempt.code == "OK":
                    break
                await self._write(record, finished=attempt)
                unsaved = None
                retryable = step.policy.compensation_retryable(attempt.code)
                if not retryable or compensation.retry.exhausted(tries, _since(first)):
                    failures.append(
                        self._gave_up(record, step, attempt.code, attempt.message, tries, attempt)
                    )
                    break
                self._retrying(record, attempt)
                await asyncio.sleep(compensation.retry.backoff(tries, self._rng))
        status = SagaStatus.FAILED if failures else SagaStatus.COMPENSATED
        cause = starting.cause if starting is not None else None  # never got to COMPENSATING
        await self._change_status(record, status, cause=cause, failures=failures, finished=unsaved)

    def _gave_up(
        self,
        record: SagaRecord,
        step: Step[Any],
        code: str,
        message: str,
        tries: int,
        last: AttemptRecord | None = None,
    ) -> CompensationFailure:
        """A compensation failure, logged and counted: the saga will end FAILED."""
        assert step.compensation is not None
        log.warning(
            "saga compensation of %s failed after %d attempts: %s",
            step.name,
            tries,
            code,
            extra=_fields(record, last) if last else _fields(record, step=step.name, code=code),
        )
        if self.metrics is not None:
            self.metrics.compensation_failures.labels(record.saga_type, step.name).inc()
        return CompensationFailure(
            step.name, step.compensation.rpc.method, code, message, tries, now_ms()
        )

    @staticmethod
    def _may_have_taken_effect(step: Step[Any], record: SagaRecord) -> bool:
        return any(
            attempt.code is None or step.policy.classify(attempt.code).may_have_taken_effect
            for attempt in record.attempts_of(step.name, Phase.ACTION)
        )

    async def _attempt(
        self,
        context: SagaContext[Any],
        record: SagaRecord,
        step: Step[Any],
        phase: Phase,
        invocation: Invocation[Any, Any, Any],
        unsaved: AttemptRecord | None,
        status: StatusChange | None = None,
    ) -> AttemptRecord:
        """One RPC: recorded (with the previous attempt's outcome, if unsaved)
        before it is sent. Its own outcome is returned for the next write."""
        # One of max_calls_per_participant slots to the participant, held for the attempt.
        participant = invocation.rpc.participant
        slots = self._slots.get(participant)
        if slots is None:
            slots = self._slots[participant] = asyncio.Semaphore(
                self.limits.max_calls_per_participant
            )
        if slots.locked():  # only then is there a wait worth counting
            self._waiting[participant] += 1
            try:
                await slots.acquire()
            finally:
                self._waiting[participant] -= 1
        else:
            await slots.acquire()
        try:
            return await self._attempt_now(
                context, record, step, phase, invocation, unsaved, status
            )
        finally:
            slots.release()

    async def _attempt_now(
        self,
        context: SagaContext[Any],
        record: SagaRecord,
        step: Step[Any],
        phase: Phase,
        invocation: Invocation[Any, Any, Any],
        unsaved: AttemptRecord | None,
        status: StatusChange | None,
    ) -> AttemptRecord:
        try:
            request = invocation.build(context)
        except Exception as error:
            raise _BuildFailed(_unbuildable(record, step, phase, invocation, error)) from error
        attempt = self._prerecorded.pop(record.saga_id, None)
        if attempt is not None and (attempt.step, attempt.phase) == (step.name, phase):
            number = attempt.number  # recorded with the saga: nothing to write first
            if unsaved is not None or status is not None:
                await self._write(record, finished=unsaved, status=status)
        else:
            assert attempt is None, "a saga's first attempt is its first step's action"
            number = len(record.attempts_of(step.name, phase)) + 1
            attempt = AttemptRecord(step.name, phase, number, invocation.rpc.method, now_ms())
            await self._write(record, finished=unsaved, begun=attempt, status=status)
        self._checkpoint(f"{phase.value}-attempt-recorded")
        lease_left = self.store.lease_left(record.saga_id)
        if lease_left <= 0:  # we were paused past our lease: another replica may own it
            raise LeaseLost(f"saga {record.saga_id}: lease ran out before {attempt.method}")
        timeout = min(invocation.retry.attempt_timeout.total_seconds(), lease_left)
        if phase is Phase.ACTION:
            timeout = max(0.001, min(timeout, (record.deadline_ms - now_ms()) / 1000))
        if log.isEnabledFor(logging.DEBUG):  # the fields are built only for a line written
            log.debug("saga attempt sent: %s", attempt.method, extra=_fields(record, attempt))
        metadata: tuple[tuple[str, str], ...] = (
            ("minisaga-saga-id", record.saga_id),
            ("minisaga-attempt", f"{step.name}/{phase.value}/{number}"),
        )
        span = None
        if self._tracer is not None:
            carrier: dict[str, str] = {}
            if trace.get_current_span().is_recording():
                # The attempt's span is the call's client span: it sends its own
                # traceparent (one span per attempt, not an attempt span around a
                # client interceptor's: docs/observability.md#what-tracing-costs).
                span = self._tracer.start_span(
                    f"{step.name} {phase.value}",
                    kind=trace.SpanKind.CLIENT,
                    attributes={
                        "saga.id": record.saga_id,
                        "saga.type": record.saga_type,
                        "saga.step": step.name,
                        "saga.phase": phase.value,
                        "saga.attempt": number,
                        "rpc.system": "grpc",
                        "rpc.method": attempt.method,
                    },
                )
                propagate.inject(carrier, context=trace.set_span_in_context(span))
            else:  # a saga its sampler dropped: the call carries its trace, unsampled
                propagate.inject(carrier)
            metadata += tuple(carrier.items())
        started = loop_time()
        rpc_code = grpc.StatusCode.UNKNOWN  # should the call raise anything else
        try:
            response = await self._call(invocation.rpc)(
                request,
                timeout=timeout,
                # Lets a participant (or its logs) tell which attempt a call is.
                metadata=metadata,
            )
            attempt.code = grpc.StatusCode.OK.name
            if phase is Phase.ACTION:
                _keep_output(context, attempt, response)
            rpc_code = grpc.StatusCode.OK
        except grpc.aio.AioRpcError as error:
            rpc_code = error.code()
            attempt.code = rpc_code.name
            attempt.message = error.details() or ""
            attempt.reason = _error_reason(error)
        finally:
            if span is not None:
                span.set_attribute("rpc.grpc.status_code", rpc_code.value[0])
                if rpc_code is not grpc.StatusCode.OK:
                    span.set_status(trace.StatusCode.ERROR, rpc_code.name)
                span.end()
        attempt.finished_at_ms = now_ms()
        if self.metrics is not None:
            self.metrics.attempt_duration.labels(
                record.saga_type, step.name, phase.value, attempt.code
            ).observe(loop_time() - started)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("saga attempt returned: %s", attempt.method, extra=_fields(record, attempt))
        self._checkpoint(f"{phase.value}-rpc-returned")
        return attempt

    def _never_sent(self, record: SagaRecord) -> AttemptRecord | None:
        """The first attempt recorded with the saga, when the saga stops before
        sending it (cancelled at once, or its request could not be built):
        closed as NOT_SENT, which this process knows, so the step is not undone
        (after a crash the same attempt is UNRECORDED: in doubt, and undone)."""
        attempt = self._prerecorded.pop(record.saga_id, None)
        if attempt is not None:
            attempt.code, attempt.finished_at_ms = NOT_SENT, now_ms()
            attempt.message = "not sent: the saga stopped before its first call"
        return attempt

    def _retrying(self, record: SagaRecord, attempt: AttemptRecord) -> None:
        """Logs and counts that `attempt` failed and another follows."""
        log.info(
            "saga retrying %s %s after %s",
            attempt.step,
            attempt.phase.value,
            attempt.code,
            extra=_fields(record, attempt),
        )
        if self.metrics is not None:
            self.metrics.retries.labels(record.saga_type, attempt.step, attempt.phase.value).inc()

    async def _write(
        self,
        record: SagaRecord,
        *,
        finished: AttemptRecord | None = None,
        begun: AttemptRecord | None = None,
        status: StatusChange | None = None,
    ) -> None:
        await self.store.write(record.saga_id, finished=finished, begun=begun, status=status)
        if finished is not None:
            self._checkpoint("outcome-recorded")
            if finished.output is not None:  # durable now, and read by the next attempt
                self._checkpoint("output-recorded")
        if status is not None:
            self._checkpoint(f"status-recorded-{status.status.value.lower()}")
            record.status = status.status
            record.updated_at_ms = status.at_ms
            record.ended_at_ms = status.at_ms if status.status.terminal else None
            if status.cause is not None:
                record.cause = status.cause
            record.failures.extend(status.failures)
        if begun is not None:
            record.attempts.append(begun)
        self.changes.notify(record.saga_id)

    async def _change_status(
        self,
        record: SagaRecord,
        status: SagaStatus,
        *,
        cause: Cause | None = None,
        failures: list[CompensationFailure] | None = None,
        finished: AttemptRecord | None = None,
    ) -> None:
        change = StatusChange(status, now_ms(), cause, tuple(failures or ()))
        await self._write(record, finished=finished, status=change)
        log.info("saga ended %s", status.value, extra=_fields(record, code=status.value))
        if self.metrics is not None:
            self.metrics.ended.labels(record.saga_type, status.value).inc()
            self.metrics.duration.labels(record.saga_type, status.value).observe(
                max(0, change.at_ms - record.created_at_ms) / 1000
            )

    def _call(self, rpc: Rpc[Any, Any]) -> grpc.aio.UnaryUnaryMultiCallable[Any, Any]:
        call = self._calls.get(rpc.method)
        if call is None:
            call = self._channels[rpc.participant].unary_unary(
                rpc.method,
                request_serializer=rpc.request_type.SerializeToString,
                response_deserializer=rpc.response_type.FromString,
            )
            self._calls[rpc.method] = call
        return call


def _since(monotonic_start: float) -> timedelta:
    """How long ago `monotonic_start` (a time.monotonic() reading) was."""
    return timedelta(seconds=time.monotonic() - monotonic_start)


def _fields(
    record: SagaRecord, attempt: AttemptRecord | None = None, *, step: str = "", code: str = ""
) -> dict[str, Any]:
    """The saga's fields of a log line (service_kit.logs)."""
    if attempt is not None:
        return saga_fields(
            record.saga_id,
            record.saga_type,
            trace_id=record.trace_id,
            step=attempt.step,
            phase=attempt.phase.value,
            attempt=attempt.number,
            code=attempt.code or "",
        )
    return saga_fields(
        record.saga_id, record.saga_type, trace_id=record.trace_id, step=step, code=code
    )


def loop_time() -> float:
    return asyncio.get_running_loop().time()


def _outputs(record: SagaRecord) -> dict[str, bytes]:
    """The outputs of the saga's succeeded actions, from its log, by RPC method."""
    return {
        a.method: a.output
        for a in record.attempts
        if a.phase is Phase.ACTION and a.code == "OK" and a.output is not None
    }


def _keep_output(context: SagaContext[Any], attempt: AttemptRecord, response: Message) -> None:
    """Makes an OK action's response its step's output: on the attempt (written
    with its outcome) and in the context later builders read. A response over
    MAX_STEP_OUTPUT_BYTES fails the step instead (it may have taken effect)."""
    output = response.SerializeToString()
    if len(output) > MAX_STEP_OUTPUT_BYTES:
        attempt.code = grpc.StatusCode.INTERNAL.name
        attempt.reason = STEP_OUTPUT_TOO_LARGE
        attempt.message = (
            f"{attempt.method} returned {len(output)} bytes; a step's output may be at most "
            f"{MAX_STEP_OUTPUT_BYTES} bytes (MAX_STEP_OUTPUT_BYTES)"
        )
        return
    attempt.output = output
    outputs = context.outputs
    assert isinstance(outputs, dict)  # the engine's own (_outputs)
    outputs[attempt.method] = output


def _unbuildable(
    record: SagaRecord,
    step: Step[Any],
    phase: Phase,
    invocation: Invocation[Any, Any, Any],
    error: Exception,
) -> str:
    """Logs a request builder's exception, whole, under an incident id; returns what
    the saga's log says of it: the id, never the exception's text (as for an RPC's
    unexpected error, service_kit/errors.py), which may hold the saga's data."""
    incident = uuid.uuid4().hex[:16]
    log.error(
        "saga %s: the request builder of %s %s raised (incident %s)",
        record.saga_id,
        step.name,
        phase.value,
        incident,
        exc_info=error,
        extra=_fields(record, step=step.name, code=grpc.StatusCode.INTERNAL.name),
    )
    return (
        f"building the {invocation.rpc.method} request failed: internal error "
        f"(incident {incident}); the orchestrator's log has the details"
    )


def _versions(definitions: Mapping[tuple[str, int], object], name: str) -> str:
    found = sorted(version for n, version in definitions if n == name)
    return "version " + ", ".join(str(v) for v in found)


def _cancelled(before_step: str) -> Cause:
    """Why a saga an operator cancelled compensates ("" once every step was done)."""
    return Cause(
        before_step, grpc.StatusCode.CANCELLED.name, CANCELLED_BY_OPERATOR, SAGA_CANCELLED, now_ms()
    )


def _error_reason(error: grpc.aio.AioRpcError) -> str:
    """The google.rpc.ErrorInfo reason a participant attached, if any."""
    # grpc-stubs types metadata items as objects; at run time they are (key, value) pairs.
    trailers = cast(Iterable[tuple[str, str | bytes]], error.trailing_metadata() or ())
    for key, value in trailers:
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            for detail in status_pb2.Status.FromString(value).details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    return str(info.reason)
    return ""
