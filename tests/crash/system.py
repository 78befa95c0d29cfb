"""Crash-test helpers: the participants and the orchestrator as real processes.

An orchestrator started with `--crash-at CHECKPOINT:N` SIGKILLs itself the Nth
time its engine passes CHECKPOINT (orchestrator_server/__main__.py). A
`Scenario` sends its orders once, to the first orchestrator, and drives its
database through such crashes and then through a clean restart. After a
crash no client sends anything: each restarted orchestrator must find and
finish the sagas by itself, at start-up, and its sweep for sagas nobody
drives runs only once an hour, so it cannot be what finishes them. `verify`
then checks every saga against the participants.

After every crash, the participants' call logs (`--call-log`) are checked
against the dead orchestrator's saga log: every call a participant received
must be an attempt the log recorded, since attempts are written before their
RPC is sent.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from collections.abc import Awaitable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import grpc
from minisaga.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from minisaga.orchestrator.v1 import orchestrator_pb2 as pb
from minisaga.orchestrator.v1 import orchestrator_pb2_grpc
from minisaga.payment.v1 import payment_pb2, payment_pb2_grpc
from minisaga.shipping.v1 import shipping_pb2, shipping_pb2_grpc

from service_kit.call_log import read_call_log
from tests.harness import Subprocess, wait_until

FAST_RETRIES = (
    "--initial-backoff-ms", "5",
    "--action-max-backoff-ms", "20",
    "--compensation-max-backoff-ms", "20",
)  # fmt: skip
NO_SWEEP = ("--recover-every-seconds", "3600")
"""The sweep for sagas nobody drives: an hour away, so only start-up recovery acts."""
PLACE_ORDER_DEADLINE = 30.0
"""Generous: in a crash round the calls end when the process dies, not by deadline."""
CRASH_TIMEOUT = 30.0
TERMINAL_TIMEOUT = 20.0
STOCK = 100_000
ENDED = (pb.SAGA_STATUS_COMPLETED, pb.SAGA_STATUS_COMPENSATED)
TERMINAL = (*ENDED, pb.SAGA_STATUS_FAILED)

Reply = pb.PlaceOrderResponse | grpc.aio.AioRpcError
T = TypeVar("T")


@dataclass(frozen=True)
class Participants:
    """Addresses of the three participant processes, and their call logs."""

    payment: str
    inventory: str
    shipping: str
    call_logs: tuple[Path, ...] = ()

    def calls(self, saga_ids: Collection[str]) -> list[tuple[str, str, str]]:
        """(saga_id, "step/phase/number", method) of every call received for these sagas."""
        return [
            call for log in self.call_logs for call in read_call_log(log) if call[0] in saga_ids
        ]

    def flags(self) -> list[str]:
        return [
            "--payment", self.payment,
            "--inventory", self.inventory,
            "--shipping", self.shipping,
        ]  # fmt: skip


@dataclass(frozen=True)
class Order:
    request_id: str
    product_id: str
    quantity: int
    amount: int
    fail_inventory: bool = False
    fail_shipping: bool = False

    def request(self) -> pb.PlaceOrderRequest:
        return pb.PlaceOrderRequest(
            request_id=self.request_id,
            product_id=self.product_id,
            quantity=self.quantity,
            amount=self.amount,
            currency="JPY",
            address="1-2-3 Shibuya, Tokyo",
            fail_inventory=self.fail_inventory,
            fail_shipping=self.fail_shipping,
        )


def make_orders(case: str, product_id: str, count: int) -> list[Order]:
    """A third ordinary orders, a third failing at Reserve, a third failing at Ship."""
    return [
        Order(
            request_id=f"{case}-{i:03d}",
            product_id=product_id,
            quantity=1 + i % 4,
            amount=1000 + 7 * i,
            fail_inventory=i % 3 == 1,
            fail_shipping=i % 3 == 2,
        )
        for i in range(count)
    ]


@dataclass(frozen=True)
class LogAtCrash:
    """What the dead orchestrator's saga log holds, read straight from its file."""

    sagas: int
    unfinished: int
    """Sagas RUNNING or COMPENSATING."""
    open_attempts: int
    """Attempts written ahead whose outcome was never recorded."""
    latest_deadline_ms: int
    """The latest deadline of an unfinished saga (epoch ms), 0 if none."""
    saga_ids: dict[str, str] = field(default_factory=dict)
    """request_id -> saga_id of every saga in the log."""
    attempts: frozenset[tuple[str, str]] = frozenset()
    """(saga_id, "step/phase/number") of every attempt in the log, as the
    orchestrator names it to participants in its `minisaga-attempt` metadata."""


