"""python -m bench.loadgen: the benchmark's load generator, in a process of its own.

It reads one JSON spec (`Spec`) on stdin and writes JSON lines on stdout:
`{"event": "window-start"}` when the measured window opens, `{"event":
"window-end"}` when it closes, and last `{"event": "result", ...}`. Modes:

- "orchestrated": closed-loop workers (one per unit of concurrency) call
  PlaceOrder on one channel to the orchestrator, for a bounded time and count;
  with several replicas ("orchestrator", "orchestrator-2", ... sharing a
  PostgreSQL saga log) the orders go to each in turn.
- "inmemory": as "orchestrated", against bench.inmemory (the orchestrator
  that keeps nothing), the second baseline.
- "direct": the baseline. The same orders, but the client itself calls the
  participants in sequence, Charge → Reserve → CreateShipment, and on a
  failure compensates the steps done in reverse (Release, Refund): no
  orchestrator, no log.
- "in_flight": sends PlaceOrders with a short deadline to an orchestrator whose
  shipping participant is slowed down, and measures the orchestrator's memory
  with all of them in flight. A PlaceOrder shed (RESOURCE_EXHAUSTED) or out of
  time is resent with the same request_id: a slow machine takes longer, it
  does not fail. The case gives up only when nothing has moved for
  STALL_SECONDS (no PlaceOrder answered, no more sagas in flight), or at
  in_flight_bound, when Shipping's delay would end.
- "check": only the correctness check, of the sagas `check_saga_ids` (all of
  them orders that should complete), as after the recovery case.

After a measured window it reads each server's CPU time and memory from
/proc (with `postgres`, also PostgreSQL's own CPU and the statements it ran
for the window's database, from pg_stat_statements), then checks every saga
it started against the participants.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import random
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeVar, cast

import grpc
from google.rpc import error_details_pb2, status_pb2
from minisaga.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from minisaga.orchestrator.v1 import orchestrator_pb2 as pb
from minisaga.orchestrator.v1 import orchestrator_pb2_grpc
from minisaga.payment.v1 import payment_pb2, payment_pb2_grpc
from minisaga.shipping.v1 import shipping_pb2, shipping_pb2_grpc

from bench.by_hand import Order, Participants, run_by_hand
from bench.procfs import cpu_seconds, memory_bytes, tree_cpu_seconds
from bench.services import PRODUCT

T = TypeVar("T")

AMOUNT = 1200
QUANTITY = 1
CURRENCY = "JPY"
ADDRESS = "1-2-3 Shibuya, Tokyo"
MAX_ERROR_SAMPLES = 10
# Statuses with which a PlaceOrder of the in-flight case is sent again (same request_id,
# so a saga made by the first is found, never doubled). CANCELLED comes back now and
# then on a starved machine when the server gives up the call at its deadline first.
RETRY_CODES = frozenset(
    {
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)


@dataclass
class Spec:
    mode: str
    addresses: dict[str, str]
    pids: dict[str, int]
    concurrency: int = 1
    duration: float = 5.0
    failure_rate: float = 0.0
    warmup: int = 0
    max_sagas: int = 1_000_000
    call_timeout: float = 30.0
    check: bool = True
    check_concurrency: int = 64
    check_timeout: float = 300.0
    # in_flight mode
    in_flight_count: int = 0
    in_flight_deadline: float = 1.0
    in_flight_concurrency: int = 500
    in_flight_bound: float = 60.0
    """Seconds the whole in-flight case may take at most (before Shipping's delay ends)."""
    check_saga_ids: list[str] = field(default_factory=list)
    """check mode: the sagas to check, each an order that should have COMPLETED."""
    tls: dict[str, str] | None = None
    """mTLS: the "ca", "cert" and "key" files every channel dials with (None: plaintext)."""
    trees: dict[str, int] = field(default_factory=dict)
    """Servers that fork per connection (PostgreSQL's postmaster): CPU of the whole tree."""
    postgres: dict[str, str] | None = None
    """The saga log's PostgreSQL: "url" of a database to read statistics from and
    "database", the saga log's, whose statements are counted over the window."""

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Spec:
        return cls(**data)


@dataclass
class Saga:
    saga_id: str
    failing: bool
    status: str
    """As the client saw it: SAGA_STATUS_* without its prefix, or the direct client's outcome."""

    @property
    def expected(self) -> str:
        return "COMPENSATED" if self.failing else "COMPLETED"


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    sagas: list[Saga] = field(default_factory=list)
    errors: int = 0
    unexpected: int = 0
    samples: list[str] = field(default_factory=list)

    def error(self, text: str) -> None:
        self.errors += 1
        self._sample(text)

    def done(self, latency: float, saga: Saga) -> None:
        self.latencies.append(latency)
        self.sagas.append(saga)
        if saga.status != saga.expected:
            self.unexpected += 1
            self._sample(f"saga {saga.saga_id}: {saga.status}, expected {saga.expected}")

    def _sample(self, text: str) -> None:
        if len(self.samples) < MAX_ERROR_SAMPLES:
            self.samples.append(text)


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def failing_order(rate: Fraction) -> Callable[[int], bool]:
    """Order i fails when (i+1)·rate crosses an integer: exactly `rate` of every block."""
    return lambda i: math.floor((i + 1) * rate) > math.floor(i * rate)


def order_request(*, fail_inventory: bool = False, request_id: str = "") -> pb.PlaceOrderRequest:
    """The benchmark's order, as every mode sends it."""
    return pb.PlaceOrderRequest(
        request_id=request_id,
        product_id=PRODUCT,
        quantity=QUANTITY,
        amount=AMOUNT,
        currency=CURRENCY,
        address=ADDRESS,
        fail_inventory=fail_inventory,
    )


def describe(error: grpc.aio.AioRpcError) -> str:
    return f"{error.code().name}: {error.details()}"


class Clients:
    """One channel per service, with its stubs; channels are shared by every worker."""

    def __init__(self, addresses: dict[str, str], tls: dict[str, str] | None = None) -> None:
        credentials = None
        if tls is not None:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=Path(tls["ca"]).read_bytes(),
                private_key=Path(tls["key"]).read_bytes(),
                certificate_chain=Path(tls["cert"]).read_bytes(),
            )
        self.channels = {
            name: (
                grpc.aio.secure_channel(address, credentials)
                if credentials is not None
                else grpc.aio.insecure_channel(address)
            )
            for name, address in addresses.items()
        }
        replicas = sorted(
            (name for name in self.channels if name.startswith("orchestrator")),
            key=lambda name: (len(name), name),  # orchestrator, orchestrator-2, ...
        )
        self.orchestrators = [
            orchestrator_pb2_grpc.OrchestratorServiceStub(self.channels[name]) for name in replicas
        ]
        self.orchestrator = self.orchestrators[0] if self.orchestrators else None
        self.payment = payment_pb2_grpc.PaymentServiceStub(self.channels["payment"])
        self.inventory = inventory_pb2_grpc.InventoryServiceStub(self.channels["inventory"])
        self.shipping = shipping_pb2_grpc.ShippingServiceStub(self.channels["shipping"])

    async def ready(self, timeout: float = 15.0) -> None:
        async with asyncio.timeout(timeout):
            for channel in self.channels.values():
                await channel.channel_ready()

    async def close(self) -> None:
        for channel in self.channels.values():
            await channel.close(None)


