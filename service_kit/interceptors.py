"""What the servers' interceptors share: their types, and wrapping a handler once.

grpc.aio runs every interceptor on every call. One that wraps the handler it is
given (to count it, to refuse malformed bytes) would build a new closure and a
new RpcMethodHandler each time. The handler a servicer registered is the same
object on every call of its method, so `HandlerCache` wraps it once and hands
back the same wrapper for as long as the handler beneath is the same.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc

if TYPE_CHECKING:
    Interceptor = grpc.aio.ServerInterceptor[Any, Any]
    Handler = grpc.RpcMethodHandler[Any, Any]
else:  # not subscriptable at run time
    Interceptor = grpc.aio.ServerInterceptor
    Handler = grpc.RpcMethodHandler

Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[Handler]]


class HandlerCache:
    """`wrap(method, handler)` made once per method and handler beneath."""

    def __init__(self, wrap: Callable[[str, Handler], Handler]) -> None:
        self._wrap = wrap
        self._kept: dict[str, tuple[Handler, Handler]] = {}  # method -> (beneath, wrapper)

    def wrapped(self, method: str, handler: Handler) -> Handler:
        kept = self._kept.get(method)
        if kept is None or kept[0] is not handler:
            kept = self._kept[method] = (handler, self._wrap(method, handler))
        return kept[1]
