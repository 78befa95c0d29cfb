"""`minisaga`: place orders, and find, read and repair sagas, from a terminal.

    minisaga demo                       # the tutorial's four scenarios
    minisaga saga list --status failed  # what needs an operator
    minisaga saga get SAGA_ID           # one saga's timeline
    minisaga saga resume SAGA_ID --wait # retry its failed compensations
    minisaga saga resume --all-failed   # ... of every FAILED saga

`main(argv, channel=...)` takes one channel for every service instead of
dialing them, so tests can script replies with `grpc_testing`.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import io
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message
from minisaga.orchestrator.v1 import orchestrator_pb2 as pb

from minisaga_client.audit import audit as run_audit
from minisaga_client.client import DEFAULT_TIMEOUT, Client, connect
from minisaga_client.errors import (
    DeadlineExceeded,
    InvalidArgument,
    MinisagaError,
    NotFound,
    Unavailable,
)
from minisaga_client.graph import mermaid
from minisaga_client.render import (
    Style,
    escape_controls,
    event_line,
    headline,
    record,
    saga_table,
    status_name,
    timeline,
    use_color,
)
from minisaga_client.tls import Tls, credentials_for

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INVALID_ARGUMENT = 3
EXIT_NOT_FOUND = 4
EXIT_REFUSED = 5
EXIT_UNAVAILABLE = 6
EXIT_DEADLINE_EXCEEDED = 7
EXIT_DISAGREE = 8
EXIT_INTERRUPTED = 130

EXIT_CODES: Mapping[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: EXIT_INVALID_ARGUMENT,
    grpc.StatusCode.OUT_OF_RANGE: EXIT_INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND: EXIT_NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION: EXIT_REFUSED,
    grpc.StatusCode.ALREADY_EXISTS: EXIT_REFUSED,
    grpc.StatusCode.UNAVAILABLE: EXIT_UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED: EXIT_DEADLINE_EXCEEDED,
}
"""The exit status of a failed call, by status code; any other code exits EXIT_ERROR."""

DEFAULT_ADDRESSES: Mapping[str, str] = {
    "orchestrator": "127.0.0.1:7001",
    "payment": "127.0.0.1:7002",
    "inventory": "127.0.0.1:7003",
    "shipping": "127.0.0.1:7004",
}
ADDRESS_ENV: Mapping[str, str] = {
    name: f"MINISAGA_{name.upper()}_ADDRESS" for name in DEFAULT_ADDRESSES
}

TOKEN_ENV = "MINISAGA_TOKEN"
TLS_ENV: Mapping[str, str] = {
    name: f"MINISAGA_TLS_{name.upper()}" for name in ("ca", "cert", "key")
}

EPILOG = f"""\
addresses: a flag wins over its environment variable, which wins over the default
  --orchestrator  {ADDRESS_ENV["orchestrator"]:<30}  {DEFAULT_ADDRESSES["orchestrator"]}
  --payment       {ADDRESS_ENV["payment"]:<30}  {DEFAULT_ADDRESSES["payment"]}
  --inventory     {ADDRESS_ENV["inventory"]:<30}  {DEFAULT_ADDRESSES["inventory"]}
  --shipping      {ADDRESS_ENV["shipping"]:<30}  {DEFAULT_ADDRESSES["shipping"]}
  --tls-ca        {TLS_ENV["ca"]:<30}  none: plaintext; all three give mutual TLS
  --tls-cert      {TLS_ENV["cert"]:<30}  none
  --tls-key       {TLS_ENV["key"]:<30}  none
  --token         {TOKEN_ENV:<30}  none; a bearer token, sent only over TLS or to loopback

exit codes:
  {EXIT_OK}    ok; also when the saga itself compensated or failed (read its status)
  {EXIT_ERROR}    another error (INTERNAL, UNKNOWN, ...), or `demo` saw what the tutorial does not
  {EXIT_USAGE}    usage: a bad command line
  {EXIT_INVALID_ARGUMENT}    INVALID_ARGUMENT (or OUT_OF_RANGE): refused, naming the bad fields
  {EXIT_NOT_FOUND}    NOT_FOUND: no such saga, record or product
  {EXIT_REFUSED}    FAILED_PRECONDITION or ALREADY_EXISTS: a rule refused it (its reason is shown)
  {EXIT_UNAVAILABLE}    UNAVAILABLE: the service cannot be reached (after retries)
  {EXIT_DEADLINE_EXCEEDED}    DEADLINE_EXCEEDED: no answer within --timeout seconds
  {EXIT_DISAGREE}    `audit` found the saga log and the participants disagreeing
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C)