# --- one saga ----------------------------------------------------------------


def orchestrated(clients: Clients, spec: Spec, tally: Tally) -> Callable[[int], Awaitable[None]]:
    stubs = clients.orchestrators
    assert stubs
    failing = failing_order(Fraction(spec.failure_rate).limit_denominator(1000))

    async def one(i: int) -> None:
        fail = failing(i)
        request = order_request(fail_inventory=fail)
        started = time.perf_counter()
        try:
            response = await stubs[i % len(stubs)].PlaceOrder(request, timeout=spec.call_timeout)
        except grpc.aio.AioRpcError as error:
            tally.error(f"PlaceOrder {describe(error)}")
            return
        status = pb.SagaStatus.Name(response.status).removeprefix("SAGA_STATUS_")
        tally.done(time.perf_counter() - started, Saga(response.saga_id, fail, status))

    return one


def direct(clients: Clients, spec: Spec, tally: Tally) -> Callable[[int], Awaitable[None]]:
    """The baseline: the client runs the saga itself, with no log (bench.by_hand)."""
    failing = failing_order(Fraction(spec.failure_rate).limit_denominator(1000))
    to = Participants(clients.payment, clients.inventory, clients.shipping)

    async def one(i: int) -> None:
        fail = failing(i)
        order = Order(
            saga_id=str(uuid.uuid4()),
            order_id=f"ord_{uuid.uuid4().hex}",
            product_id=PRODUCT,
            quantity=QUANTITY,
            amount=AMOUNT,
            currency=CURRENCY,
            address=ADDRESS,
            fail_inventory=fail,
        )
        started = time.perf_counter()
        outcome = await run_by_hand(to, order, spec.call_timeout)
        for step, error in outcome.failures:
            injected = (
                step == "reserve" and fail and error.code() == grpc.StatusCode.FAILED_PRECONDITION
            )
            if not injected:
                tally.error(f"direct {step} {describe(error)}")
        tally.done(time.perf_counter() - started, Saga(order.saga_id, fail, outcome.status))

    return one


