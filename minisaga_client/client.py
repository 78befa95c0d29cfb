"""The minisaga client: typed methods for every RPC, sync (`Client`) and async (`AsyncClient`).

    from minisaga_client import connect, NotFound

    with connect("127.0.0.1:7001", payment="127.0.0.1:7002") as client:
        placed = client.place_order(product_id="apple", quantity=2, amount=1200)
        saga = client.get_saga(placed.saga_id)
        payment = client.get_payment(placed.saga_id)

Each channel carries a gRPC retry service config: a call that fails with
UNAVAILABLE is retried with backoff by gRPC itself. Every unary call has a
deadline (`timeout`, 10 s unless set). A failed call raises a typed
`minisaga_client.errors.MinisagaError`, translated once, here.

Methods return the message a caller wants: the `Saga`, `Payment`, `Stock`...
when the response holds only that, the whole response otherwise.

Each RPC is written once, in `_Calls`: a function of the method's arguments
that describes the call (which service, which method, the request, what of
the response to return). `Client` sends the description and returns the
result; `AsyncClient` returns an awaitable of it. Both take the description's
parameters, and mypy types each method from it.
"""

from __future__ import annotations

import functools
import json
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Generic, ParamSpec, Self, TypeVar, overload

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from minisaga.inventory.v1 import inventory_pb2 as inventory
from minisaga.inventory.v1 import inventory_pb2_grpc
from minisaga.orchestrator.v1 import orchestrator_pb2 as pb
from minisaga.orchestrator.v1 import orchestrator_pb2_grpc
from minisaga.payment.v1 import payment_pb2 as payment
from minisaga.payment.v1 import payment_pb2_grpc
from minisaga.shipping.v1 import shipping_pb2 as shipping
from minisaga.shipping.v1 import shipping_pb2_grpc

from minisaga_client.errors import MinisagaError, from_grpc_error
from minisaga_client.tls import Tls, credentials_for

DEFAULT_TIMEOUT = 10.0
"""Seconds: the deadline of every unary call unless the client or the call sets another."""

SERVICES: Mapping[str, str] = {
    "orchestrator": pb.DESCRIPTOR.services_by_name["OrchestratorService"].full_name,
    "payment": payment.DESCRIPTOR.services_by_name["PaymentService"].full_name,
    "inventory": inventory.DESCRIPTOR.services_by_name["InventoryService"].full_name,
    "shipping": shipping.DESCRIPTOR.services_by_name["ShippingService"].full_name,
}
"""The gRPC service of each minisaga service, by its short name."""

RETRY_POLICY: Mapping[str, Any] = {
    "maxAttempts": 4,
    "initialBackoff": "0.1s",
    "maxBackoff": "1s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}
"""gRPC retries a call that fails with UNAVAILABLE: 4 attempts in all, 0.1 s to 1 s apart.

Safe for every minisaga RPC: participants are idempotent by saga_id, and
`place_order` always sends a request_id, so a retried PlaceOrder finds the
saga the first attempt started instead of starting a second one.
"""

SERVICE_CONFIG = json.dumps(
    {
        "methodConfig": [
            {
                "name": [{"service": name} for name in SERVICES.values()],
                "retryPolicy": RETRY_POLICY,
            }
        ]
    }
)
CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.enable_retries", 1),
    ("grpc.service_config", SERVICE_CONFIG),
)
"""The options of every channel `connect` and `connect_async` open."""

__all__ = [
    "CHANNEL_OPTIONS",
    "DEFAULT_TIMEOUT",
    "RETRY_POLICY",
    "SERVICES",
    "SERVICE_CONFIG",
    "AsyncClient",
    "Client",
    "connect",
    "connect_async",
    "new_request_id",
]

P = ParamSpec("P")
StubT = TypeVar("StubT")
ReqT = TypeVar("ReqT")
RespT = TypeVar("RespT")
OutT = TypeVar("OutT")
NewT = TypeVar("NewT")
SyncT = TypeVar("SyncT")
AsyncT = TypeVar("AsyncT")
ChannelT = TypeVar("ChannelT", grpc.Channel, grpc.aio.Channel)


