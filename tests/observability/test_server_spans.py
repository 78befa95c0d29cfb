"""service_kit.telemetry.ServerSpans makes the server spans opentelemetry-instrumentation-grpc's
aio interceptor makes (name, kind, parent, rpc.* attributes, status), and none for a call
whose caller's trace is not sampled when the sampler follows the caller."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.instrumentation.grpc import aio_server_interceptor
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased, Sampler
from opentelemetry.trace import StatusCode

from service_kit.telemetry import ServerSpans
from tests.harness import wait_until

TRACE_ID, CALLER_SPAN = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
SAMPLED = (("traceparent", f"00-{TRACE_ID}-{CALLER_SPAN}-01"),)
UNSAMPLED = (("traceparent", f"00-{TRACE_ID}-{CALLER_SPAN}-00"),)


async def ok(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    return request


async def refused(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "out of stock")
    raise AssertionError("abort returned")


async def broken(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    raise RuntimeError("a bug")


class Traced:
    """An aio server on a loopback port with one interceptor and its own span exporter."""

    def __init__(self, interceptor: Callable[[TracerProvider], Any], sampler: Sampler) -> None:
        self.spans = InMemorySpanExporter()
        provider = TracerProvider(sampler=sampler)
        provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.server = grpc.aio.server(interceptors=[interceptor(provider)])
        self.stuck = asyncio.Event()  # set once a call of Stuck is in its handler
        methods = {
            name: grpc.unary_unary_rpc_method_handler(behavior)
            for name, behavior in (
                ("Ok", ok),
                ("Refused", refused),
                ("Broken", broken),
                ("Stuck", self.held),
            )
        }
        methods["Count"] = grpc.unary_stream_rpc_method_handler(count)
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("test.v1.Echo", methods),)
        )
        self.port = self.server.add_insecure_port("127.0.0.1:0")

    async def held(self, request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        self.stuck.set()
        await asyncio.Event().wait()  # until gRPC cancels the call
        raise AssertionError("never set")

    async def call(
        self, method: str, metadata: tuple[tuple[str, str], ...], timeout: float | None = None
    ) -> grpc.StatusCode:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{self.port}") as channel:
            try:
                if method == "Count":
                    stream = channel.unary_stream(f"/test.v1.Echo/{method}")  # type: ignore[call-arg]
                    assert [r async for r in stream(b"hi", metadata=metadata)] == [b"1", b"2"]
                else:
                    await channel.unary_unary(f"/test.v1.Echo/{method}")(  # type: ignore[call-arg]
                        b"hi", metadata=metadata, timeout=timeout
                    )
            except grpc.aio.AioRpcError as error:
                return error.code()
        return grpc.StatusCode.OK

    async def ended(self) -> ReadableSpan:
        """The one span, once the server has ended it: an abort answers the caller
        before the interceptor around the handler sees it raise."""
        spans: tuple[ReadableSpan, ...] = await wait_until(
            lambda: self.spans.get_finished_spans(), timeout=10
        )
        assert len(spans) == 1, spans
        return spans[0]


async def count(
    request: bytes, context: grpc.aio.ServicerContext[Any, Any]
) -> AsyncIterator[bytes]:
    yield b"1"
    yield b"2"


@pytest.fixture
async def servers() -> AsyncIterator[tuple[Traced, Traced]]:
    ours = Traced(lambda provider: ServerSpans(provider), ParentBased(ALWAYS_ON))
    theirs = Traced(
        lambda provider: aio_server_interceptor(tracer_provider=provider),  # type: ignore[no-untyped-call]
        ParentBased(ALWAYS_ON),
    )
    for server in (ours, theirs):
        await server.server.start()
    yield ours, theirs
    for server in (ours, theirs):
        await server.server.stop(None)


def shape(span: ReadableSpan) -> tuple[Any, ...]:
    context, parent = span.get_span_context(), span.parent
    assert context is not None
    return (
        span.name,
        span.kind,
        trace.format_trace_id(context.trace_id),
        parent and trace.format_span_id(parent.span_id),
        parent and parent.is_remote,
        {k: v for k, v in (span.attributes or {}).items() if k.startswith("rpc.")},
        span.status.status_code,
    )


@pytest.mark.parametrize(
    ("method", "code", "failed"),
    [
        ("Ok", grpc.StatusCode.OK, False),
        ("Refused", grpc.StatusCode.FAILED_PRECONDITION, False),  # the caller's fault
        ("Broken", grpc.StatusCode.UNKNOWN, True),
    ],
)
async def test_a_call_in_a_sampled_trace_gets_the_librarys_server_span(
    servers: tuple[Traced, Traced], method: str, code: grpc.StatusCode, failed: bool
) -> None:
    ours, theirs = servers
    for server in servers:
        assert await server.call(method, SAMPLED) is code
    mine, reference = await ours.ended(), await theirs.ended()
    assert shape(mine)[2:5] == (TRACE_ID, CALLER_SPAN, True)  # in the caller's trace
    assert mine.attributes is not None
    assert mine.attributes["rpc.grpc.status_code"] == code.value[0]
    assert mine.attributes["rpc.method"] == method
    assert mine.attributes["rpc.service"] == "test.v1.Echo"
    assert mine.status.status_code is (StatusCode.ERROR if failed else StatusCode.UNSET)
    if method == "Broken":
        # The library records the exception but leaves the span OK (status code 0),
        # although the caller gets UNKNOWN; ours says what the caller got.
        assert reference.attributes is not None
        assert reference.attributes["rpc.grpc.status_code"] == 0
        assert [e.name for e in mine.events] == ["exception"]  # the library records it twice
        assert {e.name for e in reference.events} == {"exception"}
    else:
        assert shape(mine) == shape(reference)


async def test_a_call_with_no_traceparent_starts_a_trace_as_the_library_does(
    servers: tuple[Traced, Traced],
) -> None:
    ours, theirs = servers
    for server in servers:
        assert await server.call("Ok", ()) is grpc.StatusCode.OK
    mine, reference = await ours.ended(), await theirs.ended()
    assert mine.parent is None and reference.parent is None
    assert shape(mine)[:2] == shape(reference)[:2] and shape(mine)[5:] == shape(reference)[5:]


async def test_a_call_in_an_unsampled_trace_is_left_untouched(
    servers: tuple[Traced, Traced],
) -> None:
    for server in servers:
        assert await server.call("Ok", UNSAMPLED) is grpc.StatusCode.OK
        # A reply is sent once the handler's span has ended: none was made.
        assert server.spans.get_finished_spans() == ()


async def test_a_sampler_that_ignores_the_caller_still_records_an_unsampled_callers_call() -> None:
    server = Traced(lambda provider: ServerSpans(provider), ALWAYS_ON)
    await server.server.start()
    try:
        assert await server.call("Ok", UNSAMPLED) is grpc.StatusCode.OK
        span = await server.ended()
        assert shape(span)[2:5] == (TRACE_ID, CALLER_SPAN, True)
    finally:
        await server.server.stop(None)


async def test_a_streamed_call_gets_the_librarys_server_span(
    servers: tuple[Traced, Traced],
) -> None:
    ours, theirs = servers
    for server in servers:
        assert await server.call("Count", SAMPLED) is grpc.StatusCode.OK
    mine, reference = await ours.ended(), await theirs.ended()
    assert shape(mine) == shape(reference)
    assert shape(mine)[2:5] == (TRACE_ID, CALLER_SPAN, True)


async def test_a_call_past_its_deadline_is_deadline_exceeded_not_a_bug(
    servers: tuple[Traced, Traced],
) -> None:
    ours, _ = servers
    async with grpc.aio.insecure_channel(f"127.0.0.1:{ours.port}") as channel:
        await channel.channel_ready()  # the deadline is the handler's, not the connection's
        call = channel.unary_unary("/test.v1.Echo/Stuck")(  # type: ignore[call-arg]
            b"hi", metadata=SAMPLED, timeout=1.0
        )
        await ours.stuck.wait()  # in the handler, which never answers: the deadline ends it
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call
        assert refused.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    span = await ours.ended()
    assert span.attributes is not None
    assert span.attributes["rpc.grpc.status_code"] == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
    assert span.status.status_code is StatusCode.ERROR  # the server did not answer in time
    assert [e.name for e in span.events] == []  # no exception recorded: gRPC cancelled it


async def test_a_call_its_caller_cancels_is_cancelled_and_no_error(
    servers: tuple[Traced, Traced],
) -> None:
    ours, _ = servers
    async with grpc.aio.insecure_channel(f"127.0.0.1:{ours.port}") as channel:
        call = channel.unary_unary("/test.v1.Echo/Stuck")(b"hi", metadata=SAMPLED)  # type: ignore[call-arg]
        await ours.stuck.wait()
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
    span = await ours.ended()
    assert span.attributes is not None
    assert span.attributes["rpc.grpc.status_code"] == grpc.StatusCode.CANCELLED.value[0]
    assert span.status.status_code is StatusCode.UNSET  # the caller's choice, not a fault
    assert [e.name for e in span.events] == []
