"""Command-line flags that also read environment variables.

Each flag `--listen` of a service with prefix MINISAGA_PAYMENT may also be set
as MINISAGA_PAYMENT_LISTEN; a flag given on the command line wins.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from service_kit.server import DEFAULT_GRACE_SECONDS, DEFAULT_MAX_MESSAGE_BYTES


class _EnvironmentDefault(str):
    """A flag's default that an environment variable may set, which it remembers
    (so that --help names the variable of every flag)."""

    variable: str


class _FromEnvironment(_EnvironmentDefault):
    """A flag's default read from an environment variable (to be checked by `parse`)."""


def env_default(name: str, default: str) -> str:
    """The value of environment variable `name`, or `default`."""
    value = os.environ.get(name)
    marked = _EnvironmentDefault(default) if value is None else _FromEnvironment(value)
    marked.variable = name
    return marked


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """`parser.parse_args(argv)`, after refusing a bad value in an environment
    variable with one line that names the variable: argparse checks `choices`
    only on the command line, and its own errors name the flag, not the variable."""
    given = sys.argv[1:] if argv is None else list(argv)
    name_variables(parser)
    for action in parser._actions:
        value = action.default
        if not isinstance(value, _FromEnvironment) or _on_command_line(action, given):
            continue
        problem = _problem(action, value)
        if problem:
            parser.exit(2, f"{parser.prog}: {value.variable}={str(value)!r}: {problem}\n")
    return parser.parse_args(argv)


def name_variables(parser: argparse.ArgumentParser) -> None:
    """Adds `env VARIABLE` to the help of every flag an environment variable sets
    whose help does not name it yet, inside its last parenthesis when it has one."""
    for action in parser._actions:
        variable = getattr(action.default, "variable", None)
        if variable is None or action.help in (None, argparse.SUPPRESS):
            continue
        text = str(action.help)
        if variable in text:
            continue
        if text.endswith(")") and "(default" in text:
            action.help = f"{text[:-1]}, env {variable})"
        elif text:
            action.help = f"{text} (env {variable})"
        else:
            action.help = f"(env {variable})"


def _on_command_line(action: argparse.Action, argv: Sequence[str]) -> bool:
    return any(
        arg == option or arg.startswith(f"{option}=")
        for option in action.option_strings
        for arg in argv
    )


def _problem(action: argparse.Action, value: str) -> str:
    convert = action.type if callable(action.type) else str
    try:
        converted = convert(value)
    except (TypeError, ValueError, argparse.ArgumentTypeError):
        return f"not a valid {getattr(convert, '__name__', 'value')} for {action.option_strings[0]}"
    if action.choices is not None and converted not in action.choices:
        return f"{action.option_strings[0]} must be one of {', '.join(map(str, action.choices))}"
    return ""


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
    parser.add_argument(
        "--log-format",
        default=env_default(f"{env_prefix}_LOG_FORMAT", "auto"),
        choices=["auto", "json", "text"],
        help="log lines as JSON objects or as text; auto is JSON unless stdout is a terminal "
        f"(default %(default)s, env {env_prefix}_LOG_FORMAT)",
    )
    parser.add_argument(
        "--metrics-listen",
        metavar="HOST:PORT",
        default=env_default(f"{env_prefix}_METRICS_LISTEN", ""),
        help="serve Prometheus metrics at http://HOST:PORT/metrics; port 0 picks a free one "
        f"(default off, env {env_prefix}_METRICS_LISTEN)",
    )
    add_security_flags(parser, env_prefix)


def add_security_flags(parser: argparse.ArgumentParser, env_prefix: str) -> None:
    """TLS, tokens, reflection and --insecure (service_kit.tls.security_from_args reads them)."""
    group = parser.add_argument_group(
        "security", "mutual TLS, who may call what (docs/security.md), reflection"
    )
    for name, what in (
        ("cert", "this server's certificate (PEM); with --tls-key and --tls-ca, serve mTLS"),
        ("key", "the private key of --tls-cert (PEM)"),
        ("ca", "the CA (PEM) a caller's client certificate must chain to"),
    ):
        variable = f"{env_prefix}_TLS_{name.upper()}"
        group.add_argument(
            f"--tls-{name}",
            metavar="PATH",
            default=env_default(variable, ""),
            help=f"{what} (default none: plaintext, env {variable})",
        )
    variable = f"{env_prefix}_TOKEN_FILE"
    group.add_argument(
        "--token-file",
        metavar="PATH",
        default=env_default(variable, ""),
        help="bearer tokens a caller without a certificate may send (hashes and identities, "
        f"from `minisaga tokens add`) (default none, env {variable})",
    )
    for flag, text in (
        ("reflection", "serve gRPC server reflection (what grpcurl uses without proto files)"),
        ("insecure", "allow plaintext on a non-loopback address (logs a warning at every start)"),
    ):
        variable = f"{env_prefix}_{flag.upper()}"
        group.add_argument(
            f"--{flag}",
            action="store_true",
            default=env_default(variable, "false"),
            help=f"{text} (default off, env {variable}=true)",
        )