# --- driving -----------------------------------------------------------------


async def drive(
    one: Callable[[int], Awaitable[None]],
    concurrency: int,
    counter: Iterator[int],
    *,
    stop_index: int,
    until: float | None,
) -> None:
    """Closed loop: `concurrency` workers, each sending its next order when the last ends."""
    loop = asyncio.get_running_loop()

    async def worker() -> None:
        while until is None or loop.time() < until:
            i = next(counter)
            if i >= stop_index:
                return
            await one(i)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


def cpu(spec: Spec) -> dict[str, float]:
    seconds = {name: cpu_seconds(pid) for name, pid in spec.pids.items()}
    seconds.update({name: tree_cpu_seconds(pid) for name, pid in spec.trees.items()})
    seconds["loadgen"] = time.process_time()
    return seconds


# Statements asyncpg's default pool reset sends with `SELECT pg_advisory_unlock_all()`
# in one simple-query message: one round trip, four statements in pg_stat_statements.
RESET_TAIL = ("CLOSE ALL", "UNLISTEN *", "RESET ALL")


async def statements(postgres: dict[str, str]) -> dict[str, int]:
    """Calls so far of each statement run in the saga log's database (pg_stat_statements)."""
    import asyncpg  # the `postgres` extra's: imported only by runs on PostgreSQL

    conn = await asyncpg.connect(postgres["url"])
    try:
        rows = await conn.fetch(
            "SELECT query, sum(calls)::bigint AS calls FROM pg_stat_statements"
            " WHERE dbid = (SELECT oid FROM pg_database WHERE datname = $1) GROUP BY query",
            postgres["database"],
        )
    finally:
        await conn.close()
    return {str(row["query"]): int(row["calls"]) for row in rows}


def statement_summary(before: dict[str, int], after: dict[str, int], sagas: int) -> dict[str, Any]:
    """Statements and round trips per saga over the window, and the busiest statements.

    Each statement asyncpg sends (a prepared statement's Bind/Execute/Sync, or a
    simple query such as BEGIN) is one round trip, except the pool's reset,
    whose four statements travel together. Not counted: a statement's first
    Parse on each pooled connection (once per connection, not per saga)."""
    calls = {query: after[query] - before.get(query, 0) for query in after}
    calls = {query: n for query, n in calls.items() if n > 0}
    total = sum(calls.values())
    batched = sum(n for query, n in calls.items() if query.strip().rstrip(";") in RESET_TAIL)
    per = max(1, sagas)
    return {
        "counted_by": "pg_stat_statements calls over the measured window",
        "statements": total,
        "round_trips": total - batched,
        "statements_per_saga": total / per,
        "round_trips_per_saga": (total - batched) / per,
        "top": [
            {"query": " ".join(query.split())[:160], "per_saga": n / per}
            for query, n in sorted(calls.items(), key=lambda item: -item[1])[:12]
        ],
    }