def new_request_id() -> str:
    """A fresh PlaceOrder idempotency key."""
    return uuid.uuid4().hex


@dataclass(frozen=True)
class _Service(Generic[StubT]):
    """One of the four services: its short name, and its generated stub class."""

    name: str
    stub: Callable[[Any], StubT]
    """On a grpc.Channel the stub's methods are sync; on a grpc.aio.Channel, awaitable."""


ORCHESTRATOR = _Service("orchestrator", orchestrator_pb2_grpc.OrchestratorServiceStub)
PAYMENT = _Service("payment", payment_pb2_grpc.PaymentServiceStub)
INVENTORY = _Service("inventory", inventory_pb2_grpc.InventoryServiceStub)
SHIPPING = _Service("shipping", shipping_pb2_grpc.ShippingServiceStub)


class _Rpc(Generic[P, SyncT, AsyncT]):
    """A method of both clients, made of a function that describes its call.

    On a `Client` the method sends the call and returns its result; on an
    `AsyncClient` it returns the awaitable (or the async iterator) of it. Its
    parameters are the description's, for mypy too.
    """

    def __init__(self, describe: Callable[P, _Call[SyncT, AsyncT]]) -> None:
        self.describe = describe
        self.__doc__ = describe.__doc__

    def __repr__(self) -> str:
        return f"<the client method {self.describe.__name__}>"

    @overload
    def __get__(self, client: None, owner: type[object]) -> Self: ...
    @overload
    def __get__(self, client: Client, owner: type[object]) -> Callable[P, SyncT]: ...
    @overload
    def __get__(self, client: AsyncClient, owner: type[object]) -> Callable[P, AsyncT]: ...
    def __get__(
        self, client: Client | AsyncClient | None, owner: type[object]
    ) -> Self | Callable[P, SyncT] | Callable[P, AsyncT]:
        if client is None:
            return self
        describe = self.describe
        if isinstance(client, AsyncClient):

            def send_async(*args: P.args, **kwargs: P.kwargs) -> AsyncT:
                return describe(*args, **kwargs).send_async(client)

            return functools.update_wrapper(send_async, describe)

        def send(*args: P.args, **kwargs: P.kwargs) -> SyncT:
            return describe(*args, **kwargs).send(client)

        return functools.update_wrapper(send, describe)


