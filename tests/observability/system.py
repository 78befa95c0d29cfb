"""The four services as real processes with tracing, metrics and JSON logs on,
and an in-process OTLP receiver that collects their spans.

The receiver is the real OpenTelemetry collector service
(`opentelemetry.proto.collector.trace.v1.TraceService`) on a plain grpc.aio
server of its own, which is not instrumented: an instrumented receiver would
trace its own Export calls and export those, for ever.
"""

from __future__ import annotations

import asyncio
import json
import re
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from minisaga.orchestrator.v1 import orchestrator_pb2 as pb
from minisaga.orchestrator.v1 import orchestrator_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2
from prometheus_client.parser import text_string_to_metric_families

from tests.harness import Subprocess, wait_until

FAST_RETRIES = (
    "--initial-backoff-ms", "5",
    "--action-max-backoff-ms", "20",
    "--compensation-max-backoff-ms", "20",
)  # fmt: skip
_METRICS = re.compile(r"metrics on http://(\S+:\d+)/metrics")


@dataclass(frozen=True)
class Span:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    kind: int
    attributes: dict[str, Any]
    links: tuple[str, ...]  # trace ids of the linked spans


def _value(value: common_pb2.AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    """Every span exported to it, in arrival order."""

    def __init__(self) -> None:
        self.spans: list[Span] = []

    async def Export(
        self,
        request: trace_service_pb2.ExportTraceServiceRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    self.spans.append(
                        Span(
                            service=str(resource.get("service.name", "")),
                            name=span.name,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_id=span.parent_span_id.hex(),
                            kind=span.kind,
                            attributes={a.key: _value(a.value) for a in span.attributes},
                            links=tuple(link.trace_id.hex() for link in span.links),
                        )
                    )
        return trace_service_pb2.ExportTraceServiceResponse()

    def of_saga(self, saga_id: str) -> list[Span]:
        return [s for s in self.spans if s.attributes.get("saga.id") == saga_id]

    def in_trace(self, trace_id: str) -> list[Span]:
        return [s for s in self.spans if s.trace_id == trace_id]


async def start_receiver() -> tuple[grpc.aio.Server, Receiver, str]:
    server = grpc.aio.server()
    receiver = Receiver()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, receiver, f"127.0.0.1:{port}"


def tracing_env(endpoint: str) -> dict[str, str]:
    """OTEL_* for a process exporting every span to `endpoint` soon after it ends."""
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{endpoint}",
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_TRACES_SAMPLER": "always_on",
        "OTEL_BSP_SCHEDULE_DELAY": "50",
    }


@dataclass
class Services:
    """Three participants and an orchestrator, as processes."""

    tmp: Path
    env: dict[str, str] = field(default_factory=dict)
    orchestrator_flags: tuple[str, ...] = ()
    inventory_flags: tuple[str, ...] = ()
    processes: dict[str, Subprocess] = field(default_factory=dict)

    def start(self) -> Services:
        common = ["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"]
        common += ["--log-format", "json"]
        for name, extra in (
            ("payment", ()),
            ("inventory", ("--stock", "apple=1000", *self.inventory_flags)),
            ("shipping", ()),
        ):
            self.processes[name] = Subprocess(
                f"{name}_server",
                [*common, "--db", str(self.tmp / f"{name}.db"), *extra],
                self.tmp / f"{name}.log",
                env=self.env,
            ).start()
        self.start_orchestrator()
        return self

    def start_orchestrator(self, *extra: str) -> Subprocess:
        flags = ["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"]
        flags += ["--log-format", "json", "--db", str(self.tmp / "orchestrator.db")]
        for name in ("payment", "inventory", "shipping"):
            flags += [f"--{name}", self.processes[name].address]
        self.processes["orchestrator"] = process = Subprocess(
            "orchestrator_server",
            [*flags, *FAST_RETRIES, *self.orchestrator_flags, *extra],
            self.tmp / "orchestrator.log",
            env=self.env,
        ).start()
        return process

    def stop(self) -> None:
        for process in self.processes.values():
            process.kill() if process.process and process.process.poll() is None else None

    async def terminate(self) -> None:
        """SIGTERM, the orchestrator first: each flushes its spans and stops. (Waited
        for off the event loop: the in-process receiver must answer the last exports.)"""
        for name in ("orchestrator", "payment", "inventory", "shipping"):
            process = self.processes[name]
            if process.process and process.process.poll() is None:
                assert await asyncio.to_thread(process.terminate) == 0, process.log()

    def metrics_url(self, name: str) -> str:
        process = self.processes[name]
        matches = _METRICS.findall(process.log())
        assert matches, process.log()
        return f"http://{matches[-1]}/metrics"

    async def scrape(self, name: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample of the service's /metrics: (name, sorted labels) -> value."""
        url = self.metrics_url(name)

        def get() -> str:
            with urllib.request.urlopen(url, timeout=10) as response:
                return str(response.read().decode())

        text = await asyncio.to_thread(get)
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def log_lines(self, name: str) -> Iterator[dict[str, Any]]:
        """The JSON objects of a service's log (every line must be one)."""
        for line in self.processes[name].log().splitlines():
            if line.strip():
                yield json.loads(line)

    async def place(self, timeout: float = 30.0, **fields: Any) -> pb.PlaceOrderResponse:
        async with grpc.aio.insecure_channel(self.processes["orchestrator"].address) as channel:
            stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
            request = pb.PlaceOrderRequest(product_id="apple", quantity=1, amount=100, **fields)
            return await stub.PlaceOrder(request, timeout=timeout)

    async def saga(self, saga_id: str) -> pb.Saga:
        async with grpc.aio.insecure_channel(self.processes["orchestrator"].address) as channel:
            stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
            return (await stub.GetSaga(pb.GetSagaRequest(saga_id=saga_id), timeout=10)).saga

    async def wait_terminal(self, saga_id: str) -> pb.Saga:
        terminal = (pb.SAGA_STATUS_COMPLETED, pb.SAGA_STATUS_COMPENSATED, pb.SAGA_STATUS_FAILED)

        async def ended() -> pb.Saga | None:
            try:
                saga = await self.saga(saga_id)
            except grpc.aio.AioRpcError:
                return None
            return saga if saga.status in terminal else None

        saga: pb.Saga = await wait_until(ended, timeout=60)
        return saga