def read_log(db: Path) -> LogAtCrash:
    if not db.exists():  # died before it created the log
        return LogAtCrash(0, 0, 0, 0)
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        sagas, unfinished, latest_deadline_ms = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE status IN ('RUNNING', 'COMPENSATING')),"
            " max(deadline_epoch_ms) FILTER (WHERE status IN ('RUNNING', 'COMPENSATING'))"
            " FROM sagas"
        ).fetchone()
        (open_attempts,) = conn.execute(
            "SELECT count(*) FROM attempts WHERE code IS NULL"
        ).fetchone()
        saga_ids = dict(conn.execute("SELECT request_id, saga_id FROM sagas").fetchall())
        attempts = frozenset(
            (saga_id, f"{step}/{phase}/{number}")
            for saga_id, step, phase, number in conn.execute(
                "SELECT saga_id, step, phase, number FROM attempts"
            )
        )
    finally:
        conn.close()
    return LogAtCrash(
        int(sagas),
        int(unfinished),
        int(open_attempts),
        latest_deadline_ms or 0,
        saga_ids,
        attempts,
    )


async def place_all(address: str, orders: Sequence[Order]) -> dict[str, Reply]:
    """Sends every order at once; an RPC error is returned, not raised."""
    async with grpc.aio.insecure_channel(address) as channel:
        api = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)

        async def place(order: Order) -> Reply:
            try:
                return await api.PlaceOrder(order.request(), timeout=PLACE_ORDER_DEADLINE)
            except grpc.aio.AioRpcError as error:
                return error

        replies = await asyncio.gather(*(place(order) for order in orders))
    return {order.request_id: reply for order, reply in zip(orders, replies, strict=True)}


async def wait_for_exit(process: Subprocess, timeout: float) -> int:
    popen = process.process
    assert popen is not None
    await wait_until(lambda: popen.poll() is not None, timeout=timeout)
    code = popen.returncode
    assert code is not None
    return code


@dataclass(frozen=True)
class Verdict:
    sagas: dict[str, pb.Saga]
    """request_id -> the saga once it ended (or gave up waiting)."""
    problems: list[str]


@dataclass
class CrashRound:
    crash_at: str
    replies: dict[str, Reply]
    """Empty when no order was sent: in every round after the first."""
    log: LogAtCrash


