"""OpenTelemetry tracing, configured by the standard OTEL_* environment.

Tracing is on when the environment names somewhere to send spans:
`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (OTLP over
gRPC), or `OTEL_TRACES_EXPORTER=otlp|console`. Then `configure_tracing` installs
an SDK tracer provider (its sampler from `OTEL_TRACES_SAMPLER`, its resource
from `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`, its batching from
`OTEL_BSP_*`), and the servers get opentelemetry-instrumentation-grpc's server
interceptor, which joins the trace of a call's W3C `traceparent`. The
orchestrator's engine makes each attempt's client span itself and sends its
traceparent with the call (orchestrator_server/saga/engine.py).

With none of them set (or `OTEL_SDK_DISABLED=true`) nothing is installed: no
interceptor, no exporter, and the engine skips its spans altogether, so
tracing costs one boolean test per attempt.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import grpc
from opentelemetry import trace

log = logging.getLogger(__name__)

_provider: Any = None  # the SDK TracerProvider once configured


def wanted() -> bool:
    """Whether the OTEL_* environment asks for traces to be exported."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter == "none":
        return False
    return bool(
        exporter
        or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def enabled() -> bool:
    """Whether this process exports traces (configure_tracing found them wanted)."""
    return _provider is not None


def configure_tracing(service_name: str) -> bool:
    """Installs the SDK tracer provider when the environment asks for traces.
    `service_name` is used when OTEL_SERVICE_NAME is not set. Returns enabled()."""
    global _provider
    if _provider is not None or not wanted():
        return enabled()
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SpanExporter,
    )

    resource = Resource.create(
        {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": service_name}
    )
    provider = TracerProvider(resource=resource)  # sampler: OTEL_TRACES_SAMPLER
    exporter: SpanExporter
    if os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "console":
        exporter = ConsoleSpanExporter()
    else:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()  # endpoint, headers, TLS: OTEL_EXPORTER_OTLP_*
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _provider = provider
    log.info("tracing on: exporting spans as %s", resource.attributes.get("service.name"))
    return True


def shutdown() -> None:
    """Exports the spans still buffered (at a clean stop; a SIGKILL loses them)."""
    if _provider is not None:
        _provider.shutdown()


def server_interceptors() -> list[grpc.aio.ServerInterceptor[Any, Any]]:
    """The OpenTelemetry server interceptor when tracing is on (health checks untraced)."""
    if not enabled():
        return []
    from opentelemetry.instrumentation.grpc import aio_server_interceptor, filters

    only = filters.negate(filters.health_check())
    return [aio_server_interceptor(filter_=only)]  # type: ignore[no-untyped-call]
