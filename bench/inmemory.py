"""python -m bench.inmemory: the simplest orchestrator that could work, as a baseline.

The same OrchestratorService contract (PlaceOrder, and GetSaga for the
benchmark's check) over the same three participants, written as most teams
would write it by hand: plain grpc.aio, the steps in sequence, on a failure
the finished steps undone in reverse. Nothing is written down, nothing is
retried, nothing survives a crash: a saga cut short by a SIGKILL leaves its
money charged. What minisaga costs over this is the price of not losing it.

It is the benchmark's, not the product's: it keeps every saga's status in a
dict for the whole run and answers no other RPC.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import uuid
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]
from minisaga.inventory.v1 import inventory_pb2_grpc
from minisaga.orchestrator.v1 import orchestrator_pb2 as pb
from minisaga.orchestrator.v1 import orchestrator_pb2_grpc
from minisaga.payment.v1 import payment_pb2_grpc
from minisaga.shipping.v1 import shipping_pb2_grpc

from bench.by_hand import Order, Participants, run_by_hand

Context = grpc.aio.ServicerContext[Any, Any]
CALL_TIMEOUT = 30.0


class InMemoryOrchestrator(orchestrator_pb2_grpc.OrchestratorServiceServicer):
    def __init__(self, channels: dict[str, grpc.aio.Channel]) -> None:
        self.participants = Participants(
            payment_pb2_grpc.PaymentServiceStub(channels["payment"]),
            inventory_pb2_grpc.InventoryServiceStub(channels["inventory"]),
            shipping_pb2_grpc.ShippingServiceStub(channels["shipping"]),
        )
        self.sagas: dict[str, pb.Saga] = {}

    async def PlaceOrder(
        self, request: pb.PlaceOrderRequest, context: Context
    ) -> pb.PlaceOrderResponse:
        order = Order(
            saga_id=str(uuid.uuid4()),
            order_id=f"ord_{uuid.uuid4().hex}",
            product_id=request.product_id,
            quantity=request.quantity,
            amount=request.amount,
            currency=request.currency,
            address=request.address,
            fail_payment=request.fail_payment,
            fail_inventory=request.fail_inventory,
            fail_shipping=request.fail_shipping,
        )
        saga = pb.Saga(
            saga_id=order.saga_id,
            saga_type="place_order",
            order_id=order.order_id,
            status=pb.SAGA_STATUS_RUNNING,
        )
        self.sagas[order.saga_id] = saga
        outcome = await run_by_hand(self.participants, order, CALL_TIMEOUT)
        saga.status = pb.SagaStatus.Value(f"SAGA_STATUS_{outcome.status}")
        return pb.PlaceOrderResponse(
            order_id=order.order_id, saga_id=order.saga_id, status=saga.status
        )

    async def GetSaga(self, request: pb.GetSagaRequest, context: Context) -> pb.GetSagaResponse:
        saga = self.sagas.get(request.saga_id)
        if saga is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no saga {request.saga_id}")
        return pb.GetSagaResponse(saga=saga)


async def serve(listen: str, participants: dict[str, str]) -> None:
    channels = {name: grpc.aio.insecure_channel(address) for name, address in participants.items()}
    server = grpc.aio.server()
    # The base class answers every other RPC UNIMPLEMENTED, as wanted here.
    servicer = InMemoryOrchestrator(channels)  # type: ignore[abstract]
    orchestrator_pb2_grpc.add_OrchestratorServiceServicer_to_server(servicer, server)
    health_servicer = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port(listen)
    await server.start()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    host = listen.rsplit(":", 1)[0]
    # bench.services reads the address from this line.
    print(f"in-memory orchestrator serving OrchestratorService on {host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop(1)
    for channel in channels.values():
        await channel.close(None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.inmemory", description=__doc__)
    parser.add_argument("--listen", default="127.0.0.1:0")
    for name in ("payment", "inventory", "shipping"):
        parser.add_argument(f"--{name}", required=True, help=f"{name} service address")
    args = parser.parse_args(argv)
    participants = {name: getattr(args, name) for name in ("payment", "inventory", "shipping")}
    asyncio.run(serve(args.listen, participants))
    return 0


if __name__ == "__main__":
    sys.exit(main())