async def load(spec: Spec) -> dict[str, Any]:
    clients = Clients(spec.addresses, spec.tls)
    try:
        await clients.ready()
        tally = Tally()
        build = direct if spec.mode == "direct" else orchestrated  # inmemory: same contract
        one = build(clients, spec, tally)
        counter = itertools.count()
        if spec.warmup:  # connections, caches, the product check: not measured
            async with asyncio.timeout(spec.call_timeout * 3):
                await drive(one, spec.concurrency, counter, stop_index=spec.warmup, until=None)
        warm_sagas, warm_errors, warm_samples = tally.sagas, tally.errors, tally.samples
        warm_unexpected = tally.unexpected
        measured = Tally()
        one = build(clients, spec, measured)
        loop = asyncio.get_running_loop()
        stats_before = await statements(spec.postgres) if spec.postgres else {}
        cpu_before = cpu(spec)
        emit("window-start")
        started = loop.time()
        async with asyncio.timeout(spec.duration + spec.call_timeout + 10):
            await drive(
                one,
                spec.concurrency,
                counter,
                stop_index=spec.warmup + spec.max_sagas,
                until=started + spec.duration,
            )
        elapsed = loop.time() - started
        cpu_after = cpu(spec)
        memory = {name: memory_bytes(pid) for name, pid in spec.pids.items()}
        emit("window-end")
        if spec.postgres:
            stats_after = await statements(spec.postgres)
        result: dict[str, Any] = {
            "sagas": len(measured.latencies),
            "elapsed_seconds": elapsed,
            "latencies_seconds": measured.latencies,
            "errors": measured.errors + warm_errors,
            "unexpected": measured.unexpected + warm_unexpected,
            "error_samples": (warm_samples + measured.samples)[:MAX_ERROR_SAMPLES],
            "warmup_sagas": len(warm_sagas),
            "cpu_seconds": {name: cpu_after[name] - cpu_before[name] for name in cpu_after},
            "memory_bytes": memory,
            "outcomes": dict(Counter(saga.status for saga in measured.sagas)),
        }
        if spec.postgres:
            result["postgres"] = statement_summary(
                stats_before, stats_after, len(measured.latencies)
            )
        if spec.check:
            result["check"] = await check(clients, spec, warm_sagas + measured.sagas)
        return result
    finally:
        await clients.close()


# --- the correctness check ---------------------------------------------------


async def found(call: Awaitable[T]) -> T | None:
    """The participant's answer, or None when it has no record of the saga (NOT_FOUND)."""
    try:
        return await call
    except grpc.aio.AioRpcError as error:
        if error.code() == grpc.StatusCode.NOT_FOUND:
            return None
        raise


async def check(clients: Clients, spec: Spec, sagas: list[Saga]) -> dict[str, Any]:
    """Every saga against the participants: charged-and-not-refunded ⇔ reserved ⇔
    shipped ⇔ COMPLETED, and each saga ended as its order asked (failing ones
    COMPENSATED, the others COMPLETED)."""
    disagreements: list[str] = []
    seen: Counter[str] = Counter()
    timeout = spec.call_timeout

    async def check_one(saga: Saga) -> None:
        status = saga.status
        if clients.orchestrator is not None:
            response = await clients.orchestrator.GetSaga(
                pb.GetSagaRequest(saga_id=saga.saga_id), timeout=timeout
            )
            status = pb.SagaStatus.Name(response.saga.status).removeprefix("SAGA_STATUS_")
        paid = await found(
            clients.payment.GetPayment(
                payment_pb2.GetPaymentRequest(saga_id=saga.saga_id), timeout=timeout
            )
        )
        reserved = await found(
            clients.inventory.GetReservation(
                inventory_pb2.GetReservationRequest(saga_id=saga.saga_id), timeout=timeout
            )
        )
        shipped = await found(
            clients.shipping.GetShipment(
                shipping_pb2.GetShipmentRequest(saga_id=saga.saga_id), timeout=timeout
            )
        )
        payment = (
            "PAYMENT NONE" if paid is None else payment_pb2.PaymentStatus.Name(paid.payment.status)
        )
        reservation = (
            "RESERVATION NONE"
            if reserved is None
            else inventory_pb2.ReservationStatus.Name(reserved.reservation.status)
        )
        shipment = (
            "SHIPMENT NONE"
            if shipped is None
            else shipping_pb2.ShipmentStatus.Name(shipped.shipment.status)
        )
        for record in (f"SAGA_STATUS_{status}", payment, reservation, shipment):
            seen[record] += 1
        completed = status == "COMPLETED"
        problems = []
        if status != saga.expected:
            problems.append(f"saga is {status}, its order asked for {saga.expected}")
        if (payment == "PAYMENT_STATUS_CHARGED") != completed:
            problems.append(f"payment {payment}")
        if (reservation == "RESERVATION_STATUS_RESERVED") != completed:
            problems.append(f"reservation {reservation}")
        if (shipment == "SHIPMENT_STATUS_CREATED") != completed:
            problems.append(f"shipment {shipment}")
        if problems:
            disagreements.append(f"saga {saga.saga_id} {status}: {'; '.join(problems)}")

    pending = iter(sagas)
    errors: list[str] = []

    async def worker() -> None:
        for saga in pending:
            try:
                await check_one(saga)
            except grpc.aio.AioRpcError as error:
                errors.append(f"saga {saga.saga_id}: {describe(error)}")

    started = time.monotonic()
    try:
        async with asyncio.timeout(spec.check_timeout):
            await asyncio.gather(*(worker() for _ in range(spec.check_concurrency)))
    except TimeoutError:
        errors.append(f"check did not finish in {spec.check_timeout:g}s")
    return {
        "sagas": len(sagas),
        "disagreements": len(disagreements),
        "errors": len(errors),
        "samples": (disagreements + errors)[:MAX_ERROR_SAMPLES],
        "seen": dict(sorted(seen.items())),
        "seconds": time.monotonic() - started,
        "passed": not disagreements and not errors,
    }


