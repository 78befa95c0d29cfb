"""Place an order with the asyncio client, replay its saga's events, read the payment it left.

.venv/bin/python -m examples.client_async                   # success
.venv/bin/python -m examples.client_async --fail-shipping   # release, then refund
.venv/bin/python -m examples.client_async --quantity 0      # refused, naming the field
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from minisaga.orchestrator.v1 import orchestrator_pb2 as pb
from minisaga.payment.v1 import payment_pb2

from minisaga_client import InvalidArgument, MinisagaError, NotFound, connect_async


async def run(args: argparse.Namespace) -> int:
    async with connect_async(args.orchestrator, payment=args.payment, timeout=10) as client:
        try:
            placed = await client.place_order(
                product_id="apple",
                quantity=args.quantity,
                amount=1200,
                fail_shipping=args.fail_shipping,
            )
        except InvalidArgument as error:  # the server's BadRequest, as typed fields
            for violation in error.field_violations:
                print(f"refused: {violation.field} {violation.description}", file=sys.stderr)
            return 3
        print(f"saga {placed.saga_id} {pb.SagaStatus.Name(placed.status)}")
        async for update in client.watch_saga(placed.saga_id):  # replays an ended saga
            print(f"  {update.event.description}")
        try:
            payment = await client.get_payment(placed.saga_id)
            print(f"payment {payment_pb2.PaymentStatus.Name(payment.status)}")
        except NotFound:
            print("payment none")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--orchestrator",
        default=os.environ.get("MINISAGA_ORCHESTRATOR_ADDRESS", "127.0.0.1:7001"),
        help="host:port (env MINISAGA_ORCHESTRATOR_ADDRESS, as for the minisaga command)",
    )
    parser.add_argument(
        "--payment",
        default=os.environ.get("MINISAGA_PAYMENT_ADDRESS", "127.0.0.1:7002"),
        help="host:port (env MINISAGA_PAYMENT_ADDRESS)",
    )
    parser.add_argument("--quantity", type=int, default=2)
    parser.add_argument("--fail-shipping", action="store_true")
    args = parser.parse_args(argv)
    try:
        return asyncio.run(run(args))
    except MinisagaError as error:  # one typed error for every failure: code, reason, address
        print(f"{error.service} at {error.address}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
