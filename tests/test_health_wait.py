"""wait_until_serving against a scripted health server (grpcio-testing).

The helper runs in a thread; the test thread plays the server, taking each
Health/Check call and answering it. Time is fake: the helper's sleeps advance
a counter and report back, so the test knows whether another call is coming
(after a sleep) or the helper has finished — no real sleeps, no guessing.
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc_testing
import pytest
from grpc_health.v1 import health_pb2

from service_kit.health import HealthCheckError, wait_until_serving

CHECK = health_pb2.DESCRIPTOR.services_by_name["Health"].methods_by_name["Check"]
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

# A scripted answer: a serving status (call OK), or a status code and details.
Reply = int | tuple[grpc.StatusCode, str]


@dataclass
class Run:
    """What happened: the helper's outcome, its sleeps, the requests it sent."""

    error: BaseException | None = None
    sleeps: list[float] = field(default_factory=list)
    requests: list[Any] = field(default_factory=list)
    now: float = 0.0


def drive(replies: Iterable[Reply], service: str = "", timeout: float = 10.0) -> Run:
    channel = grpc_testing.channel(
        [health_pb2.DESCRIPTOR.services_by_name["Health"]], grpc_testing.strict_real_time()
    )
    run = Run()
    steps: queue.Queue[str] = queue.Queue()

    def fake_sleep(seconds: float) -> None:
        run.sleeps.append(seconds)
        run.now += seconds
        steps.put("slept")

    def helper() -> None:
        try:
            wait_until_serving(channel, service, timeout, clock=lambda: run.now, sleep=fake_sleep)
        except BaseException as error:
            run.error = error
        finally:
            steps.put("finished")

    thread = threading.Thread(target=helper, daemon=True)
    thread.start()
    for reply in replies:
        _metadata, request, rpc = channel.take_unary_unary(CHECK)
        run.requests.append(request)
        if isinstance(reply, tuple):
            rpc.terminate(None, (), reply[0], reply[1])
        else:
            rpc.terminate(health_pb2.HealthCheckResponse(status=reply), (), grpc.StatusCode.OK, "")
        # After a sleep the helper always calls again; otherwise it is done.
        if steps.get(timeout=10) == "finished":
            break
    else:
        raise AssertionError("the helper wanted more replies than the script has")
    thread.join(timeout=10)
    assert not thread.is_alive()
    return run


def test_not_serving_then_serving_returns() -> None:
    run = drive([NOT_SERVING, NOT_SERVING, SERVING], service="minisaga.payment.v1.PaymentService")
    assert run.error is None
    assert len(run.requests) == 3
    assert {r.service for r in run.requests} == {"minisaga.payment.v1.PaymentService"}
    assert len(run.sleeps) == 2
    assert run.sleeps[1] > run.sleeps[0]  # the backoff grows


def test_unavailable_and_deadline_exceeded_are_retried() -> None:
    run = drive(
        [
            (grpc.StatusCode.UNAVAILABLE, "connection refused"),
            (grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded"),
            # Up, but the service is not registered with the health servicer yet.
            (grpc.StatusCode.NOT_FOUND, "unknown service"),
            SERVING,
        ]
    )
    assert run.error is None
    assert len(run.requests) == 4
    assert [r.service for r in run.requests] == ["", "", "", ""]


def test_serving_at_once_does_not_sleep() -> None:
    run = drive([SERVING])
    assert run.error is None
    assert run.sleeps == []


def test_permission_denied_is_raised_at_once() -> None:
    run = drive([(grpc.StatusCode.PERMISSION_DENIED, "no entry")], service="svc.Foo")
    assert isinstance(run.error, HealthCheckError)
    assert run.error.code is grpc.StatusCode.PERMISSION_DENIED
    assert run.error.service == "svc.Foo"
    assert "no entry" in str(run.error) and "svc.Foo" in str(run.error)
    assert run.sleeps == []


def test_never_serving_times_out_naming_the_service() -> None:
    run = drive(itertools.repeat(NOT_SERVING), service="svc.Never", timeout=3.0)
    assert isinstance(run.error, TimeoutError)
    assert "svc.Never" in str(run.error)
    assert "NOT_SERVING" in str(run.error)
    assert run.now == pytest.approx(3.0)  # it waited the whole timeout, and no longer
    assert len(run.requests) == len(run.sleeps) + 1
    assert max(run.sleeps) <= 0.5  # backoff is capped: it keeps polling
    assert len(run.requests) > 6


def test_timeout_with_the_server_down_names_the_last_error() -> None:
    run = drive(itertools.repeat((grpc.StatusCode.UNAVAILABLE, "connection refused")), timeout=1)
    assert isinstance(run.error, TimeoutError)
    assert "the server" in str(run.error)
    assert "UNAVAILABLE: connection refused" in str(run.error)
