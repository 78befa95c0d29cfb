"""python -m examples.loyalty: serve LoyaltyService on 127.0.0.1:7005.

An example participant (docs/writing-a-saga.md), served like the built-in ones:
service_kit gives it health, reflection, graceful stop, limits and fault flags.
"""

from __future__ import annotations

import argparse

from minisaga.loyalty.v1 import loyalty_pb2, loyalty_pb2_grpc

from examples.loyalty.service import SCHEMA, LoyaltyService
from service_kit import flags
from service_kit.call_log import add_call_log_flag
from service_kit.faults import add_fault_flags
from service_kit.flags import add_server_flags
from service_kit.limits import add_limit_flags
from service_kit.participant import run, serve_participant

SERVICE = loyalty_pb2.DESCRIPTOR.services_by_name["LoyaltyService"].full_name


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m examples.loyalty",
        description="Loyalty participant (an example): AwardPoints / RevokePoints / GetAward, "
        "idempotent by saga_id.",
    )
    add_server_flags(
        parser, env_prefix="MINISAGA_LOYALTY", listen="127.0.0.1:7005", db="data/loyalty.db"
    )
    add_limit_flags(parser, "MINISAGA_LOYALTY")
    add_fault_flags(parser, "MINISAGA_LOYALTY")
    add_call_log_flag(parser, "MINISAGA_LOYALTY")
    return flags.parse(parser, argv)


async def serve(args: argparse.Namespace) -> None:
    await serve_participant(
        args,
        schema=SCHEMA,
        service_name=SERVICE,
        build=lambda db, faults: LoyaltyService(db, faults=faults),
        register=loyalty_pb2_grpc.add_LoyaltyServiceServicer_to_server,
    )


def main(argv: list[str] | None = None) -> None:
    run(parse_args(argv), serve)


if __name__ == "__main__":
    main()
