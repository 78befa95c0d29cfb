"""Limits that shed load instead of falling over: their defaults and flags.

Every server bounds the RPCs it serves at once (`--max-concurrent-rpcs`, gRPC
answers RESOURCE_EXHAUSTED above it) and the jobs queued for its database
writer (`--max-db-queue`, a request that would queue one more is refused with
RESOURCE_EXHAUSTED and a google.rpc.RetryInfo, having written nothing). The
orchestrator adds its own (orchestrator_server/__main__.py). docs/security.md
lists them all.
"""

from __future__ import annotations

import argparse

from service_kit.flags import env_default

MAX_CONCURRENT_RPCS = 10_000
"""RPCs one server handles at once (grpc.aio's maximum_concurrent_rpcs)."""
MAX_DB_QUEUE = 10_000
"""Jobs waiting for (or in) one database writer. A saga has at most one log
write queued at a time, so this matches MAX_SAGAS_IN_FLIGHT; requests beyond it
are refused instead of queued (the saga log's own writes wait instead)."""
MAX_SAGAS_IN_FLIGHT = 10_000
"""Unfinished sagas one orchestrator drives: 10,000 in flight took about 384 MiB
of RSS in `make bench` (docs/performance.md): about 35 KB a saga."""
MAX_WATCH_STREAMS = 1_000
"""WatchSaga streams open at once on one orchestrator."""
MAX_CALLS_PER_PARTICIPANT = 1_000
"""Calls in flight from one orchestrator to one participant; more sagas wait their turn."""
MAX_RECOVERING_SAGAS = 500
"""Sagas found unfinished (at start-up, or a dead replica's) driven at once."""
PLACE_ORDER_MAX_WAIT_SECONDS = 10.0
"""How long PlaceOrder waits for the saga to end before it answers with the
saga as it is (RUNNING), when the caller's deadline is later or absent."""
RETRY_AFTER_SECONDS = 1.0
"""The RetryInfo delay sent with a refusal for load."""


def positive_int(text: str) -> int:
    """argparse type: an integer of 1 or more."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a number above 0."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def add_limit_flags(parser: argparse.ArgumentParser, env_prefix: str) -> argparse._ArgumentGroup:
    """The limits every server has; returns the group, for a service's own limits."""
    group = parser.add_argument_group(
        "limits", "bounds that shed load instead of falling over (docs/security.md#limits)"
    )
    add_limit(
        group,
        env_prefix,
        "max-concurrent-rpcs",
        MAX_CONCURRENT_RPCS,
        "RPCs this server handles at once; above it a call is refused with RESOURCE_EXHAUSTED",
    )
    add_limit(
        group,
        env_prefix,
        "max-db-queue",
        MAX_DB_QUEUE,
        "jobs queued for the database writer; a request that would queue more is refused "
        "with RESOURCE_EXHAUSTED and RetryInfo, having written nothing",
    )
    return group


def add_limit(
    group: argparse._ActionsContainer,
    env_prefix: str,
    name: str,
    default: float,
    text: str,
) -> None:
    variable = f"{env_prefix}_{name.upper().replace('-', '_')}"
    fractional = isinstance(default, float)
    group.add_argument(
        f"--{name}",
        type=positive_float if fractional else positive_int,
        default=env_default(variable, f"{default:g}" if fractional else str(default)),
        help=f"{text} (default %(default)s, env {variable})",
    )
