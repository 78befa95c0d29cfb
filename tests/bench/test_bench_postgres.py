"""`python -m bench --store postgresql`, small: the orchestrated case on SQLite and
on a throwaway PostgreSQL with one and two replicas, every saga checked, and the
ratios, PostgreSQL's CPU and its round trips per saga reported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import ROOT
from tests.pg import INSTALL_HINT, find_bin_dir

pytestmark = pytest.mark.slow


@pytest.mark.timeout(360)
def test_postgresql_runs_beside_sqlite_with_one_and_two_replicas(tmp_path: Path) -> None:
    if find_bin_dir() is None:
        pytest.skip(f"PostgreSQL unavailable: no server binaries; {INSTALL_HINT}")
    output = tmp_path / "bench.json"
    done = subprocess.run(
        [
            sys.executable, "-m", "bench", "--quick", "--store", "postgresql",
            "--modes", "orchestrated", "--concurrency", "4", "--failure-rates", "0.2",
            "--tls-concurrency", "0", "--observability-concurrency", "0", "--skip-in-flight",
            "--output", str(output),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,  # a bound for a hung run, not a speed test: the machine may be busy
        check=False,
    )  # fmt: skip
    if "PostgreSQL unavailable" in done.stderr:
        pytest.skip(done.stderr.strip().splitlines()[-1])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "## PostgreSQL saga log / SQLite" in done.stdout
    assert "| round trips/saga PG1 |" in done.stdout

    results = json.loads(output.read_text())
    assert results["passed"] is True, results["problems"]
    runs = {run["mode"]: run for run in results["runs"]}
    assert set(runs) == {"orchestrated", "orchestrated+pg1", "orchestrated+pg2"}
    for run in runs.values():
        assert run["sagas"] > 0 and run["errors"] == 0 and run["unexpected_outcomes"] == 0, run
        check = run["check"]  # every saga, the warm-up's too, against the participants
        assert check["passed"] is True, check
        assert check["sagas"] == run["sagas"] + run["warmup_sagas"]
        assert check["seen"].get("PAYMENT_STATUS_REFUNDED", 0) > 0  # compensation ran
        # CPU comes in clock ticks (10 ms): a short window can read 0 for one run.
        assert run["cpu_seconds_per_saga"]["orchestrator"] >= 0
    assert sum(run["cpu_seconds_per_saga"]["orchestrator"] for run in runs.values()) > 0
    assert "store" not in runs["orchestrated"]
    for replicas in (1, 2):
        run = runs[f"orchestrated+pg{replicas}"]
        assert run["store"] == "postgresql" and run["replicas"] == replicas
        assert run["cpu_seconds_per_saga"]["postgres"] >= 0
        # Each saga writes its log 4 times (creation with the first attempt, two
        # outcomes each with the next attempt, the last with the end; the same when
        # it compensates), each write one statement; renewals and scans add a few.
        assert 4 <= run["postgres"]["round_trips_per_saga"] <= 6, run["postgres"]
    assert sum(runs[f"orchestrated+pg{n}"]["cpu_seconds_per_saga"]["postgres"] for n in (1, 2)) > 0
    # Both replicas served PlaceOrders; per saga, "orchestrator" counts both.
    two = runs["orchestrated+pg2"]
    cpu = two["cpu_seconds"]
    assert cpu["orchestrator"] >= 0 and cpu["orchestrator-2"] >= 0
    total = (cpu["orchestrator"] + cpu["orchestrator-2"]) / two["sagas"]
    assert two["cpu_seconds_per_saga"]["orchestrator"] == pytest.approx(total)

    [row] = results["postgres"]
    assert (row["concurrency"], row["failure_rate"]) == (4, 0.2)
    for kind in ("pg1", "pg2"):
        assert row[kind]["throughput_ratio"] > 0 and row[kind]["p99_ratio"] > 0
