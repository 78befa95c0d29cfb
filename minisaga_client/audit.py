"""`minisaga audit`: does the saga log agree with the participants' own records?

The log says how each order ended; Payment, Inventory and Shipping each keep
their own record of what they did. They must agree (docs/design.md §8):

- a COMPLETED saga has its charge, its reservation and its shipment live;
- a COMPENSATED saga has none of them live (no money kept, no stock held,
  nothing shipped for an undone order);
- a FAILED saga needs an operator: it is listed with what is still live;
- a participant record whose saga is not in the log at all is an orphan.

It reads a live system without stopping it. The log is read first and the
participants after: a saga that ended is never changed by its participants
again (a FAILED one may be resumed meanwhile, and is reported as it was), and
a record that appears for a saga started after the log was read is checked
against the log once more before it is called an orphan. Sagas still running
are not judged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from minisaga.inventory.v1 import inventory_pb2 as inventory
from minisaga.orchestrator.v1 import orchestrator_pb2 as pb
from minisaga.payment.v1 import payment_pb2 as payment
from minisaga.shipping.v1 import shipping_pb2 as shipping

from minisaga_client.client import Client
from minisaga_client.errors import NotFound

SAGA_TYPE = "place_order"
PARTICIPANTS = ("payment", "inventory", "shipping")
"""In the order the saga calls them; each one's record is what its step leaves."""


@dataclass(frozen=True)
class Finding:
    """One disagreement between the log and a participant, or a saga that needs an operator."""

    saga_id: str
    saga_status: str
    """COMPLETED, COMPENSATED or FAILED as the log has it; NOT_IN_LOG for an orphan."""
    problem: str


@dataclass
class Report:
    sagas_checked: int = 0
    sagas_in_flight: int = 0
    records_checked: int = 0
    findings: list[Finding] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Record(Protocol):
    @property
    def saga_id(self) -> str: ...

    @property
    def status(self) -> int: ...

    @property
    def created_at(self) -> Any: ...


Page = tuple[Sequence[_Record], str]


def _payments(client: Client, size: int, token: str) -> Page:
    page = client.list_payments(page_size=size, page_token=token)
    return page.payments, page.next_page_token


def _reservations(client: Client, size: int, token: str) -> Page:
    page = client.list_reservations(page_size=size, page_token=token)
    return page.reservations, page.next_page_token


def _shipments(client: Client, size: int, token: str) -> Page:
    page = client.list_shipments(page_size=size, page_token=token)
    return page.shipments, page.next_page_token


@dataclass(frozen=True)
class _Kind:
    """One participant's records: what they are, how to list them, which status is live."""

    what: str
    pages: Callable[[Client, int, str], Page]
    live: int
    status_name: Callable[[Any], str]
    prefix: str


KINDS = {
    "payment": _Kind(
        "charge",
        _payments,
        payment.PAYMENT_STATUS_CHARGED,
        payment.PaymentStatus.Name,
        "PAYMENT_STATUS_",
    ),
    "inventory": _Kind(
        "reservation",
        _reservations,
        inventory.RESERVATION_STATUS_RESERVED,
        inventory.ReservationStatus.Name,
        "RESERVATION_STATUS_",
    ),
    "shipping": _Kind(
        "shipment",
        _shipments,
        shipping.SHIPMENT_STATUS_CREATED,
        shipping.ShipmentStatus.Name,
        "SHIPMENT_STATUS_",
    ),
}


def audit(
    client: Client,
    *,
    since_ms: int | None = None,
    until_ms: int | None = None,
    page_size: int = 500,
) -> Report:
    """Compares every saga created in [since_ms, until_ms) with the participants' records."""
    report = Report()

    def in_window(created_ms: int) -> bool:
        return (since_ms is None or created_ms >= since_ms) and (
            until_ms is None or created_ms < until_ms
        )

    ended: dict[str, pb.Saga] = {}
    known: set[str] = set()
    for saga in client.iter_sagas(page_size=page_size):
        created_ms = saga.created_at.ToMilliseconds()
        if since_ms is not None and created_ms < since_ms:
            break  # newest first: the rest is older still
        if not in_window(created_ms) or saga.saga_type != SAGA_TYPE:
            continue
        known.add(saga.saga_id)
        if saga.status in (pb.SAGA_STATUS_RUNNING, pb.SAGA_STATUS_COMPENSATING):
            report.sagas_in_flight += 1
        else:
            ended[saga.saga_id] = saga

    records: dict[str, dict[str, _Record]] = {name: {} for name in PARTICIPANTS}
    for name in PARTICIPANTS:
        for record in _records(client, name, page_size):
            report.records_checked += 1
            records[name][record.saga_id] = record

    for saga_id, saga in ended.items():
        report.sagas_checked += 1
        report.findings += _judge(saga, {name: records[name].get(saga_id) for name in PARTICIPANTS})

    orphans = {
        saga_id
        for name in PARTICIPANTS
        for saga_id, record in records[name].items()
        if saga_id not in known and in_window(record.created_at.ToMilliseconds())
    }
    for saga_id in sorted(orphans):
        if _in_log(client, saga_id):
            continue  # started after the log was read, or of another type, or outside the window
        held = [
            f"{name} {_status(name, records[name][saga_id])}"
            for name in PARTICIPANTS
            if saga_id in records[name]
        ]
        report.findings.append(
            Finding(saga_id, "NOT_IN_LOG", f"records with no saga in the log: {', '.join(held)}")
        )
    return report


def _judge(saga: pb.Saga, held: dict[str, _Record | None]) -> list[Finding]:
    status = pb.SagaStatus.Name(saga.status).removeprefix("SAGA_STATUS_")
    live = [name for name in PARTICIPANTS if _live(name, held[name])]
    if saga.status == pb.SAGA_STATUS_COMPLETED:
        return [
            Finding(
                saga.saga_id, status, f"no live {KINDS[name].what}: {_describe(name, held[name])}"
            )
            for name in PARTICIPANTS
            if name not in live
        ]
    if saga.status == pb.SAGA_STATUS_COMPENSATED:
        return [
            Finding(
                saga.saga_id,
                status,
                f"its {KINDS[name].what} is still live ({_describe(name, held[name])})",
            )
            for name in live
        ]
    still = ", ".join(f"{KINDS[name].what} {_describe(name, held[name])}" for name in live)
    return [Finding(saga.saga_id, status, f"needs an operator; still live: {still or 'nothing'}")]


def _records(client: Client, name: str, page_size: int) -> Iterator[_Record]:
    token = ""
    while True:
        records, token = KINDS[name].pages(client, page_size, token)
        yield from records
        if not token:
            return


def _in_log(client: Client, saga_id: str) -> bool:
    try:
        client.get_saga(saga_id)
    except NotFound:
        return False
    return True


def _live(name: str, record: _Record | None) -> bool:
    return record is not None and record.status == KINDS[name].live


def _status(name: str, record: _Record) -> str:
    kind = KINDS[name]
    return kind.status_name(record.status).removeprefix(kind.prefix)


def _describe(name: str, record: _Record | None) -> str:
    return "no record" if record is None else _status(name, record)
