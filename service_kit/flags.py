"""Command-line flags that also read environment variables.

Each flag `--listen` of a service with prefix MINISAGA_PAYMENT may also be set
as MINISAGA_PAYMENT_LISTEN; a flag given on the command line wins.
"""

from __future__ import annotations

import argparse
import os

from service_kit.server import DEFAULT_GRACE_SECONDS, DEFAULT_MAX_MESSAGE_BYTES


def env_default(name: str, default: str) -> str:
    """The value of environment variable `name`, or `default`."""
    return os.environ.get(name, default)


def add_server_flags(
    parser: argparse.ArgumentParser, *, env_prefix: str, listen: str, db: str
) -> None:
    parser.add_argument(
        "--listen",
        default=env_default(f"{env_prefix}_LISTEN", listen),
        help=f"host:port to serve on; port 0 picks a free one (default {listen}, "
        f"env {env_prefix}_LISTEN)",
    )
    parser.add_argument(
        "--db",
        default=env_default(f"{env_prefix}_DB", db),
        help=f"SQLite file of this service, created if missing (default {db}, env {env_prefix}_DB)",
    )
    parser.add_argument(
        "--grace-seconds",
        type=float,
        default=env_default(f"{env_prefix}_GRACE_SECONDS", str(DEFAULT_GRACE_SECONDS)),
        help="on SIGTERM, how long calls in flight may finish (default %(default)s)",
    )
    parser.add_argument(
        "--max-message-bytes",
        type=int,
        default=env_default(f"{env_prefix}_MAX_MESSAGE_BYTES", str(DEFAULT_MAX_MESSAGE_BYTES)),
        help="larger requests are refused with RESOURCE_EXHAUSTED (default %(default)s)",
    )
    parser.add_argument(
        "--log-level",
        default=env_default(f"{env_prefix}_LOG_LEVEL", "INFO"),
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="(default %(default)s)",
    )
