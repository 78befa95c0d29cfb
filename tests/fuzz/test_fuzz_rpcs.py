"""Property-based fuzzing of every RPC of the four services, on real servers.

Requests are drawn from each method's own request descriptor, so a field
added to a proto is fuzzed with no change here: strings from unicode edge
cases (controls, bidirectional formatting, astral characters, over-long
values) to ids the system knows, int64 and int32 extremes, unknown enum
values, timestamps out of range, random bytes as page tokens. Each reply must
be OK or one of the documented codes, never UNKNOWN or INTERNAL; a refusal's
message holds no control character; and a refused request changes nothing:
every participant's records and stock, and the saga log, are compared before
and after. A second test sends every RPC a message over the size limit.

The servers run in-process on an event loop of their own thread, with the
failure switches off as in production; the examples are bounded and
derandomized (tests/fuzz/conftest.py).
"""

from __future__ import annotations

import asyncio
import base64
import threading
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, TypeVar, cast

import grpc
import pytest
from google.protobuf import any_pb2, timestamp_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from hypothesis import given
from hypothesis import strategies as st
from minisaga.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from minisaga.orchestrator.v1 import orchestrator_pb2, orchestrator_pb2_grpc
from minisaga.payment.v1 import payment_pb2, payment_pb2_grpc
from minisaga.shipping.v1 import shipping_pb2, shipping_pb2_grpc

from orchestrator_server.saga.sqlite_store import SqliteSagaStore
from service_kit.server import DEFAULT_MAX_MESSAGE_BYTES
from tests.harness import InProcess, wait_until
from tests.orchestrator.conftest import System, start_system

T = TypeVar("T")

