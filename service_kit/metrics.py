"""Prometheus metrics, served on `--metrics-listen` (off by default).

Each server has its own registry (so several servers in one test process do
not mix): the database's group commits on every service, the calls each
participant serves, and the orchestrator's sagas (orchestrator_server/
saga/engine.py observes `SagaMetrics`). docs/observability.md lists them all.
With --metrics-listen unset no registry exists and nothing is observed.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import grpc
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    start_http_server,
)

from service_kit import errors
from service_kit.interceptors import Continuation, Handler, HandlerCache, Interceptor

log = logging.getLogger(__name__)

disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created series: they double the series and nobody graphs them

# Commits take about a millisecond on a local disk and tens of them on a busy one.
COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
ATTEMPT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SAGA_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class DatabaseMetrics:
    """Group commits of service_kit.database.Database (on the orchestrator: the saga log,
    whose PostgreSQL store observes each of its transactions too)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.commit_seconds = Histogram(
            "minisaga_db_commit_duration_seconds",
            "Time of one group commit of the service's database, BEGIN to COMMIT (on a "
            "PostgreSQL saga log: of one write's transaction)",
            buckets=COMMIT_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            "minisaga_db_commit_batch_size",
            "Jobs (writes of concurrent requests) committed together in one group commit",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )

    def observe(self, seconds: float, jobs: int) -> None:
        self.commit_seconds.observe(seconds)
        self.batch_size.observe(jobs)


class Metrics:
    """One server's registry, and the metrics every server has."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.database = DatabaseMetrics(self.registry)
        self._http: Any = None

    def serve(self, listen: str) -> str:
        """Serves /metrics on `listen` (HOST:PORT, port 0 for a free one) in a
        thread; returns the address it listens on."""
        host, _, port = listen.rpartition(":")
        host = host.strip("[]") or "127.0.0.1"
        server, _thread = start_http_server(int(port), addr=host, registry=self.registry)
        self._http = server
        address = f"{host}:{server.server_port}"
        log.info("metrics on http://%s/metrics", address)
        return address

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None


def serve_metrics(listen: str) -> Metrics | None:
    """A Metrics served on `listen`, or None when --metrics-listen is off."""
    if not listen:
        return None
    metrics = Metrics()
    metrics.serve(listen)
    return metrics


_UNCOUNTED = ("/grpc.health.", "/grpc.reflection.")


class CallMetrics(Interceptor):
    """Counts the calls a participant serves by method and status code, and times them."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.calls = Counter(
            "minisaga_participant_calls",
            "Calls this participant served, by method and gRPC status code",
            ["method", "code"],
            registry=registry,
        )
        self.seconds = Histogram(
            "minisaga_participant_call_duration_seconds",
            "Time this participant took to answer a call, by method",
            ["method"],
            buckets=ATTEMPT_BUCKETS,
            registry=registry,
        )
        self._handlers = HandlerCache(self._wrap)

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler:
        handler = await continuation(handler_call_details)
        full = handler_call_details.method
        if handler is None or handler.unary_unary is None or full.startswith(_UNCOUNTED):
            return handler
        return self._handlers.wrapped(full, handler)

    def _wrap(self, full: str, handler: Handler) -> Handler:
        method = full.rsplit("/", 1)[-1]
        behavior = handler.unary_unary
        assert behavior is not None
        calls, seconds = self.calls.labels(method, "OK"), self.seconds.labels(method)
        by_code = self.calls

        async def counted(request: Any, context: Any) -> Any:
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                reply = await behavior(request, context)
                code = errors.code_of(context)
                return reply
            except BaseException as error:
                code = errors.code_of(context, error)
                raise
            finally:
                (calls if code is grpc.StatusCode.OK else by_code.labels(method, code.name)).inc()
                seconds.observe(time.perf_counter() - started)

        return grpc.unary_unary_rpc_method_handler(
            counted,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


class SagaMetrics:
    """The orchestrator's sagas (observed by orchestrator_server.saga.engine.SagaEngine)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.started = Counter(
            "minisaga_sagas_started",
            "Sagas this orchestrator started, by saga type",
            ["saga_type"],
            registry=registry,
        )
        self.ended = Counter(
            "minisaga_sagas_ended",
            "Sagas that ended here, by saga type and final status (COMPLETED, COMPENSATED, FAILED)",
            ["saga_type", "status"],
            registry=registry,
        )
        self.duration = Histogram(
            "minisaga_saga_duration_seconds",
            "Time from a saga's creation to its end, by saga type and final status",
            ["saga_type", "status"],
            buckets=SAGA_BUCKETS,
            registry=registry,
        )
        self.attempt_duration = Histogram(
            "minisaga_step_attempt_duration_seconds",
            "Time of one RPC attempt of a step or compensation, by saga type, step, phase "
            "and gRPC status code",
            ["saga_type", "step", "phase", "code"],
            buckets=ATTEMPT_BUCKETS,
            registry=registry,
        )
        self.retries = Counter(
            "minisaga_step_retries",
            "Attempts of a step or compensation that followed a failed attempt",
            ["saga_type", "step", "phase"],
            registry=registry,
        )
        self.compensation_failures = Counter(
            "minisaga_compensation_failures",
            "Compensations that ran out of attempts (the saga ends FAILED), by saga type and step",
            ["saga_type", "step"],
            registry=registry,
        )
        self.in_flight = Gauge(
            "minisaga_sagas_in_flight",
            "Sagas this orchestrator drives, is creating, or has in line for recovery",
            registry=registry,
        )
        self.past_deadline = Gauge(
            "minisaga_sagas_past_deadline",
            "Sagas driven here, not ended, whose deadline has passed (stuck: a participant that "
            "never answers, or compensations retrying)",
            registry=registry,
        )
        self.not_driven = Gauge(
            "minisaga_sagas_not_driven",
            "Unfinished sagas this orchestrator leaves alone: their saga type or version is "
            "not registered here (GetSaga's not_driven_reason); a replica that has it drives them",
            registry=registry,
        )
        self.recovered = Counter(
            "minisaga_sagas_recovered",
            "Unfinished sagas this orchestrator took up: after a restart, from a dead replica, "
            "or resumed by an operator",
            registry=registry,
        )
