"""python -m inventory_server: serve InventoryService on 127.0.0.1:7003."""

from __future__ import annotations

import argparse
import logging

from minisaga.inventory.v1 import inventory_pb2, inventory_pb2_grpc

from inventory_server.service import (
    DEFAULT_STOCK,
    SCHEMA,
    InventoryService,
    parse_stock,
    seed_stock,
)
from service_kit import flags
from service_kit.call_log import add_call_log_flag
from service_kit.database import Database
from service_kit.faults import add_fault_flags
from service_kit.flags import add_server_flags, env_default
from service_kit.limits import add_limit_flags
from service_kit.participant import run, serve_participant

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
    add_limit_flags(parser, ENV_PREFIX)
    add_fault_flags(parser, ENV_PREFIX)
    add_call_log_flag(parser, ENV_PREFIX)
    args = flags.parse(parser, argv)
    if args.stock is None:
        try:
            args.stock = [parse_stock(env_default(f"{ENV_PREFIX}_STOCK", DEFAULT_STOCK))]
        except ValueError as error:
            parser.error(f"{ENV_PREFIX}_STOCK: {error}")
    args.stock = {product: qty for items in args.stock for product, qty in items.items()}
    return args


async def serve(args: argparse.Namespace) -> None:
    async def seed(db: Database) -> None:
        created = await seed_stock(db, args.stock)
        if created:
            log.info("seeded stock of %s", ", ".join(created))

    await serve_participant(
        args,
        schema=SCHEMA,
        service_name=SERVICE,
        build=lambda db, faults: InventoryService(db, faults=faults),
        register=inventory_pb2_grpc.add_InventoryServiceServicer_to_server,
        prepare=seed,
    )


def main(argv: list[str] | None = None) -> None:
    run(parse_args(argv), serve)


if __name__ == "__main__":
    main()