OK = grpc.StatusCode.OK
DOCUMENTED = {
    OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
"""What the services answer (docs/design.md §2). UNKNOWN or INTERNAL would be a
handler that crashed; UNAVAILABLE a store that failed, which nothing here makes."""

SERVICES: list[tuple[ModuleType, ModuleType, str, str]] = [
    (payment_pb2, payment_pb2_grpc, "PaymentService", "payment"),
    (inventory_pb2, inventory_pb2_grpc, "InventoryService", "inventory"),
    (shipping_pb2, shipping_pb2_grpc, "ShippingService", "shipping"),
    (orchestrator_pb2, orchestrator_pb2_grpc, "OrchestratorService", "orchestrator"),
]


@dataclass(frozen=True)
class Rpc:
    service: str
    target: str
    """Which server: "payment", "inventory", "shipping" or "orchestrator"."""
    method: MethodDescriptor
    request_type: type[Message]
    stub_type: Callable[[grpc.aio.Channel], Any]

    @property
    def name(self) -> str:
        return f"{self.service}/{self.method.name}"


RPCS = [
    Rpc(
        service,
        target,
        method,
        getattr(pb, method.input_type.name),
        getattr(grpc_pb, f"{service}Stub"),
    )
    for pb, grpc_pb, service, target in SERVICES
    for method in pb.DESCRIPTOR.services_by_name[service].methods
]

# --- what is drawn ---------------------------------------------------------

INT64 = (-(2**63), -1, 0, 1, 2**31 - 1, 2**31, 2**53 + 1, 2**63 - 1)
INT32 = (-(2**31), -1, 0, 1, 50, 1000, 1001, 2**31 - 1)
EDGE_TEXT = [
    "",
    " ",
    "\t",
    "\x00",
    "a\nb",
    "\r\n",
    "\x1b[2J\x1b]0;title\x07",
    "\x7f\x85",
    "\u202eexe.txt",
    "\u2066x\u2069",
    "\u200f",
    "\u2028",
    "\ufeff",
    "\ufffd",
    "\U0001f600",
    "東京都渋谷区",
    "a" * 64,
    "a" * 65,
    "x" * 500,
    "x" * 501,
    "' OR 1=1 --",
    "%s%n%x",
    "../../etc/passwd",
    "JPY",
    "XXX",
    "jpy",
    "apple",
    "place_order",
    "SAGA_STATUS_RUNNING",
]


MALFORMED = [
    b"\x0a\x02\xff\xfe",  # field 1, a string of bad UTF-8
    b"\x0a\x05ab",  # field 1, a string cut short
    b"\x12\x03\xed\xa0\x80",  # field 2, a UTF-8-encoded surrogate
    b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",  # a varint of 11 bytes
    b"\x07",  # wire type 7 does not exist
    b"\x0a\xff\xff\xff\xff\x0f",  # a length of 4 GiB
]
"""Requests whose bytes cannot parse, whatever the message."""


@dataclass
class Known:
    """Values that reach past validation into the stores: the system's own ids."""

    saga_ids: list[str] = field(default_factory=list)
    order_ids: list[str] = field(default_factory=list)
    request_ids: list[str] = field(default_factory=list)
    page_tokens: list[str] = field(default_factory=list)


KNOWN = Known()


def text(name: str) -> st.SearchStrategy[str]:
    """A string field's values: edge cases, random unicode, and, by the field's
    name, values the system knows (drawn lazily: known once the system runs)."""
    lazy: list[st.SearchStrategy[str]] = []
    if name in ("saga_id",):
        lazy.append(st.deferred(lambda: st.sampled_from(KNOWN.saga_ids)))
        lazy.append(st.uuids().map(str))
    if name in ("order_id",):
        lazy.append(st.deferred(lambda: st.sampled_from(KNOWN.order_ids)))
    if name in ("request_id",):
        lazy.append(st.deferred(lambda: st.sampled_from(KNOWN.request_ids)))
    if name == "page_token":
        lazy.append(st.deferred(lambda: st.sampled_from(KNOWN.page_tokens)))
        lazy.append(st.binary(max_size=120).map(lambda b: base64.urlsafe_b64encode(b).decode()))
        lazy.append(st.binary(max_size=120).map(lambda b: b.decode("latin-1")))
    if name in ("product_id",):
        lazy.append(st.sampled_from(["apple", "banana", "cherry", "durian"]))
    if name == "currency":
        lazy.append(st.sampled_from(["", "JPY", "USD", "EUR", "XXX", "usd"]))
    return st.one_of(
        *lazy,
        st.sampled_from(EDGE_TEXT),
        st.text(max_size=80),
        st.text(
            st.characters(codec="utf-8", categories=["Cc", "Cf", "Zl", "Zp", "Co"]), max_size=8
        ),
    )


def integer(bits: int, signed: bool, edges: tuple[int, ...]) -> st.SearchStrategy[int]:
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    return st.one_of(
        st.sampled_from([e for e in edges if low <= e <= high]),
        st.integers(low, high),
        st.integers(max(low, -5), min(high, 3000)),
    )


def timestamp() -> st.SearchStrategy[Message]:
    return st.builds(
        timestamp_pb2.Timestamp,
        seconds=st.one_of(integer(64, True, INT64), st.integers(0, 4_102_444_800)),
        nanos=integer(32, True, (0, 999_999_999, 1_000_000_000, -1)),
    )


def value(descriptor: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    kind = descriptor.type
    if kind == FieldDescriptor.TYPE_STRING:
        return text(descriptor.name)
    if kind == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=200)
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind == FieldDescriptor.TYPE_ENUM:
        assert descriptor.enum_type is not None
        known = [v.number for v in descriptor.enum_type.values]
        return st.one_of(st.sampled_from(known), integer(32, True, INT32))
    if kind in (
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_SFIXED64,
    ):
        return integer(64, True, INT64)
    if kind in (
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_SFIXED32,
    ):
        return integer(32, True, INT32)
    if kind in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
        return integer(64, False, INT64)
    if kind in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
        return integer(32, False, INT32)
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.floats()
    if kind == FieldDescriptor.TYPE_MESSAGE:
        assert descriptor.message_type is not None
        if descriptor.message_type.full_name == "google.protobuf.Timestamp":
            return timestamp()
        if descriptor.message_type.full_name == "google.protobuf.Any":
            return packed(depth)
        return message(descriptor.message_type, depth + 1)
    raise AssertionError(f"no strategy for field {descriptor.full_name}")


def packed(depth: int) -> st.SearchStrategy[Message]:
    """An Any (StartSaga's input): a fuzzed order packed in it, another service's
    message packed in it, or any type_url with any bytes."""

    def pack(inner: Message) -> Message:
        found = any_pb2.Any()
        found.Pack(inner)
        return found

    return st.one_of(
        message(orchestrator_pb2.PlaceOrderRequest.DESCRIPTOR, depth + 1).map(pack),
        message(payment_pb2.ChargeRequest.DESCRIPTOR, depth + 1).map(pack),
        st.builds(any_pb2.Any, type_url=text("type_url"), value=st.binary(max_size=200)),
    )


def message(descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
    """Messages of `descriptor` with any subset of their fields set."""
    cls = _message_class(descriptor)
    if depth > 3:
        return st.just(cls())
    fields = {f.name: value(f, depth) for f in descriptor.fields if not _repeated(f)}

    def build(values: dict[str, Any]) -> Message:
        built = cls()
        for name, drawn in values.items():
            if isinstance(drawn, Message):
                getattr(built, name).CopyFrom(drawn)
            else:
                setattr(built, name, drawn)
        return built

    return st.fixed_dictionaries({}, optional=fields).map(build)


def _repeated(descriptor: FieldDescriptor) -> bool:
    return bool(descriptor.is_repeated)


def _message_class(descriptor: Descriptor) -> type[Message]:
    for pb, *_ in SERVICES:
        if descriptor.file is pb.DESCRIPTOR:
            found: type[Message] = getattr(pb, descriptor.name)
            return found
    raise AssertionError(f"no class for {descriptor.full_name}")


# --- the system under test -------------------------------------------------


@dataclass
class Fuzzed:
    """The four services on an event loop in a thread of their own."""

    loop: asyncio.AbstractEventLoop
    system: System
    stubs: dict[str, Any] = field(default_factory=dict)

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(work, self.loop).result()

    def call(self, rpc: Rpc, request: Message) -> tuple[grpc.StatusCode, str]:
        return self.run(self._call(rpc, request))

    async def _call(self, rpc: Rpc, request: Message) -> tuple[grpc.StatusCode, str]:
        method = getattr(self.stubs[rpc.target], rpc.method.name)
        try:
            if rpc.method.server_streaming:
                stream = method(request, timeout=60)
                await stream.read()  # the first event, or the refusal
                stream.cancel()
            else:
                await method(request, timeout=60)
        except grpc.aio.AioRpcError as error:
            return error.code(), error.details() or ""
        await self._settled()
        return OK, ""

    def call_raw(self, rpc: Rpc, data: bytes) -> tuple[grpc.StatusCode, str]:
        return self.run(self._call_raw(rpc, data))

    async def _call_raw(self, rpc: Rpc, data: bytes) -> tuple[grpc.StatusCode, str]:
        """The request as bytes on the wire, parsed or not."""
        path = f"/{rpc.method.containing_service.full_name}/{rpc.method.name}"
        channels = {
            "payment": self.system.payment.channel,
            "inventory": self.system.inventory.channel,
            "shipping": self.system.shipping.channel,
            "orchestrator": self.system.channel,
        }
        channel = channels[rpc.target]
        try:
            if rpc.method.server_streaming:
                stream = channel.unary_stream(
                    path, request_serializer=_raw, response_deserializer=_raw
                )(data, timeout=60)
                await stream.read()
                stream.cancel()
            else:
                await channel.unary_unary(
                    path, request_serializer=_raw, response_deserializer=_raw
                )(data, timeout=60)
        except grpc.aio.AioRpcError as error:
            return error.code(), error.details() or ""
        await self._settled()
        return OK, ""

    async def _settled(self) -> None:
        """Waits until no saga is in flight: what an OK set going has finished."""
        engine = self.system.orchestrator.engine
        await wait_until(lambda: engine.in_flight == 0)

    def snapshot(self) -> tuple[object, ...]:
        return self.run(self._snapshot())

    async def _snapshot(self) -> tuple[object, ...]:
        async def rows(server: InProcess | SqliteSagaStore, *tables: str) -> list[object]:
            def read(conn: Any) -> list[object]:
                return [
                    [tuple(row) for row in conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2")]
                    for table in tables
                ]

            result: list[object] = await server.db.run(read)
            return result

        log = cast(SqliteSagaStore, self.system.orchestrator.store)
        return (
            await rows(self.system.payment, "payments"),
            await rows(self.system.inventory, "products", "reservations"),
            await rows(self.system.shipping, "shipments"),
            await rows(log, "sagas", "attempts", "compensation_failures"),
        )


def _raw(data: bytes) -> bytes:
    return data


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fuzzed-servers", daemon=True)
    thread.start()

    def run(work: Awaitable[T]) -> T:
        return asyncio.run_coroutine_threadsafe(_await(work), loop).result()

    system = run(start_system(tmp_path_factory.mktemp("fuzz"), allow_failure_switches=False))
    for participant in (system.payment, system.inventory, system.shipping):
        participant.faults.allow_failure_switches = False  # as in production
    fuzzed = Fuzzed(loop, system)
    try:
        run(_seed(fuzzed))
        yield fuzzed
    finally:
        run(system.close())
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


async def _await(work: Awaitable[T]) -> T:
    return await work


async def _seed(fuzzed: Fuzzed) -> None:
    """Stubs on the servers' loop, and records for the known ids to reach."""
    system = fuzzed.system
    fuzzed.stubs = {
        "payment": system.payments,
        "inventory": system.stock,
        "shipping": system.shipments,
        "orchestrator": system.api,
    }
    for i, quantity in enumerate((1, 2, 5000)):  # the last one cannot be reserved
        placed = await system.place(quantity=quantity, request_id=f"req-{i}")
        KNOWN.saga_ids.append(placed.saga_id)
        KNOWN.order_ids.append(placed.order_id)
        KNOWN.request_ids.append(f"req-{i}")
    page = await system.api.ListSagas(orchestrator_pb2.ListSagasRequest(page_size=1))
    KNOWN.page_tokens.append(page.next_page_token)
    listed = await system.payments.ListPayments(payment_pb2.ListPaymentsRequest(page_size=1))
    KNOWN.page_tokens.append(listed.next_page_token)
    KNOWN.saga_ids.append(str(uuid.uuid4()))


# --- the properties --------------------------------------------------------


def test_every_rpc_of_the_four_services_is_fuzzed() -> None:
    names = {rpc.name for rpc in RPCS}
    assert "OrchestratorService/PlaceOrder" in names
    assert "InventoryService/SetStock" in names
    assert len(names) == sum(
        len(pb.DESCRIPTOR.services_by_name[service].methods) for pb, _, service, _ in SERVICES
    )


@pytest.mark.parametrize("rpc", RPCS, ids=lambda rpc: rpc.name)
@given(data=st.data())
def test_a_reply_is_documented_and_a_refusal_changes_nothing(
    fuzzed: Fuzzed, rpc: Rpc, data: st.DataObject
) -> None:
    request = data.draw(message(rpc.method.input_type), label="request")
    before = fuzzed.snapshot()

    code, details = fuzzed.call(rpc, request)

    assert code in DOCUMENTED, f"{rpc.name} answered {code.name}: {details}"
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in details), details
    if code != OK:
        assert fuzzed.snapshot() == before, f"{rpc.name} refused ({code.name}) but wrote"


@pytest.mark.parametrize("rpc", RPCS, ids=lambda rpc: rpc.name)
@given(data=st.one_of(st.binary(max_size=300), st.sampled_from(MALFORMED)))
def test_random_bytes_as_a_request_are_answered_and_a_refusal_changes_nothing(
    fuzzed: Fuzzed, rpc: Rpc, data: bytes
) -> None:
    before = fuzzed.snapshot()

    code, details = fuzzed.call_raw(rpc, data)

    assert code in DOCUMENTED, f"{rpc.name} answered {code.name}: {details}"
    assert "DecodeError" not in details and "parsing" not in details, details
    if code != OK:
        assert fuzzed.snapshot() == before, f"{rpc.name} refused ({code.name}) but wrote"


@pytest.mark.parametrize("rpc", RPCS, ids=lambda rpc: rpc.name)
def test_an_oversized_request_is_refused_and_changes_nothing(fuzzed: Fuzzed, rpc: Rpc) -> None:
    descriptor = rpc.method.input_type
    name = next(f.name for f in descriptor.fields if f.type == FieldDescriptor.TYPE_STRING)
    request = rpc.request_type(**{name: "x" * (DEFAULT_MAX_MESSAGE_BYTES + 1)})
    before = fuzzed.snapshot()

    code, _ = fuzzed.call(rpc, request)

    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert fuzzed.snapshot() == before
