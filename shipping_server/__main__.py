"""python -m shipping_server: serve ShippingService on 127.0.0.1:7004."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from minisaga.shipping.v1 import shipping_pb2, shipping_pb2_grpc

from service_kit.call_log import add_call_log_flag, open_call_log
from service_kit.database import Database
from service_kit.faults import add_fault_flags, faults_from_flags
from service_kit.flags import add_server_flags
from service_kit.server import configure_logging, serve_until_signalled, start_server
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
    add_fault_flags(parser, "MINISAGA_SHIPPING")
    add_call_log_flag(parser, "MINISAGA_SHIPPING")
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    Path(args.db).parent.mkdir(parents=True, exist_ok=True)
    db = await Database(args.db, schema=SCHEMA).open()
    call_log = open_call_log(args.call_log)
    try:
        service = ShippingService(db, faults=faults_from_flags(args))
        running = await start_server(
            lambda server: shipping_pb2_grpc.add_ShippingServiceServicer_to_server(service, server),
            [SERVICE],
            args.listen,
            max_message_bytes=args.max_message_bytes,
            interceptors=[call_log] if call_log else (),
        )
        await serve_until_signalled(running, grace=args.grace_seconds)
    finally:
        if call_log:
            call_log.close()
        await db.close()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    configure_logging(args.log_level)
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