class _Calls:
    """Every RPC of the four services, each described once; `Client` and `AsyncClient` inherit them.

    A description is not a method (it takes no `self`): it builds the request
    and says what to call. `_unary(SERVICE, lambda s: s.Method, ...)` picks the
    method from the service's stub, and `.then(lambda r: r.field)` returns a
    part of the response instead of the whole. `_Rpc` makes the description a
    method of each client.
    """

    # --- orchestrator ---------------------------------------------------

    @_Rpc
    def place_order(
        *,
        product_id: str,
        quantity: int,
        amount: int,
        currency: str = "",
        address: str = "",
        request_id: str | None = None,
        fail_payment: bool = False,
        fail_inventory: bool = False,
        fail_shipping: bool = False,
        timeout: float | None = None,
    ) -> _Unary[pb.PlaceOrderResponse]:
        """Places an order and waits for its saga to end, or for the deadline.

        Without `request_id` a fresh one is sent, so a retry never starts a
        second saga. If the deadline comes first the saga is returned as it
        is (RUNNING) and goes on; `watch_saga` follows it.
        """
        request = pb.PlaceOrderRequest(
            request_id=new_request_id() if request_id is None else request_id,
            product_id=product_id,
            quantity=quantity,
            amount=amount,
            currency=currency,
            address=address,
            fail_payment=fail_payment,
            fail_inventory=fail_inventory,
            fail_shipping=fail_shipping,
        )
        return _unary(ORCHESTRATOR, lambda s: s.PlaceOrder, request, timeout)

    @_Rpc
    def get_saga(saga_id: str, *, timeout: float | None = None) -> _Unary[pb.Saga]:
        """The saga with its whole execution log."""
        request = pb.GetSagaRequest(saga_id=saga_id)
        return _unary(ORCHESTRATOR, lambda s: s.GetSaga, request, timeout).then(lambda r: r.saga)

    @_Rpc
    def list_sagas(
        *,
        status: pb.SagaStatus.ValueType | None = None,
        saga_type: str = "",
        order_id: str = "",
        request_id: str = "",
        created_from: datetime | None = None,
        created_before: datetime | None = None,
        page_size: int = 0,
        page_token: str = "",
        timeout: float | None = None,
    ) -> _Unary[pb.ListSagasResponse]:
        """One page of sagas, newest first; pass `next_page_token` back for the next.

        Every filter given must match; the created-time range takes
        `created_from <= created < created_before` (aware datetimes; a naive
        one is taken as UTC). Send the same filters with each page's token.
        """
        request = pb.ListSagasRequest(
            status=pb.SAGA_STATUS_UNSPECIFIED if status is None else status,
            page_size=page_size,
            page_token=page_token,
            saga_type=saga_type,
            order_id=order_id,
            request_id=request_id,
            created_from=_timestamp(created_from),
            created_before=_timestamp(created_before),
        )
        return _unary(ORCHESTRATOR, lambda s: s.ListSagas, request, timeout)

    @_Rpc
    def count_sagas(
        *,
        saga_type: str = "",
        order_id: str = "",
        request_id: str = "",
        created_from: datetime | None = None,
        created_before: datetime | None = None,
        timeout: float | None = None,
    ) -> _Unary[pb.CountSagasResponse]:
        """How many sagas are in each status, under `list_sagas`'s filters."""
        request = pb.CountSagasRequest(
            saga_type=saga_type,
            order_id=order_id,
            request_id=request_id,
            created_from=_timestamp(created_from),
            created_before=_timestamp(created_before),
        )
        return _unary(ORCHESTRATOR, lambda s: s.CountSagas, request, timeout)

    @_Rpc
    def get_saga_definition(
        saga_type: str, *, timeout: float | None = None
    ) -> _Unary[pb.SagaDefinition]:
        """The definition a saga type runs: its steps, their RPCs and compensations."""
        request = pb.GetSagaDefinitionRequest(saga_type=saga_type)
        call = _unary(ORCHESTRATOR, lambda s: s.GetSagaDefinition, request, timeout)
        return call.then(lambda r: r.definition)

    @_Rpc
    def watch_saga(saga_id: str, *, timeout: float | None = None) -> _Stream[pb.WatchSagaResponse]:
        """The saga's events as they happen, until it ends (no deadline unless `timeout`)."""
        request = pb.WatchSagaRequest(saga_id=saga_id)
        return _stream(ORCHESTRATOR, lambda s: s.WatchSaga, request, timeout)

    @_Rpc
    def get_order(order_id: str, *, timeout: float | None = None) -> _Unary[pb.GetOrderResponse]:
        """The order and its saga."""
        request = pb.GetOrderRequest(order_id=order_id)
        return _unary(ORCHESTRATOR, lambda s: s.GetOrder, request, timeout)

    @_Rpc
    def resume_saga(saga_id: str, *, timeout: float | None = None) -> _Unary[pb.Saga]:
        """Retries the failed compensations of a FAILED saga; they run in the background."""
        request = pb.ResumeSagaRequest(saga_id=saga_id)
        return _unary(ORCHESTRATOR, lambda s: s.ResumeSaga, request, timeout).then(lambda r: r.saga)

    @_Rpc
    def resume_sagas(
        *,
        saga_type: str = "",
        order_id: str = "",
        request_id: str = "",
        created_from: datetime | None = None,
        created_before: datetime | None = None,
        page_size: int = 0,
        page_token: str = "",
        timeout: float | None = None,
    ) -> _Unary[pb.ResumeSagasResponse]:
        """Resumes one page of the FAILED sagas `list_sagas`'s filters take; pass
        `next_page_token` back (with the same filters) for the next page. The
        answer names the sagas resumed; a saga already resumed is skipped."""
        request = pb.ResumeSagasRequest(
            saga_type=saga_type,
            order_id=order_id,
            request_id=request_id,
            created_from=_timestamp(created_from),
            created_before=_timestamp(created_before),
            page_size=page_size,
            page_token=page_token,
        )
        return _unary(ORCHESTRATOR, lambda s: s.ResumeSagas, request, timeout)

    @_Rpc
    def cancel_saga(saga_id: str, *, timeout: float | None = None) -> _Unary[pb.Saga]:
        """Stops a running saga; it compensates what it did, in the background."""
        request = pb.CancelSagaRequest(saga_id=saga_id)
        return _unary(ORCHESTRATOR, lambda s: s.CancelSaga, request, timeout).then(lambda r: r.saga)

    # --- payment --------------------------------------------------------

    @_Rpc
    def charge(
        *,
        saga_id: str,
        order_id: str,
        amount: int,
        currency: str = "",
        fail: bool = False,
        timeout: float | None = None,
    ) -> _Unary[payment.ChargeResponse]:
        request = payment.ChargeRequest(
            saga_id=saga_id, order_id=order_id, amount=amount, currency=currency, fail=fail
        )
        return _unary(PAYMENT, lambda s: s.Charge, request, timeout)

    @_Rpc
    def refund(
        saga_id: str, *, reason: str = "", timeout: float | None = None
    ) -> _Unary[payment.RefundResponse]:
        request = payment.RefundRequest(saga_id=saga_id, reason=reason)
        return _unary(PAYMENT, lambda s: s.Refund, request, timeout)

    @_Rpc
    def get_payment(saga_id: str, *, timeout: float | None = None) -> _Unary[payment.Payment]:
        request = payment.GetPaymentRequest(saga_id=saga_id)
        return _unary(PAYMENT, lambda s: s.GetPayment, request, timeout).then(lambda r: r.payment)

    @_Rpc
    def list_payments(
        *, page_size: int = 0, page_token: str = "", timeout: float | None = None
    ) -> _Unary[payment.ListPaymentsResponse]:
        """One page of every saga's payment record, by saga_id."""
        request = payment.ListPaymentsRequest(page_size=page_size, page_token=page_token)
        return _unary(PAYMENT, lambda s: s.ListPayments, request, timeout)

    # --- inventory ------------------------------------------------------

    @_Rpc
    def reserve(
        *,
        saga_id: str,
        product_id: str,
        quantity: int,
        fail: bool = False,
        timeout: float | None = None,
    ) -> _Unary[inventory.ReserveResponse]:
        request = inventory.ReserveRequest(
            saga_id=saga_id, product_id=product_id, quantity=quantity, fail=fail
        )
        return _unary(INVENTORY, lambda s: s.Reserve, request, timeout)

    @_Rpc
    def release(saga_id: str, *, timeout: float | None = None) -> _Unary[inventory.ReleaseResponse]:
        request = inventory.ReleaseRequest(saga_id=saga_id)
        return _unary(INVENTORY, lambda s: s.Release, request, timeout)

    @_Rpc
    def get_reservation(
        saga_id: str, *, timeout: float | None = None
    ) -> _Unary[inventory.Reservation]:
        request = inventory.GetReservationRequest(saga_id=saga_id)
        call = _unary(INVENTORY, lambda s: s.GetReservation, request, timeout)
        return call.then(lambda r: r.reservation)

    @_Rpc
    def list_reservations(
        *, page_size: int = 0, page_token: str = "", timeout: float | None = None
    ) -> _Unary[inventory.ListReservationsResponse]:
        """One page of every saga's reservation record, by saga_id."""
        request = inventory.ListReservationsRequest(page_size=page_size, page_token=page_token)
        return _unary(INVENTORY, lambda s: s.ListReservations, request, timeout)

    @_Rpc
    def set_stock(
        product_id: str, quantity: int, *, timeout: float | None = None
    ) -> _Unary[inventory.Stock]:
        request = inventory.SetStockRequest(product_id=product_id, quantity=quantity)
        return _unary(INVENTORY, lambda s: s.SetStock, request, timeout).then(lambda r: r.stock)

    @_Rpc
    def get_stock(product_id: str, *, timeout: float | None = None) -> _Unary[inventory.Stock]:
        request = inventory.GetStockRequest(product_id=product_id)
        return _unary(INVENTORY, lambda s: s.GetStock, request, timeout).then(lambda r: r.stock)

    # --- shipping -------------------------------------------------------

    @_Rpc
    def create_shipment(
        *,
        saga_id: str,
        order_id: str,
        address: str,
        fail: bool = False,
        timeout: float | None = None,
    ) -> _Unary[shipping.CreateShipmentResponse]:
        request = shipping.CreateShipmentRequest(
            saga_id=saga_id, order_id=order_id, address=address, fail=fail
        )
        return _unary(SHIPPING, lambda s: s.CreateShipment, request, timeout)

    @_Rpc
    def cancel_shipment(
        saga_id: str, *, timeout: float | None = None
    ) -> _Unary[shipping.CancelShipmentResponse]:
        request = shipping.CancelShipmentRequest(saga_id=saga_id)
        return _unary(SHIPPING, lambda s: s.CancelShipment, request, timeout)

    @_Rpc
    def list_shipments(
        *, page_size: int = 0, page_token: str = "", timeout: float | None = None
    ) -> _Unary[shipping.ListShipmentsResponse]:
        """One page of every saga's shipment record, by saga_id."""
        request = shipping.ListShipmentsRequest(page_size=page_size, page_token=page_token)
        return _unary(SHIPPING, lambda s: s.ListShipments, request, timeout)

    @_Rpc
    def get_shipment(saga_id: str, *, timeout: float | None = None) -> _Unary[shipping.Shipment]:
        request = shipping.GetShipmentRequest(saga_id=saga_id)
        call = _unary(SHIPPING, lambda s: s.GetShipment, request, timeout)
        return call.then(lambda r: r.shipment)