@dataclass
class Scenario:
    """One orchestrator database, its orders, and what each round saw of them."""

    folder: Path
    participants: Participants
    orders: list[Order]
    processes: list[Subprocess] = field(default_factory=list)
    saga_ids: dict[str, str] = field(default_factory=dict)
    """request_id -> saga_id, as first answered by PlaceOrder (before the first crash)."""
    ended_before: dict[str, pb.SagaStatus.ValueType] = field(default_factory=dict)
    """saga_id -> the terminal status PlaceOrder answered before a later crash."""
    saga_deadline_seconds: float = 60.0
    deadline_passes: bool = False
    """Whether sagas may be compensated because their deadline passed."""
    extra_flags: list[str] = field(default_factory=list)
    """More orchestrator flags from the next start on, such as --saga (a new version)."""

    @property
    def db(self) -> Path:
        return self.folder / "orchestrator.db"

    def start(self, crash_at: str = "") -> Subprocess | None:
        """Starts the orchestrator on the scenario's db; None if crash_at killed it while
        it recovered, before it served."""
        process = Subprocess(
            "orchestrator_server",
            [
                "--listen", "127.0.0.1:0",
                "--db", str(self.db),
                *self.participants.flags(),
                *FAST_RETRIES,
                *NO_SWEEP,
                "--saga-deadline-seconds", str(self.saga_deadline_seconds),
                "--crash-at", crash_at,  # always given: "" also overrides the env default
                *self.extra_flags,
            ],
            self.folder / f"orchestrator-{len(self.processes) + 1}.log",
        )  # fmt: skip
        self.processes.append(process)
        try:
            process.start()
        except RuntimeError:
            assert process.process is not None
            if crash_at and process.process.poll() == -signal.SIGKILL:
                return None
            raise
        return process

    def kill_all(self) -> None:
        for process in self.processes:
            process.kill()

    async def crash_round(self, crash_at: str, orders: Sequence[Order] | None = None) -> CrashRound:
        """Starts with crash_at and waits for the process to die. The round sends
        `orders` (by default: every order in the first round, none in a later one,
        where the process dies recovering by itself)."""
        if orders is None:
            orders = [] if self.processes else self.orders
        process = self.start(crash_at)
        replies: dict[str, Reply] = {}
        if process is not None and orders:
            replies = await place_all(process.address, orders)
            errors = {rid: r for rid, r in replies.items() if isinstance(r, grpc.aio.AioRpcError)}
            assert errors, (
                f"{crash_at} was never reached: every order ended without a crash; pick a smaller N"
            )
            unexpected = {rid: e.code() for rid, e in errors.items()}
            unexpected = {
                rid: c for rid, c in unexpected.items() if c != grpc.StatusCode.UNAVAILABLE
            }
            assert not unexpected, f"PlaceOrder failed other than by the crash: {unexpected}"
        if process is not None:
            code = await wait_for_exit(process, CRASH_TIMEOUT)
            assert code == -signal.SIGKILL, f"exit {code}, not the crash:\n{process.log()}"
        for reply in replies.values():
            if isinstance(reply, pb.PlaceOrderResponse):
                self._remember(reply)
        log = read_log(self.db)
        self._check_written_ahead(log)
        return CrashRound(crash_at, replies, log)

    def _check_written_ahead(self, log: LogAtCrash) -> None:
        """Every call a participant received is an attempt the dead orchestrator had
        recorded: it wrote each attempt before sending it."""
        unrecorded = sorted(
            {
                (saga_id, attempt, method)
                for saga_id, attempt, method in self.participants.calls(log.saga_ids.values())
                if (saga_id, attempt) not in log.attempts
            }
        )
        assert not unrecorded, (
            f"{len(unrecorded)} call(s) reached participants with no attempt in the log, "
            f"such as {unrecorded[:3]}"
        )

    def _remember(self, reply: pb.PlaceOrderResponse) -> None:
        request_id = reply.saga.request_id
        first = self.saga_ids.setdefault(request_id, reply.saga_id)
        assert first == reply.saga_id, (
            f"request_id {request_id} answered saga {first}, then saga {reply.saga_id}"
        )
        if reply.status in TERMINAL:
            before = self.ended_before.setdefault(reply.saga_id, reply.status)
            assert before == reply.status, (
                f"saga {reply.saga_id} was {pb.SagaStatus.Name(before)}, "
                f"then {pb.SagaStatus.Name(reply.status)}"
            )

    async def recover_and_verify(self) -> Verdict:
        """Restarts without --crash-at, sends nothing, checks every saga once it ended,
        then that re-sending an order answers its saga as it ended (request_id dedup
        across the crashes), and stops the orchestrator cleanly."""
        process = self.start()
        assert process is not None
        verdict = await self.verify(process.address)
        assert not verdict.problems, "\n".join(verdict.problems)
        await self._resend_answers_the_same(process.address, verdict)
        code = process.terminate()
        assert code == 0, f"the orchestrator stopped with {code}:\n{process.log()}"
        return verdict

    async def _resend_answers_the_same(self, address: str, verdict: Verdict) -> None:
        orders = [o for o in self.orders if o.request_id in verdict.sagas]
        replies = await place_all(address, orders)
        for order in orders:
            reply, saga = replies[order.request_id], verdict.sagas[order.request_id]
            assert isinstance(reply, pb.PlaceOrderResponse), reply
            assert (reply.saga_id, reply.status) == (saga.saga_id, saga.status), (
                f"{order.request_id} answered {reply.saga_id} {reply.status} once more, "
                f"not {saga.saga_id} {saga.status}"
            )

    async def verify(self, address: str) -> Verdict:
        """Every saga of the log once ended, and every way the sagas, the log and the
        participants disagree. An order whose saga was never created (the first
        orchestrator died before) is not in the log, and no participant heard of it."""
        log = read_log(self.db)
        problems: list[str] = []
        for request_id, saga_id in self.saga_ids.items():
            if log.saga_ids.get(request_id) != saga_id:
                problems.append(
                    f"{request_id} was answered saga {saga_id}; the log has "
                    f"{log.saga_ids.get(request_id)}"
                )
        orders = [o for o in self.orders if o.request_id in log.saga_ids]
        if not orders:
            problems.append("no saga was created at all")
        async with (
            grpc.aio.insecure_channel(address) as orchestrator,
            grpc.aio.insecure_channel(self.participants.payment) as payment,
            grpc.aio.insecure_channel(self.participants.inventory) as inventory,
            grpc.aio.insecure_channel(self.participants.shipping) as shipping,
        ):
            api = orchestrator_pb2_grpc.OrchestratorServiceStub(orchestrator)
            checker = _Checker(
                api,
                payment_pb2_grpc.PaymentServiceStub(payment),
                inventory_pb2_grpc.InventoryServiceStub(inventory),
                shipping_pb2_grpc.ShippingServiceStub(shipping),
            )
            sagas = await asyncio.gather(
                *(checker.wait_ended(log.saga_ids[o.request_id]) for o in orders)
            )
            for order, saga in zip(orders, sagas, strict=True):
                problems += self._check_saga(order, saga)
                problems += await checker.participants_agree(order, saga)
            problems += await checker.listing_matches(orders, log.saga_ids)
            problems += await checker.stock_matches(self.orders, orders, sagas)
            return Verdict({o.request_id: s for o, s in zip(orders, sagas, strict=True)}, problems)

    def _check_saga(self, order: Order, saga: pb.Saga) -> list[str]:
        name = f"saga {saga.saga_id} ({order.request_id})"
        problems = []
        if saga.status not in ENDED:
            problems.append(f"{name} is {pb.SagaStatus.Name(saga.status)}")
        if saga.request_id != order.request_id:
            problems.append(f"{name} has request_id {saga.request_id!r}")
        before = self.ended_before.get(saga.saga_id)
        if before is not None and before != saga.status:
            problems.append(
                f"{name} was {pb.SagaStatus.Name(before)} before a crash, "
                f"now {pb.SagaStatus.Name(saga.status)}"
            )
        for execution in saga.steps:
            for attempt in execution.attempts:
                if not attempt.code:
                    problems.append(
                        f"{name}: {execution.step} attempt {attempt.number} has no code"
                    )
        cause = saga.compensation_cause
        on_purpose = "reserve" if order.fail_inventory else "ship" if order.fail_shipping else ""
        if saga.status == pb.SAGA_STATUS_COMPLETED and on_purpose:
            problems.append(f"{name} fails {on_purpose} on purpose but COMPLETED")
        if saga.status == pb.SAGA_STATUS_COMPENSATED and not (
            (cause.step, cause.code) == (on_purpose, "FAILED_PRECONDITION")
            # injected UNAVAILABLEs outlasted every retry of a faulty step
            or (cause.step in ("reserve", "ship") and cause.code == "UNAVAILABLE")
            or (self.deadline_passes and cause.code == "DEADLINE_EXCEEDED")
        ):
            problems.append(f"{name} was compensated for no good reason: {cause.step} {cause.code}")
        return problems


