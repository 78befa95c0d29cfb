"""service_kit.otlp writes the very request opentelemetry's own OTLP encoder builds."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as library
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from service_kit import otlp

CALLER = trace.SpanContext(
    0x0AF7651916CD43DD8448EB211C80319C,
    0xB7AD6B7169203331,
    is_remote=True,
    trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
)


class Kept(SpanExporter):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS


def ended_spans(*scopes: str) -> list[ReadableSpan]:
    """What a saga's spans look like, and what the fast path must leave to the library."""
    kept = Kept()
    provider = TracerProvider(resource=Resource.create({"service.name": "orchestrator"}))
    provider.add_span_processor(SimpleSpanProcessor(kept))
    for scope in scopes:
        tracer = provider.get_tracer(scope, "1.0", schema_url="https://example.test/schema")
        caller = trace.set_span_in_context(trace.NonRecordingSpan(CALLER))
        root = tracer.start_span(
            "saga place_order",
            context=trace.set_span_in_context(trace.INVALID_SPAN),
            links=[trace.Link(CALLER), trace.Link(CALLER, {"why": "retried"})],
            attributes={"saga.id": "s-1", "saga.type": "place_order"},
        )
        inside = trace.set_span_in_context(root)
        attempt = tracer.start_span(
            "reserve action",
            context=inside,
            kind=trace.SpanKind.CLIENT,
            attributes={
                "saga.attempt": 2,
                "negative": -3,
                "ratio": 0.25,
                "flag": True,
                "off": False,
                "rpc.method": "/minisaga.inventory.v1.InventoryService/Reserve",
            },
        )
        attempt.set_attribute("rpc.grpc.status_code", 9)
        attempt.set_status(trace.StatusCode.ERROR, "FAILED_PRECONDITION")
        attempt.end()
        served = tracer.start_span("/x.Y/Z", context=caller, kind=trace.SpanKind.SERVER)
        served.set_status(trace.StatusCode.OK)
        served.end()
        # Beyond the fast path: the library's encoder writes these spans.
        tracer.start_span("huge", context=inside, attributes={"big": 2**70}).end()
        tracer.start_span("list", context=inside, attributes={"ids": ["a", "b"]}).end()
        tracer.start_span("not utf-8", context=inside, attributes={"bad": "\ud800", "ok": 1}).end()
        # Equal as dict keys, not on the wire: each is written as itself.
        tracer.start_span("zeros", context=inside, attributes={"z": 0.0}).end()
        tracer.start_span("zeros", context=inside, attributes={"z": -0.0}).end()
        with_state = trace.SpanContext(
            CALLER.trace_id,
            CALLER.span_id,
            is_remote=True,
            trace_flags=CALLER.trace_flags,
            trace_state=trace.TraceState([("vendor", "x")]),
        )
        tracer.start_span(
            "", context=trace.set_span_in_context(trace.NonRecordingSpan(with_state))
        ).end()
        try:
            raise ValueError("boom")
        except ValueError as error:
            root.record_exception(error)
        root.set_attribute("saga.status", "COMPENSATED")
        root.end()
    return kept.spans


@pytest.mark.parametrize("scopes", [("engine",), ("engine", "server")])
def test_the_fast_encoding_is_the_librarys_request_byte_for_byte(scopes: tuple[str, ...]) -> None:
    spans = ended_spans(*scopes)
    expected = library(spans)
    written = otlp.encode_spans(spans)
    assert ExportTraceServiceRequest.FromString(written) == expected
    assert written == expected.SerializeToString()
    sent = [s for r in expected.resource_spans for ss in r.scope_spans for s in ss.spans]
    assert len(sent) == len(spans)  # every span, fast or not


def test_an_attribute_repeated_across_spans_is_written_from_the_cache_unchanged() -> None:
    first, again = ended_spans("engine"), ended_spans("engine")
    assert otlp.encode_spans(first + again) == library(first + again).SerializeToString()
