"""Waiting for a gRPC server to report SERVING through grpc.health.v1.Health.

`wait_until_serving` is synchronous on purpose: `make run`, the end-to-end
tests and scripts call it from plain code, with a plain `grpc.Channel`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

# Codes that mean "not up yet": the port is not listening, the attempt's
# deadline passed, or the server is up but has not yet registered the service
# with its health servicer (service_kit.server sets SERVING just after start).
RETRYABLE_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.NOT_FOUND,
    }
)

INITIAL_BACKOFF = 0.02
MAX_BACKOFF = 0.5
ATTEMPT_TIMEOUT = 1.0


class HealthCheckError(RuntimeError):
    """Health/Check failed with a status that waiting will not cure."""

    def __init__(self, service: str, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"health check of {_name(service)} failed: {code.name}: {details}")
        self.service = service
        self.code = code
        self.details = details


def wait_until_serving(
    channel: grpc.Channel,
    service: str = "",
    timeout: float = 10.0,
    *,
    attempt_timeout: float = ATTEMPT_TIMEOUT,
    initial_backoff: float = INITIAL_BACKOFF,
    max_backoff: float = MAX_BACKOFF,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Polls Health/Check for `service` ("" is the whole server) until SERVING.

    Retries, with a doubling backoff capped at `max_backoff`, while the call
    fails with UNAVAILABLE, DEADLINE_EXCEEDED or NOT_FOUND (service not yet
    registered) or the answer is anything but SERVING. Raises `TimeoutError`
    naming the service when `timeout` seconds pass, and `HealthCheckError` at
    once on any other status code (PERMISSION_DENIED, UNIMPLEMENTED, ...).
    `clock` and `sleep` are injectable so tests need no real time.
    """
    stub = health_pb2_grpc.HealthStub(channel)
    request = health_pb2.HealthCheckRequest(service=service)
    deadline = clock() + timeout
    backoff = initial_backoff
    attempts = 0
    while True:
        attempts += 1
        remaining = deadline - clock()
        try:
            response = stub.Check(request, timeout=max(0.001, min(attempt_timeout, remaining)))
        except grpc.RpcError as error:
            code = error.code()
            if code not in RETRYABLE_CODES:
                raise HealthCheckError(service, code, error.details() or "") from error
            last = f"{code.name}: {error.details() or ''}"
        else:
            status = int(response.status)
            if status == health_pb2.HealthCheckResponse.SERVING:
                return
            last = str(health_pb2.HealthCheckResponse.ServingStatus.Name(status))
        remaining = deadline - clock()
        if remaining <= 0:
            raise TimeoutError(
                f"{_name(service)} did not report SERVING within {timeout:g}s "
                f"({attempts} attempts; last answer {last})"
            )
        sleep(min(backoff, remaining))
        backoff = min(backoff * 2, max_backoff)


def _name(service: str) -> str:
    return f"service {service!r}" if service else "the server (service '')"