# --- how a description is sent -------------------------------------------


@dataclass(frozen=True)
class _Endpoint(Generic[StubT]):
    """A service a client has a channel to: its stub, and its address for errors."""

    service: str
    address: str
    stub: StubT

    def error(self, error: grpc.RpcError) -> MinisagaError:
        """The one place a failed call becomes a typed error."""
        return from_grpc_error(error, service=self.service, address=self.address)


class _Call(ABC, Generic[SyncT, AsyncT]):
    """A described call: `send` makes it on a `Client`, `send_async` on an `AsyncClient`."""

    @abstractmethod
    def send(self, client: Client) -> SyncT: ...

    @abstractmethod
    def send_async(self, client: AsyncClient) -> AsyncT: ...


@dataclass(frozen=True)
class _Unary(_Call[OutT, Coroutine[Any, Any, OutT]]):
    """A unary call: the service, its method, the request, and what of the response to return.

    Its deadline is `timeout`, else the client's. Built by `_unary`, which types it.
    """

    service: _Service[Any]
    method: Callable[[Any], Any]
    request: object
    timeout: float | None
    pick: Callable[[Any], OutT]

    def send(self, client: Client) -> OutT:
        endpoint = client._endpoint(self.service)
        method: grpc.UnaryUnaryMultiCallable[object, object] = self.method(endpoint.stub)
        try:
            response = method(self.request, timeout=client._deadline(self.timeout))
        except grpc.RpcError as error:
            raise endpoint.error(error) from error
        return self.pick(response)

    def then(self, pick: Callable[[OutT], NewT]) -> _Unary[NewT]:
        """The same call, returning what `pick` takes of the result instead."""
        first = self.pick
        return _Unary(
            self.service, self.method, self.request, self.timeout, lambda r: pick(first(r))
        )

    async def send_async(self, client: AsyncClient) -> OutT:
        endpoint = client._endpoint(self.service)
        method: grpc.aio.UnaryUnaryMultiCallable[object, object] = self.method(endpoint.stub)
        try:
            response = await method(self.request, timeout=client._deadline(self.timeout))
        except grpc.RpcError as error:
            raise endpoint.error(error) from error
        return self.pick(response)


