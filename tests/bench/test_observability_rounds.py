"""bench.report.observability_comparison: costs are medians of each round's paired ratios."""

from __future__ import annotations

import math
from typing import Any

from bench import report


def run(sagas_per_second: float) -> dict[str, Any]:
    return {
        "sagas_per_second": sagas_per_second,
        "cpu_seconds_per_saga": {"orchestrator": 0.001},
        "latency_ms": {"p99": 10.0},
    }


def one_round(plain: float, tracing: float) -> dict[str, dict[str, Any]]:
    return {
        "plain": run(plain),
        "metrics": run(0.97 * plain),
        "tracing": run(tracing),
        "tracing_sampled": run(0.9 * plain),
    }


def test_each_cost_is_the_median_of_the_rounds_paired_ratios() -> None:
    # A busy spell slows both runs of a round: pairing keeps it out of the ratio.
    rounds = [one_round(100, 70), one_round(50, 40), one_round(100, 76), one_round(80, 60)]
    seen = report.observability_comparison(rounds)
    assert seen["rounds_ratios"]["tracing_throughput_ratio"] == [0.7, 0.8, 0.76, 0.75]
    assert math.isclose(seen["tracing_throughput_ratio"], 0.755)  # the middle two's mean
    assert math.isclose(seen["metrics_throughput_ratio"], 0.97)
    # One of the two rounds nearest that median stands for them all.
    assert any(seen["tracing"] is rounds[i]["tracing"] for i in (2, 3))
    assert seen["rounds"] == rounds


def test_a_round_whose_plain_run_failed_does_not_count() -> None:
    rounds = [one_round(100, 70), one_round(0, 0), one_round(100, 80)]
    seen = report.observability_comparison(rounds)
    assert math.isnan(seen["rounds_ratios"]["tracing_throughput_ratio"][1])
    assert math.isclose(seen["tracing_throughput_ratio"], 0.75)
    assert seen["tracing"] is not rounds[1]["tracing"]
