"""service_kit.interceptors.HandlerCache: a method's handler is wrapped once, not per call."""

from __future__ import annotations

from typing import Any

import grpc

from service_kit.interceptors import Handler, HandlerCache


async def served(request: Any, context: Any) -> Any:
    return request


def test_a_handler_is_wrapped_once_and_again_only_when_the_one_beneath_changes() -> None:
    made: list[str] = []

    def wrap(method: str, handler: Handler) -> Handler:
        made.append(method)
        return handler._replace(unary_unary=served)  # type: ignore[attr-defined,no-any-return]

    cache = HandlerCache(wrap)
    first = grpc.unary_unary_rpc_method_handler(served)
    once = cache.wrapped("/x.Y/Charge", first)
    assert cache.wrapped("/x.Y/Charge", first) is once  # every later call of the method
    assert made == ["/x.Y/Charge"]
    assert cache.wrapped("/x.Y/Refund", first) is not once  # a method of its own
    replaced = grpc.unary_unary_rpc_method_handler(served)  # an interceptor beneath made anew
    assert cache.wrapped("/x.Y/Charge", replaced) is not once
    assert made == ["/x.Y/Charge", "/x.Y/Refund", "/x.Y/Charge"]