@dataclass(frozen=True)
class _Stream(_Call[Iterator[OutT], AsyncIterator[OutT]]):
    """A server-streaming call: the service, its method, the request; no deadline unless `timeout`.

    The address is checked when the method is called; the call starts with
    the first message asked for, and ends when the caller stops asking.
    """

    service: _Service[Any]
    method: Callable[[Any], Any]
    request: object
    timeout: float | None

    def send(self, client: Client) -> Iterator[OutT]:
        return self._receive(client._endpoint(self.service))

    def send_async(self, client: AsyncClient) -> AsyncIterator[OutT]:
        return self._receive_async(client._endpoint(self.service))

    def _receive(self, endpoint: _Endpoint[Any]) -> Iterator[OutT]:
        method: grpc.UnaryStreamMultiCallable[object, OutT] = self.method(endpoint.stub)
        call = method(self.request, timeout=self.timeout)
        try:
            yield from call
        except grpc.RpcError as error:
            raise endpoint.error(error) from error
        finally:
            # grpc-stubs leaves RpcContext.cancel untyped, hence the annotated alias.
            cancel: Callable[[], object] = call.cancel
            cancel()

    async def _receive_async(self, endpoint: _Endpoint[Any]) -> AsyncIterator[OutT]:
        method: grpc.aio.UnaryStreamMultiCallable[object, OutT] = self.method(endpoint.stub)
        call = method(self.request, timeout=self.timeout)
        try:
            async for response in call:
                yield response
        except grpc.RpcError as error:
            raise endpoint.error(error) from error
        finally:
            call.cancel()


