"""OTLP span export with a cheaper encoding of the same request.

opentelemetry-exporter-otlp-proto-grpc's `OTLPSpanExporter` builds each span as
protobuf objects in Python, attribute by attribute: about 24 µs a span on the
bench machine, as much as making the span, and paid on the same cores as the
calls being traced. `Exporter` is that exporter (endpoint, headers, TLS,
compression and retries from the standard OTEL_EXPORTER_OTLP_* environment)
with its `_translate_data` replaced: `encode_spans` writes the protobuf wire
bytes of the same `ExportTraceServiceRequest` directly and keeps the bytes of
the attributes that repeat (`rpc.system=grpc`, `saga.step=charge`...), then
protobuf's C parser turns them into the request the exporter sends.

A span carrying anything the fast path does not write (events, such as a
recorded exception; trace state; attribute values other than str, bool, int
and float) is encoded by the library's own encoder, so every span is sent
whatever it holds. tests/observability/test_otlp_encoding.py holds the two
encoders to the same message.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.common._internal import (
    _encode_instrumentation_scope,
    _encode_resource,
    trace_encoder,
)
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import Link, SpanContext, SpanKind

# Span.SpanKind: the SDK's enum values are off by one from the protocol's.
_KIND = {
    SpanKind.INTERNAL: 1,
    SpanKind.SERVER: 2,
    SpanKind.CLIENT: 3,
    SpanKind.PRODUCER: 4,
    SpanKind.CONSUMER: 5,
}
_HAS_IS_REMOTE, _IS_REMOTE = 0x100, 0x200  # SpanFlags
_MAX_CACHED = 4096  # distinct attributes kept encoded (a saga id never repeats: bounded)
_fixed64 = struct.Struct("<Q").pack
_fixed32 = struct.Struct("<I").pack
_double = struct.Struct("<d").pack


class Exporter(OTLPSpanExporter):
    """OTLPSpanExporter sending what `encode_spans` writes."""

    def _translate_data(self, data: Sequence[ReadableSpan]) -> ExportTraceServiceRequest:
        return ExportTraceServiceRequest.FromString(encode_spans(data))


def _varint(value: int) -> bytes:
    if value < 0x80:
        return _SMALL[value]
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_SMALL = [bytes([n]) for n in range(0x80)]


def _field(tag: int, payload: bytes) -> bytes:
    """A length-delimited field: its tag byte, the payload's length, the payload."""
    return _SMALL[tag] + _varint(len(payload)) + payload


def _any_value(value: Any) -> bytes | None:
    """An AnyValue's bytes, or None for a type the fast path leaves to the library."""
    kind = type(value)
    if kind is str:
        return _field(0x0A, value.encode())
    if kind is bool:
        return b"\x10\x01" if value else b"\x10\x00"
    if kind is int and -(2**63) <= value < 2**63:
        return b"\x18" + _varint(value & 0xFFFFFFFFFFFFFFFF)  # int64: two's complement
    if kind is float:
        return b"\x21" + _double(value)
    return None


_key_values: dict[tuple[str, type, Any], bytes | None] = {}


def _key_value(key: str, value: Any) -> bytes | None:
    cache_key = (key, type(value), value)
    if cache_key in _key_values:
        return _key_values[cache_key]
    written = _any_value(value)
    encoded = None if written is None else _field(0x0A, key.encode()) + _field(0x12, written)
    if type(value) is not float:  # -0.0 == 0.0 as a key, not on the wire: floats not kept
        if len(_key_values) >= _MAX_CACHED:
            _key_values.clear()
        _key_values[cache_key] = encoded
    return encoded


def _attributes(tag: int, attributes: Any) -> bytes | None:
    if not attributes:
        return b""
    out = []
    for key, value in attributes.items():
        encoded = _key_value(key, value)
        if encoded is None:
            return None
        out.append(_field(tag, encoded))
    return b"".join(out)


def _flags(parent: SpanContext | None) -> bytes:
    remote = parent is not None and parent.is_remote
    return _fixed32(_HAS_IS_REMOTE | (_IS_REMOTE if remote else 0))