Colour is on when stdout is a terminal and NO_COLOR is not set. --json prints
the API messages as JSON (proto field names) instead of text.
"""

STATUSES = ("RUNNING", "COMPENSATING", "COMPLETED", "COMPENSATED", "FAILED")


@dataclass
class Command:
    """What a command needs: its arguments, a client made on first use, and the output."""

    args: argparse.Namespace
    out: TextIO
    style: Style
    channel: grpc.Channel | None = None
    _client: Client | None = field(default=None, init=False)

    @property
    def client(self) -> Client:
        if self._client is None:
            addresses = {name: str(getattr(self.args, name)) for name in DEFAULT_ADDRESSES}
            if self.channel is not None:
                self._client = Client(
                    self.channel,
                    payment=self.channel,
                    inventory=self.channel,
                    shipping=self.channel,
                    timeout=self.args.timeout,
                    addresses=addresses,
                )
            else:
                self._client = connect(
                    addresses["orchestrator"],
                    payment=addresses["payment"],
                    inventory=addresses["inventory"],
                    shipping=addresses["shipping"],
                    timeout=self.args.timeout,
                    tls=self.args.tls,
                    token=self.args.token or None,
                )
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    @property
    def json(self) -> bool:
        return bool(getattr(self.args, "json", False))

    def print(self, text: str = "") -> None:
        """Prints with every control character a server's text may hold escaped."""
        print(escape_controls(text, keep_colours=self.style.color), file=self.out, flush=True)

    def show(self, message: Message, text: Callable[[], str]) -> None:
        """The message as JSON with --json, else as `text()`."""
        if self.json:
            self.print(to_json(message))
        else:
            self.print(text())


def to_json(message: Message, *, indent: int | None = 2) -> str:
    return json_format.MessageToJson(message, preserving_proto_field_name=True, indent=indent)


# --- commands -------------------------------------------------------------


def place_order(cmd: Command) -> int:
    a = cmd.args
    placed = cmd.client.place_order(
        product_id=a.product_id,
        quantity=a.quantity,
        amount=a.amount,
        currency=a.currency,
        address=a.address,
        request_id=a.request_id,
        fail_payment=a.fail_payment,
        fail_inventory=a.fail_inventory,
        fail_shipping=a.fail_shipping,
    )
    if cmd.json:
        cmd.print(to_json(placed))
        return EXIT_OK
    cmd.print(timeline(placed.saga, cmd.style))
    if placed.status in (pb.SAGA_STATUS_RUNNING, pb.SAGA_STATUS_COMPENSATING):
        cmd.print(
            f"\nthe {a.timeout:g}s --timeout came first; the saga goes on. "
            f"Follow it: minisaga saga watch {placed.saga_id}"
        )
    return EXIT_OK


def saga_get(cmd: Command) -> int:
    saga = cmd.client.get_saga(cmd.args.saga_id)
    cmd.show(saga, lambda: timeline(saga, cmd.style))
    return EXIT_OK


LIST_FILTERS = ("saga_type", "order_id", "request_id", "created_from", "created_before")
"""The filters of `saga list` besides --status, as the client's list_sagas names them."""


def saga_list(cmd: Command) -> int:
    a = cmd.args
    status = _status_value(a.status)
    filters = {name: getattr(a, name) for name in LIST_FILTERS if getattr(a, name)}
    if a.all:
        sagas = list(cmd.client.iter_sagas(status=status, page_size=a.page_size, **filters))
        page = pb.ListSagasResponse(sagas=sagas)
    else:
        page = cmd.client.list_sagas(
            status=status, page_size=a.page_size, page_token=a.page_token, **filters
        )
    if cmd.json:
        cmd.print(to_json(page))
        return EXIT_OK
    if not page.sagas:
        cmd.print(f"no {a.status.upper() + ' ' if a.status else ''}sagas")
    else:
        cmd.print(saga_table(page.sagas, cmd.style))
    if page.next_page_token:
        again = f" --status {a.status}" if a.status else ""
        for name, value in filters.items():
            shown = value.isoformat() if isinstance(value, datetime) else value
            again += f" --{name.replace('_', '-')} {shown}"
        again += f" --page-size {a.page_size}" if a.page_size else ""
        cmd.print(
            f"\nmore: minisaga saga list{again} --page-token {page.next_page_token}   (or --all)"
        )
    return EXIT_OK