# --- many sagas in flight ----------------------------------------------------


def refusal(error: grpc.aio.AioRpcError) -> tuple[float | None, str]:
    """A refusal's google.rpc.RetryInfo delay in seconds (None: none), and the
    limit its ErrorInfo names ("" if none)."""
    delay, limit = None, ""
    # grpc-stubs types metadata items as objects; at run time they are (key, value) pairs.
    trailers = cast(Iterable[tuple[str, str | bytes]], error.trailing_metadata() or ())
    for key, value in trailers:
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            for detail in status_pb2.Status.FromString(value).details:
                retry, info = error_details_pb2.RetryInfo(), error_details_pb2.ErrorInfo()
                if detail.Unpack(retry):
                    delay = float(retry.retry_delay.ToTimedelta().total_seconds())
                elif detail.Unpack(info):
                    limit = info.metadata.get("limit", "")
    return delay, limit


STALL_SECONDS = 30.0
"""The in-flight case gives up when nothing has moved for this long."""


async def in_flight(spec: Spec) -> dict[str, Any]:
    """Sends in_flight_count PlaceOrders that return at once (short deadline) while
    shipping holds every saga at its last step; the orchestrator's RSS is read
    before, with half of them in flight, and with all of them in flight.

    A PlaceOrder shed or out of time is resent (same request_id) after the
    RetryInfo delay or a short pause, as a client should, for as long as the
    case moves (see STALL_SECONDS), within in_flight_bound."""
    clients = Clients(spec.addresses, spec.tls)
    stub = clients.orchestrator
    assert stub is not None
    pid = spec.pids["orchestrator"]
    loop = asyncio.get_running_loop()
    tally = Tally()
    retries = 0
    retried: Counter[str] = Counter()  # resends by the status that caused them
    statuses: Counter[str] = Counter()
    case_started = loop.time()
    bound = case_started + spec.in_flight_bound
    moved = case_started  # when a PlaceOrder was last answered, or more sagas got in flight

    def going() -> bool:
        now = loop.time()
        return now < bound and now - moved < STALL_SECONDS

    async def send(indices: range) -> float:
        nonlocal moved
        moved = loop.time()
        pending = iter(indices)

        async def worker() -> None:
            nonlocal retries, moved
            for i in pending:
                request = order_request(request_id=f"bench-in-flight-{i}")
                while True:
                    try:
                        response = await stub.PlaceOrder(request, timeout=spec.in_flight_deadline)
                    except grpc.aio.AioRpcError as error:
                        if error.code() in RETRY_CODES and going():
                            retries += 1
                            asked, limit = refusal(error)
                            retried[f"{error.code().name} {limit}".strip()] += 1
                            # As asked (RetryInfo), else briefly; jittered, a second at most.
                            delay = min(1.0, asked or 0.25)
                            await asyncio.sleep(random.uniform(0.5, 1.0) * delay)
                            continue
                        tally.error(f"PlaceOrder {describe(error)}")
                        break
                    status = pb.SagaStatus.Name(response.status).removeprefix("SAGA_STATUS_")
                    statuses[status] += 1
                    moved = loop.time()
                    tally.sagas.append(Saga(response.saga_id, False, status))
                    break

        started = loop.time()
        async with asyncio.timeout(max(1.0, bound - loop.time())):
            await asyncio.gather(
                *(worker() for _ in range(min(spec.in_flight_concurrency, len(indices))))
            )
        return loop.time() - started

    async def at_last_step() -> int:
        """How many sagas are RUNNING with their shipment attempt in flight."""
        count = 0
        token = ""
        for _ in range(10_000):  # pages; bounded
            page = await stub.ListSagas(
                pb.ListSagasRequest(status=pb.SAGA_STATUS_RUNNING, page_size=500, page_token=token),
                timeout=max(1.0, bound - loop.time()),
            )
            for saga in page.sagas:
                for step in saga.steps:
                    if (
                        step.step == "ship"
                        and step.phase == pb.STEP_PHASE_ACTION
                        and step.state == pb.STEP_STATE_RUNNING
                        and len(step.attempts) > 0
                    ):
                        count += 1
            token = page.next_page_token
            if not token:
                break
        return count

    async def wait_in_flight(target: int) -> tuple[int, float]:
        nonlocal moved
        moved = started = loop.time()
        count = 0
        best = 0
        while going():
            count = await at_last_step()
            if count >= target:
                break
            if count > best:
                best, moved = count, loop.time()
            await asyncio.sleep(0.25)  # polling the orchestrator for a condition, bounded
        return count, loop.time() - started

    try:
        await clients.ready()
        count = spec.in_flight_count
        half = count // 2
        before = memory_bytes(pid)
        send_first = await send(range(half))
        in_flight_half, wait_first = await wait_in_flight(half)
        with_half = memory_bytes(pid)
        send_second = await send(range(half, count))
        in_flight_all, wait_second = await wait_in_flight(count)
        with_all = memory_bytes(pid)
        shipping = memory_bytes(spec.pids["shipping"]) if "shipping" in spec.pids else None
    except TimeoutError:
        return {
            "count": spec.in_flight_count,
            "errors": tally.errors + 1,
            "error_samples": [
                *tally.samples,
                f"not done: nothing moved for {STALL_SECONDS:g}s or {spec.in_flight_bound:g}s "
                f"passed (resent {dict(retried)})",
            ],
            "passed": False,
        }
    finally:
        await clients.close()
    not_running = sum(n for status, n in statuses.items() if status != "RUNNING")
    if in_flight_all < count:
        tally.samples.append(
            f"{in_flight_all} of {count} in flight when the case gave up (nothing moved for "
            f"{STALL_SECONDS:g}s, or {spec.in_flight_bound:g}s passed)"
        )
    saga_ids = sorted({saga.saga_id for saga in tally.sagas})
    return {
        "count": count,
        "sagas_started": len(saga_ids),
        "saga_ids": saga_ids,
        "replies": dict(statuses),
        "errors": tally.errors,
        "retries": retries,
        "resent_by_status": dict(retried),
        "case_seconds": loop.time() - case_started,
        "error_samples": tally.samples,
        "in_flight_half": in_flight_half,
        "in_flight": in_flight_all,
        "send_seconds": send_first + send_second,
        "wait_seconds": wait_first + wait_second,
        "rss_before_bytes": before["rss"],
        "rss_half_bytes": with_half["rss"],
        "rss_in_flight_bytes": with_all["rss"],
        "peak_rss_bytes": with_all["peak_rss"],
        "rss_per_saga_bytes": (with_all["rss"] - before["rss"]) / max(1, count),
        "rss_per_saga_marginal_bytes": (with_all["rss"] - with_half["rss"]) / max(1, count - half),
        "shipping_rss_bytes": None if shipping is None else shipping["rss"],
        "passed": tally.errors == 0 and in_flight_all == count and not_running == 0,
    }


async def check_only(spec: Spec) -> dict[str, Any]:
    """check mode: every saga of check_saga_ids against the participants."""
    clients = Clients(spec.addresses, spec.tls)
    try:
        await clients.ready()
        sagas = [Saga(saga_id, False, "RUNNING") for saga_id in spec.check_saga_ids]
        return {"check": await check(clients, spec, sagas)}
    finally:
        await clients.close()


def main() -> int:
    spec = Spec.from_json(json.loads(sys.stdin.read()))
    runners = {"in_flight": in_flight, "check": check_only}
    runner = runners.get(spec.mode, load)
    result = asyncio.run(runner(spec))
    emit("result", **result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
