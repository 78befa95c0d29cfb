"""The recovery case: the orchestrator SIGKILLed with many sagas in flight, restarted.

It follows the in-flight case, on its cluster: every saga is RUNNING with its
CreateShipment held by Shipping's added latency. Then:

1. the orchestrator is SIGKILLed (a crash: nothing drained, nothing flushed);
2. Shipping is stopped and started again on its files without the latency, so
   the participants answer normally (the held calls die with it, before the
   handler did anything: latency comes first in a participant's handler);
3. the orchestrator is started again on the same saga log, with its defaults,
   and measured: time from process start to SERVING, time from process start
   until every saga is terminal (CountSagas, polled), its peak RSS (VmHWM),
   and the calls it made to the participants while recovering (from its own
   log: every attempt is recorded before its RPC), per second and at once;
4. every saga of the case is checked against the participants (bench.loadgen's
   check), and each must have COMPLETED.

The case gives up only when no saga has ended for STALL_SECONDS, so a slow
machine gets its (slower) figures.
"""

from __future__ import annotations

import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from minisaga.orchestrator.v1 import orchestrator_pb2 as pb
from minisaga.orchestrator.v1 import orchestrator_pb2_grpc

from bench.procfs import memory_bytes
from bench.services import STOP_TIMEOUT, Cluster
from service_kit import limits

# The in-flight case's orchestrator flags: after the restart the orchestrator runs its defaults.
IN_FLIGHT_ORCHESTRATOR_FLAGS = (
    "--attempt-timeout-ms",
    "--saga-deadline-seconds",
    "--max-sagas-in-flight",
    "--max-calls-per-participant",
    "--max-db-queue",
)
IN_FLIGHT_SHIPPING_FLAGS = ("--fault-latency-ms", "--fault-methods", "--max-concurrent-rpcs")
TARGET_SERVING_SECONDS = 2.0
TARGET_TERMINAL_SECONDS = 60.0
TARGET_COUNT = 10_000  # the targets are stated for this many sagas
POLL_SECONDS = 0.2


STALL_SECONDS = 30.0
"""Recovery is given up when no saga has ended for this long: a slow machine
reports its figure instead of failing, a stuck one fails."""
HARD_BOUND_SECONDS = 1800.0


def _active(channel: grpc.Channel) -> int:
    """Sagas not yet terminal, as the orchestrator counts them."""
    stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
    counts = stub.CountSagas(pb.CountSagasRequest(), timeout=10.0).counts
    active = (pb.SAGA_STATUS_RUNNING, pb.SAGA_STATUS_COMPENSATING)
    return sum(c.count for c in counts if c.status in active)


def calls_while_recovering(db: Path, since_ms: int) -> dict[str, Any]:
    """The participant calls recorded in the saga log from `since_ms` on (read-only):
    how many per second since then, by participant, and the most in flight at once."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute(
            "SELECT method, started_at_epoch_ms, finished_at_epoch_ms FROM attempts"
            " WHERE started_at_epoch_ms >= ?",
            (since_ms,),
        ).fetchall()
    per_second: Counter[int] = Counter()
    by_participant: Counter[str] = Counter()
    edges: list[tuple[int, int]] = []
    for method, started, finished in rows:
        per_second[(started - since_ms) // 1000] += 1
        by_participant[method.split("/")[1].rsplit(".", 1)[-1]] += 1
        edges.append((started, 1))
        if finished is not None:
            edges.append((finished, -1))
    in_flight = most = 0
    for _, change in sorted(edges):  # at one instant, ends (-1) before starts
        in_flight += change
        most = max(most, in_flight)
    seconds = max(per_second) + 1 if per_second else 0
    series = [per_second.get(second, 0) for second in range(seconds)]
    busy = [n for n in series if n]
    return {
        "calls": len(rows),
        "by_participant": dict(by_participant),
        "per_second": series,
        "peak_per_second": max(series, default=0),
        "mean_per_busy_second": sum(busy) / len(busy) if busy else 0.0,
        "most_in_flight": most,
    }


def run(
    services: Cluster,
    saga_ids: list[str],
    folder: Path,
    check: Callable[[dict[str, str], list[str]], dict[str, Any]],
) -> dict[str, Any]:
    """Crashes and restarts the orchestrator of `services` (see the module's doc);
    `check(addresses, saga_ids)` runs the correctness check."""
    count = len(saga_ids)
    services.services["orchestrator"].kill()
    shipping = services.services["shipping"]
    shipping.stop(time.monotonic() + STOP_TIMEOUT)
    shipping = services.restart("shipping", remove=IN_FLIGHT_SHIPPING_FLAGS)
    since_ms = int(time.time() * 1000)
    orchestrator = services.restart(
        "orchestrator",
        remove=IN_FLIGHT_ORCHESTRATOR_FLAGS,
        flags={"--shipping": shipping.address},
    )
    serving = orchestrator.serving_seconds
    assert serving is not None
    terminal: float | None = None
    active = count
    moved = time.monotonic()  # when the last saga ended
    with grpc.insecure_channel(orchestrator.address) as channel:
        while time.monotonic() - moved < STALL_SECONDS:
            services.check_alive()
            now, left = time.monotonic(), _active(channel)
            if left == 0:
                terminal = now - orchestrator.started_at
                break
            if left < active:
                active, moved = left, now
            if now - orchestrator.started_at > HARD_BOUND_SECONDS:
                break
            time.sleep(POLL_SECONDS)  # polling the orchestrator for a condition, bounded
        active = 0 if terminal is not None else active
    memory = memory_bytes(orchestrator.pid)
    calls = calls_while_recovering(folder / "orchestrator.db", since_ms)
    result: dict[str, Any] = {
        "count": count,
        "serving_seconds": serving,
        "terminal_seconds": terminal,
        "not_terminal": active,
        "peak_rss_bytes": memory["peak_rss"],
        "rss_bytes": memory["rss"],
        "shipping_serving_seconds": shipping.serving_seconds,
        "calls": calls,
        "max_recovering_sagas": limits.MAX_RECOVERING_SAGAS,
        "orchestrator_settings": "defaults (after a SIGKILL, on the same saga log)",
    }
    problems = []
    if terminal is None:
        problems.append(
            f"{active} of {count} sagas not terminal: none ended for {STALL_SECONDS:g}s"
        )
    else:
        result["check"] = check({n: s.address for n, s in services.services.items()}, saga_ids)
        if not result["check"].get("passed"):
            problems.append(f"check: {result['check']}")
    # Paced: never more calls in flight than sagas recovered at once.
    if calls["most_in_flight"] > limits.MAX_RECOVERING_SAGAS:
        problems.append(
            f"{calls['most_in_flight']} calls in flight at once, above "
            f"--max-recovering-sagas {limits.MAX_RECOVERING_SAGAS}"
        )
    result["problems"] = problems
    result["passed"] = not problems
    if count >= TARGET_COUNT:
        result["targets"] = {
            "serving_seconds_max": TARGET_SERVING_SECONDS,
            "terminal_seconds_max": TARGET_TERMINAL_SECONDS,
            "serving_met": serving <= TARGET_SERVING_SECONDS,
            "terminal_met": terminal is not None and terminal <= TARGET_TERMINAL_SECONDS,
        }
    return result