def saga_watch(cmd: Command) -> int:
    last: pb.Saga | None = None
    for update in cmd.client.watch_saga(cmd.args.saga_id):
        last = update.saga
        if cmd.json:
            cmd.print(to_json(update, indent=None))
        else:
            cmd.print(event_line(update.event, cmd.style))
    if last is not None and not cmd.json:
        cmd.print()
        cmd.print(headline(last, cmd.style))
    return EXIT_OK


def _follow(cmd: Command, saga: pb.Saga, done: str) -> int:
    """After resume or cancel: the saga now, or with --wait the saga once it ends."""
    if cmd.args.wait:
        for update in cmd.client.watch_saga(saga.saga_id):
            saga = update.saga
        cmd.show(saga, lambda: timeline(saga, cmd.style))
        return EXIT_OK
    if cmd.json:
        cmd.print(to_json(saga))
        return EXIT_OK
    cmd.print(f"{done}: {headline(saga, cmd.style)}")
    if saga.status in (pb.SAGA_STATUS_RUNNING, pb.SAGA_STATUS_COMPENSATING):
        cmd.print(f"it goes on in the background; follow it: minisaga saga watch {saga.saga_id}")
    return EXIT_OK


def saga_resume(cmd: Command) -> int:
    a = cmd.args
    filters = {name: getattr(a, name) for name in LIST_FILTERS if getattr(a, name)}
    if not a.all_failed:
        if not a.saga_id or filters or a.page_size:
            print(
                "minisaga saga resume: give a SAGA_ID, or --all-failed (the filters and "
                "--page-size go with --all-failed)",
                file=sys.stderr,
            )
            return EXIT_USAGE
        return _follow(cmd, cmd.client.resume_saga(a.saga_id), "resumed")
    if a.saga_id or a.wait:
        print("minisaga saga resume: --all-failed takes no SAGA_ID and no --wait", file=sys.stderr)
        return EXIT_USAGE
    resumed: list[str] = []
    token = ""
    while True:
        page = cmd.client.resume_sagas(page_size=a.page_size, page_token=token, **filters)
        resumed.extend(page.saga_ids)
        token = page.next_page_token
        if not token:
            break
    if cmd.json:
        cmd.print(to_json(pb.ResumeSagasResponse(saga_ids=resumed)))
        return EXIT_OK
    cmd.print(f"resumed {len(resumed)} FAILED saga{'' if len(resumed) == 1 else 's'}")
    if resumed:
        cmd.print("they compensate in the background: minisaga saga list --status compensating")
    return EXIT_OK


def saga_cancel(cmd: Command) -> int:
    return _follow(cmd, cmd.client.cancel_saga(cmd.args.saga_id), "cancel requested")


def _show_record(fetch: Callable[[Command], Message]) -> Callable[[Command], int]:
    """A read command: fetch one record, show it (as JSON with --json)."""

    def run(cmd: Command) -> int:
        item = fetch(cmd)
        cmd.show(item, lambda: record(item, cmd.style))
        return EXIT_OK

    return run


stock_set = _show_record(lambda cmd: cmd.client.set_stock(cmd.args.product_id, cmd.args.quantity))
stock_get = _show_record(lambda cmd: cmd.client.get_stock(cmd.args.product_id))
payment_get = _show_record(lambda cmd: cmd.client.get_payment(cmd.args.saga_id))
reservation_get = _show_record(lambda cmd: cmd.client.get_reservation(cmd.args.saga_id))
shipment_get = _show_record(lambda cmd: cmd.client.get_shipment(cmd.args.saga_id))


def graph(cmd: Command) -> int:
    source = mermaid(cmd.client.get_saga_definition(cmd.args.saga_type))
    cmd.print(f"```mermaid\n{source}\n```" if cmd.args.markdown else source)
    return EXIT_OK


