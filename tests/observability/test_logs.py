"""Structured logs: with --log-format json every line of every service is a JSON
object, and each line about a saga carries its fields and its trace id; a
saga's start, each retry, its compensation and its end are logged once at INFO,
its attempts only at DEBUG."""

from __future__ import annotations

from pathlib import Path

import pytest
from minisaga.orchestrator.v1 import orchestrator_pb2 as pb

from tests.harness import wait_until
from tests.observability.system import Receiver, Services, tracing_env

pytestmark = pytest.mark.slow


async def test_json_lines_carry_the_saga_fields(
    tmp_path: Path, receiver: tuple[Receiver, str]
) -> None:
    _, endpoint = receiver
    services = Services(
        tmp_path,
        env=tracing_env(endpoint),
        # The first Reserve of each saga answers UNAVAILABLE: one retry.
        inventory_flags=("--fault-methods", "Reserve", "--fault-fail-first", "1"),
    ).start()
    try:
        reply = await services.place(fail_inventory=True)
        assert reply.status == pb.SAGA_STATUS_COMPENSATED
        trace_id = (await services.saga(reply.saga_id)).trace_id

        def saga_lines() -> list[dict[str, object]]:
            lines = list(services.log_lines("orchestrator"))  # every line parses
            return [line for line in lines if line.get("saga_id") == reply.saga_id]

        lines = await wait_until(
            lambda: (found := saga_lines()) and "ended" in str(found[-1]["message"]) and found
        )
        for line in lines:
            assert {"time", "level", "logger", "message"} <= set(line)
            assert line["saga_type"] == "place_order"
            assert line["trace_id"] == trace_id
            assert line["level"] == "INFO"  # attempts are DEBUG: not at the default level
        kinds = [str(line["message"]).split(":")[0] for line in lines]
        assert kinds == [
            "saga started",
            "saga retrying reserve action after UNAVAILABLE",
            "saga compensating",
            "saga ended COMPENSATED",
        ]
        retry, compensating, ended = lines[1], lines[2], lines[3]
        assert (retry["step"], retry["phase"], retry["attempt"], retry["code"]) == (
            "reserve",
            "action",
            1,
            "UNAVAILABLE",
        )
        assert (compensating["step"], compensating["code"]) == ("reserve", "FAILED_PRECONDITION")
        assert ended["code"] == "COMPENSATED"
        for name in ("payment", "inventory", "shipping"):
            assert any("serving" in str(line["message"]) for line in services.log_lines(name))
    finally:
        await services.terminate()


async def test_debug_logs_each_attempt(tmp_path: Path) -> None:
    services = Services(tmp_path, orchestrator_flags=("--log-level", "DEBUG")).start()
    try:
        reply = await services.place()
        assert reply.status == pb.SAGA_STATUS_COMPLETED
        lines = [
            line
            for line in services.log_lines("orchestrator")
            if line.get("saga_id") == reply.saga_id and line["level"] == "DEBUG"
        ]
        returned = [(x["step"], x["phase"], x["attempt"], x["code"]) for x in lines if "code" in x]
        assert returned == [
            ("charge", "action", 1, "OK"),
            ("reserve", "action", 1, "OK"),
            ("ship", "action", 1, "OK"),
        ]
        assert all("trace_id" not in line for line in lines)  # tracing is off
    finally:
        await services.terminate()