@dataclass
class _Checker:
    api: orchestrator_pb2_grpc.OrchestratorServiceAsyncStub
    payments: payment_pb2_grpc.PaymentServiceAsyncStub
    inventory: inventory_pb2_grpc.InventoryServiceAsyncStub
    shipments: shipping_pb2_grpc.ShippingServiceAsyncStub

    async def wait_ended(self, saga_id: str) -> pb.Saga:
        """The saga once COMPLETED or COMPENSATED (or as it is after TERMINAL_TIMEOUT)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TERMINAL_TIMEOUT
        while True:
            saga = (await self.api.GetSaga(pb.GetSagaRequest(saga_id=saga_id))).saga
            if saga.status in TERMINAL or loop.time() > deadline:
                return saga
            await asyncio.sleep(0.05)  # polling GetSaga for a condition

    async def participants_agree(self, order: Order, saga: pb.Saga) -> list[str]:
        name = f"saga {saga.saga_id} ({order.request_id}, {pb.SagaStatus.Name(saga.status)})"
        completed = saga.status == pb.SAGA_STATUS_COMPLETED
        problems = []

        payment = await _get(self.payments.GetPayment(_payment_request(saga)))
        charged = payment is not None and (
            payment.payment.status == payment_pb2.PAYMENT_STATUS_CHARGED
        )
        if charged != completed:
            status = "NOT_FOUND"
            if payment is not None:
                status = payment_pb2.PaymentStatus.Name(payment.payment.status)
            problems.append(f"{name}: payment is {status}")
        if (
            payment is not None
            and payment.payment.status != payment_pb2.PAYMENT_STATUS_VOIDED
            and (payment.payment.amount, payment.payment.order_id) != (order.amount, saga.order_id)
        ):
            problems.append(f"{name}: payment is for {payment.payment}")

        reservation = await _get(self.inventory.GetReservation(_reservation_request(saga)))
        reserved = (
            reservation is not None
            and reservation.reservation.status == inventory_pb2.RESERVATION_STATUS_RESERVED
        )
        if reserved != completed:
            status = "NOT_FOUND"
            if reservation is not None:
                status = inventory_pb2.ReservationStatus.Name(reservation.reservation.status)
            problems.append(f"{name}: reservation is {status}")
        if (
            reserved
            and reservation is not None
            and (reservation.reservation.quantity != order.quantity)
        ):
            problems.append(f"{name}: reservation is for {reservation.reservation}")

        shipment = await _get(self.shipments.GetShipment(_shipment_request(saga)))
        created = (
            shipment is not None
            and shipment.shipment.status == shipping_pb2.SHIPMENT_STATUS_CREATED
        )
        if created != completed:
            status = "NOT_FOUND"
            if shipment is not None:
                status = shipping_pb2.ShipmentStatus.Name(shipment.shipment.status)
            problems.append(f"{name}: shipment is {status}")
        if (  # the ship step's request was built from the reserve step's output
            created
            and shipment is not None
            and reservation is not None
            and shipment.shipment.reservation_id != reservation.reservation.reservation_id
        ):
            problems.append(f"{name}: shipment carries out {shipment.shipment.reservation_id!r}")
        return problems

    async def listing_matches(self, orders: Sequence[Order], saga_ids: dict[str, str]) -> list[str]:
        """The log holds exactly one saga per request_id: none twice, none extra."""
        listed: list[pb.Saga] = []
        token = ""
        while True:
            page = await self.api.ListSagas(pb.ListSagasRequest(page_size=100, page_token=token))
            listed += page.sagas
            token = page.next_page_token
            if not token:
                break
        problems = []
        if len(listed) != len(orders):
            problems.append(f"{len(listed)} sagas in the log for {len(orders)} request_ids")
        by_request = {s.request_id: s.saga_id for s in listed}
        expected = {o.request_id: saga_ids[o.request_id] for o in orders}
        if by_request != expected:
            problems.append(f"the log's sagas {by_request} are not the ones answered {expected}")
        return problems

    async def stock_matches(
        self, every_order: Sequence[Order], orders: Sequence[Order], sagas: Sequence[pb.Saga]
    ) -> list[str]:
        """The stock held is what the COMPLETED sagas of `orders` took; the orders
        with no saga took nothing."""
        [product_id] = {o.product_id for o in every_order}
        request = inventory_pb2.GetStockRequest(product_id=product_id)
        stock = (await self.inventory.GetStock(request)).stock
        held = sum(
            o.quantity
            for o, s in zip(orders, sagas, strict=True)
            if s.status == pb.SAGA_STATUS_COMPLETED
        )
        if (stock.reserved, stock.quantity) != (held, STOCK - held):
            return [
                f"{product_id}: reserved {stock.reserved}, available {stock.quantity}; "
                f"completed sagas hold {held} of {STOCK}"
            ]
        return []


async def _get(call: Awaitable[T]) -> T | None:
    """The response, or None for NOT_FOUND (the participant has no record)."""
    try:
        return await call
    except grpc.aio.AioRpcError as error:
        if error.code() == grpc.StatusCode.NOT_FOUND:
            return None
        raise


def _payment_request(saga: pb.Saga) -> payment_pb2.GetPaymentRequest:
    return payment_pb2.GetPaymentRequest(saga_id=saga.saga_id)


def _reservation_request(saga: pb.Saga) -> inventory_pb2.GetReservationRequest:
    return inventory_pb2.GetReservationRequest(saga_id=saga.saga_id)


def _shipment_request(saga: pb.Saga) -> shipping_pb2.GetShipmentRequest:
    return shipping_pb2.GetShipmentRequest(saga_id=saga.saga_id)
