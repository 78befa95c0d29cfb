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
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Generic, TypeVar

import grpc
from minisaga.inventory.v1 import inventory_pb2 as inventory
from minisaga.inventory.v1 import inventory_pb2_grpc
from minisaga.orchestrator.v1 import orchestrator_pb2 as pb
from minisaga.orchestrator.v1 import orchestrator_pb2_grpc
from minisaga.payment.v1 import payment_pb2 as payment
from minisaga.payment.v1 import payment_pb2_grpc
from minisaga.shipping.v1 import shipping_pb2 as shipping
from minisaga.shipping.v1 import shipping_pb2_grpc

from minisaga_client.errors import from_grpc_error

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

ReqT = TypeVar("ReqT")
RespT = TypeVar("RespT")
StubT = TypeVar("StubT")


@dataclass(frozen=True)
class _Endpoint(Generic[StubT]):
    service: str
    address: str
    stub: StubT


def _endpoint(
    service: str, stub: StubT | None, addresses: Mapping[str, str]
) -> _Endpoint[StubT] | None:
    if stub is None:
        return None
    return _Endpoint(service, addresses.get(service, ""), stub)


def _require(endpoint: _Endpoint[StubT] | None, service: str) -> _Endpoint[StubT]:
    if endpoint is None:
        raise ValueError(
            f"this client has no {service} address: connect(..., {service}='host:port')"
        )
    return endpoint


def new_request_id() -> str:
    """A fresh PlaceOrder idempotency key."""
    return uuid.uuid4().hex


