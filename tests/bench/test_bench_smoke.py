"""`python -m bench --quick` (the smoke run of `make bench`) as a real process tree."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.harness import ROOT

pytestmark = pytest.mark.slow


@pytest.mark.timeout(660)
def test_quick_benchmark_prints_the_table_and_every_saga_checks_out(tmp_path: Path) -> None:
    output = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--output", str(output)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,  # a bound for a hung run, not a speed test: the machine may be busy
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "| mode | conc | fail | sagas | sagas/s | p50 ms | p95 ms | p99 ms" in done.stdout
    assert "## Orchestrated / its baselines" in done.stdout
    assert "## Sagas in flight at once" in done.stdout
    assert "## mTLS on every hop" in done.stdout
    assert "## Metrics and tracing" in done.stdout
    assert "## Recovery after a crash" in done.stdout
    assert "## Startup" in done.stdout

    results = json.loads(output.read_text())
    assert results["passed"] is True
    assert results["problems"] == []
    assert results["machine"]["nproc"] >= 1
    runs = results["runs"]
    assert {(r["mode"], r["concurrency"], r["failure_rate"]) for r in runs} == {
        (mode, concurrency, rate)
        for mode in ("direct", "inmemory", "orchestrated")
        for concurrency in (1, 16)
        for rate in (0.0, 0.2)
    }
    # CPU is read from /proc in clock ticks (10 ms): over a 1 s window on a busy
    # machine one run's figure can be 0, so it must be > 0 over all the runs.
    cpu: Counter[str] = Counter()
    for run in runs:
        assert run["sagas"] > 0, run
        assert run["errors"] == 0, run["error_samples"]
        assert run["unexpected_outcomes"] == 0, run["error_samples"]
        check = run["check"]
        assert check["passed"] is True, check
        assert check["disagreements"] == 0 and check["errors"] == 0
        # Every saga of the run was checked: the measured ones and the warm-up.
        assert check["sagas"] == run["sagas"] + run["warmup_sagas"]
        assert run["latency_ms"]["p50"] <= run["latency_ms"]["p99"]
        for server in ("payment", "inventory", "shipping"):
            assert run["cpu_seconds_per_saga"][server] >= 0
            cpu[server] += run["cpu_seconds_per_saga"][server]
            assert run["memory_bytes"][server]["peak_rss"] > 0
        if run["mode"] in ("orchestrated", "inmemory"):
            assert run["cpu_seconds_per_saga"]["orchestrator"] >= 0
            cpu[f"orchestrator {run['mode']}"] += run["cpu_seconds_per_saga"]["orchestrator"]
        if run["failure_rate"] > 0:  # compensation ran, and the participants agree
            assert check["seen"].get("PAYMENT_STATUS_REFUNDED", 0) > 0
    assert len(cpu) == 5 and all(seconds > 0 for seconds in cpu.values()), cpu
    assert len(results["comparisons"]) == 4
    for row in results["comparisons"]:  # both baselines beside each orchestrated case
        assert row["throughput_ratio"] > 0 and row["inmemory_throughput_ratio"] > 0, row
    tls = results["tls"]  # the orchestrated case at c=16 on plaintext, then on mTLS
    assert [tls["plaintext"]["mode"], tls["mtls"]["mode"]] == ["orchestrated", "orchestrated+mTLS"]
    for run in (tls["plaintext"], tls["mtls"]):
        assert run["concurrency"] == 16 and run["sagas"] > 0 and run["passed"] is True, run
    assert tls["throughput_ratio"] > 0
    seen = results["observability"]  # plain, metrics on, tracing on: c=16, one round (--quick)
    assert len(seen["rounds"]) == 1 and seen["rounds"][0]["tracing"] == seen["tracing"]
    modes = [seen[k]["mode"] for k in ("plain", "metrics", "tracing")]
    assert modes == ["orchestrated", "orchestrated+metrics", "orchestrated+tracing"]
    for key in ("plain", "metrics", "tracing"):
        assert seen[key]["sagas"] > 0 and seen[key]["passed"] is True, seen[key]
    # Every saga of the tracing run (measured and warm-up) exported its spans.
    traced = seen["tracing"]["sagas"] + seen["tracing"]["warmup_sagas"]
    assert seen["tracing"]["spans_received"] >= traced
    assert seen["metrics_throughput_ratio"] > 0 and seen["tracing_throughput_ratio"] > 0
    sampled = seen["tracing_sampled"]  # one saga in ten traced: every saga still checks out
    assert sampled["mode"] == "orchestrated+tracing 10%" and sampled["passed"] is True, sampled
    assert seen["sampled_throughput_ratio"] > 0
    in_flight = results["in_flight"]
    assert in_flight["passed"] is True, in_flight
    assert in_flight["in_flight"] == in_flight["count"] == 200
    assert in_flight["rss_in_flight_bytes"] >= in_flight["rss_before_bytes"] > 0
    # The orchestrator SIGKILLed with those 200 in flight, restarted: every one completed.
    recovered = in_flight["recovery"]
    assert recovered["passed"] is True, recovered
    assert recovered["count"] == 200 and recovered["not_terminal"] == 0
    assert 0 < recovered["serving_seconds"] <= recovered["terminal_seconds"]
    assert recovered["check"]["passed"] is True and recovered["check"]["sagas"] == 200
    assert recovered["check"]["seen"]["SAGA_STATUS_COMPLETED"] == 200
    assert recovered["check"]["seen"]["SHIPMENT_STATUS_CREATED"] == 200
    calls = recovered["calls"]  # only the held step was left to do, once per saga at least
    assert set(calls["by_participant"]) == {"ShippingService"}
    assert calls["calls"] >= 200 and sum(calls["per_second"]) == calls["calls"]
    assert 0 < calls["most_in_flight"] <= recovered["max_recovering_sagas"]
    assert recovered["peak_rss_bytes"] > 0
    startup = {row["service"]: row for row in results["startup"]}
    for server in ("orchestrator", "payment", "inventory", "shipping"):
        assert startup[server]["starts"] >= 10, startup  # every configuration's services
        assert 0 < startup[server]["median_seconds"] <= startup[server]["max_seconds"]
    assert startup["orchestrator, restarted with 200 sagas to recover"]["starts"] == 1