def _fast_span(span: ReadableSpan) -> bytes | None:
    """A Span's bytes, field by field in field-number order, or None to fall back."""
    context = span.get_span_context()
    assert context is not None  # a span the SDK ended has its context
    ids = _ids(context)
    attributes = _attributes(0x4A, span.attributes)
    if span.events or ids is None or attributes is None:
        return None
    out = [ids]
    parent = span.parent
    if parent is not None:
        out.append(b"\x22\x08" + parent.span_id.to_bytes(8, "big"))
    if span.name:
        out.append(_field(0x2A, span.name.encode()))
    out.append(b"\x30" + _SMALL[_KIND[span.kind]])
    assert span.start_time is not None and span.end_time is not None
    out.append(b"\x39" + _fixed64(span.start_time))
    out.append(b"\x41" + _fixed64(span.end_time))
    out.append(attributes)
    if span.dropped_attributes:
        out.append(b"\x50" + _varint(span.dropped_attributes))
    if span.dropped_events:
        out.append(b"\x60" + _varint(span.dropped_events))
    for link in span.links:
        encoded = _link(link)
        if encoded is None:
            return None
        out.append(_field(0x6A, encoded))
    if span.dropped_links:
        out.append(b"\x70" + _varint(span.dropped_links))
    status = span.status
    message = status.description.encode() if status.description else b""
    code = status.status_code.value
    out.append(
        _field(
            0x7A,
            (_field(0x12, message) if message else b"") + (b"\x18" + _SMALL[code] if code else b""),
        )
    )
    out.append(b"\x85\x01" + _flags(parent))  # field 16, fixed32
    return b"".join(out)


def _ids(context: SpanContext) -> bytes | None:
    """Fields 1 and 2 of a Span or a Link (trace id, span id), or None when the
    context carries trace state, which the fast path leaves to the library."""
    if context.trace_state is not None and len(context.trace_state):
        return None
    return (
        b"\x0a\x10"
        + context.trace_id.to_bytes(16, "big")
        + (b"\x12\x08" + context.span_id.to_bytes(8, "big"))
    )


def _link(link: Link) -> bytes | None:
    context = link.context
    ids = _ids(context)
    attributes = _attributes(0x22, link.attributes)
    if ids is None or attributes is None:
        return None
    out = [ids, attributes]
    if link.dropped_attributes:
        out.append(b"\x28" + _varint(link.dropped_attributes))
    out.append(b"\x35" + _flags(context))  # field 6, fixed32
    return b"".join(out)


def _library_span(span: ReadableSpan) -> bytes:
    encoded: bytes = trace_encoder._encode_span(span).SerializeToString()
    return encoded


def _scope(scope: Any) -> bytes:
    encoded: bytes = _encode_instrumentation_scope(scope).SerializeToString()
    return encoded


def _resource(resource: Any) -> bytes:
    encoded: bytes = _encode_resource(resource).SerializeToString()
    return encoded


def encode_spans(spans: Sequence[ReadableSpan]) -> bytes:
    """The wire bytes of the ExportTraceServiceRequest the library would send for `spans`:
    grouped by resource, then by instrumentation scope, each in the order first seen."""
    groups: dict[int, dict[Any, list[bytes]]] = {}  # by the first equal resource's id
    group_of: dict[int, int] = {}  # id(resource) -> its group
    firsts: dict[Any, int] = {}  # a Resource hashes as JSON: once per object, not per span
    resources: dict[int, Any] = {}
    for span in spans:
        try:
            encoded = _fast_span(span)
        except Exception:  # a str that is not UTF-8 (a lone surrogate): the library drops it
            encoded = None
        if encoded is None:
            encoded = _library_span(span)
        group = group_of.get(id(span.resource))
        if group is None:
            group = group_of[id(span.resource)] = firsts.setdefault(
                span.resource, id(span.resource)
            )
            resources.setdefault(group, span.resource)
        scopes = groups.setdefault(group, {})
        scopes.setdefault(span.instrumentation_scope, []).append(encoded)
    out = []
    for group, scopes in groups.items():
        resource = resources[group]
        body = [_field(0x0A, _resource(resource))]
        for scope, encoded_spans in scopes.items():
            scope_body = [_field(0x0A, _scope(scope))]
            scope_body += [_field(0x12, s) for s in encoded_spans]
            schema = scope.schema_url if scope is not None else None
            if schema:
                scope_body.append(_field(0x1A, schema.encode()))
            body.append(_field(0x12, b"".join(scope_body)))
        if resource.schema_url:
            body.append(_field(0x1A, resource.schema_url.encode()))
        out.append(_field(0x0A, b"".join(body)))
    return b"".join(out)
