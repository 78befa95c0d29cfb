"""Two orchestrator processes on one PostgreSQL saga log, one of them SIGKILLed.

The participants are real processes too, each with 20 ms of latency on every
call and a `--call-log`: one line per call received, with the saga and the
attempt ("step/phase/number") the orchestrator sends as metadata. The
replicas run with fast leases (2 s TTL, renewed every 0.3 s, orphans looked
for every 0.5 s).

What must hold: every saga ends COMPLETED or COMPENSATED and the
participants agree with it; a request_id makes one saga whichever replicas
its PlaceOrders reach; and no attempt is ever sent twice — a saga taken over
from a dead replica goes on with new attempt numbers, so every
(saga, step/phase/number) appears at most once in the participants' logs.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import asyncpg
import grpc
import pytest
from minisaga.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from minisaga.orchestrator.v1 import orchestrator_pb2 as pb
from minisaga.orchestrator.v1 import orchestrator_pb2_grpc
from minisaga.payment.v1 import payment_pb2, payment_pb2_grpc
from minisaga.shipping.v1 import shipping_pb2, shipping_pb2_grpc

from service_kit.call_log import read_call_log
from tests.harness import Subprocess, wait_until

pytestmark = pytest.mark.slow

STOCK = 100_000
ORDERS = 100
FAST_RETRIES = [
    "--initial-backoff-ms", "5",
    "--action-max-backoff-ms", "20",
    "--compensation-max-backoff-ms", "20",
]  # fmt: skip
FAST_LEASES = [
    "--lease-ttl-seconds", "2",
    "--lease-renew-seconds", "0.3",
    "--recover-every-seconds", "0.5",
]  # fmt: skip
PHASES = {pb.STEP_PHASE_ACTION: "action", pb.STEP_PHASE_COMPENSATION: "compensation"}
ENDED = (pb.SAGA_STATUS_COMPLETED, pb.SAGA_STATUS_COMPENSATED)
_REPLICA = re.compile(r"as replica (\S+)")
T = TypeVar("T")


@dataclass(frozen=True)
class Participants:
    payment: str
    inventory: str
    shipping: str
    call_logs: Sequence[Path]

    def flags(self) -> list[str]:
        return [
            "--payment", self.payment,
            "--inventory", self.inventory,
            "--shipping", self.shipping,
        ]  # fmt: skip

    def calls(self, saga_ids: set[str]) -> list[tuple[str, str, str]]:
        """(saga_id, attempt, method) of every call the participants got for these sagas."""
        return [c for log in self.call_logs for c in read_call_log(log) if c[0] in saga_ids]


@pytest.fixture(scope="module")
def participants(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Participants]:
    folder = tmp_path_factory.mktemp("participants")
    processes: list[Subprocess] = []
    try:
        for module, extra in (
            ("payment_server", []),
            ("inventory_server", ["--stock", "apple=1"]),
            ("shipping_server", []),
        ):
            args = [
                "--listen", "127.0.0.1:0",
                "--db", str(folder / f"{module}.db"),
                "--fault-latency-ms", "20",
                "--call-log", str(folder / f"{module}.calls"),
                *extra,
            ]  # fmt: skip
            processes.append(Subprocess(module, args, folder / f"{module}.log").start())
        payment, inventory, shipping = (p.address for p in processes)
        logs = [folder / f"{p.module}.calls" for p in processes]
        yield Participants(payment, inventory, shipping, logs)
    finally:
        codes = {p.module: p.terminate() for p in processes}
    assert all(code == 0 for code in codes.values()), f"participants stopped with {codes}"


@dataclass
class Replica:
    process: Subprocess
    owner: str
    channel: grpc.aio.Channel

    @property
    def api(self) -> orchestrator_pb2_grpc.OrchestratorServiceAsyncStub:
        return orchestrator_pb2_grpc.OrchestratorServiceStub(self.channel)


@dataclass
class Cluster:
    folder: Path
    url: str
    participants: Participants
    replicas: list[Replica]
    product_id: str

    def start_replica(self, name: str) -> Replica:
        process = Subprocess(
            "orchestrator_server",
            [
                "--listen", "127.0.0.1:0",
                "--store", self.url,
                "--db", str(self.folder / f"{name}-unused.db"),
                *self.participants.flags(),
                *FAST_RETRIES,
                *FAST_LEASES,
                "--crash-at", "",
            ],
            self.folder / f"{name}.log",
        ).start()  # fmt: skip
        match = _REPLICA.search(process.log())
        assert match, process.log()
        replica = Replica(process, match.group(1), grpc.aio.insecure_channel(process.address))
        self.replicas.append(replica)
        return replica

    def order(self, request_id: str, i: int) -> pb.PlaceOrderRequest:
        return pb.PlaceOrderRequest(
            request_id=request_id,
            product_id=self.product_id,
            quantity=1 + i % 3,
            amount=1000 + i,
            address="1-2-3 Shibuya, Tokyo",
            fail_inventory=i % 5 == 1,
            fail_shipping=i % 5 == 2,
        )


@pytest.fixture
async def cluster(
    tmp_path: Path, postgres_url: str, participants: Participants
) -> AsyncIterator[Cluster]:
    product_id = f"pg-{uuid.uuid4().hex[:12]}"
    async with grpc.aio.insecure_channel(participants.inventory) as channel:
        await inventory_pb2_grpc.InventoryServiceStub(channel).SetStock(
            inventory_pb2.SetStockRequest(product_id=product_id, quantity=STOCK)
        )
    started = Cluster(tmp_path, postgres_url, participants, [], product_id)
    try:
        yield started
    finally:
        for replica in started.replicas:
            await replica.channel.close(None)
            replica.process.kill()


async def place(
    replica: Replica, request: pb.PlaceOrderRequest
) -> pb.PlaceOrderResponse | grpc.aio.AioRpcError:
    try:
        return await replica.api.PlaceOrder(request, timeout=60)
    except grpc.aio.AioRpcError as error:
        return error


async def query(url: str, sql: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def test_a_replica_killed_mid_way_is_taken_over_and_nothing_is_sent_twice(
    cluster: Cluster,
) -> None:
    a = cluster.start_replica("a")
    b = cluster.start_replica("b")
    requests = [cluster.order(f"kill-{i:03d}", i) for i in range(ORDERS)]

    placing = [
        asyncio.ensure_future(place(a if i % 2 == 0 else b, request))
        for i, request in enumerate(requests)
    ]

    watcher = await asyncpg.connect(cluster.url)
    try:

        async def a_is_busy() -> bool:
            row = await watcher.fetchrow(
                "SELECT (SELECT count(*) FROM attempts) AS attempts,"
                " (SELECT count(*) FROM sagas WHERE lease_owner = $1"
                "  AND status IN ('RUNNING', 'COMPENSATING')) AS owned",
                a.owner,
            )
            return row is not None and row["attempts"] >= 60 and row["owned"] >= 10

        await wait_until(a_is_busy, timeout=30, interval=0.005)
        a.process.kill()  # SIGKILL, mid-way
        row = await watcher.fetchrow(
            "SELECT count(*) AS orphans FROM sagas"
            " WHERE lease_owner = $1 AND status IN ('RUNNING', 'COMPENSATING')",
            a.owner,
        )
    finally:
        await watcher.close()
    assert row is not None
    assert row["orphans"] >= 1, "the kill came too late: A had no saga in flight"

    replies = await asyncio.gather(*placing)
    lost = [r for r in replies if isinstance(r, grpc.aio.AioRpcError)]
    assert lost, "no PlaceOrder was cut off by the kill"
    assert {e.code() for e in lost} == {grpc.StatusCode.UNAVAILABLE}

    # Every order again, through the survivor: the same saga for each request_id, ended.
    again = await asyncio.gather(*(b.api.PlaceOrder(r, timeout=60) for r in requests))
    for reply, first in zip(again, replies, strict=True):
        if isinstance(first, pb.PlaceOrderResponse):
            assert reply.saga_id == first.saga_id
    sagas = {r.request_id: reply.saga for r, reply in zip(requests, again, strict=True)}
    problems = [
        f"{rid}: {pb.SagaStatus.Name(s.status)}"
        for rid, s in sagas.items()
        if s.status not in ENDED
    ]
    assert not problems, problems
    for i, request in enumerate(requests):
        saga = sagas[request.request_id]
        failing = request.fail_inventory or request.fail_shipping
        expected = pb.SAGA_STATUS_COMPENSATED if failing else pb.SAGA_STATUS_COMPLETED
        assert saga.status == expected, (i, saga)

    [row] = await query(
        cluster.url,
        "SELECT count(*) FILTER (WHERE lease_epoch >= 2) AS taken_over,"
        " count(*) FILTER (WHERE lease_owner IS NOT NULL) AS leased, count(*) AS total"
        " FROM sagas",
    )
    assert row["taken_over"] >= 1, "no saga was taken over from the dead replica"
    assert (row["leased"], row["total"]) == (0, ORDERS)

    pairs = [(r, sagas[r.request_id]) for r in requests]
    problems = await participants_disagree(cluster, pairs)
    assert not problems, "\n".join(problems)

    # No attempt was sent by two owners: each (saga, step/phase/number) reached a
    # participant at most once, and every attempt recorded OK did reach one.
    saga_ids = {s.saga_id for s in sagas.values()}
    calls = cluster.participants.calls(saga_ids)
    sent = Counter((saga_id, attempt) for saga_id, attempt, _ in calls)
    twice = {key: n for key, n in sent.items() if n > 1}
    assert not twice, f"attempts sent more than once: {twice}"
    for saga in sagas.values():
        for execution in saga.steps:
            for attempt in execution.attempts:
                key = f"{execution.step}/{PHASES[execution.phase]}/{attempt.number}"
                if attempt.code == "OK":
                    assert (saga.saga_id, key) in sent, (saga.saga_id, key)


async def test_one_request_id_over_both_replicas_makes_one_saga(cluster: Cluster) -> None:
    a = cluster.start_replica("a")
    b = cluster.start_replica("b")
    request = cluster.order("same-everywhere", 0)

    replies = await asyncio.gather(
        *(replica.api.PlaceOrder(request, timeout=60) for _ in range(10) for replica in (a, b))
    )

    assert len({r.saga_id for r in replies}) == 1
    assert {r.status for r in replies} == {pb.SAGA_STATUS_COMPLETED}
    saga_id = replies[0].saga_id
    for replica in (a, b):
        listed = await replica.api.ListSagas(pb.ListSagasRequest())
        assert [s.saga_id for s in listed.sagas] == [saga_id]
    charges = [c for c in cluster.participants.calls({saga_id}) if c[2].endswith("/Charge")]
    assert [attempt for _, attempt, _ in charges] == ["charge/action/1"]
    assert not await participants_disagree(cluster, [(request, replies[0].saga)])


async def participants_disagree(
    cluster: Cluster, sagas: Sequence[tuple[pb.PlaceOrderRequest, pb.Saga]]
) -> list[str]:
    """Charged (and not refunded), reserved and shipped exactly when COMPLETED; the
    stock held is what the COMPLETED sagas took."""
    participants = cluster.participants
    problems: list[str] = []
    async with (
        grpc.aio.insecure_channel(participants.payment) as payment_channel,
        grpc.aio.insecure_channel(participants.inventory) as inventory_channel,
        grpc.aio.insecure_channel(participants.shipping) as shipping_channel,
    ):
        payments = payment_pb2_grpc.PaymentServiceStub(payment_channel)
        inventory = inventory_pb2_grpc.InventoryServiceStub(inventory_channel)
        shipments = shipping_pb2_grpc.ShippingServiceStub(shipping_channel)
        held = 0
        for request, saga in sagas:
            completed = saga.status == pb.SAGA_STATUS_COMPLETED
            payment = await _status(
                payments.GetPayment(payment_pb2.GetPaymentRequest(saga_id=saga.saga_id)),
                lambda r: r.payment.status,
            )
            reservation = await _status(
                inventory.GetReservation(inventory_pb2.GetReservationRequest(saga_id=saga.saga_id)),
                lambda r: r.reservation.status,
            )
            shipment = await _status(
                shipments.GetShipment(shipping_pb2.GetShipmentRequest(saga_id=saga.saga_id)),
                lambda r: r.shipment.status,
            )
            checks = {
                "charged": payment == payment_pb2.PAYMENT_STATUS_CHARGED,
                "reserved": reservation == inventory_pb2.RESERVATION_STATUS_RESERVED,
                "shipped": shipment == shipping_pb2.SHIPMENT_STATUS_CREATED,
            }
            for what, holds in checks.items():
                if holds != completed:
                    problems.append(
                        f"saga {saga.saga_id} {pb.SagaStatus.Name(saga.status)} but {what}={holds}"
                    )
            if completed:
                held += request.quantity
        stock = (
            await inventory.GetStock(inventory_pb2.GetStockRequest(product_id=cluster.product_id))
        ).stock
    if (stock.reserved, stock.quantity) != (held, STOCK - held):
        problems.append(f"stock reserved {stock.reserved}, available {stock.quantity}; held {held}")
    return problems


async def _status(call: Awaitable[T], status: Callable[[T], int]) -> int | None:
    """The status a participant reports for a saga; None when it has no record of it."""
    try:
        return status(await call)
    except grpc.aio.AioRpcError as error:
        if error.code() == grpc.StatusCode.NOT_FOUND:
            return None
        raise
