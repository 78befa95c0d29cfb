"""One trace per saga, across the orchestrator and the participants, and across a crash.

The services are real processes exporting over OTLP/gRPC (their OTEL_*
environment) to an in-process receiver; each test waits until the spans it
needs have arrived, never for a time.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from minisaga.orchestrator.v1 import orchestrator_pb2 as pb
from minisaga.orchestrator.v1 import orchestrator_pb2_grpc

from tests.harness import wait_until
from tests.observability.system import Receiver, Services, Span, tracing_env

pytestmark = pytest.mark.slow

SERVER, CLIENT = 2, 3  # OTLP span kinds
OK, FAILED_PRECONDITION = 0, grpc.StatusCode.FAILED_PRECONDITION.value[0]


def one(spans: list[Span], **where: object) -> Span:
    found = [s for s in spans if all(getattr(s, k) == v for k, v in where.items())]
    assert len(found) == 1, (where, spans)
    return found[0]


def child_of(spans: list[Span], parent: Span) -> list[Span]:
    return [s for s in spans if s.parent_id == parent.span_id]


async def killed_mid_step_and_recovered(services: Services) -> str:
    """Places an order whose reservation fails with an orchestrator SIGKILLed when
    Reserve has answered and before its outcome is written (mid-step), then starts
    one that recovers the saga at start, by itself. Returns the saga's id."""
    first = services.processes["orchestrator"]
    await asyncio.to_thread(first.terminate)  # again with the crash switch, flags unchanged
    first = services.start_orchestrator("--crash-at", "action-rpc-returned:2")
    with pytest.raises(grpc.aio.AioRpcError):
        await services.place(fail_inventory=True, request_id="crash-1")
    assert first.process is not None
    assert await asyncio.to_thread(first.process.wait, 30) == -9, first.log()
    services.start_orchestrator()
    async with grpc.aio.insecure_channel(services.processes["orchestrator"].address) as ch:
        listed = await orchestrator_pb2_grpc.OrchestratorServiceStub(ch).ListSagas(
            pb.ListSagasRequest(), timeout=10
        )
    (saga_id,) = [s.saga_id for s in listed.sagas]
    return saga_id


async def test_a_compensated_saga_is_one_trace_from_the_orchestrator_into_the_participants(
    tmp_path: Path, receiver: tuple[Receiver, str]
) -> None:
    spans, endpoint = receiver
    services = Services(tmp_path, env=tracing_env(endpoint)).start()
    try:
        reply = await services.place(fail_inventory=True)
        assert reply.status == pb.SAGA_STATUS_COMPENSATED
        saga = await services.saga(reply.saga_id)
        trace_id = saga.trace_id
        assert len(trace_id) == 32 and trace_id != "0" * 32

        def complete() -> bool:  # each process exports on its own: wait for every one
            trace = spans.in_trace(trace_id)
            served = {s.name.rsplit("/", 1)[-1] for s in trace if s.kind == SERVER}
            placed = any(s.name.endswith("/PlaceOrder") for s in spans.spans)  # ends last
            root = any(s.name == "saga place_order" for s in trace)
            return placed and root and served >= {"Charge", "Reserve", "Refund"}

        await wait_until(complete, timeout=30)
        trace = spans.in_trace(trace_id)
        root = one(trace, name="saga place_order")
        assert root.parent_id == "" and root.service == "orchestrator"
        assert root.attributes["saga.id"] == reply.saga_id
        assert root.attributes["saga.type"] == "place_order"
        assert root.attributes["saga.status"] == "COMPENSATED"
        # The root is a trace of its own, linked to the PlaceOrder call that began it.
        place_order = [s for s in spans.spans if s.name.endswith("/PlaceOrder")]
        assert root.links and root.links[0] in {s.trace_id for s in place_order}

        attempts = child_of(trace, root)
        expected = [
            ("charge", "action", OK, "PaymentService", "Charge"),
            ("reserve", "action", FAILED_PRECONDITION, "InventoryService", "Reserve"),
            ("charge", "compensation", OK, "PaymentService", "Refund"),
        ]
        assert sorted(s.name for s in attempts) == sorted(f"{s} {p}" for s, p, *_ in expected)
        for step, phase, code, service, method in expected:
            attempt = one(attempts, name=f"{step} {phase}")
            assert attempt.service == "orchestrator"
            assert attempt.attributes == {
                "saga.id": reply.saga_id,
                "saga.type": "place_order",
                "saga.step": step,
                "saga.phase": phase,
                "saga.attempt": 1,
                "rpc.system": "grpc",
                "rpc.method": f"/minisaga.{service.removesuffix('Service').lower()}.v1."
                f"{service}/{method}",
                "rpc.grpc.status_code": code,
            }
            # attempt (the orchestrator's client span) -> the participant's server span
            assert attempt.kind == CLIENT
            server = one(child_of(trace, attempt), kind=SERVER)
            assert server.service == service and server.name.endswith(f"/{method}")
            assert server.attributes["rpc.grpc.status_code"] == code
        assert {s.service for s in trace} == {
            "orchestrator",
            "PaymentService",
            "InventoryService",
        }
    finally:
        await services.terminate()