def _timestamp(moment: datetime | None) -> Timestamp | None:
    """A Timestamp for an optional request field (None leaves it unset); naive is UTC."""
    if moment is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(moment if moment.tzinfo else moment.replace(tzinfo=UTC))
    return stamp


# `method` picks the method from the service's stub, typed as the sync stub:
# that checks the request's type and gives the response's. A stub on a
# grpc.aio channel has the same methods, awaitable (the generated *AsyncStub).


def _unary(
    service: _Service[StubT],
    method: Callable[[StubT], grpc.UnaryUnaryMultiCallable[ReqT, RespT]],
    request: ReqT,
    timeout: float | None,
) -> _Unary[RespT]:
    """A unary call of `method`, returning the whole response (`.then` takes a part)."""
    return _Unary(service, method, request, timeout, lambda response: response)


def _stream(
    service: _Service[StubT],
    method: Callable[[StubT], grpc.UnaryStreamMultiCallable[ReqT, RespT]],
    request: ReqT,
    timeout: float | None,
) -> _Stream[RespT]:
    """A server-streaming call of `method`."""
    return _Stream(service, method, request, timeout)


# --- the clients ------------------------------------------------------------


class _Connection(Generic[ChannelT]):
    """What both clients hold: a stub for each service given a channel, and the deadline."""

    def __init__(
        self,
        orchestrator: ChannelT | None = None,
        *,
        payment: ChannelT | None = None,
        inventory: ChannelT | None = None,
        shipping: ChannelT | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        addresses: Mapping[str, str] | None = None,
    ) -> None:
        addresses = addresses or {}
        self.timeout = timeout
        """Seconds: the deadline of each unary call that sets none itself."""
        channels: dict[_Service[Any], ChannelT | None] = {
            ORCHESTRATOR: orchestrator,
            PAYMENT: payment,
            INVENTORY: inventory,
            SHIPPING: shipping,
        }
        self._endpoints: dict[str, _Endpoint[Any]] = {
            service.name: _Endpoint(
                service.name, addresses.get(service.name, ""), service.stub(channel)
            )
            for service, channel in channels.items()
            if channel is not None
        }
        self._owned: list[ChannelT] = []

    @classmethod
    def _open(
        cls,
        channel: Callable[[str], ChannelT],
        targets: Mapping[str, str | None],
        timeout: float,
    ) -> Self:
        """A client on channels of its own to the services given a target; `close` closes them."""
        addresses = {name: target for name, target in targets.items() if target is not None}
        channels = {name: channel(target) for name, target in addresses.items()}
        client = cls(
            channels.get("orchestrator"),
            payment=channels.get("payment"),
            inventory=channels.get("inventory"),
            shipping=channels.get("shipping"),
            timeout=timeout,
            addresses=addresses,
        )
        client._owned.extend(channels.values())
        return client

    def _endpoint(self, service: _Service[StubT]) -> _Endpoint[StubT]:
        endpoint = self._endpoints.get(service.name)
        if endpoint is None:
            raise ValueError(
                f"this client has no {service.name} address: "
                f"connect(..., {service.name}='host:port')"
            )
        return endpoint

    def _deadline(self, timeout: float | None) -> float:
        return self.timeout if timeout is None else timeout


