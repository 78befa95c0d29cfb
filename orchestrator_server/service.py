"""OrchestratorService: place orders, and see and repair their sagas."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
from minisaga.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from minisaga.orchestrator.v1 import orchestrator_pb2 as pb
from minisaga.orchestrator.v1 import orchestrator_pb2_grpc

from orchestrator_server.saga.definition import SagaDefinition
from orchestrator_server.saga.engine import SagaEngine, SagaLimitReached
from orchestrator_server.saga.store import (
    BadPageToken,
    IdempotencyConflict,
    Page,
    SagaFilter,
    SagaRecord,
    SagaStatus,
)
from orchestrator_server.views import (
    definition_view,
    order_view,
    saga_events,
    saga_status,
    saga_view,
    status_from_proto,
)
from service_kit import errors, limits, validation
from service_kit.errors import Context, FieldViolation
from service_kit.faults import refuse_failure_switches

DOMAIN = "minisaga.orchestrator.v1"
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
SAGA_NOT_RESUMABLE = "SAGA_NOT_RESUMABLE"
SAGA_NOT_CANCELLABLE = "SAGA_NOT_CANCELLABLE"
DEADLINE_SHARE = 0.5
"""A new saga is refused when recording one takes longer than this share of the
time the caller has left: the rest is for the reply, on a busy machine."""


class OrchestratorService(orchestrator_pb2_grpc.OrchestratorServiceServicer):
    def __init__(
        self,
        engine: SagaEngine,
        place_order: SagaDefinition[pb.PlaceOrderRequest],
        inventory: inventory_pb2_grpc.InventoryServiceAsyncStub,
        *,
        allow_failure_switches: bool = False,
        max_watch_streams: int = limits.MAX_WATCH_STREAMS,
        place_order_max_wait: float = limits.PLACE_ORDER_MAX_WAIT_SECONDS,
    ) -> None:
        self.allow_failure_switches = allow_failure_switches
        self.max_watch_streams = max_watch_streams
        self.place_order_max_wait = place_order_max_wait
        self.watch_streams = 0
        """WatchSaga streams open now, at most max_watch_streams."""
        self.engine = engine
        self.place_order = place_order
        self.inventory = inventory
        self._known_products: set[str] = set()  # products are never deleted

    @errors.rpc_errors(DOMAIN)
    async def PlaceOrder(
        self, request: pb.PlaceOrderRequest, context: Context
    ) -> pb.PlaceOrderResponse:
        # place_order's newest version: a --saga may load a newer one than the built-in.
        final = await self._start(self.engine.definition(self.place_order.name), request, context)
        return pb.PlaceOrderResponse(
            order_id=final.business_key,
            saga_id=final.saga_id,
            status=saga_status(final.status),
            saga=self._view(final),
        )

    @errors.rpc_errors(DOMAIN)
    async def StartSaga(
        self, request: pb.StartSagaRequest, context: Context
    ) -> pb.StartSagaResponse:
        validation.require_valid(
            validation.check_id("saga_type", request.saga_type),
            validation.check_id("request_id", request.request_id, required=False),
        )
        try:
            definition = self.engine.definition(request.saga_type)
        except KeyError:
            raise errors.not_found(
                f"no saga type {request.saga_type!r} on this orchestrator",
                saga_type=request.saga_type,
            ) from None
        wanted = definition.input_type.DESCRIPTOR
        if not request.HasField("input") or not request.input.Is(wanted):
            got = ascii(request.input.type_url[:120]) if request.input.type_url else "nothing"
            raise errors.invalid_argument(
                FieldViolation(
                    "input",
                    f"must hold a {wanted.full_name} (type.googleapis.com/{wanted.full_name}), "
                    f"not {got}",
                )
            )
        saga_input = definition.input_type()
        if not request.input.Unpack(saga_input):
            raise errors.invalid_argument(FieldViolation("input", "does not parse"))
        if isinstance(saga_input, pb.PlaceOrderRequest):  # the same checks as PlaceOrder
            if saga_input.request_id and saga_input.request_id != request.request_id:
                raise errors.invalid_argument(
                    FieldViolation("input.request_id", "must be empty or the request_id")
                )
            saga_input.request_id = request.request_id
        final = await self._start(definition, saga_input, context, request.request_id)
        return pb.StartSagaResponse(
            saga_id=final.saga_id, status=saga_status(final.status), saga=self._view(final)
        )

    async def _start(
        self,
        definition: SagaDefinition[Any],
        saga_input: Any,
        context: Context,
        request_id: str = "",
    ) -> SagaRecord:
        """Starts a saga and waits (place_order_max_wait at most) for its end."""
        business_key = ""  # the saga id
        if isinstance(saga_input, pb.PlaceOrderRequest):
            await self._check_order(saga_input)
            request_id = saga_input.request_id
            business_key = f"ord_{uuid.uuid4().hex}"
        remaining = context.time_remaining()
        recording = self.engine.recording.seconds()
        if remaining is not None and recording > remaining * DEADLINE_SHARE:
            # It would likely be recorded after the caller gave up (and be found by a
            # resend): a prompt refusal costs nothing and tells the caller when to retry.
            raise errors.overloaded(
                f"new sagas take about {recording:.1f}s to be recorded here now, more than "
                f"{DEADLINE_SHARE:.0%} of the {remaining:.1f}s left before your deadline; "
                "nothing was done, try again later",
                limits.RETRY_AFTER_SECONDS,
                limit="deadline",
            )
        try:
            record, _ = await self.engine.start(
                definition,
                saga_input,
                business_key=business_key,
                request_id=request_id or None,
            )
        except IdempotencyConflict as conflict:
            raise errors.already_exists(
                errors.IDEMPOTENCY_KEY_REUSED,
                f"request_id {request_id!r} was used for another "
                f"{'order' if business_key else 'saga'} (saga {conflict.existing.saga_id})",
                saga_id=conflict.existing.saga_id,
            ) from conflict
        except SagaLimitReached as full:
            raise errors.overloaded(
                f"this orchestrator has {full.in_flight} sagas in flight "
                f"(--max-sagas-in-flight {full.limit}); no saga was started, try again later",
                limits.RETRY_AFTER_SECONDS,
                limit="max-sagas-in-flight",
            ) from full
        # With no deadline (grpcurl's default) or a long one, answer after
        # place_order_max_wait with the saga as it is.
        remaining = context.time_remaining()
        timeout = self.place_order_max_wait
        if remaining is not None:
            timeout = min(timeout, max(0.0, remaining - _reply_margin(remaining)))
        return await self.engine.wait(record.saga_id, timeout) or record

    async def _check_order(self, request: pb.PlaceOrderRequest) -> None:
        validation.require_valid(
            validation.check_id("request_id", request.request_id, required=False),
            validation.check_id("product_id", request.product_id),
            validation.check_quantity("quantity", request.quantity),
            validation.check_amount("amount", request.amount),
            validation.check_currency("currency", request.currency),
            validation.check_text("address", request.address, required=False),
        )
        refuse_failure_switches(
            self.allow_failure_switches,
            fail_payment=request.fail_payment,
            fail_inventory=request.fail_inventory,
            fail_shipping=request.fail_shipping,
        )
        await self._check_product_exists(request.product_id)

    async def _check_product_exists(self, product_id: str) -> None:
        """Refuses an unknown product before any money moves.

        Only a definite NOT_FOUND refuses the order: if Inventory is down the
        saga itself retries, and compensates if it must.
        """
        if product_id in self._known_products:
            return
        try:
            await self.inventory.GetStock(
                inventory_pb2.GetStockRequest(product_id=product_id), timeout=5.0
            )
        except grpc.aio.AioRpcError as error:
            if error.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                raise errors.invalid_argument(
                    FieldViolation("product_id", f"unknown product {product_id!r}")
                ) from error
            return
        self._known_products.add(product_id)

    @errors.rpc_errors(DOMAIN)
    async def GetSaga(self, request: pb.GetSagaRequest, context: Context) -> pb.GetSagaResponse:
        record = await self._load(request.saga_id)
        return pb.GetSagaResponse(saga=self._view(record))

    @errors.rpc_errors(DOMAIN)
    async def ListSagas(
        self, request: pb.ListSagasRequest, context: Context
    ) -> pb.ListSagasResponse:
        page_size = _page_size(request)
        if request.status not in pb.SagaStatus.values():
            raise errors.invalid_argument(FieldViolation("status", "unknown saga status"))
        where = _filter(request, status_from_proto(request.status))
        page = await self._list(where, page_size, request.page_token)
        return pb.ListSagasResponse(
            sagas=[self._view(record) for record in page.sagas],
            next_page_token=page.next_page_token,
        )

    @errors.rpc_errors(DOMAIN)
    async def CountSagas(
        self, request: pb.CountSagasRequest, context: Context
    ) -> pb.CountSagasResponse:
        counts = await self.engine.store.count(_filter(request, None))
        return pb.CountSagasResponse(
            counts=[
                pb.StatusCount(status=saga_status(status), count=counts.get(status, 0))
                for status in SagaStatus
            ],
            total=sum(counts.values()),
        )

    @errors.rpc_errors(DOMAIN)
    async def GetSagaDefinition(
        self, request: pb.GetSagaDefinitionRequest, context: Context
    ) -> pb.GetSagaDefinitionResponse:
        validation.require_valid(validation.check_id("saga_type", request.saga_type))
        try:
            definition = self.engine.definition(request.saga_type)
        except KeyError:
            raise errors.not_found(
                f"no saga type {request.saga_type!r}", saga_type=request.saga_type
            ) from None
        return pb.GetSagaDefinitionResponse(definition=definition_view(definition))

    @errors.rpc_errors(DOMAIN)
    async def GetOrder(self, request: pb.GetOrderRequest, context: Context) -> pb.GetOrderResponse:
        validation.require_valid(validation.check_id("order_id", request.order_id))
        record = await self.engine.store.load_by_business_key(request.order_id)
        if record is None:
            raise errors.not_found(f"no order {request.order_id}", order_id=request.order_id)
        order = pb.PlaceOrderRequest.FromString(record.input)
        return pb.GetOrderResponse(order=order_view(record, order), saga=self._view(record))

    @errors.rpc_errors(DOMAIN)
    async def ResumeSaga(
        self, request: pb.ResumeSagaRequest, context: Context
    ) -> pb.ResumeSagaResponse:
        record = await self._load(request.saga_id)
        if record.status in (SagaStatus.COMPLETED, SagaStatus.COMPENSATED):
            raise errors.failed_precondition(
                SAGA_NOT_RESUMABLE,
                f"saga {record.saga_id} is {record.status.value}; only a FAILED saga is resumed",
                status=record.status.value,
            )
        resumed = await self.engine.resume(record.saga_id) or record
        return pb.ResumeSagaResponse(saga=self._view(resumed))

    @errors.rpc_errors(DOMAIN)
    async def ResumeSagas(
        self, request: pb.ResumeSagasRequest, context: Context
    ) -> pb.ResumeSagasResponse:
        page_size = _page_size(request)
        page = await self._list(_filter(request, SagaStatus.FAILED), page_size, request.page_token)
        resumed = []
        for record in page.sagas:
            after = await self.engine.resume(record.saga_id)
            if after is not None and after.status is not SagaStatus.FAILED:
                resumed.append(record.saga_id)
        return pb.ResumeSagasResponse(saga_ids=resumed, next_page_token=page.next_page_token)

    @errors.rpc_errors(DOMAIN)
    async def CancelSaga(
        self, request: pb.CancelSagaRequest, context: Context
    ) -> pb.CancelSagaResponse:
        record = await self._load(request.saga_id)
        if record.status in (SagaStatus.COMPLETED, SagaStatus.FAILED):
            hint = "use ResumeSaga" if record.status is SagaStatus.FAILED else "it is done"
            raise errors.failed_precondition(
                SAGA_NOT_CANCELLABLE,
                f"saga {record.saga_id} is {record.status.value}; {hint}",
                status=record.status.value,
            )
        if record.status is SagaStatus.RUNNING:
            record = await self.engine.cancel(record.saga_id) or record
        return pb.CancelSagaResponse(saga=self._view(record))

    @errors.stream_errors(DOMAIN)
    async def WatchSaga(
        self, request: pb.WatchSagaRequest, context: Context
    ) -> AsyncIterator[pb.WatchSagaResponse]:
        if self.watch_streams >= self.max_watch_streams:
            raise errors.overloaded(
                f"{self.watch_streams} WatchSaga streams are open "
                f"(--max-watch-streams {self.max_watch_streams}); try again later",
                limits.RETRY_AFTER_SECONDS,
                limit="max-watch-streams",
            )
        self.watch_streams += 1
        try:
            record = await self._load(request.saga_id)
            with self.engine.changes.watch(record.saga_id) as changed:
                async for response in self._follow(record, changed):
                    yield response
        finally:
            self.watch_streams -= 1

    async def _follow(
        self, record: SagaRecord, changed: asyncio.Event
    ) -> AsyncIterator[pb.WatchSagaResponse]:
        sent: set[Any] = set()
        sequence = 0
        while True:
            view = self._view(record)
            for key, event in saga_events(record):
                if key in sent:
                    continue
                sent.add(key)
                sequence += 1
                event.sequence = sequence
                yield pb.WatchSagaResponse(event=event, saga=view)
            if record.status.terminal:
                return
            changed.clear()
            fresh = await self.engine.store.load(record.saga_id)
            if fresh is not None and _progress(fresh) == _progress(record):
                # Nothing new yet. Listen, and poll too: another process may drive it.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), 1.0)
                fresh = await self.engine.store.load(record.saga_id)
            record = fresh or record

    async def _load(self, saga_id: str) -> SagaRecord:
        validation.require_valid(validation.check_saga_id("saga_id", saga_id))
        record = await self.engine.store.load(saga_id)
        if record is None:
            raise errors.not_found(f"no saga {saga_id}", saga_id=saga_id)
        return record

    async def _list(self, where: SagaFilter, page_size: int, page_token: str) -> Page:
        try:
            return await self.engine.store.list(where, page_size, page_token)
        except BadPageToken as error:
            raise errors.invalid_argument(FieldViolation("page_token", str(error))) from error

    def _view(self, record: SagaRecord) -> pb.Saga:
        try:
            definition = self.engine.definition(record.saga_type, record.saga_version)
        except KeyError:
            definition = None  # not driven here: not_driven_reason says why
        return saga_view(record, definition, self.engine.not_driven_reason(record))


def _page_size(request: pb.ListSagasRequest | pb.ResumeSagasRequest) -> int:
    """The page size asked for: 0 means the default, and it is capped."""
    if request.page_size < 0:
        raise errors.invalid_argument(FieldViolation("page_size", "must not be negative"))
    return min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def _filter(
    request: pb.ListSagasRequest | pb.CountSagasRequest | pb.ResumeSagasRequest,
    status: SagaStatus | None,
) -> SagaFilter:
    """The store's filter for a ListSagas, CountSagas or ResumeSagas request;
    refuses bad fields."""
    validation.require_valid(
        validation.check_id("saga_type", request.saga_type, required=False),
        validation.check_id("order_id", request.order_id, required=False),
        validation.check_id("request_id", request.request_id, required=False),
        validation.check_timestamp(
            "created_from", request.created_from.seconds, request.created_from.nanos
        ),
        validation.check_timestamp(
            "created_before", request.created_before.seconds, request.created_before.nanos
        ),
    )
    created_from = (
        request.created_from.ToMilliseconds() if request.HasField("created_from") else None
    )
    created_before = (
        request.created_before.ToMilliseconds() if request.HasField("created_before") else None
    )
    if created_from is not None and created_before is not None and created_before < created_from:
        raise errors.invalid_argument(
            FieldViolation("created_before", "must not come before created_from")
        )
    return SagaFilter(
        status=status,
        saga_type=request.saga_type,
        business_key=request.order_id,
        request_id=request.request_id,
        created_from_ms=created_from,
        created_before_ms=created_before,
    )


def _progress(record: SagaRecord) -> tuple[object, ...]:
    """What a watcher has seen of a saga: changes whenever an event is due."""
    finished = sum(1 for a in record.attempts if a.code is not None)
    return (record.status, len(record.attempts), finished, len(record.failures), record.ended_at_ms)


def _reply_margin(remaining: float) -> float:
    """How long before the caller's deadline PlaceOrder answers with the saga as
    it is: a fifth of the time left, between 50 ms and 1 s, so that the reply
    still reaches a caller on a busy machine before its deadline does."""
    return min(1.0, max(0.05, remaining / 5))
