"""python -m shipping_server: serve ShippingService on 127.0.0.1:7004."""

from __future__ import annotations

import argparse

from minisaga.shipping.v1 import shipping_pb2, shipping_pb2_grpc

from service_kit import flags
from service_kit.call_log import add_call_log_flag
from service_kit.faults import add_fault_flags
from service_kit.flags import add_server_flags
from service_kit.limits import add_limit_flags
from service_kit.participant import run, serve_participant
from shipping_server.service import SCHEMA, ShippingService

SERVICE = shipping_pb2.DESCRIPTOR.services_by_name["ShippingService"].full_name


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m shipping_server",
        description="Shipping participant: CreateShipment / CancelShipment / GetShipment, "
        "idempotent by saga_id.",
    )
    add_server_flags(
        parser, env_prefix="MINISAGA_SHIPPING", listen="127.0.0.1:7004", db="data/shipping.db"
    )
    add_limit_flags(parser, "MINISAGA_SHIPPING")
    add_fault_flags(parser, "MINISAGA_SHIPPING")
    add_call_log_flag(parser, "MINISAGA_SHIPPING")
    return flags.parse(parser, argv)


async def serve(args: argparse.Namespace) -> None:
    await serve_participant(
        args,
        schema=SCHEMA,
        service_name=SERVICE,
        build=lambda db, faults: ShippingService(db, faults=faults),
        register=shipping_pb2_grpc.add_ShippingServiceServicer_to_server,
    )


def main(argv: list[str] | None = None) -> None:
    run(parse_args(argv), serve)


if __name__ == "__main__":
    main()
