"""Turning raw measurements into the figures of the benchmark, and Markdown tables."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from typing import Any

SERVERS = ("orchestrator", "payment", "inventory", "shipping")
MIB = 1024 * 1024

# The targets, at concurrency 64, on the medians of the repeats: orchestrated
# against the in-memory orchestrator (what a hand-written saga runner costs) and
# against direct calls (no orchestrator at all).
TARGETS: dict[float, dict[str, float]] = {
    0.0: {"inmemory_throughput_min": 0.8, "inmemory_p99_max": 1.5, "direct_throughput_min": 0.65},
    0.2: {"inmemory_throughput_min": 0.8, "inmemory_p99_max": 1.5, "direct_throughput_min": 0.65},
}
TARGET_CONCURRENCY = 64
# One orchestrator replica on PostgreSQL against SQLite, throughput at concurrency 64.
POSTGRES_TARGET = 0.6


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending sequence (nan when empty)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def latency_summary(latencies_seconds: Sequence[float]) -> dict[str, float]:
    values = sorted(latencies_seconds)
    mean = sum(values) / len(values) if values else math.nan
    return {
        "p50": 1000 * percentile(values, 0.50),
        "p95": 1000 * percentile(values, 0.95),
        "p99": 1000 * percentile(values, 0.99),
        "max": 1000 * values[-1] if values else math.nan,
        "mean": 1000 * mean,
    }


def summarize_run(
    mode: str, concurrency: int, failure_rate: float, raw: dict[str, Any]
) -> dict[str, Any]:
    sagas = int(raw["sagas"])
    elapsed = float(raw["elapsed_seconds"])
    cpu = raw["cpu_seconds"]  # each process's: orchestrator, orchestrator-2, ...
    per_saga = {name: (seconds / sagas if sagas else math.nan) for name, seconds in cpu.items()}
    replicas = [name for name in cpu if name.startswith("orchestrator")]
    if len(replicas) > 1:  # per saga, "orchestrator" is every replica's: what a saga costs
        per_saga["orchestrator"] = sum(per_saga[name] for name in replicas)
    check = raw.get("check", {})
    return {
        "mode": mode,
        "concurrency": concurrency,
        "failure_rate": failure_rate,
        "sagas": sagas,
        "elapsed_seconds": elapsed,
        "sagas_per_second": sagas / elapsed if elapsed > 0 else 0.0,
        "latency_ms": latency_summary(raw["latencies_seconds"]),
        "cpu_seconds_per_saga": per_saga,
        "cpu_seconds": cpu,
        "memory_bytes": raw["memory_bytes"],
        "errors": int(raw["errors"]),
        "unexpected_outcomes": int(raw["unexpected"]),
        "error_samples": raw["error_samples"],
        "warmup_sagas": raw["warmup_sagas"],
        "outcomes": raw["outcomes"],
        "check": check,
        "passed": int(raw["errors"]) == 0
        and int(raw["unexpected"]) == 0
        and bool(check.get("passed")),
    }


def compare(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Orchestrated against its baselines (direct, in-memory), for each (concurrency,
    failure rate) that has them; with --repeat, on the medians of the repeats."""
    groups: dict[tuple[str, int, float], list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault((run["mode"], run["concurrency"], run["failure_rate"]), []).append(run)
    medians = {
        key: {
            "sagas_per_second": statistics.median(r["sagas_per_second"] for r in group),
            "p99_ms": statistics.median(r["latency_ms"]["p99"] for r in group),
            "repeats": len(group),
        }
        for key, group in groups.items()
    }
    rows = []
    for (mode, concurrency, rate), orchestrated in medians.items():
        if mode != "orchestrated":
            continue
        row: dict[str, Any] = {
            "concurrency": concurrency,
            "failure_rate": rate,
            "repeats": orchestrated["repeats"],
            "orchestrated_sagas_per_second": orchestrated["sagas_per_second"],
            "orchestrated_p99_ms": orchestrated["p99_ms"],
        }
        for baseline in ("direct", "inmemory"):
            other = medians.get((baseline, concurrency, rate))
            if other is None:
                continue
            row[f"{baseline}_sagas_per_second"] = other["sagas_per_second"]
            row[f"{baseline}_p99_ms"] = other["p99_ms"]
            prefix = "" if baseline == "direct" else "inmemory_"  # the older keys stay
            row[f"{prefix}throughput_ratio"] = _ratio(
                orchestrated["sagas_per_second"], other["sagas_per_second"]
            )
            row[f"{prefix}p99_ratio"] = _ratio(orchestrated["p99_ms"], other["p99_ms"])
        if len(row) == 5:
            continue  # no baseline ran beside it
        target = TARGETS.get(rate) if concurrency == TARGET_CONCURRENCY else None
        if target is not None:
            row["target"] = target
            row["target_met"] = _meets(row, target)
        rows.append(row)
    return rows


def _meets(row: dict[str, Any], target: dict[str, float]) -> bool:
    """Every bound whose baseline ran; a bound with nothing to compare with is not met."""
    checks = {
        "inmemory_throughput_min": lambda v: row.get("inmemory_throughput_ratio", 0) >= v,
        "inmemory_p99_max": lambda v: row.get("inmemory_p99_ratio", math.inf) <= v,
        "direct_throughput_min": lambda v: row.get("throughput_ratio", 0) >= v,
    }
    return all(checks[name](bound) for name, bound in target.items())


def postgres_comparison(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """PostgreSQL with one and with two replicas against SQLite, for each
    (concurrency, failure rate) that has the three orchestrated runs; with
    --repeat, on the medians of the repeats."""
    groups: dict[tuple[int, float], dict[str, list[dict[str, Any]]]] = {}
    for run in runs:
        if run.get("store") == "postgresql":
            kind = f"pg{run['replicas']}"
        elif run["mode"] == "orchestrated":
            kind = "sqlite"
        else:
            continue
        key = (run["concurrency"], run["failure_rate"])
        groups.setdefault(key, {}).setdefault(kind, []).append(run)

    def median(group: list[dict[str, Any]], figure: Callable[[dict[str, Any]], float]) -> float:
        return float(statistics.median(figure(run) for run in group))

    def cpu(name: str) -> Callable[[dict[str, Any]], float]:
        return lambda run: float(run["cpu_seconds_per_saga"].get(name, math.nan))

    rows = []
    for (concurrency, rate), found in groups.items():
        if not {"sqlite", "pg1", "pg2"} <= found.keys():
            continue
        sqlite_rate = median(found["sqlite"], lambda r: r["sagas_per_second"])
        sqlite_p99 = median(found["sqlite"], lambda r: r["latency_ms"]["p99"])
        row: dict[str, Any] = {
            "concurrency": concurrency,
            "failure_rate": rate,
            "repeats": len(found["sqlite"]),
            "sqlite_sagas_per_second": sqlite_rate,
            "sqlite_p99_ms": sqlite_p99,
            "sqlite_orchestrator_cpu_seconds_per_saga": median(
                found["sqlite"], cpu("orchestrator")
            ),
        }
        for kind in ("pg1", "pg2"):
            group = found[kind]
            rate_pg = median(group, lambda r: r["sagas_per_second"])
            p99 = median(group, lambda r: r["latency_ms"]["p99"])
            row[kind] = {
                "sagas_per_second": rate_pg,
                "throughput_ratio": _ratio(rate_pg, sqlite_rate),
                "p99_ms": p99,
                "p99_ratio": _ratio(p99, sqlite_p99),
                "round_trips_per_saga": median(
                    group, lambda r: r["postgres"]["round_trips_per_saga"]
                ),
                "statements_per_saga": median(
                    group, lambda r: r["postgres"]["statements_per_saga"]
                ),
                "postgres_cpu_seconds_per_saga": median(group, cpu("postgres")),
                "orchestrator_cpu_seconds_per_saga": median(group, cpu("orchestrator")),
            }
        if concurrency == TARGET_CONCURRENCY:
            row["target"] = {"pg1_throughput_ratio_min": POSTGRES_TARGET}
            row["target_met"] = row["pg1"]["throughput_ratio"] >= POSTGRES_TARGET
        rows.append(row)
    return rows


def postgres_table(rows: Sequence[dict[str, Any]]) -> str:
    lines = [
        "| conc | fail | SQLite sagas/s | PG1 sagas/s | PG1/SQLite | PG2 sagas/s "
        "| PG2/SQLite | SQLite p99 ms | p99 PG1/SQLite | p99 PG2/SQLite "
        "| round trips/saga PG1 | PG2 | PostgreSQL CPU ms/saga PG1 | PG2 "
        "| orchestrator CPU ms/saga SQLite | PG1 | PG2 (both replicas) | target |",
        "|---:|---:|" + "---:|" * 15 + "---|",
    ]
    for row in rows:
        one, two = row["pg1"], row["pg2"]
        target = ""
        if "target" in row:
            wanted = f"PG1 >= {row['target']['pg1_throughput_ratio_min']:g}x"
            target = f"{wanted}: {'met' if row['target_met'] else 'MISSED'}"
        lines.append(
            f"| {row['concurrency']} | {100 * row['failure_rate']:.0f}% "
            f"| {row['sqlite_sagas_per_second']:.0f} | {one['sagas_per_second']:.0f} "
            f"| {one['throughput_ratio']:.2f} | {two['sagas_per_second']:.0f} "
            f"| {two['throughput_ratio']:.2f} | {_ms(row['sqlite_p99_ms'])} "
            f"| {one['p99_ratio']:.2f} | {two['p99_ratio']:.2f} "
            f"| {one['round_trips_per_saga']:.1f} | {two['round_trips_per_saga']:.1f} "
            f"| {_cpu_ms(one['postgres_cpu_seconds_per_saga'])} "
            f"| {_cpu_ms(two['postgres_cpu_seconds_per_saga'])} "
            f"| {_cpu_ms(row['sqlite_orchestrator_cpu_seconds_per_saga'])} "
            f"| {_cpu_ms(one['orchestrator_cpu_seconds_per_saga'])} "
            f"| {_cpu_ms(two['orchestrator_cpu_seconds_per_saga'])} | {target} |"
        )
    return "\n".join(lines)


def statements_table(run: dict[str, Any]) -> str:
    """The statements PostgreSQL ran per saga in one run, busiest first."""
    lines = ["| per saga | statement |", "|---:|---|"]
    for entry in run["postgres"]["top"]:
        query = entry["query"].replace("|", "\\|")
        lines.append(f"| {entry['per_saga']:.2f} | `{query}` |")
    return "\n".join(lines)


def tls_comparison(plaintext: dict[str, Any], mtls: dict[str, Any]) -> dict[str, Any]:
    """The same orchestrated case on plaintext and on mTLS, and mTLS's cost as ratios."""
    cpu = "orchestrator"
    return {
        "plaintext": plaintext,
        "mtls": mtls,
        "throughput_ratio": _ratio(mtls["sagas_per_second"], plaintext["sagas_per_second"]),
        "p99_ratio": _ratio(mtls["latency_ms"]["p99"], plaintext["latency_ms"]["p99"]),
        "orchestrator_cpu_ratio": _ratio(
            mtls["cpu_seconds_per_saga"].get(cpu, math.nan),
            plaintext["cpu_seconds_per_saga"].get(cpu, math.nan),
        ),
    }


def observability_comparison(rounds: Sequence[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """Rounds of the same orchestrated case plain, with metrics, with tracing and
    with tracing sampled: each cost is the median over the rounds of its ratio to
    that round's plain run. The round whose tracing ratio is nearest that median
    stands for them all under "plain", "metrics", "tracing" and "tracing_sampled"."""

    def cpu(run: dict[str, Any]) -> float:
        return float(run["cpu_seconds_per_saga"].get("orchestrator", math.nan))

    def ratios(kept: dict[str, dict[str, Any]]) -> dict[str, float]:
        plain = kept["plain"]
        return {
            "metrics_throughput_ratio": _ratio(
                kept["metrics"]["sagas_per_second"], plain["sagas_per_second"]
            ),
            "metrics_cpu_ratio": _ratio(cpu(kept["metrics"]), cpu(plain)),
            "tracing_throughput_ratio": _ratio(
                kept["tracing"]["sagas_per_second"], plain["sagas_per_second"]
            ),
            "tracing_cpu_ratio": _ratio(cpu(kept["tracing"]), cpu(plain)),
            "tracing_p99_ratio": _ratio(
                kept["tracing"]["latency_ms"]["p99"], plain["latency_ms"]["p99"]
            ),
            "sampled_throughput_ratio": _ratio(
                kept["tracing_sampled"]["sagas_per_second"], plain["sagas_per_second"]
            ),
            "sampled_cpu_ratio": _ratio(cpu(kept["tracing_sampled"]), cpu(plain)),
        }

    each = [ratios(kept) for kept in rounds]
    by_name = {name: [r[name] for r in each] for name in each[0]}
    medians = {name: _median(values) for name, values in by_name.items()}
    tracing = medians["tracing_throughput_ratio"]
    nearest = min(  # the round whose tracing ratio is nearest the median stands for them
        range(len(rounds)),
        key=lambda i: (
            abs(by_name["tracing_throughput_ratio"][i] - tracing)
            if not math.isnan(by_name["tracing_throughput_ratio"][i])
            else math.inf
        ),
    )
    return {**rounds[nearest], **medians, "rounds": list(rounds), "rounds_ratios": by_name}


def _median(values: Sequence[float]) -> float:
    """The median of the rounds that gave a ratio (a failed run gives NaN)."""
    finite = [v for v in values if not math.isnan(v)]
    return statistics.median(finite) if finite else math.nan


def _ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(b) else math.nan


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1f}"


def _cpu_ms(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{1000 * value:.2f}"


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / MIB:.0f}"


def runs_table(runs: Sequence[dict[str, Any]]) -> str:
    header = (
        "| mode | conc | fail | sagas | sagas/s | p50 ms | p95 ms | p99 ms "
        "| CPU ms/saga orch | pay | inv | ship | loadgen "
        "| peak RSS MiB orch | pay | inv | ship | errors | check |"
    )
    lines = [header, "|" + "---|" * 3 + "---:|" * 14 + "---|" * 2]
    for run in runs:
        cpu = run["cpu_seconds_per_saga"]
        memory = run["memory_bytes"]
        check = run["check"]
        errors = run["errors"] + run["unexpected_outcomes"]
        verdict = (
            f"ok ({check['sagas']})"
            if check.get("passed")
            else f"FAILED ({check.get('disagreements', '?')} disagree, "
            f"{check.get('errors', '?')} errors)"
        )
        lines.append(
            f"| {run['mode']} | {run['concurrency']} | {100 * run['failure_rate']:.0f}% "
            f"| {run['sagas']} | {run['sagas_per_second']:.0f} "
            f"| {_ms(run['latency_ms']['p50'])} | {_ms(run['latency_ms']['p95'])} "
            f"| {_ms(run['latency_ms']['p99'])} "
            + "".join(f"| {_cpu_ms(cpu.get(name))} " for name in (*SERVERS, "loadgen"))
            + "".join(
                f"| {_mib(memory[name]['peak_rss'] if name in memory else None)} "
                for name in SERVERS
            )
            + f"| {errors} | {verdict} |"
        )
    return "\n".join(lines)


def comparison_table(rows: Sequence[dict[str, Any]]) -> str:
    lines = [
        "| conc | fail | runs | direct sagas/s | in-memory sagas/s | orchestrated sagas/s "
        "| orch/direct | orch/in-memory | direct p99 ms | in-memory p99 ms "
        "| orchestrated p99 ms | p99 orch/in-memory | target |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        target = ""
        if "target" in row:
            bounds = row["target"]
            target = (
                f"in-memory >= {bounds['inmemory_throughput_min']:g}x, "
                f"p99 <= {bounds['inmemory_p99_max']:g}x; "
                f"direct >= {bounds['direct_throughput_min']:g}x: "
                f"{'met' if row['target_met'] else 'MISSED'}"
            )
        lines.append(
            f"| {row['concurrency']} | {100 * row['failure_rate']:.0f}% | {row['repeats']} "
            f"| {_rate(row.get('direct_sagas_per_second'))} "
            f"| {_rate(row.get('inmemory_sagas_per_second'))} "
            f"| {_rate(row['orchestrated_sagas_per_second'])} "
            f"| {_x(row.get('throughput_ratio'))} | {_x(row.get('inmemory_throughput_ratio'))} "
            f"| {_ms(row.get('direct_p99_ms', math.nan))} "
            f"| {_ms(row.get('inmemory_p99_ms', math.nan))} "
            f"| {_ms(row['orchestrated_p99_ms'])} | {_x(row.get('inmemory_p99_ratio'))} "
            f"| {target} |"
        )
    return "\n".join(lines)


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _x(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.2f}"


def in_flight_table(result: dict[str, Any]) -> str:
    if "rss_in_flight_bytes" not in result:
        return f"in-flight case FAILED: {result.get('error_samples')}"
    return "\n".join(
        [
            "| sagas sent | in flight at once | orchestrator RSS before MiB "
            "| RSS with all in flight MiB | RSS per in-flight saga (bytes) "
            "| marginal, 2nd half (bytes) | send s | resent | errors | passed |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
            f"| {result['count']} | {result['in_flight']} | {_mib(result['rss_before_bytes'])} "
            f"| {_mib(result['rss_in_flight_bytes'])} | {result['rss_per_saga_bytes']:.0f} "
            f"| {result['rss_per_saga_marginal_bytes']:.0f} | {result['send_seconds']:.1f} "
            f"| {result['retries']} | {result['errors']} | {'yes' if result['passed'] else 'NO'} |",
            "",
            f"Resent, by the status that asked for it: {result.get('resent_by_status') or 'none'}; "
            f"the case took {result.get('case_seconds', math.nan):.0f} s (it gives up only when "
            "nothing moves for 30 s).",
        ]
    )


def machine_line(machine: dict[str, Any]) -> str:
    return (
        f"{machine['nproc']} CPUs ({machine['cpu_model']}), "
        f"{machine['memory_total_bytes'] / 2**30:.1f} GiB, "
        f"Python {machine['python']}, Linux {machine['kernel']}"
    )


def recovery_table(result: dict[str, Any]) -> str:
    """The recovery case: times, memory, and the calls made while recovering."""
    calls = result["calls"]
    terminal = result["terminal_seconds"]
    check = result.get("check", {})
    verdict = (
        f"ok ({check['sagas']})"
        if check.get("passed")
        else f"FAILED ({check.get('disagreements', '?')} disagree, "
        f"{check.get('errors', '?')} errors)"
        if check
        else "not run"
    )
    targets = result.get("targets")
    wanted = ""
    if targets is not None:
        wanted = (
            f"serving <= {targets['serving_seconds_max']:g} s: "
            f"{'met' if targets['serving_met'] else 'MISSED'}; all terminal <= "
            f"{targets['terminal_seconds_max']:g} s: "
            f"{'met' if targets['terminal_met'] else 'MISSED'}"
        )
    lines = [
        "| sagas | SERVING s | all terminal s | peak RSS MiB | calls | peak calls/s "
        "| mean calls/s | most calls at once | check | targets |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
        f"| {result['count']} | {result['serving_seconds']:.2f} "
        f"| {'-' if terminal is None else f'{terminal:.1f}'} "
        f"| {_mib(result['peak_rss_bytes'])} | {calls['calls']} | {calls['peak_per_second']} "
        f"| {calls['mean_per_busy_second']:.0f} | {calls['most_in_flight']} "
        f"(limit {result['max_recovering_sagas']}) | {verdict} | {wanted} |",
        "",
        "Calls per second from the restart: "
        + (", ".join(str(n) for n in calls["per_second"]) or "none")
        + " ("
        + ", ".join(f"{name} {n}" for name, n in sorted(calls["by_participant"].items()))
        + ").",
    ]
    return "\n".join(lines)


def startup_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Per service, its times to SERVING over every fresh start of the run; the
    orchestrator's restart after the crash (with the sagas to recover) apart."""
    seen: dict[str, list[float]] = {}
    runs = list(results.get("runs", []))
    if "tls" in results:
        runs += [results["tls"]["plaintext"], results["tls"]["mtls"]]
    if "observability" in results:
        runs += [run for kept in results["observability"]["rounds"] for run in kept.values()]
    if "in_flight" in results:
        runs.append(results["in_flight"])
    for run in runs:
        for name, seconds in run.get("startup_seconds", {}).items():
            seen.setdefault(name, []).append(seconds)
    rows = [
        {
            "service": name,
            "starts": len(seen[name]),
            "median_seconds": percentile(sorted(seen[name]), 0.5),
            "max_seconds": max(seen[name]),
        }
        for name in [*(n for n in SERVERS if n in seen), *sorted(seen.keys() - set(SERVERS))]
    ]
    recovered = results.get("in_flight", {}).get("recovery")
    if recovered is not None:
        rows.append(
            {
                "service": f"orchestrator, restarted with {recovered['count']} sagas to recover",
                "starts": 1,
                "median_seconds": recovered["serving_seconds"],
                "max_seconds": recovered["serving_seconds"],
            }
        )
    return rows


def startup_name(service: str, mode: str, postgres: bool) -> str:
    """What a service's startup is filed under: the in-memory orchestrator and
    the orchestrators on PostgreSQL apart from minisaga's on SQLite."""
    if mode == "inmemory" and service == "orchestrator":
        return "in-memory orchestrator"
    if postgres and service.startswith("orchestrator"):
        return "orchestrator on PostgreSQL"
    return service


def startup_table(rows: Sequence[dict[str, Any]]) -> str:
    lines = ["| service | starts | median s | max s |", "|---|---:|---:|---:|"]
    for row in rows:
        lines.append(
            f"| {row['service']} | {row['starts']} | {row['median_seconds']:.2f} "
            f"| {row['max_seconds']:.2f} |"
        )
    return "\n".join(lines)
