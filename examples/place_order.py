"""Place an order with the generated Python client and print what its saga did.

.venv/bin/python -m examples.place_order                   # success
.venv/bin/python -m examples.place_order --fail-inventory  # refund
.venv/bin/python -m examples.place_order --fail-payment
.venv/bin/python -m examples.place_order --fail-shipping   # release, refund
"""

from __future__ import annotations

import argparse
import os
import sys

import grpc
from minisaga.orchestrator.v1 import orchestrator_pb2 as pb
from minisaga.orchestrator.v1 import orchestrator_pb2_grpc


def place_order(channel: grpc.Channel, args: argparse.Namespace) -> pb.PlaceOrderResponse:
    stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
    request = pb.PlaceOrderRequest(
        product_id=args.product,
        quantity=args.quantity,
        amount=args.amount,
        currency="JPY",
        address=args.address,
        fail_payment=args.fail_payment,
        fail_inventory=args.fail_inventory,
        fail_shipping=args.fail_shipping,
    )
    response: pb.PlaceOrderResponse = stub.PlaceOrder(request, timeout=30)
    return response


def describe(response: pb.PlaceOrderResponse) -> str:
    lines = [
        f"order {response.order_id}  saga {response.saga_id}",
        f"status {pb.SagaStatus.Name(response.status)}",
    ]
    for step in response.saga.steps:
        name = ("undo " if step.phase == pb.STEP_PHASE_COMPENSATION else "") + step.step
        codes = ", ".join(a.code for a in step.attempts) or "not run"
        lines.append(f"  {name:<13} {codes}")
    cause = response.saga.compensation_cause
    if response.saga.HasField("compensation_cause"):
        lines.append(f"compensated because {cause.step} ended {cause.code} {cause.reason}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--orchestrator",
        default=os.environ.get("MINISAGA_ORCHESTRATOR_ADDRESS", "127.0.0.1:7001"),
        help="host:port (env MINISAGA_ORCHESTRATOR_ADDRESS, as for the minisaga command)",
    )
    parser.add_argument("--product", default="apple")
    parser.add_argument("--quantity", type=int, default=2)
    parser.add_argument("--amount", type=int, default=1200, help="yen")
    parser.add_argument("--ship-to", dest="address", default="1-2-3 Shibuya, Tokyo")
    parser.add_argument("--fail-payment", action="store_true")
    parser.add_argument("--fail-inventory", action="store_true")
    parser.add_argument("--fail-shipping", action="store_true")
    args = parser.parse_args(argv)
    with grpc.insecure_channel(args.orchestrator) as channel:
        try:
            response = place_order(channel, args)
        except grpc.RpcError as error:
            print(
                f"PlaceOrder failed: {error.code().name}: {error.details()}",
                file=sys.stderr,
            )
            return 1
    print(describe(response))
    return 0


if __name__ == "__main__":
    sys.exit(main())
