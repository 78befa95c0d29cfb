"""python -m orchestrator_server: serve OrchestratorService on 127.0.0.1:7001."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from orchestrator_server.app import OrchestratorConfig, is_postgres, start
from orchestrator_server.loading import BadSagaSpec, check_hosted, load_sagas, parse_participants
from orchestrator_server.order_saga import PLACE_ORDER
from orchestrator_server.saga.definition import DEFAULT_SAGA_DEADLINE
from orchestrator_server.saga.engine import EngineLimits
from orchestrator_server.saga.retry import (
    DEFAULT_ACTION_RETRY,
    DEFAULT_COMPENSATION_RETRY,
    RetryPolicy,
)
from orchestrator_server.saga.sqlite_store import StoreInUse
from service_kit import flags, limits, telemetry
from service_kit.faults import add_failure_switches_flag, failure_switches_allowed
from service_kit.flags import add_server_flags, env_default
from service_kit.limits import add_limit, add_limit_flags
from service_kit.server import CannotListen, configure_logging, serve_until_signalled
from service_kit.tls import InsecureListen, security_from_args, tls_from_args

ENV = "MINISAGA_ORCHESTRATOR"


def _flag(
    parser: argparse._ActionsContainer,
    name: str,
    kind: Callable[[str], object],
    default: object,
    text: str,
) -> None:
    env = f"{ENV}_{name.upper().replace('-', '_')}"
    parser.add_argument(
        f"--{name}",
        type=kind,
        default=env_default(env, str(default)),
        help=f"{text} (default %(default)s, env {env})",
    )


# The flags' defaults are the library's: one place for each number.
ACTIONS = DEFAULT_ACTION_RETRY
COMPENSATIONS = DEFAULT_COMPENSATION_RETRY


def _ms(interval: timedelta) -> int:
    return int(interval.total_seconds() * 1000)


def _seconds(interval: timedelta | None) -> float:
    return 0.0 if interval is None else interval.total_seconds()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m orchestrator_server",
        description="Saga orchestrator: runs place_order (charge → reserve → ship) and "
        "compensates in reverse when a step fails.",
    )
    add_server_flags(parser, env_prefix=ENV, listen="127.0.0.1:7001", db="data/orchestrator.db")
    _flag(
        parser,
        "store",
        str,
        "sqlite",
        "the saga log: sqlite for the SQLite file --db; a postgresql://user@host/db URL for "
        "PostgreSQL, which several replicas share",
    )
    replicas = parser.add_argument_group("replicas (a PostgreSQL store)")
    _flag(
        replicas,
        "lease-ttl-seconds",
        float,
        10,
        "a replica owns a saga this long without renewing; a dead replica's sagas are "
        "taken over after it",
    )
    _flag(replicas, "lease-renew-seconds", float, 2, "how often leases are renewed")
    _flag(
        replicas,
        "recover-every-seconds",
        float,
        10,
        "how often to look for sagas nobody drives (a dead replica's, say)",
    )
    participants = parser.add_argument_group("participants")
    for name, port in (("payment", 7002), ("inventory", 7003), ("shipping", 7004)):
        _flag(participants, name, str, f"127.0.0.1:{port}", f"address of the {name} service")
    participants.add_argument(
        "--participant",
        metavar="NAME=ADDRESS",
        action="append",
        default=[],
        help="address of a participant a loaded saga calls, such as loyalty=127.0.0.1:7005 "
        "(repeatable; --payment, --inventory and --shipping are shorthands for theirs)",
    )
    hosting = parser.add_argument_group("sagas (docs/writing-a-saga.md)")
    hosting.add_argument(
        "--saga",
        metavar="MODULE:ATTRIBUTE",
        action="append",
        default=[],
        help="also host the saga definition(s) ATTRIBUTE of the installed module MODULE: a "
        "SagaDefinition or a list of them, such as several versions (repeatable; place_order "
        "version 1 is always hosted; StartSaga starts any hosted saga on its newest version)",
    )
    dialing = parser.add_argument_group(
        "mTLS to the participants",
        "what the orchestrator dials the participants with; each defaults to the server's "
        "own file, and with none given at all the channels are plaintext",
    )
    for name, what in (
        ("cert", "the client certificate (PEM) presented to the participants"),
        ("key", "its private key (PEM)"),
        ("ca", "the CA (PEM) the participants' certificates must chain to"),
    ):
        env = f"{ENV}_PARTICIPANT_TLS_{name.upper()}"
        dialing.add_argument(
            f"--participant-tls-{name}",
            metavar="PATH",
            default=env_default(env, ""),
            help=f"{what} (default the --tls-{name} file, env {env})",
        )
    retry = parser.add_argument_group("retries and deadlines")
    _flag(
        retry,
        "saga-deadline-seconds",
        float,
        f"{DEFAULT_SAGA_DEADLINE.total_seconds():g}",
        "a saga still going forward after this compensates",
    )
    _flag(
        retry,
        "attempt-timeout-ms",
        int,
        _ms(ACTIONS.attempt_timeout),
        "deadline of each RPC attempt",
    )
    _flag(
        retry,
        "action-max-attempts",
        int,
        ACTIONS.maximum_attempts,
        "attempts of a step before it gives up",
    )
    _flag(
        retry,
        "compensation-max-attempts",
        int,
        COMPENSATIONS.maximum_attempts,
        "attempts of a compensation before the saga is FAILED; 0 for no limit (then "
        "--compensation-horizon-seconds ends the retries)",
    )
    _flag(
        retry,
        "compensation-horizon-seconds",
        float,
        f"{_seconds(COMPENSATIONS.horizon):g}",
        "how long a compensation is retried, from this run's first attempt (a restart or "
        "ResumeSaga starts afresh), before the saga is FAILED; 0 for no time limit",
    )
    _flag(
        retry,
        "initial-backoff-ms",
        int,
        _ms(ACTIONS.initial_interval),
        "upper bound of the first retry's backoff",
    )
    _flag(
        retry,
        "backoff-coefficient",
        float,
        ACTIONS.backoff_coefficient,
        "each backoff bound grows by this factor",
    )
    _flag(
        retry,
        "action-max-backoff-ms",
        int,
        _ms(ACTIONS.maximum_interval),
        "longest backoff between action attempts",
    )
    _flag(
        retry,
        "compensation-max-backoff-ms",
        int,
        _ms(COMPENSATIONS.maximum_interval),
        "longest backoff between compensation attempts",
    )
    bounds = add_limit_flags(parser, ENV)
    for name, default, text in (
        (
            "max-sagas-in-flight",
            limits.MAX_SAGAS_IN_FLIGHT,
            "sagas this orchestrator drives at once (about 35 KB each); above it PlaceOrder "
            "is refused with RESOURCE_EXHAUSTED and RetryInfo, having written nothing",
        ),
        (
            "max-calls-per-participant",
            limits.MAX_CALLS_PER_PARTICIPANT,
            "RPCs in flight to one participant; the next attempts of other sagas wait their turn",
        ),
        (
            "max-recovering-sagas",
            limits.MAX_RECOVERING_SAGAS,
            "unfinished sagas found at start-up (or a dead replica's) driven at once; the "
            "rest wait in line, oldest first",
        ),
        (
            "max-watch-streams",
            limits.MAX_WATCH_STREAMS,
            "WatchSaga streams open at once; above it WatchSaga is refused with RESOURCE_EXHAUSTED",
        ),
        (
            "place-order-max-wait-seconds",
            limits.PLACE_ORDER_MAX_WAIT_SECONDS,
            "longest PlaceOrder waits for its saga to end, with no deadline or a later one; "
            "then it answers with the saga as it is (RUNNING)",
        ),
    ):
        add_limit(bounds, ENV, name, default, text)
    parser.add_argument(
        "--sqlite-synchronous",
        choices=["FULL", "NORMAL", "OFF"],
        default=env_default(f"{ENV}_SQLITE_SYNCHRONOUS", "FULL"),
        help="SQLite synchronous mode of the saga log; anything but FULL may lose the last "
        "sagas on power loss (default %(default)s)",
    )
    testing = parser.add_argument_group("testing")
    add_failure_switches_flag(testing, ENV)
    testing.add_argument(
        "--crash-at",
        metavar="CHECKPOINT:N",
        default=env_default(f"{ENV}_CRASH_AT", ""),
        help="for crash tests: SIGKILL this process the Nth time the engine passes "
        "CHECKPOINT, such as action-attempt-recorded:7 (see saga/engine.py)",
    )
    return flags.parse(parser, argv)


def crash_hook(spec: str) -> Callable[[str], None] | None:
    """A checkpoint hook that SIGKILLs this process at the Nth CHECKPOINT."""
    if not spec:
        return None
    name, _, count = spec.partition(":")
    remaining = [int(count or "1")]

    def hook(checkpoint: str) -> None:
        if checkpoint == name:
            remaining[0] -= 1
            if remaining[0] == 0:
                os.kill(os.getpid(), signal.SIGKILL)

    return hook


def config_from_args(args: argparse.Namespace) -> OrchestratorConfig:
    def policy(attempts: int, max_backoff_ms: int, horizon: float = 0.0) -> RetryPolicy:
        return RetryPolicy(
            horizon=timedelta(seconds=horizon) if horizon else None,
            initial_interval=timedelta(milliseconds=args.initial_backoff_ms),
            backoff_coefficient=args.backoff_coefficient,
            maximum_interval=timedelta(milliseconds=max_backoff_ms),
            maximum_attempts=attempts,
            attempt_timeout=timedelta(milliseconds=args.attempt_timeout_ms),
        )

    if args.store not in ("", "sqlite") and not is_postgres(args.store):
        raise SystemExit(f"--store {args.store!r}: use sqlite or a postgresql:// URL")
    if args.lease_ttl_seconds <= 0 or args.recover_every_seconds <= 0:
        raise SystemExit("--lease-ttl-seconds and --recover-every-seconds must be positive")
    if not 0 < args.lease_renew_seconds <= args.lease_ttl_seconds / 3:
        raise SystemExit(
            "--lease-renew-seconds must be positive and at most a third of --lease-ttl-seconds "
            "(a lease is trusted for two thirds of its TTL)"
        )
    try:
        sagas = load_sagas(args.saga)
        participants = parse_participants(
            args.participant,
            {"payment": args.payment, "inventory": args.inventory, "shipping": args.shipping},
        )
        check_hosted([PLACE_ORDER, *sagas], participants)
    except BadSagaSpec as error:
        raise SystemExit(f"python -m orchestrator_server: {error}") from error
    try:
        return OrchestratorConfig(
            db=Path(args.db),
            sagas=tuple(sagas),
            store=args.store,
            lease_ttl=timedelta(seconds=args.lease_ttl_seconds),
            lease_renew_every=timedelta(seconds=args.lease_renew_seconds),
            recover_every=timedelta(seconds=args.recover_every_seconds),
            participants=participants,
            listen=args.listen,
            saga_deadline=timedelta(seconds=args.saga_deadline_seconds),
            action_retry=policy(args.action_max_attempts, args.action_max_backoff_ms),
            compensation_retry=policy(
                args.compensation_max_attempts,
                args.compensation_max_backoff_ms,
                args.compensation_horizon_seconds,
            ),
            synchronous=args.sqlite_synchronous,
            max_message_bytes=args.max_message_bytes,
            checkpoint=crash_hook(args.crash_at),
            engine_limits=EngineLimits(
                max_sagas_in_flight=args.max_sagas_in_flight,
                max_calls_per_participant=args.max_calls_per_participant,
                max_recovering_sagas=args.max_recovering_sagas,
            ),
            max_concurrent_rpcs=args.max_concurrent_rpcs,
            max_db_queue=args.max_db_queue,
            max_watch_streams=args.max_watch_streams,
            place_order_max_wait=timedelta(seconds=args.place_order_max_wait_seconds),
            security=security_from_args(args),
            participant_tls=tls_from_args(
                args.participant_tls_cert or args.tls_cert,
                args.participant_tls_key or args.tls_key,
                args.participant_tls_ca or args.tls_ca,
                "--participant-tls-cert/--participant-tls-key/--participant-tls-ca",
            ),
            allow_failure_switches=failure_switches_allowed(args),
            metrics_listen=args.metrics_listen,
        )
    except ValueError as error:
        raise SystemExit(f"bad retry flags: {error}") from error


async def serve(args: argparse.Namespace) -> None:
    telemetry.configure_tracing("orchestrator")
    try:
        orchestrator = await start(config_from_args(args))
    except (StoreInUse, InsecureListen, CannotListen) as error:
        raise SystemExit(f"python -m orchestrator_server: {error}") from error
    try:
        await serve_until_signalled(orchestrator.server, grace=args.grace_seconds)
    finally:
        await orchestrator.stop()
        telemetry.shutdown()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    configure_logging(args.log_level, args.log_format)
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
