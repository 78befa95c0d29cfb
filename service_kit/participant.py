"""Running a participant: its SQLite file, its servicer, served until a signal.

Every participant's `python -m ...` goes through `serve_participant`, so they
all open, serve, drain and close the same way.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

import grpc

from service_kit import telemetry
from service_kit.call_log import open_call_log
from service_kit.database import Database
from service_kit.faults import FaultConfig, faults_from_flags
from service_kit.metrics import CallMetrics, serve_metrics
from service_kit.server import (
    CannotListen,
    configure_logging,
    serve_until_signalled,
    start_server,
)
from service_kit.tls import InsecureListen, security_from_args

Servicer = TypeVar("Servicer")


async def serve_participant(
    args: argparse.Namespace,
    *,
    schema: str | Sequence[str],
    service_name: str,
    build: Callable[[Database, FaultConfig], Servicer],
    register: Callable[[Servicer, grpc.aio.Server], None],
    prepare: Callable[[Database], Awaitable[None]] | None = None,
) -> None:
    """Opens the database, builds the servicer, serves until SIGTERM/SIGINT.

    `prepare` runs once the database is open, before serving (seed data, say).
    """
    security = security_from_args(args)
    Path(args.db).parent.mkdir(parents=True, exist_ok=True)
    telemetry.configure_tracing(service_name.rsplit(".", 1)[-1])
    metrics = serve_metrics(args.metrics_listen)
    db = await Database(
        args.db,
        schema=schema,
        max_queue=args.max_db_queue,
        on_commit=metrics.database.observe if metrics else None,
    ).open()
    call_log = open_call_log(args.call_log)
    counting = [CallMetrics(metrics.registry)] if metrics else []
    try:
        service = build(db, faults_from_flags(args))
        if prepare is not None:
            await prepare(db)
        running = await start_server(
            lambda server: register(service, server),
            [service_name],
            args.listen,
            max_message_bytes=args.max_message_bytes,
            maximum_concurrent_rpcs=args.max_concurrent_rpcs,
            interceptors=[*counting, *([call_log] if call_log else [])],
            security=security,
        )
        await serve_until_signalled(running, grace=args.grace_seconds)
    except (InsecureListen, CannotListen) as error:
        raise SystemExit(f"{service_name}: {error}") from None
    finally:
        if call_log:
            call_log.close()
        await db.close()
        telemetry.shutdown()
        if metrics:
            metrics.close()


def run(
    args: argparse.Namespace, serve: Callable[[argparse.Namespace], Coroutine[Any, Any, None]]
) -> None:
    """The body of a participant's main(): logging, then serve on a fresh event loop."""
    configure_logging(args.log_level, args.log_format)
    asyncio.run(serve(args))