class Client(_Connection[grpc.Channel], _Calls):
    """A synchronous client of the orchestrator and, when given their channels, the participants.

    Build one with `connect(...)`; or pass channels you own (the client then
    does not close them), such as a `grpc_testing` channel in a test.
    """

    def close(self) -> None:
        """Closes the channels `connect` opened."""
        for channel in self._owned:
            channel.close()
        self._owned.clear()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def iter_sagas(
        self,
        *,
        status: pb.SagaStatus.ValueType | None = None,
        page_size: int = 0,
        timeout: float | None = None,
        **filters: Any,
    ) -> Iterator[pb.Saga]:
        """Every saga, newest first, page after page (each page one call); `filters`
        are `list_sagas`'s (saga_type, order_id, request_id, created_from, created_before)."""
        token = ""
        while True:
            page = self.list_sagas(
                status=status, page_size=page_size, page_token=token, timeout=timeout, **filters
            )
            yield from page.sagas
            token = page.next_page_token
            if not token:
                return


def connect(
    address: str | None,
    *,
    payment: str | None = None,
    inventory: str | None = None,
    shipping: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    tls: Tls | None = None,
    token: str | None = None,
) -> Client:
    """A `Client` of the orchestrator at `address` and of the participants given.

    Channels connect lazily: an unreachable service is an `Unavailable` on
    the first call, after gRPC's retries. With `tls` every channel is mutual
    TLS, presenting its client certificate (minisaga_client.tls); with `token`
    every call carries it as `authorization: Bearer <token>`, sent only over
    TLS or to a loopback address (ValueError otherwise).
    """

    def dial(target: str) -> grpc.Channel:
        credentials = credentials_for(target, tls, token)
        if credentials is None:
            return grpc.insecure_channel(target, options=list(CHANNEL_OPTIONS))
        return grpc.secure_channel(target, credentials, options=list(CHANNEL_OPTIONS))

    return Client._open(
        dial,
        {"orchestrator": address, "payment": payment, "inventory": inventory, "shipping": shipping},
        timeout,
    )


class AsyncClient(_Connection[grpc.aio.Channel], _Calls):
    """The asyncio (grpc.aio) twin of `Client`: the same methods, awaited."""

    async def close(self) -> None:
        """Closes the channels `connect_async` opened."""
        for channel in self._owned:
            await channel.close(None)
        self._owned.clear()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def iter_sagas(
        self,
        *,
        status: pb.SagaStatus.ValueType | None = None,
        page_size: int = 0,
        timeout: float | None = None,
        **filters: Any,
    ) -> AsyncIterator[pb.Saga]:
        """Every saga, newest first, page after page (each page one call); `filters`
        are `list_sagas`'s (saga_type, order_id, request_id, created_from, created_before)."""
        token = ""
        while True:
            page = await self.list_sagas(
                status=status, page_size=page_size, page_token=token, timeout=timeout, **filters
            )
            for saga in page.sagas:
                yield saga
            token = page.next_page_token
            if not token:
                return


def connect_async(
    address: str | None,
    *,
    payment: str | None = None,
    inventory: str | None = None,
    shipping: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    tls: Tls | None = None,
    token: str | None = None,
) -> AsyncClient:
    """An `AsyncClient` (grpc.aio); call it from a running event loop, `async with` it.
    `tls` and `token` as for `connect`."""

    def dial(target: str) -> grpc.aio.Channel:
        credentials = credentials_for(target, tls, token)
        if credentials is None:
            return grpc.aio.insecure_channel(target, options=list(CHANNEL_OPTIONS))
        return grpc.aio.secure_channel(target, credentials, options=list(CHANNEL_OPTIONS))

    return AsyncClient._open(
        dial,
        {"orchestrator": address, "payment": payment, "inventory": inventory, "shipping": shipping},
        timeout,
    )
