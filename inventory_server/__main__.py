"""python -m inventory_server: serve InventoryService on 127.0.0.1:7003."""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path

from minisaga.inventory.v1 import inventory_pb2, inventory_pb2_grpc

from inventory_server.service import (
    DEFAULT_STOCK,
    SCHEMA,
    InventoryService,
    parse_stock,
    seed_stock,
)
from service_kit.call_log import add_call_log_flag, open_call_log
from service_kit.database import Database
from service_kit.faults import add_fault_flags, faults_from_flags
from service_kit.flags import add_server_flags, env_default
from service_kit.server import configure_logging, serve_until_signalled, start_server

SERVICE = inventory_pb2.DESCRIPTOR.services_by_name["InventoryService"].full_name
ENV_PREFIX = "MINISAGA_INVENTORY"

log = logging.getLogger("inventory_server")


def _stock_item(text: str) -> dict[str, int]:
    try:
        return parse_stock(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m inventory_server",
        description="Inventory participant: Reserve / Release / GetReservation / SetStock / "
        "GetStock, idempotent by saga_id.",
    )
    add_server_flags(parser, env_prefix=ENV_PREFIX, listen="127.0.0.1:7003", db="data/inventory.db")
    parser.add_argument(
        "--stock",
        action="append",
        type=_stock_item,
        metavar="PRODUCT=QTY",
        help="at start-up, create PRODUCT with QTY units available unless it already exists; "
        "repeatable, and PRODUCT=QTY,PRODUCT=QTY also works "
        f"(default {DEFAULT_STOCK}, env {ENV_PREFIX}_STOCK; an empty env value seeds nothing)",
    )
    add_fault_flags(parser, ENV_PREFIX)
    add_call_log_flag(parser, ENV_PREFIX)
    args = parser.parse_args(argv)
    if args.stock is None:
        try:
            args.stock = [parse_stock(env_default(f"{ENV_PREFIX}_STOCK", DEFAULT_STOCK))]
        except ValueError as error:
            parser.error(f"{ENV_PREFIX}_STOCK: {error}")
    args.stock = {product: qty for items in args.stock for product, qty in items.items()}
    return args


async def serve(args: argparse.Namespace) -> None:
    Path(args.db).parent.mkdir(parents=True, exist_ok=True)
    db = await Database(args.db, schema=SCHEMA).open()
    call_log = open_call_log(args.call_log)
    try:
        service = InventoryService(db, faults=faults_from_flags(args))
        created = await seed_stock(db, args.stock)
        if created:
            log.info("seeded stock of %s", ", ".join(created))
        running = await start_server(
            lambda server: inventory_pb2_grpc.add_InventoryServiceServicer_to_server(
                service, server
            ),
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