def console(cmd: Command) -> int:
    """Serves the web console until Ctrl-C; its dependencies are the `console` extra."""
    try:
        from minisaga_client.console import Settings, is_loopback, serve
        from minisaga_client.console.app import split_listen
    except ImportError as error:
        print(
            f"minisaga: the console needs its extra ({error.name} is missing): "
            "pip install 'minisaga[console]'",
            file=sys.stderr,
        )
        return EXIT_ERROR
    a = cmd.args
    try:
        host, _ = split_listen(a.listen)
    except ValueError as error:
        print(f"minisaga: {error}", file=sys.stderr)
        return EXIT_USAGE
    read_only = not is_loopback(host) if a.read_only is None else a.read_only
    settings = Settings(
        a.orchestrator, read_only=read_only, timeout=a.timeout, tls=a.tls, token=a.token or None
    )
    try:
        asyncio.run(serve(settings, a.listen, cmd.out))
    except OSError as error:  # the port is taken, or the address is not this host's
        print(f"minisaga: cannot listen on {a.listen}: {error.strerror or error}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


@dataclass(frozen=True)
class Scenario:
    """One of the tutorial's runs and what it must show."""

    title: str
    story: str
    switch: str
    """The PlaceOrder failure switch this scenario turns on ("" for none)."""
    status: pb.SagaStatus.ValueType
    steps: tuple[str, ...]
    """Each step execution and its last code, such as "undo charge OK"."""
    records: tuple[str, str, str]
    """Payment, reservation and shipment status afterwards ("none" when there is none)."""


SCENARIOS = (
    Scenario(
        "success",
        "every step succeeds",
        "",
        pb.SAGA_STATUS_COMPLETED,
        ("charge OK", "reserve OK", "ship OK"),
        ("CHARGED", "RESERVED", "CREATED"),
    ),
    Scenario(
        "inventory failure",
        "Inventory refuses the reservation, so the payment is refunded",
        "fail_inventory",
        pb.SAGA_STATUS_COMPENSATED,
        ("charge OK", "reserve FAILED_PRECONDITION", "undo charge OK"),
        ("REFUNDED", "none", "none"),
    ),
    Scenario(
        "payment failure",
        "Payment refuses the charge: nothing was done, so there is nothing to undo",
        "fail_payment",
        pb.SAGA_STATUS_COMPENSATED,
        ("charge FAILED_PRECONDITION",),
        ("none", "none", "none"),
    ),
    Scenario(
        "shipping failure",
        "Shipping refuses the shipment: the stock is released, then the money refunded",
        "fail_shipping",
        pb.SAGA_STATUS_COMPENSATED,
        (
            "charge OK",
            "reserve OK",
            "ship FAILED_PRECONDITION",
            "undo reserve OK",
            "undo charge OK",
        ),
        ("REFUNDED", "RELEASED", "none"),
    ),
)


def steps_of(saga: pb.Saga) -> tuple[str, ...]:
    """Each step execution with its last status code: "charge OK", "undo charge OK"."""
    return tuple(
        ("undo " if s.phase == pb.STEP_PHASE_COMPENSATION else "")
        + f"{s.step} {s.attempts[-1].code if s.attempts else 'PENDING'}"
        for s in saga.steps
    )


def _record_status(read: Callable[[], Message]) -> str:
    try:
        found = read()
    except NotFound:
        return "none"
    value = getattr(found, "status", 0)
    descriptor = found.DESCRIPTOR.fields_by_name["status"].enum_type
    assert descriptor is not None
    return descriptor.values_by_number[value].name.split("_STATUS_")[-1]


def _records(client: Client, saga_id: str) -> tuple[str, str, str]:
    """What each participant holds for the saga: payment, reservation, shipment status."""
    return (
        _record_status(lambda: client.get_payment(saga_id)),
        _record_status(lambda: client.get_reservation(saga_id)),
        _record_status(lambda: client.get_shipment(saga_id)),
    )


def demo(cmd: Command) -> int:
    a, style, client = cmd.args, cmd.style, cmd.client
    cmd.print(
        f"The tutorial's {len(SCENARIOS)} scenarios, each an order of {a.quantity} "
        f"{a.product_id} for {a.amount} JPY:"
    )
    differ = 0
    for number, scenario in enumerate(SCENARIOS, 1):
        switch = f" --{scenario.switch.replace('_', '-')}" if scenario.switch else ""
        cmd.print()
        cmd.print(style.bold(f"━━ {number}/{len(SCENARIOS)} {scenario.title}: {scenario.story}"))
        cmd.print(
            style.dim(
                f"$ minisaga place-order --product-id {a.product_id} --quantity {a.quantity} "
                f"--amount {a.amount}{switch}"
            )
        )
        placed = client.place_order(
            product_id=a.product_id,
            quantity=a.quantity,
            amount=a.amount,
            fail_payment=scenario.switch == "fail_payment",
            fail_inventory=scenario.switch == "fail_inventory",
            fail_shipping=scenario.switch == "fail_shipping",
        )
        saga = placed.saga
        cmd.print(timeline(saga, style))
        records = _records(client, placed.saga_id)
        cmd.print(
            f"participants: payment {records[0]} · reservation {records[1]} · shipment {records[2]}"
        )
        expected = (scenario.status, scenario.steps, scenario.records)
        if (saga.status, steps_of(saga), records) == expected:
            cmd.print(style.green(f"✓ as in the tutorial: {status_name(saga.status)}"))
        else:
            differ += 1
            cmd.print(
                style.red(
                    f"✗ the tutorial expects {status_name(scenario.status)}, "
                    f"{' → '.join(scenario.steps)}, records {' · '.join(scenario.records)}"
                )
            )
    cmd.print()
    if differ:
        cmd.print(style.red(f"{differ} of {len(SCENARIOS)} scenarios differ from the tutorial"))
        return EXIT_ERROR
    cmd.print(
        style.green(f"all {len(SCENARIOS)} scenarios ended as in the tutorial")
        + "; read any saga again with: minisaga saga get SAGA_ID"
    )
    return EXIT_OK


def audit(cmd: Command) -> int:
    a = cmd.args
    report = run_audit(
        cmd.client,
        since_ms=None if a.since is None else int(a.since.timestamp() * 1000),
        until_ms=None if a.until is None else int(a.until.timestamp() * 1000),
    )
    if cmd.json:
        cmd.print(json.dumps(report.as_dict(), indent=2))
    else:
        cmd.print(
            f"audited {report.sagas_checked} ended sagas ({report.sagas_in_flight} in flight, "
            f"not judged) against {report.records_checked} participant records"
        )
        for finding in report.findings:
            cmd.print(
                cmd.style.red(f"✗ {finding.saga_id}  {finding.saga_status:<11}  {finding.problem}")
            )
        if report.findings:
            cmd.print(cmd.style.red(f"{len(report.findings)} disagreement(s)"))
        else:
            cmd.print(cmd.style.green("✓ the saga log and the participants agree"))
    return EXIT_DISAGREE if report.findings else EXIT_OK


def _moment(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a time: use ISO 8601, such as 2026-11-29T18:00:00Z"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# --- certificates and tokens (no service is called) ----------------------

NEEDS_SERVER_EXTRA = (
    "minisaga: this command needs the servers' packages (cryptography among them): "
    "pip install 'minisaga[server]'"
)


def certs_init(cmd: Command) -> int:
    try:
        from service_kit import certs  # the server extra's cryptography, needed here only
        from service_kit.authz import IDENTITIES
    except ImportError:
        print(NEEDS_SERVER_EXTRA, file=sys.stderr)
        return EXIT_ERROR
    folder = cmd.args.directory
    try:
        certs.init(folder)
    except certs.AlreadyInitialized as error:
        print(f"minisaga: {error}", file=sys.stderr)
        return EXIT_REFUSED
    tls = f"--tls-ca {folder}/ca.crt --tls-cert {folder}/client.crt --tls-key {folder}/client.key"
    cmd.print(
        f"wrote a development CA ({folder}/ca.crt, ca.key) and a certificate and key for each "
        f"of {', '.join(IDENTITIES)} ({folder}/<identity>.crt, .key; keys readable by "
        f"you only).\n"
        f"serve:   python -m payment_server --tls-cert {folder}/payment.crt "
        f"--tls-key {folder}/payment.key --tls-ca {folder}/ca.crt\n"
        f"call:    minisaga {tls} saga list\n"
        f"grpcurl: grpcurl -cacert {folder}/ca.crt -cert {folder}/client.crt "
        f"-key {folder}/client.key 127.0.0.1:7001 list"
    )
    return EXIT_OK


def tokens_add(cmd: Command) -> int:
    try:
        from service_kit import authz
    except ImportError:
        print(NEEDS_SERVER_EXTRA, file=sys.stderr)
        return EXIT_ERROR
    try:
        token = authz.add_token(cmd.args.file, cmd.args.identity, cmd.args.label)
    except (authz.TokenFileError, OSError) as error:
        print(f"minisaga: {error}", file=sys.stderr)
        return EXIT_ERROR
    print(
        f"added a token for {cmd.args.identity} to {cmd.args.file} (its hash only); it is shown "
        "this once. Send it as 'authorization: Bearer <token>'.",
        file=sys.stderr,
    )
    cmd.print(token)
    return EXIT_OK


# --- the command line -----------------------------------------------------


def _status_value(name: str | None) -> pb.SagaStatus.ValueType | None:
    return None if not name else pb.SagaStatus.Value(f"SAGA_STATUS_{name.upper()}")


def _add_list_filters(parser: argparse.ArgumentParser) -> None:
    """The filters of `saga list` besides --status (LIST_FILTERS)."""
    parser.add_argument("--saga-type", default="", help="only sagas of this type (place_order)")
    parser.add_argument("--order-id", default="", help="only the saga of this order")
    parser.add_argument("--request-id", default="", help="only the saga of this request id")
    parser.add_argument(
        "--created-from",
        type=_moment,
        default=None,
        metavar="TIME",
        help="only sagas created at or after TIME (ISO 8601; UTC unless it says)",
    )
    parser.add_argument(
        "--created-before",
        type=_moment,
        default=None,
        metavar="TIME",
        help="only sagas created before TIME (ISO 8601; UTC unless it says)",
    )


def _status_name(text: str) -> str:
    name = text.upper().removeprefix("SAGA_STATUS_")
    if name not in STATUSES:
        raise argparse.ArgumentTypeError(
            f"unknown status {text!r}: choose from {', '.join(s.lower() for s in STATUSES)}"
        )
    return name


def _connection_flags(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """Address and deadline flags; on subcommands too, so they may come after them."""
    group = parser.add_argument_group("connection")
    for name, default in DEFAULT_ADDRESSES.items():
        env = ADDRESS_ENV[name]
        group.add_argument(
            f"--{name}",
            metavar="HOST:PORT",
            default=argparse.SUPPRESS if suppress else os.environ.get(env, default),
            help=f"the {name} service (env {env}, default {default})",
        )
    group.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        default=argparse.SUPPRESS if suppress else DEFAULT_TIMEOUT,
        help=f"deadline of each call (default {DEFAULT_TIMEOUT:g}); "
        "PlaceOrder returns a still-running saga when it comes",
    )
    for name, what in (
        ("ca", "the CA (PEM) the services' certificates chain to"),
        ("cert", "this client's certificate (PEM), such as client.crt or operator.crt"),
        ("key", "its private key (PEM)"),
    ):
        group.add_argument(
            f"--tls-{name}",
            metavar="PATH",
            default=argparse.SUPPRESS if suppress else os.environ.get(TLS_ENV[name], ""),
            help=f"mutual TLS: {what} (env {TLS_ENV[name]}; default none: plaintext)",
        )
    group.add_argument(
        "--token",
        metavar="TOKEN",
        default=argparse.SUPPRESS if suppress else os.environ.get(TOKEN_ENV, ""),
        help=f"a bearer token from `minisaga tokens add`, for servers with --token-file; "
        f"prefer the variable {TOKEN_ENV}, which `ps` does not show",
    )


def version() -> str:
    """The installed minisaga's version, from its package metadata."""
    try:
        return importlib.metadata.version("minisaga")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="minisaga",
        description="Place orders, and find, read and repair their sagas.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    _connection_flags(parser, suppress=False)
    common = argparse.ArgumentParser(add_help=False)
    _connection_flags(common, suppress=True)
    reading = argparse.ArgumentParser(add_help=False)
    reading.add_argument("--json", action="store_true", help="print the API message as JSON")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(
        group: argparse._SubParsersAction[argparse.ArgumentParser],
        name: str,
        run: Callable[[Command], int],
        text: str,
        *,
        json: bool = True,
    ) -> argparse.ArgumentParser:
        sub = group.add_parser(
            name,
            help=text,
            description=text,
            parents=[common, reading] if json else [common],
        )
        sub.set_defaults(run=run)
        return sub

    order = add(
        commands,
        "place-order",
        place_order,
        "place an order and show its saga (waits until it ends or --timeout)",
    )
    order.add_argument("--product-id", required=True)
    order.add_argument("--quantity", type=int, required=True)
    order.add_argument("--amount", type=int, required=True, help="minor units, such as yen")
    order.add_argument("--currency", default="", help="ISO 4217 code (default JPY)")
    order.add_argument("--address", default="", help="where to ship (default store pickup)")
    order.add_argument(
        "--request-id",
        default=None,
        help="idempotency key: the same one returns the same saga (default: a fresh one)",
    )
    order.add_argument("--fail-payment", action="store_true", help="Payment refuses the charge")
    order.add_argument(
        "--fail-inventory", action="store_true", help="Inventory refuses the reservation"
    )
    order.add_argument("--fail-shipping", action="store_true", help="Shipping refuses")

    saga = commands.add_parser("saga", help="find, read, watch, resume and cancel sagas")
    sagas = saga.add_subparsers(dest="saga_command", metavar="COMMAND", required=True)
    add(sagas, "get", saga_get, "one saga's timeline: steps, undos, attempts").add_argument(
        "saga_id"
    )
    listing = add(sagas, "list", saga_list, "sagas, newest first")
    listing.add_argument(
        "--status",
        type=_status_name,
        default=None,
        help="only sagas in this status: " + ", ".join(s.lower() for s in STATUSES),
    )
    _add_list_filters(listing)
    listing.add_argument("--page-size", type=int, default=0, help="sagas per page (default 50)")
    listing.add_argument("--page-token", default="", help="the next page, from the last list")
    listing.add_argument("--all", action="store_true", help="every page")
    add(sagas, "watch", saga_watch, "the saga's events as they happen, until it ends").add_argument(
        "saga_id"
    )
    resuming = add(
        sagas,
        "resume",
        saga_resume,
        "retry the failed compensations of a FAILED saga, or with --all-failed of every one",
    )
    resuming.add_argument("saga_id", nargs="?", default="")
    resuming.add_argument("--wait", action="store_true", help="wait until the saga ends, show it")
    resuming.add_argument(
        "--all-failed",
        action="store_true",
        help="resume every FAILED saga the filters below take (ResumeSagas), page after "
        "page; prints how many were resumed",
    )
    _add_list_filters(resuming)
    resuming.add_argument(
        "--page-size", type=int, default=0, help="sagas resumed per call (default 50)"
    )
    cancelling = add(sagas, "cancel", saga_cancel, "stop a running saga; it undoes what it did")
    cancelling.add_argument("saga_id")
    cancelling.add_argument("--wait", action="store_true", help="wait until the saga ends, show it")

    stock = commands.add_parser("stock", help="a product's stock (Inventory)")
    stocks = stock.add_subparsers(dest="stock_command", metavar="COMMAND", required=True)
    setting = add(stocks, "set", stock_set, "set the quantity free to reserve")
    setting.add_argument("product_id")
    setting.add_argument("quantity", type=int)
    add(stocks, "get", stock_get, "a product's free and reserved quantity").add_argument(
        "product_id"
    )

    for name, handler, text in (
        ("payment", payment_get, "a saga's payment (Payment)"),
        ("reservation", reservation_get, "a saga's reservation (Inventory)"),
        ("shipment", shipment_get, "a saga's shipment (Shipping)"),
    ):
        group = commands.add_parser(name, help=text)
        subs = group.add_subparsers(dest=f"{name}_command", metavar="COMMAND", required=True)
        add(subs, "get", handler, text).add_argument("saga_id")

    drawing = add(
        commands,
        "graph",
        graph,
        "the saga definition as a Mermaid diagram, from the orchestrator (GetSagaDefinition)",
        json=False,
    )
    drawing.add_argument("--markdown", action="store_true", help="inside a ```mermaid fence")
    drawing.add_argument(
        "--saga-type", default="place_order", help="which saga (default place_order)"
    )

    auditing = add(
        commands,
        "audit",
        audit,
        "check the saga log against Payment, Inventory and Shipping's own records",
    )
    auditing.add_argument(
        "--since", type=_moment, default=None, help="only sagas created at or after (ISO 8601)"
    )
    auditing.add_argument(
        "--until", type=_moment, default=None, help="only sagas created before (ISO 8601)"
    )

    consoling = add(
        commands,
        "console",
        console,
        "serve the web console: saga list, timelines, graphs, resume and cancel "
        "(needs pip install 'minisaga[console]')",
        json=False,
    )
    consoling.add_argument(
        "--listen",
        default="127.0.0.1:7080",
        metavar="HOST:PORT",
        help="where the console listens (default 127.0.0.1:7080; port 0 picks a free one)",
    )
    consoling.add_argument(
        "--read-only",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="hide Resume and Cancel and refuse them (default: read-only unless --listen "
        "is a loopback address)",
    )

    demoing = add(
        commands,
        "demo",
        demo,
        "run the tutorial's scenarios (success, inventory, payment and shipping failure)",
        json=False,
    )
    demoing.add_argument("--product-id", default="apple")
    demoing.add_argument("--quantity", type=int, default=2)
    demoing.add_argument("--amount", type=int, default=1200)

    certificates = commands.add_parser("certs", help="a development CA and certificates")
    certifying = certificates.add_subparsers(dest="certs_command", metavar="COMMAND", required=True)
    initializing = add(
        certifying,
        "init",
        certs_init,
        "write a CA and a certificate per identity (orchestrator, payment, inventory, "
        "shipping, operator, client) into DIR, for mutual TLS",
        json=False,
    )
    initializing.add_argument("directory", metavar="DIR", type=Path)

    tokens = commands.add_parser("tokens", help="bearer tokens for callers without a certificate")
    tokening = tokens.add_subparsers(dest="tokens_command", metavar="COMMAND", required=True)
    adding = add(
        tokening,
        "add",
        tokens_add,
        "append a new token's hash and identity to a --token-file; print the token once",
        json=False,
    )
    adding.add_argument("file", metavar="FILE", type=Path, help="the token file (made if missing)")
    adding.add_argument("identity", help="operator, client, orchestrator, ...")
    adding.add_argument("--label", default="", help="a note kept beside the hash: whose it is")
    return parser


def describe_error(error: MinisagaError, timeout: float) -> str:
    """One line a person reads: what failed, and what to do when there is something."""
    who = f"the {error.service or 'service'}" + (f" at {error.address}" if error.address else "")
    reason = f" ({error.reason})" if error.reason else ""
    if isinstance(error, Unavailable):
        if error.reason:  # the service answered, and said it cannot serve
            return f"{who} is unavailable: {error.message}{reason}"
        return f"cannot reach {who} — is `make run` going?"
    if isinstance(error, DeadlineExceeded):
        return (
            f"{who} did not answer within {timeout:g}s (DEADLINE_EXCEEDED); "
            "it may be overloaded: try again, or raise --timeout"
        )
    if isinstance(error, InvalidArgument):
        if error.field_violations:
            fields = "; ".join(f"{v.field}: {v.description}" for v in error.field_violations)
            return f"invalid argument — {fields}"
        return f"invalid argument — {error.message}"
    if isinstance(error, NotFound):
        return f"not found: {error.message}"
    if error.code == grpc.StatusCode.FAILED_PRECONDITION:
        return f"refused{reason}: {error.message}"
    if error.code == grpc.StatusCode.ALREADY_EXISTS:
        return f"already exists{reason}: {error.message}"
    return f"{who} answered {error.code.name}{reason}: {error.message or 'no message'}"


def exit_code(error: MinisagaError) -> int:
    return EXIT_CODES.get(error.code, EXIT_ERROR)


def _silence_stdout() -> None:
    """Points stdout at /dev/null so the flush at exit does not fail on the closed pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):
        pass


def main(argv: Sequence[str] | None = None, *, channel: grpc.Channel | None = None) -> int:
    """Runs one command; returns its exit status (see EPILOG)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit:  # --help, or a usage error argparse has printed
        return exit.code if isinstance(exit.code, int) else EXIT_USAGE
    try:
        args.tls = Tls.from_options(args.tls_ca, args.tls_cert, args.tls_key)
        if args.token and args.tls is None:
            for name in DEFAULT_ADDRESSES:
                credentials_for(str(getattr(args, name)), None, args.token)  # loopback only
    except ValueError as error:
        print(f"minisaga: {error}", file=sys.stderr)
        return EXIT_USAGE
    out = sys.stdout
    if isinstance(out, io.TextIOWrapper) and out.encoding.lower().replace("-", "") != "utf8":
        out.reconfigure(errors="replace")  # a ✓ must never crash a non-UTF-8 terminal
    cmd = Command(args, out, Style(use_color(out)), channel)
    try:
        run: Callable[[Command], int] = args.run
        return run(cmd)
    except MinisagaError as error:
        print(f"minisaga: {escape_controls(describe_error(error, args.timeout))}", file=sys.stderr)
        return exit_code(error)
    except KeyboardInterrupt:
        print("minisaga: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # such as `minisaga saga list --all | head`
        _silence_stdout()
        return EXIT_OK
    finally:
        cmd.close()


if __name__ == "__main__":
    sys.exit(main())
