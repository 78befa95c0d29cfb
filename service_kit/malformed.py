"""Requests whose bytes do not parse are refused with INVALID_ARGUMENT.

grpc.aio parses a request with the method's deserializer before any handler
runs; a DecodeError there (bad UTF-8 in a string field, a truncated message)
would end the call as UNKNOWN carrying the parser's own text. This
interceptor gives every unary-request method a deserializer that keeps the
failure, and a handler that answers it as the services answer any bad input:
INVALID_ARGUMENT with an ErrorInfo and a BadRequest, and nothing run.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from service_kit.errors import Context, FieldViolation, abort, invalid_argument
from service_kit.interceptors import Continuation, Handler, HandlerCache, Interceptor


class _Malformed:
    """What the tolerant deserializer returns for bytes that do not parse."""


_MALFORMED = _Malformed()


def _tolerant(parse: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def deserialize(data: bytes) -> Any:
        try:
            return parse(data)
        except Exception:  # DecodeError, or whatever a parser raises on bad bytes
            return _MALFORMED

    return deserialize


def _domain(method: str) -> str:
    """ "/minisaga.payment.v1.PaymentService/Charge" -> "minisaga.payment.v1"."""
    service = method.lstrip("/").split("/", 1)[0]
    return service.rsplit(".", 1)[0]


async def _refuse(context: Context, method: str) -> None:
    error = invalid_argument(
        FieldViolation("request", "is not a valid message of this method: its bytes do not parse")
    )
    await abort(context, error, _domain(method))


class RefuseMalformed(Interceptor):
    """Refuses with INVALID_ARGUMENT a request whose bytes do not parse."""

    def __init__(self) -> None:
        self._handlers = HandlerCache(_tolerant_handler)

    async def intercept_service(
        self, continuation: Continuation, details: grpc.HandlerCallDetails
    ) -> Handler:
        handler = await continuation(details)
        if handler is None or handler.request_streaming or handler.request_deserializer is None:
            return handler
        return self._handlers.wrapped(details.method, handler)


def _tolerant_handler(method: str, handler: Handler) -> Handler:
    """`handler` with a deserializer that keeps a parse failure, answered as bad input."""
    assert handler.request_deserializer is not None
    parse = _tolerant(handler.request_deserializer)
    behavior: Any = handler.unary_unary or handler.unary_stream
    field = "unary_unary" if handler.unary_unary is not None else "unary_stream"
    if inspect.isasyncgenfunction(behavior):  # a stream of replies, yielded

        async def checked_stream(request: Any, context: Context) -> AsyncIterator[Any]:
            if request is _MALFORMED:
                await _refuse(context, method)
            async for item in behavior(request, context):
                yield item

        return handler._replace(  # type: ignore[attr-defined,no-any-return]
            request_deserializer=parse, unary_stream=checked_stream
        )

    async def checked(request: Any, context: Context) -> Any:  # a reply, or context.write
        if request is _MALFORMED:
            await _refuse(context, method)
        return await behavior(request, context)

    return handler._replace(  # type: ignore[attr-defined,no-any-return]
        request_deserializer=parse, **{field: checked}
    )
