"""Serving a set of gRPC services: health, reflection, graceful stop.

Every minisaga server is started through `start_server` and kept up by
`serve_until_signalled`, so they all answer `grpc.health.v1.Health` (SERVING
once ready, NOT_SERVING while draining) and, when asked (`--reflection`),
server reflection, which lets `grpcurl -plaintext 127.0.0.1:7002 list` work
with no proto files at hand. Their `Security` (service_kit.tls) adds TLS and
the authorization table of service_kit.authz.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]
from grpc_reflection.v1alpha import reflection

from service_kit import logs, telemetry
from service_kit.authz import Authorizer, Tokens
from service_kit.malformed import RefuseMalformed
from service_kit.tls import Security, check_listen

log = logging.getLogger(__name__)

DEFAULT_MAX_MESSAGE_BYTES = 1024 * 1024
DEFAULT_GRACE_SECONDS = 5.0
PLAINTEXT = Security()
"""No TLS, no authorization, no reflection, loopback only: what a test server gets."""


class CannotListen(OSError):
    """The server's address cannot be bound: its port is taken, or the host is not ours."""


@dataclass
class RunningServer:
    server: grpc.aio.Server
    port: int
    address: str
    health: health_aio.HealthServicer
    service_names: Sequence[str]

    async def stop(self, grace: float = DEFAULT_GRACE_SECONDS) -> None:
        """Reports NOT_SERVING, then lets calls in flight finish for `grace` seconds."""
        for name in ("", *self.service_names):
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.stop(grace)


async def start_server(
    register: Callable[[grpc.aio.Server], None],
    service_names: Sequence[str],
    listen: str,
    *,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    maximum_concurrent_rpcs: int | None = None,
    interceptors: Sequence[grpc.aio.ServerInterceptor[Any, Any]] = (),
    security: Security = PLAINTEXT,
) -> RunningServer:
    """Starts a server on `listen` ("127.0.0.1:0" picks a free port).

    `security` (service_kit.tls): TLS, the authorization table, reflection, and
    the refusal of plaintext beyond loopback (raises InsecureListen)."""
    check_listen(listen, security)
    # Tracing (when on) goes first, so that the others run inside the call's span...
    interceptors = [*telemetry.server_interceptors(), *interceptors]
    if security.authorizing:  # ...but after this: a refused call reaches no other interceptor
        tokens = Tokens(security.token_file) if security.token_file else None
        interceptors = [Authorizer(tokens), *interceptors]
    server = grpc.aio.server(
        # Last: a request whose bytes do not parse is refused before any handler.
        interceptors=[*interceptors, RefuseMalformed()],
        # Above it, gRPC refuses a call with RESOURCE_EXHAUSTED (service_kit/limits.py).
        maximum_concurrent_rpcs=maximum_concurrent_rpcs,
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", 16 * max_message_bytes),
            ("grpc.so_reuseport", 0),
        ],
    )
    register(server)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    if security.reflection:
        reflection.enable_server_reflection(
            (
                *service_names,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            server,
        )
    try:
        if security.tls is not None:
            port = server.add_secure_port(listen, security.tls.server_credentials())
        else:
            port = server.add_insecure_port(listen)
    except RuntimeError:  # grpc's "Failed to bind to address ...", with advice on logging
        port = 0
    if port == 0:
        raise CannotListen(
            f"cannot listen on {listen}: the port is in use (another `make run`?) "
            "or the address is not this machine's"
        )
    await server.start()
    for name in ("", *service_names):
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    host = listen.rsplit(":", 1)[0]
    return RunningServer(server, port, f"{host}:{port}", health, service_names)


async def serve_until_signalled(
    running: RunningServer, *, grace: float = DEFAULT_GRACE_SECONDS
) -> None:
    """Waits for SIGTERM or SIGINT, then drains and stops the server."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("serving %s on %s", ", ".join(running.service_names), running.address)
    waiter = asyncio.ensure_future(running.server.wait_for_termination())
    stopper = asyncio.ensure_future(stop.wait())
    await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
    if stop.is_set():
        log.info("stopping: draining calls for up to %.1fs", grace)
        await running.stop(grace)
    waiter.cancel()
    stopper.cancel()


def configure_logging(level: str, fmt: str = "auto") -> None:
    """Logs at `level` as JSON or text (service_kit.logs; auto: JSON unless stdout is a tty)."""
    logs.configure(level, fmt)
