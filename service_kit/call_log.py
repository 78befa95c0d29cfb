"""An opt-in log of every call a participant receives, for tests that count them.

`--call-log PATH` appends one line per call, `saga_id attempt method`, where
saga_id and attempt come from the `minisaga-saga-id` and `minisaga-attempt`
metadata the orchestrator sends with every RPC (`-` when absent). The line is
written, unbuffered and O_APPEND, when the call arrives, before the handler
runs: so it is there even if the participant dies during the call, and two
orchestrator replicas sending one attempt twice show up as two lines.

Off by default; when on it costs one small write(2) per call.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc

from service_kit.flags import env_default
from service_kit.interceptors import Interceptor

SAGA_ID_KEY = "minisaga-saga-id"
ATTEMPT_KEY = "minisaga-attempt"


class CallLog(Interceptor):
    """A server interceptor appending `saga_id attempt method` per call to a file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        if self._fd is not None:
            saga_id = attempt = "-"
            for key, value in handler_call_details.invocation_metadata or ():
                if key == SAGA_ID_KEY:
                    saga_id = str(value)
                elif key == ATTEMPT_KEY:
                    attempt = str(value)
            line = f"{saga_id} {attempt} {handler_call_details.method}\n"
            os.write(self._fd, line.encode())
        return await continuation(handler_call_details)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def add_call_log_flag(parser: argparse.ArgumentParser, env_prefix: str) -> None:
    parser.add_argument(
        "--call-log",
        metavar="PATH",
        default=env_default(f"{env_prefix}_CALL_LOG", ""),
        help="append one line per call received, 'saga_id attempt method', to PATH "
        f"(for tests; default off, env {env_prefix}_CALL_LOG)",
    )


def open_call_log(path: str) -> CallLog | None:
    """The interceptor for --call-log, or None when it is off."""
    return CallLog(path) if path else None


def read_call_log(path: str | Path) -> list[tuple[str, str, str]]:
    """The (saga_id, attempt, method) of every call logged in path."""
    calls = []
    for line in Path(path).read_text().splitlines():
        saga_id, attempt, method = line.split(" ")
        calls.append((saga_id, attempt, method))
    return calls
