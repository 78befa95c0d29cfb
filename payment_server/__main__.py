"""python -m payment_server: serve PaymentService on 127.0.0.1:7002."""

from __future__ import annotations

import argparse

from minisaga.payment.v1 import payment_pb2, payment_pb2_grpc

from payment_server.service import DEFAULT_LIMIT, SCHEMA, PaymentService
from service_kit import flags
from service_kit.call_log import add_call_log_flag
from service_kit.faults import add_fault_flags
from service_kit.flags import add_server_flags, env_default
from service_kit.limits import add_limit_flags
from service_kit.participant import run, serve_participant

SERVICE = payment_pb2.DESCRIPTOR.services_by_name["PaymentService"].full_name


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m payment_server",
        description="Payment participant: Charge / Refund / GetPayment, idempotent by saga_id.",
    )
    add_server_flags(
        parser, env_prefix="MINISAGA_PAYMENT", listen="127.0.0.1:7002", db="data/payment.db"
    )
    parser.add_argument(
        "--limit",
        type=int,
        default=env_default("MINISAGA_PAYMENT_LIMIT", str(DEFAULT_LIMIT)),
        help="charges above this amount are declined with PAYMENT_DECLINED "
        "(minor units; default %(default)s)",
    )
    add_limit_flags(parser, "MINISAGA_PAYMENT")
    add_fault_flags(parser, "MINISAGA_PAYMENT")
    add_call_log_flag(parser, "MINISAGA_PAYMENT")
    return flags.parse(parser, argv)


async def serve(args: argparse.Namespace) -> None:
    await serve_participant(
        args,
        schema=SCHEMA,
        service_name=SERVICE,
        build=lambda db, faults: PaymentService(db, limit=args.limit, faults=faults),
        register=payment_pb2_grpc.add_PaymentServiceServicer_to_server,
    )


def main(argv: list[str] | None = None) -> None:
    run(parse_args(argv), serve)


if __name__ == "__main__":
    main()
