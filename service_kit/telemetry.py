"""OpenTelemetry tracing, configured by the standard OTEL_* environment.

Tracing is on when the environment names somewhere to send spans:
`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (OTLP over
gRPC), or `OTEL_TRACES_EXPORTER=otlp|console`. Then `configure_tracing` installs
an SDK tracer provider (its sampler from `OTEL_TRACES_SAMPLER`, its resource
from `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`, its batching from
`OTEL_BSP_*`) exporting through service_kit.otlp, and the servers get
`ServerSpans`, which joins each call to the trace of its W3C `traceparent`. The
orchestrator's engine makes each attempt's client span itself and sends its
traceparent with the call (orchestrator_server/saga/engine.py).

With none of them set (or `OTEL_SDK_DISABLED=true`) nothing is installed: no
interceptor, no exporter, and the engine skips its spans altogether, so
tracing costs one boolean test per attempt.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace

from service_kit import errors
from service_kit.errors import Context
from service_kit.interceptors import Continuation, Handler, HandlerCache, Interceptor

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

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
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    resource = Resource.create(
        {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": service_name}
    )
    provider = TracerProvider(resource=resource)  # sampler: OTEL_TRACES_SAMPLER
    exporter: SpanExporter
    if os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "console":
        exporter = ConsoleSpanExporter()
    else:
        from service_kit import otlp

        exporter = otlp.Exporter()  # endpoint, headers, TLS: OTEL_EXPORTER_OTLP_*
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _provider = provider
    log.info("tracing on: exporting spans as %s", resource.attributes.get("service.name"))
    return True


def samples_new_trace(trace_id: int) -> bool:
    """Whether this process's sampler samples a new trace with this id: the decision
    it took for the saga's root span when the saga began, for the samplers that
    decide by trace id (`traceidratio`) or the same every time (`always_*`), and
    their `parentbased_*` forms."""
    sampler = getattr(trace.get_tracer_provider(), "sampler", None)
    if sampler is None:  # no SDK provider: nothing is exported anyway
        return False
    no_parent = trace.set_span_in_context(trace.INVALID_SPAN)
    return bool(sampler.should_sample(no_parent, trace_id, "saga").decision.is_sampled())


def shutdown() -> None:
    """Exports the spans still buffered (at a clean stop; a SIGKILL loses them)."""
    if _provider is not None:
        _provider.shutdown()


def server_interceptors() -> list[grpc.aio.ServerInterceptor[Any, Any]]:
    """The server-span interceptor when tracing is on (health checks untraced)."""
    return [ServerSpans()] if enabled() else []


# What marks a server span as failed, by the semantic conventions for gRPC: the
# server's own faults, not a caller's refused request (FAILED_PRECONDITION...).
_SERVER_ERRORS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)
_UNTRACED = ("/grpc.health.v1.Health/", "/grpc.reflection.")


class ServerSpans(Interceptor):
    """A SERVER span per call (unary, or streaming its replies), in the trace of the
    caller's W3C `traceparent` (a new trace when there is none), current while a
    unary handler runs.

    It makes the span opentelemetry-instrumentation-grpc's aio server interceptor
    makes, for a fraction of the CPU. That one wraps every call's context in a
    proxy, parses the metadata and the peer address twice, runs a filter, and
    makes a span object even for a call its sampler drops: a third of the
    participants' CPU per call, sampled or not
    (docs/observability.md#what-tracing-costs). This one wraps each method's
    handler once (service_kit.interceptors) and leaves a call alone when its
    caller's trace is not sampled and the sampler follows the caller (the
    default, `parentbased_*`). Name and attributes follow the same semantic
    conventions: the full method name, `rpc.system`, `rpc.service`,
    `rpc.method`, `rpc.user_agent`, `rpc.grpc.status_code` (not the library's
    `net.peer.*`, the peer's address)."""

    def __init__(self, provider: trace.TracerProvider | None = None) -> None:
        provider = provider or trace.get_tracer_provider()
        self._tracer = provider.get_tracer(__name__)
        self._follows_caller = _drops_unsampled_callers(provider)
        self._handlers = HandlerCache(self._traced)

    async def intercept_service(
        self, continuation: Continuation, details: grpc.HandlerCallDetails
    ) -> Handler:
        handler = await continuation(details)
        if handler is None or handler.request_streaming or details.method.startswith(_UNTRACED):
            return handler
        return self._handlers.wrapped(details.method, handler)

    def _traced(self, method: str, handler: Handler) -> Handler:
        service, _, name = method[1:].partition("/")
        named = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}
        tracer, follows_caller = self._tracer, self._follows_caller

        def begin(context: Context) -> trace.Span | None:
            carrier: dict[str, Any] = dict(context.invocation_metadata() or ())
            parent = propagate.extract(carrier)  # by OTEL_PROPAGATORS: W3C traceparent by default
            caller = trace.get_current_span(parent).get_span_context()
            if follows_caller and caller.is_valid and not caller.trace_flags.sampled:
                return None  # its caller's trace is not sampled: no span
            agent = carrier.get("user-agent")
            return tracer.start_span(
                method,
                context=parent,
                kind=trace.SpanKind.SERVER,
                attributes={**named, "rpc.user_agent": agent} if isinstance(agent, str) else named,
            )

        def end(span: trace.Span | None, context: Context, error: BaseException | None) -> None:
            if span is None:
                return
            if span.is_recording():
                code = errors.code_of(context, error)
                span.set_attribute("rpc.grpc.status_code", code.value[0])
                if code in _SERVER_ERRORS:
                    span.set_status(trace.StatusCode.ERROR, f"{code}:{context.details()}")
                if error is not None and code is grpc.StatusCode.UNKNOWN:  # a bug, not a refusal
                    span.record_exception(error)
            span.end()

        behavior: Any = handler.unary_unary or handler.unary_stream
        if inspect.isasyncgenfunction(behavior):  # a stream of replies, yielded
            # Not made current: the generator yields to gRPC between replies.

            async def traced_stream(request: Any, context: Context) -> AsyncIterator[Any]:
                span = begin(context)
                try:
                    async for item in behavior(request, context):
                        yield item
                except BaseException as error:
                    end(span, context, error)
                    raise
                end(span, context, None)

            return handler._replace(unary_stream=traced_stream)  # type: ignore[attr-defined,no-any-return]

        async def traced(request: Any, context: Context) -> Any:  # a reply, or context.write
            span = begin(context)
            if span is None:
                return await behavior(request, context)
            token = otel_context.attach(trace.set_span_in_context(span))
            try:
                result = await behavior(request, context)
            except BaseException as error:
                end(span, context, error)
                raise
            finally:
                otel_context.detach(token)
            end(span, context, None)
            return result

        field = "unary_unary" if handler.unary_unary is not None else "unary_stream"
        return handler._replace(**{field: traced})  # type: ignore[attr-defined,no-any-return]


def _drops_unsampled_callers(provider: trace.TracerProvider) -> bool:
    """Whether the provider's sampler drops every span whose remote parent is not
    sampled, as the `parentbased_*` samplers do unless built otherwise."""
    from opentelemetry.sdk.trace.sampling import Decision, ParentBased

    sampler = getattr(provider, "sampler", None)
    if not isinstance(sampler, ParentBased):
        return False
    unsampled = trace.SpanContext(1, 1, is_remote=True, trace_flags=trace.TraceFlags(0))
    probe = trace.set_span_in_context(trace.NonRecordingSpan(unsampled))
    return sampler.should_sample(probe, 1, "probe").decision is Decision.DROP