def _place_order_request(
    product_id: str,
    quantity: int,
    amount: int,
    currency: str,
    address: str,
    request_id: str | None,
    fail_payment: bool,
    fail_inventory: bool,
    fail_shipping: bool,
) -> pb.PlaceOrderRequest:
    return pb.PlaceOrderRequest(
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


def _status(status: pb.SagaStatus.ValueType | None) -> pb.SagaStatus.ValueType:
    return pb.SAGA_STATUS_UNSPECIFIED if status is None else status


class Client:
    """A synchronous client of the orchestrator and, when given their channels, the participants.

    Build one with `connect(...)`; or pass channels you own (the client then
    does not close them), such as a `grpc_testing` channel in a test.
    """

    def __init__(
        self,
        orchestrator: grpc.Channel | None = None,
        *,
        payment: grpc.Channel | None = None,
        inventory: grpc.Channel | None = None,
        shipping: grpc.Channel | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        addresses: Mapping[str, str] | None = None,
    ) -> None:
        addresses = addresses or {}
        self.timeout = timeout
        """Seconds: the deadline of each unary call that sets none itself."""
        self._orchestrator = _endpoint(
            "orchestrator",
            None
            if orchestrator is None
            else orchestrator_pb2_grpc.OrchestratorServiceStub(orchestrator),
            addresses,
        )
        self._payment = _endpoint(
            "payment",
            None if payment is None else payment_pb2_grpc.PaymentServiceStub(payment),
            addresses,
        )
        self._inventory = _endpoint(
            "inventory",
            None if inventory is None else inventory_pb2_grpc.InventoryServiceStub(inventory),
            addresses,
        )
        self._shipping = _endpoint(
            "shipping",
            None if shipping is None else shipping_pb2_grpc.ShippingServiceStub(shipping),
            addresses,
        )
        self._owned: list[grpc.Channel] = []

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

    def _unary(
        self,
        endpoint: _Endpoint[Any],
        method: grpc.UnaryUnaryMultiCallable[ReqT, RespT],
        request: ReqT,
        timeout: float | None,
    ) -> RespT:
        try:
            return method(request, timeout=self.timeout if timeout is None else timeout)
        except grpc.RpcError as error:
            raise from_grpc_error(
                error, service=endpoint.service, address=endpoint.address
            ) from error

    @property
    def _orch(self) -> _Endpoint[orchestrator_pb2_grpc.OrchestratorServiceStub]:
        return _require(self._orchestrator, "orchestrator")

    @property
    def _pay(self) -> _Endpoint[payment_pb2_grpc.PaymentServiceStub]:
        return _require(self._payment, "payment")

    @property
    def _inv(self) -> _Endpoint[inventory_pb2_grpc.InventoryServiceStub]:
        return _require(self._inventory, "inventory")

    @property
    def _ship(self) -> _Endpoint[shipping_pb2_grpc.ShippingServiceStub]:
        return _require(self._shipping, "shipping")

    # --- orchestrator ---------------------------------------------------

    def place_order(
        self,
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
    ) -> pb.PlaceOrderResponse:
        """Places an order and waits for its saga to end, or for the deadline.

        Without `request_id` a fresh one is sent, so a retry never starts a
        second saga. If the deadline comes first the saga is returned as it
        is (RUNNING) and goes on; `watch_saga` follows it.
        """
        request = _place_order_request(
            product_id,
            quantity,
            amount,
            currency,
            address,
            request_id,
            fail_payment,
            fail_inventory,
            fail_shipping,
        )
        e = self._orch
        return self._unary(e, e.stub.PlaceOrder, request, timeout)

    def get_saga(self, saga_id: str, *, timeout: float | None = None) -> pb.Saga:
        """The saga with its whole execution log."""
        e = self._orch
        return self._unary(e, e.stub.GetSaga, pb.GetSagaRequest(saga_id=saga_id), timeout).saga

    def list_sagas(
        self,
        *,
        status: pb.SagaStatus.ValueType | None = None,
        page_size: int = 0,
        page_token: str = "",
        timeout: float | None = None,
    ) -> pb.ListSagasResponse:
        """One page of sagas, newest first; pass `next_page_token` back for the next."""
        request = pb.ListSagasRequest(
            status=_status(status), page_size=page_size, page_token=page_token
        )
        e = self._orch
        return self._unary(e, e.stub.ListSagas, request, timeout)

    def iter_sagas(
        self,
        *,
        status: pb.SagaStatus.ValueType | None = None,
        page_size: int = 0,
        timeout: float | None = None,
    ) -> Iterator[pb.Saga]:
        """Every saga, newest first, page after page (each page one call)."""
        token = ""
        while True:
            page = self.list_sagas(
                status=status, page_size=page_size, page_token=token, timeout=timeout
            )
            yield from page.sagas
            token = page.next_page_token
            if not token:
                return

    def watch_saga(
        self, saga_id: str, *, timeout: float | None = None
    ) -> Iterator[pb.WatchSagaResponse]:
        """The saga's events as they happen, until it ends (no deadline unless `timeout`)."""
        e = self._orch  # checked now; the call starts with the first event asked for
        request = pb.WatchSagaRequest(saga_id=saga_id)
        return self._stream(e, lambda: e.stub.WatchSaga(request, timeout=timeout))

    @staticmethod
    def _stream(
        endpoint: _Endpoint[Any], start: Callable[[], grpc.CallIterator[RespT]]
    ) -> Iterator[RespT]:
        call = start()
        try:
            yield from call
        except grpc.RpcError as error:
            raise from_grpc_error(
                error, service=endpoint.service, address=endpoint.address
            ) from error
        finally:
            # A caller that stops early ends the stream. (grpc-stubs leaves
            # RpcContext.cancel untyped, hence the annotated alias.)
            cancel: Callable[[], object] = call.cancel
            cancel()

    def get_order(self, order_id: str, *, timeout: float | None = None) -> pb.GetOrderResponse:
        """The order and its saga."""
        e = self._orch
        return self._unary(e, e.stub.GetOrder, pb.GetOrderRequest(order_id=order_id), timeout)

    def resume_saga(self, saga_id: str, *, timeout: float | None = None) -> pb.Saga:
        """Retries the failed compensations of a FAILED saga; they run in the background."""
        e = self._orch
        request = pb.ResumeSagaRequest(saga_id=saga_id)
        return self._unary(e, e.stub.ResumeSaga, request, timeout).saga

    def cancel_saga(self, saga_id: str, *, timeout: float | None = None) -> pb.Saga:
        """Stops a running saga; it compensates what it did, in the background."""
        e = self._orch
        request = pb.CancelSagaRequest(saga_id=saga_id)
        return self._unary(e, e.stub.CancelSaga, request, timeout).saga

    # --- payment --------------------------------------------------------

    def charge(
        self,
        *,
        saga_id: str,
        order_id: str,
        amount: int,
        currency: str = "",
        fail: bool = False,
        timeout: float | None = None,
    ) -> payment.ChargeResponse:
        request = payment.ChargeRequest(
            saga_id=saga_id, order_id=order_id, amount=amount, currency=currency, fail=fail
        )
        e = self._pay
        return self._unary(e, e.stub.Charge, request, timeout)

    def refund(
        self, saga_id: str, *, reason: str = "", timeout: float | None = None
    ) -> payment.RefundResponse:
        e = self._pay
        request = payment.RefundRequest(saga_id=saga_id, reason=reason)
        return self._unary(e, e.stub.Refund, request, timeout)

    def get_payment(self, saga_id: str, *, timeout: float | None = None) -> payment.Payment:
        e = self._pay
        request = payment.GetPaymentRequest(saga_id=saga_id)
        return self._unary(e, e.stub.GetPayment, request, timeout).payment

    # --- inventory ------------------------------------------------------

    def reserve(
        self,
        *,
        saga_id: str,
        product_id: str,
        quantity: int,
        fail: bool = False,
        timeout: float | None = None,
    ) -> inventory.ReserveResponse:
        request = inventory.ReserveRequest(
            saga_id=saga_id, product_id=product_id, quantity=quantity, fail=fail
        )
        e = self._inv
        return self._unary(e, e.stub.Reserve, request, timeout)

    def release(self, saga_id: str, *, timeout: float | None = None) -> inventory.ReleaseResponse:
        e = self._inv
        return self._unary(e, e.stub.Release, inventory.ReleaseRequest(saga_id=saga_id), timeout)

    def get_reservation(
        self, saga_id: str, *, timeout: float | None = None
    ) -> inventory.Reservation:
        e = self._inv
        request = inventory.GetReservationRequest(saga_id=saga_id)
        return self._unary(e, e.stub.GetReservation, request, timeout).reservation

    def set_stock(
        self, product_id: str, quantity: int, *, timeout: float | None = None
    ) -> inventory.Stock:
        e = self._inv
        request = inventory.SetStockRequest(product_id=product_id, quantity=quantity)
        return self._unary(e, e.stub.SetStock, request, timeout).stock

    def get_stock(self, product_id: str, *, timeout: float | None = None) -> inventory.Stock:
        e = self._inv
        request = inventory.GetStockRequest(product_id=product_id)
        return self._unary(e, e.stub.GetStock, request, timeout).stock

    # --- shipping -------------------------------------------------------

    def create_shipment(
        self,
        *,
        saga_id: str,
        order_id: str,
        address: str,
        fail: bool = False,
        timeout: float | None = None,
    ) -> shipping.CreateShipmentResponse:
        request = shipping.CreateShipmentRequest(
            saga_id=saga_id, order_id=order_id, address=address, fail=fail
        )
        e = self._ship
        return self._unary(e, e.stub.CreateShipment, request, timeout)

    def cancel_shipment(
        self, saga_id: str, *, timeout: float | None = None
    ) -> shipping.CancelShipmentResponse:
        e = self._ship
        request = shipping.CancelShipmentRequest(saga_id=saga_id)
        return self._unary(e, e.stub.CancelShipment, request, timeout)

    def get_shipment(self, saga_id: str, *, timeout: float | None = None) -> shipping.Shipment:
        e = self._ship
        request = shipping.GetShipmentRequest(saga_id=saga_id)
        return self._unary(e, e.stub.GetShipment, request, timeout).shipment


def connect(
    address: str | None,
    *,
    payment: str | None = None,
    inventory: str | None = None,
    shipping: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> Client:
    """A `Client` of the orchestrator at `address` and of the participants given.

    Channels connect lazily: an unreachable service is an `Unavailable` on
    the first call, after gRPC's retries.
    """
    addresses = {
        name: target
        for name, target in {
            "orchestrator": address,
            "payment": payment,
            "inventory": inventory,
            "shipping": shipping,
        }.items()
        if target is not None
    }
    channels = {
        name: grpc.insecure_channel(target, options=list(CHANNEL_OPTIONS))
        for name, target in addresses.items()
    }
    client = Client(
        channels.get("orchestrator"),
        payment=channels.get("payment"),
        inventory=channels.get("inventory"),
        shipping=channels.get("shipping"),
        timeout=timeout,
        addresses=addresses,
    )
    client._owned.extend(channels.values())
    return client


class AsyncClient:
    """The asyncio (grpc.aio) twin of `Client`: the same methods, awaited."""

    def __init__(
        self,
        orchestrator: grpc.aio.Channel | None = None,
        *,
        payment: grpc.aio.Channel | None = None,
        inventory: grpc.aio.Channel | None = None,
        shipping: grpc.aio.Channel | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        addresses: Mapping[str, str] | None = None,
    ) -> None:
        addresses = addresses or {}
        self.timeout = timeout
        """Seconds: the deadline of each unary call that sets none itself."""
        self._orchestrator = _endpoint(
            "orchestrator",
            None
            if orchestrator is None
            else orchestrator_pb2_grpc.OrchestratorServiceStub(orchestrator),
            addresses,
        )
        self._payment = _endpoint(
            "payment",
            None if payment is None else payment_pb2_grpc.PaymentServiceStub(payment),
            addresses,
        )
        self._inventory = _endpoint(
            "inventory",
            None if inventory is None else inventory_pb2_grpc.InventoryServiceStub(inventory),
            addresses,
        )
        self._shipping = _endpoint(
            "shipping",
            None if shipping is None else shipping_pb2_grpc.ShippingServiceStub(shipping),
            addresses,
        )
        self._owned: list[grpc.aio.Channel] = []

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

    async def _unary(
        self,
        endpoint: _Endpoint[Any],
        method: grpc.aio.UnaryUnaryMultiCallable[ReqT, RespT],
        request: ReqT,
        timeout: float | None,
    ) -> RespT:
        try:
            return await method(request, timeout=self.timeout if timeout is None else timeout)
        except grpc.RpcError as error:
            raise from_grpc_error(
                error, service=endpoint.service, address=endpoint.address
            ) from error

    @property
    def _orch(self) -> _Endpoint[orchestrator_pb2_grpc.OrchestratorServiceAsyncStub]:
        return _require(self._orchestrator, "orchestrator")

    @property
    def _pay(self) -> _Endpoint[payment_pb2_grpc.PaymentServiceAsyncStub]:
        return _require(self._payment, "payment")

    @property
    def _inv(self) -> _Endpoint[inventory_pb2_grpc.InventoryServiceAsyncStub]:
        return _require(self._inventory, "inventory")

    @property
    def _ship(self) -> _Endpoint[shipping_pb2_grpc.ShippingServiceAsyncStub]:
        return _require(self._shipping, "shipping")

    # --- orchestrator ---------------------------------------------------

    async def place_order(
        self,
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
    ) -> pb.PlaceOrderResponse:
        """See `Client.place_order`."""
        request = _place_order_request(
            product_id,
            quantity,
            amount,
            currency,
            address,
            request_id,
            fail_payment,
            fail_inventory,
            fail_shipping,
        )
        e = self._orch
        return await self._unary(e, e.stub.PlaceOrder, request, timeout)

    async def get_saga(self, saga_id: str, *, timeout: float | None = None) -> pb.Saga:
        e = self._orch
        request = pb.GetSagaRequest(saga_id=saga_id)
        return (await self._unary(e, e.stub.GetSaga, request, timeout)).saga

    async def list_sagas(
        self,
        *,
        status: pb.SagaStatus.ValueType | None = None,
        page_size: int = 0,
        page_token: str = "",
        timeout: float | None = None,
    ) -> pb.ListSagasResponse:
        request = pb.ListSagasRequest(
            status=_status(status), page_size=page_size, page_token=page_token
        )
        e = self._orch
        return await self._unary(e, e.stub.ListSagas, request, timeout)

    async def iter_sagas(
        self,
        *,
        status: pb.SagaStatus.ValueType | None = None,
        page_size: int = 0,
        timeout: float | None = None,
    ) -> AsyncIterator[pb.Saga]:
        """Every saga, newest first, page after page."""
        token = ""
        while True:
            page = await self.list_sagas(
                status=status, page_size=page_size, page_token=token, timeout=timeout
            )
            for saga in page.sagas:
                yield saga
            token = page.next_page_token
            if not token:
                return

    async def watch_saga(
        self, saga_id: str, *, timeout: float | None = None
    ) -> AsyncIterator[pb.WatchSagaResponse]:
        """The saga's events as they happen, until it ends (no deadline unless `timeout`)."""
        e = self._orch
        call = e.stub.WatchSaga(pb.WatchSagaRequest(saga_id=saga_id), timeout=timeout)
        try:
            async for response in call:
                yield response
        except grpc.RpcError as error:
            raise from_grpc_error(error, service=e.service, address=e.address) from error
        finally:
            call.cancel()

    async def get_order(
        self, order_id: str, *, timeout: float | None = None
    ) -> pb.GetOrderResponse:
        e = self._orch
        request = pb.GetOrderRequest(order_id=order_id)
        return await self._unary(e, e.stub.GetOrder, request, timeout)

    async def resume_saga(self, saga_id: str, *, timeout: float | None = None) -> pb.Saga:
        e = self._orch
        request = pb.ResumeSagaRequest(saga_id=saga_id)
        return (await self._unary(e, e.stub.ResumeSaga, request, timeout)).saga

    async def cancel_saga(self, saga_id: str, *, timeout: float | None = None) -> pb.Saga:
        e = self._orch
        request = pb.CancelSagaRequest(saga_id=saga_id)
        return (await self._unary(e, e.stub.CancelSaga, request, timeout)).saga

    # --- payment --------------------------------------------------------

    async def charge(
        self,
        *,
        saga_id: str,
        order_id: str,
        amount: int,
        currency: str = "",
        fail: bool = False,
        timeout: float | None = None,
    ) -> payment.ChargeResponse:
        request = payment.ChargeRequest(
            saga_id=saga_id, order_id=order_id, amount=amount, currency=currency, fail=fail
        )
        e = self._pay
        return await self._unary(e, e.stub.Charge, request, timeout)

    async def refund(
        self, saga_id: str, *, reason: str = "", timeout: float | None = None
    ) -> payment.RefundResponse:
        e = self._pay
        request = payment.RefundRequest(saga_id=saga_id, reason=reason)
        return await self._unary(e, e.stub.Refund, request, timeout)

    async def get_payment(self, saga_id: str, *, timeout: float | None = None) -> payment.Payment:
        e = self._pay
        request = payment.GetPaymentRequest(saga_id=saga_id)
        return (await self._unary(e, e.stub.GetPayment, request, timeout)).payment

    # --- inventory ------------------------------------------------------

    async def reserve(
        self,
        *,
        saga_id: str,
        product_id: str,
        quantity: int,
        fail: bool = False,
        timeout: float | None = None,
    ) -> inventory.ReserveResponse:
        request = inventory.ReserveRequest(
            saga_id=saga_id, product_id=product_id, quantity=quantity, fail=fail
        )
        e = self._inv
        return await self._unary(e, e.stub.Reserve, request, timeout)

    async def release(
        self, saga_id: str, *, timeout: float | None = None
    ) -> inventory.ReleaseResponse:
        e = self._inv
        request = inventory.ReleaseRequest(saga_id=saga_id)
        return await self._unary(e, e.stub.Release, request, timeout)

    async def get_reservation(
        self, saga_id: str, *, timeout: float | None = None
    ) -> inventory.Reservation:
        e = self._inv
        request = inventory.GetReservationRequest(saga_id=saga_id)
        return (await self._unary(e, e.stub.GetReservation, request, timeout)).reservation

    async def set_stock(
        self, product_id: str, quantity: int, *, timeout: float | None = None
    ) -> inventory.Stock:
        e = self._inv
        request = inventory.SetStockRequest(product_id=product_id, quantity=quantity)
        return (await self._unary(e, e.stub.SetStock, request, timeout)).stock

    async def get_stock(self, product_id: str, *, timeout: float | None = None) -> inventory.Stock:
        e = self._inv
        request = inventory.GetStockRequest(product_id=product_id)
        return (await self._unary(e, e.stub.GetStock, request, timeout)).stock

    # --- shipping -------------------------------------------------------

    async def create_shipment(
        self,
        *,
        saga_id: str,
        order_id: str,
        address: str,
        fail: bool = False,
        timeout: float | None = None,
    ) -> shipping.CreateShipmentResponse:
        request = shipping.CreateShipmentRequest(
            saga_id=saga_id, order_id=order_id, address=address, fail=fail
        )
        e = self._ship
        return await self._unary(e, e.stub.CreateShipment, request, timeout)

    async def cancel_shipment(
        self, saga_id: str, *, timeout: float | None = None
    ) -> shipping.CancelShipmentResponse:
        e = self._ship
        request = shipping.CancelShipmentRequest(saga_id=saga_id)
        return await self._unary(e, e.stub.CancelShipment, request, timeout)

    async def get_shipment(
        self, saga_id: str, *, timeout: float | None = None
    ) -> shipping.Shipment:
        e = self._ship
        request = shipping.GetShipmentRequest(saga_id=saga_id)
        return (await self._unary(e, e.stub.GetShipment, request, timeout)).shipment


def connect_async(
    address: str | None,
    *,
    payment: str | None = None,
    inventory: str | None = None,
    shipping: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> AsyncClient:
    """An `AsyncClient` (grpc.aio); call it from a running event loop, `async with` it."""
    addresses = {
        name: target
        for name, target in {
            "orchestrator": address,
            "payment": payment,
            "inventory": inventory,
            "shipping": shipping,
        }.items()
        if target is not None
    }
    channels = {
        name: grpc.aio.insecure_channel(target, options=list(CHANNEL_OPTIONS))
        for name, target in addresses.items()
    }
    client = AsyncClient(
        channels.get("orchestrator"),
        payment=channels.get("payment"),
        inventory=channels.get("inventory"),
        shipping=channels.get("shipping"),
        timeout=timeout,
        addresses=addresses,
    )
    client._owned.extend(channels.values())
    return client
