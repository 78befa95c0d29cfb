"""A local OTLP/gRPC receiver for the tracing run: it counts the spans exported to it.

A plain grpc server on its own threads, in the benchmark's process (not a
service under measurement): the real collector service of opentelemetry-proto,
which answers every Export at once and keeps only a count.
"""

from __future__ import annotations

import threading
from concurrent import futures
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


class CountingReceiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.spans = 0
        self._lock = threading.Lock()

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        count = sum(
            len(scope.spans)
            for resource in request.resource_spans
            for scope in resource.scope_spans
        )
        with self._lock:
            self.spans += count
        return trace_service_pb2.ExportTraceServiceResponse()


class Receiver:
    """`with Receiver() as receiver:` serves on receiver.address until the block ends."""

    def __init__(self) -> None:
        self.counter = CountingReceiver()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(  # type: ignore[no-untyped-call]
            self.counter, self._server
        )
        self.address = f"127.0.0.1:{self._server.add_insecure_port('127.0.0.1:0')}"

    def __enter__(self) -> Receiver:
        self._server.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.stop(0)

    def env(self) -> dict[str, str]:
        """OTEL_* of a service exporting every span to this receiver."""
        return {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{self.address}",
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
            "OTEL_TRACES_SAMPLER": "always_on",
            # Room for a burst: a full queue drops spans, and every span is to arrive.
            "OTEL_BSP_MAX_QUEUE_SIZE": "65536",
        }