async def test_a_saga_recovered_after_a_sigkill_goes_on_in_the_same_trace(
    tmp_path: Path, receiver: tuple[Receiver, str]
) -> None:
    spans, endpoint = receiver
    services = Services(
        tmp_path,
        env=tracing_env(endpoint),
        orchestrator_flags=("--recover-every-seconds", "3600"),
    )
    services.start()
    try:
        saga_id = await killed_mid_step_and_recovered(services)
        saga = await services.wait_terminal(saga_id)
        assert saga.status == pb.SAGA_STATUS_COMPENSATED
        assert [a.code for a in saga.steps[1].attempts] == ["UNRECORDED", "FAILED_PRECONDITION"]
        trace_id = saga.trace_id
        assert len(trace_id) == 32

        def complete() -> bool:  # each process exports on its own: wait for every one
            trace = spans.in_trace(trace_id)
            served = [s.name.rsplit("/", 1)[-1] for s in trace if s.kind == SERVER]
            wanted = ["Charge", "Refund", "Release", "Reserve", "Reserve"]
            resumed = [s for s in trace if s.name == "saga place_order resumed"]
            return bool(resumed) and all(served.count(n) >= wanted.count(n) for n in wanted)

        await wait_until(complete, timeout=30)
        trace = spans.in_trace(trace_id)
        # Before the crash: the participants' spans of Charge and the first Reserve.
        charge = one(
            trace, service="PaymentService", kind=SERVER, name=_method("payment", "Charge")
        )
        reserves = [s for s in trace if s.kind == SERVER and s.name.endswith("/Reserve")]
        assert len(reserves) == 2  # the one before the crash, and the retry after it
        # After it: the recovered orchestrator's span, a child of the saga's root
        # span (as the log recorded it; the dead process never exported it).
        resumed = one(trace, name="saga place_order resumed")
        assert resumed.parent_id and resumed.parent_id not in {s.span_id for s in trace}
        assert resumed.attributes["saga.id"] == saga_id
        after = child_of(trace, resumed)
        # The Reserve in doubt is sent again (refused), then undone, and the charge too.
        assert sorted((s.name, s.attributes["saga.attempt"]) for s in after) == [
            ("charge compensation", 1),
            ("reserve action", 2),
            ("reserve compensation", 1),
        ]
        refund = one(
            trace, service="PaymentService", kind=SERVER, name=_method("payment", "Refund")
        )
        assert charge.trace_id == refund.trace_id == resumed.trace_id == trace_id
        # The recovery is logged once, at INFO, in the saga's trace.
        (taken,) = [
            line
            for line in services.log_lines("orchestrator")
            if str(line["message"]).startswith("saga taken up")
        ]
        assert (taken["saga_id"], taken["trace_id"], taken["level"]) == (saga_id, trace_id, "INFO")
    finally:
        services.stop()


def _method(participant: str, method: str) -> str:
    service = f"{participant.capitalize()}Service"
    return f"/minisaga.{participant}.v1.{service}/{method}"


async def test_a_saga_taken_over_by_another_replica_goes_on_in_the_same_trace(
    tmp_path: Path, receiver: tuple[Receiver, str], postgres_url: str
) -> None:
    spans, endpoint = receiver
    replicas = ("--store", postgres_url, "--lease-ttl-seconds", "3", "--lease-renew-seconds", "1")
    services = Services(
        tmp_path,
        env=tracing_env(endpoint),
        orchestrator_flags=(*replicas, "--recover-every-seconds", "1"),
    )
    services.start()
    survivor = services.processes["orchestrator"]
    try:
        # A second replica, killed mid-step: the survivor takes the saga over once
        # its lease runs out, and its attempts join the saga's trace.
        doomed = services.start_orchestrator("--crash-at", "action-rpc-returned:2")
        with pytest.raises(grpc.aio.AioRpcError):
            await services.place(fail_inventory=True, request_id="takeover-1")
        assert doomed.process is not None
        assert await asyncio.to_thread(doomed.process.wait, 30) == -9, doomed.log()
        services.processes["orchestrator"] = survivor
        async with grpc.aio.insecure_channel(survivor.address) as channel:
            listed = await orchestrator_pb2_grpc.OrchestratorServiceStub(channel).ListSagas(
                pb.ListSagasRequest(), timeout=10
            )
        (saga_id,) = [s.saga_id for s in listed.sagas]
        saga = await services.wait_terminal(saga_id)
        assert saga.status == pb.SAGA_STATUS_COMPENSATED
        trace_id = saga.trace_id

        def resumed() -> list[Span]:
            return [
                s
                for s in spans.in_trace(trace_id)
                if s.name == "saga place_order resumed" and child_of(spans.spans, s)
            ]

        (span,) = await wait_until(resumed, timeout=30)
        assert span.attributes["saga.id"] == saga_id
        await wait_until(lambda: len(child_of(spans.spans, span)) >= 3, timeout=30)
        assert {s.trace_id for s in child_of(spans.spans, span)} == {trace_id}
        charge = one(spans.in_trace(trace_id), kind=SERVER, name=_method("payment", "Charge"))
        assert charge.service == "PaymentService"
    finally:
        services.stop()


async def test_a_saga_its_sampler_dropped_stays_untraced_after_a_recovery(
    tmp_path: Path, receiver: tuple[Receiver, str]
) -> None:
    spans, endpoint = receiver
    # Nothing sampled: the saga still gets a trace id (its log lines carry it).
    unsampled = {
        **tracing_env(endpoint),
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.0",
    }
    services = Services(
        tmp_path, env=unsampled, orchestrator_flags=("--recover-every-seconds", "3600")
    )
    services.start()
    try:
        saga_id = await killed_mid_step_and_recovered(services)
        saga = await services.wait_terminal(saga_id)
        assert saga.status == pb.SAGA_STATUS_COMPENSATED
        assert len(saga.trace_id) == 32
        # Every process flushes what it holds as it stops: the recovered orchestrator
        # took the saga up as unsampled as it began, so neither it nor the
        # participants it called exported a span.
        await services.terminate()
        assert spans.spans == []
    finally:
        services.stop()
