"""python -m bench: the benchmark (`make bench`).

For each failure rate and concurrency it runs, on freshly started services
(fresh processes and files for every configuration, so a process's peak RSS,
VmHWM, is that run's peak):

1. direct: the load generator calls Payment, Inventory and Shipping in
   sequence itself (the practical limit: no orchestrator, no log);
2. inmemory: the load generator calls PlaceOrder on bench.inmemory, the
   simplest orchestrator (plain grpc.aio, nothing written, no retries): what
   a hand-written saga runner costs;
3. orchestrated: the load generator calls PlaceOrder on the orchestrator,
   which runs its defaults (saga log with synchronous=FULL);
4. with --store postgresql, beside each orchestrated run: the same on a saga
   log in a throwaway PostgreSQL (durable settings, bench/postgres.py), with
   one orchestrator replica and with two sharing it (PlaceOrders alternate
   between them), each on a fresh database: their throughput and p99 as
   ratios to SQLite's, PostgreSQL's own CPU per saga, and its statements
   (round trips) per saga from pg_stat_statements.

With --repeat N each configuration runs N times (interleaved, so a busy spell
of the machine hits every mode alike) and the comparisons use the medians.

Each run has an unmeasured warm-up, then a measured window of
--duration-seconds; then every saga of the run is checked against the
participants. Last, unless --skip-in-flight, many sagas are held in flight at
once (Shipping slowed by its latency flag) to measure the orchestrator's RSS
per in-flight saga; then, unless --skip-recovery, the orchestrator is SIGKILLed
with all of them in flight and restarted (bench/recovery.py). Every service's
time from process start to SERVING is reported. Prints Markdown tables; writes
JSON. Exits 1 if any call failed, any saga ended other than its order asked,
any participant disagrees with a saga, the in-flight case did not get all its
sagas in flight, or the recovered sagas did not all complete.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from bench import profile, recovery, report
from bench.postgres import PostgresCluster, PostgresUnavailable, start_cluster
from bench.procfs import machine
from bench.services import ROOT, ServiceError, child_env, cluster

DEFAULT_OUTPUT = Path("bench-results/bench.json")
LOADGEN_SLACK = 60.0  # seconds a load generator may take beyond its own bounds
# A saga traced in ten, decided at its root span and followed by every hop (W3C sampled flag).
SAMPLED = {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"}


def _number_list(kind: Callable[[str], Any]) -> Callable[[str], list[Any]]:
    def parse(text: str) -> list[Any]:
        try:
            values = [kind(part) for part in text.split(",") if part.strip()]
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
        if not values:
            raise argparse.ArgumentTypeError("empty list")
        return values

    return parse


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark the orchestrator against a direct baseline on fresh services "
        "(127.0.0.1 only), check every saga, and measure sagas in flight.",
    )
    parser.add_argument(
        "--duration-seconds",
        type=float,
        default=None,
        help="measured window of each configuration (default 5; 1 with --quick)",
    )
    parser.add_argument(
        "--concurrency",
        type=_number_list(int),
        default=None,
        help="PlaceOrders in flight from the load generator (default 1,16,64,256; "
        "1,16 with --quick)",
    )
    parser.add_argument(
        "--failure-rates",
        type=_number_list(float),
        default=[0.0, 0.2],
        help="fractions of orders that fail at Inventory, so compensation runs (default 0,0.2)",
    )
    parser.add_argument(
        "--modes",
        type=lambda text: [m.strip() for m in text.split(",") if m.strip()],
        default=["direct", "inmemory", "orchestrated"],
        help="any of direct, inmemory, orchestrated (default all three)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs of each configuration; comparisons use the medians (default 1)",
    )
    parser.add_argument(
        "--store",
        choices=["sqlite", "postgresql"],
        default="sqlite",
        help="postgresql: also run each orchestrated case on a saga log in a throwaway "
        "PostgreSQL started for the run, with one orchestrator replica and with two, and "
        "compare them to SQLite (needs PostgreSQL's server binaries; default %(default)s)",
    )
    parser.add_argument(
        "--max-sagas",
        type=int,
        default=200_000,
        help="at most this many sagas per measured window (default %(default)s)",
    )
    parser.add_argument(
        "--skip-in-flight", action="store_true", help="skip the many-sagas-in-flight case"
    )
    parser.add_argument(
        "--skip-recovery",
        action="store_true",
        help="skip the recovery case (the orchestrator SIGKILLed with the in-flight case's "
        "sagas in flight, then restarted)",
    )
    parser.add_argument(
        "--tls-concurrency",
        type=int,
        default=None,
        help="the orchestrated case with mTLS on every hop, and plaintext beside it, at this "
        "concurrency, no failures (default 64; 16 with --quick; 0 skips it)",
    )
    parser.add_argument(
        "--observability-concurrency",
        type=int,
        default=None,
        help="the orchestrated case four times at this concurrency, no failures: plain, with "
        "Prometheus metrics on every service, with tracing (100%% sampled, exported to a "
        "local OTLP receiver), and with tracing 10%% sampled (default 64; 16 with --quick; "
        "0 skips it)",
    )
    parser.add_argument(
        "--observability-rounds",
        type=int,
        default=None,
        help="times the four observability runs are made, in turn; their costs are the "
        "medians of each round's ratios (default 3; 1 with --quick)",
    )
    parser.add_argument(
        "--in-flight-sagas",
        type=int,
        default=None,
        help="sagas held in flight at once (default 10000; 200 with --quick)",
    )
    parser.add_argument(
        "--in-flight-latency-ms",
        type=int,
        default=300_000,
        help="Shipping's added latency on CreateShipment in the in-flight case; it bounds "
        "how long sending and measuring may take, however slow the machine (the case's "
        "own bound follows the pace of its first half) (default %(default)s)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: concurrency 1 and 16, 1 s each, 200 sagas in flight",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="sample the orchestrator with py-spy during each orchestrated window "
        "(needs `.venv/bin/pip install py-spy`; profiled rows run slower)",
    )
    parser.add_argument(
        "--profile-native",
        action="store_true",
        help="with --profile: unwind C and Cython frames too (py-spy --native; pauses the "
        "orchestrator at every sample, so it slows it more)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=DEFAULT_OUTPUT,
        help="JSON results (default %(default)s); profiles go beside it",
    )
    parser.add_argument(
        "--keep-files",
        action="store_true",
        help="keep the services' databases and logs (the temp folder is printed)",
    )
    args = parser.parse_args(argv)
    if args.duration_seconds is None:
        args.duration_seconds = 1.0 if args.quick else 5.0
    if args.concurrency is None:
        args.concurrency = [1, 16] if args.quick else [1, 16, 64, 256]
    if args.in_flight_sagas is None:
        args.in_flight_sagas = 200 if args.quick else 10_000
    if args.tls_concurrency is None:
        args.tls_concurrency = 16 if args.quick else 64
    if not 0 <= args.tls_concurrency <= 4096:
        parser.error("--tls-concurrency must be in [0, 4096]")
    if args.observability_concurrency is None:
        args.observability_concurrency = 16 if args.quick else 64
    if not 0 <= args.observability_concurrency <= 4096:
        parser.error("--observability-concurrency must be in [0, 4096]")
    if args.observability_rounds is None:
        args.observability_rounds = 1 if args.quick else 3
    if not 1 <= args.observability_rounds <= 10:
        parser.error("--observability-rounds must be in [1, 10]")
    if not 1 <= args.repeat <= 10:
        parser.error("--repeat must be in [1, 10]")
    if args.duration_seconds <= 0 or args.duration_seconds > 600:
        parser.error("--duration-seconds must be in (0, 600]")
    if any(not 1 <= c <= 4096 for c in args.concurrency):
        parser.error("--concurrency values must be in [1, 4096]")
    if any(not 0.0 <= r < 1.0 for r in args.failure_rates):
        parser.error("--failure-rates must be in [0, 1)")
    if not set(args.modes) <= {"direct", "inmemory", "orchestrated"} or not args.modes:
        parser.error("--modes takes direct, inmemory and/or orchestrated")
    if args.store == "postgresql" and "orchestrated" not in args.modes:
        parser.error("--store postgresql compares with SQLite's orchestrated runs: keep that mode")
    if not 2 <= args.in_flight_sagas <= 100_000:
        parser.error("--in-flight-sagas must be in [2, 100000]")
    if args.in_flight_latency_ms < 10_000:
        parser.error("--in-flight-latency-ms must be at least 10000")
    args.profile = args.profile or args.profile_native
    if args.profile and profile.py_spy() is None:
        parser.error("--profile needs py-spy: .venv/bin/pip install py-spy")
    return args


def run_loadgen(
    spec: dict[str, Any],
    timeout: float,
    log: Path,
    on_window_start: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Runs `python -m bench.loadgen` on `spec`; returns its result line."""
    with log.open("ab") as errors:
        process = subprocess.Popen(
            [sys.executable, "-m", "bench.loadgen"],
            cwd=ROOT,
            env=child_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errors,
        )
    lines: queue.Queue[bytes | None] = queue.Queue()

    def pump(stream: IO[bytes]) -> None:
        for line in stream:
            lines.put(line)
        lines.put(None)

    assert process.stdin is not None and process.stdout is not None
    reader = threading.Thread(target=pump, args=(process.stdout,), daemon=True)
    reader.start()
    process.stdin.write(json.dumps(spec).encode())
    process.stdin.close()
    deadline = time.monotonic() + timeout
    result: dict[str, Any] | None = None
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"load generator did not finish within {timeout:.0f}s")
            try:
                line = lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                break
            message = json.loads(line)
            if message["event"] == "window-start" and on_window_start is not None:
                on_window_start()
            elif message["event"] == "result":
                result = message
        code = process.wait(max(1.0, deadline - time.monotonic()))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    if code != 0 or result is None:
        tail = log.read_text(errors="replace")[-4000:]
        raise RuntimeError(f"load generator exited with status {code}:\n{tail}")
    return result


def run_configuration(
    args: argparse.Namespace,
    workdir: Path,
    mode: str,
    concurrency: int,
    failure_rate: float,
    *,
    tls_dir: Path | None = None,
    tag: str = "",
    extra_args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    shown: str = "",
    postgres: PostgresCluster | None = None,
    replicas: int = 1,
) -> dict[str, Any]:
    """One run on fresh services; with `tls_dir`, mTLS on every hop (the load
    generator dials as the operator, who may place orders and read the records).
    With `postgres`, the saga log is a fresh database of that server, shared by
    `replicas` orchestrators."""
    name = f"{mode}{tag}-c{concurrency}-f{failure_rate:g}"
    folder = workdir / name
    warmup = max(10 if args.quick else 20, 2 * concurrency)
    store = "" if postgres is None else asyncio.run(postgres.create_database("bench"))
    with cluster(
        folder,
        orchestrator="inmemory" if mode == "inmemory" else mode == "orchestrated",
        tls_dir=tls_dir,
        extra_args=extra_args,
        env=env,
        store=store,
        replicas=replicas,
    ) as services:
        spec = {
            "tls": None
            if tls_dir is None
            else {
                "ca": str(tls_dir / "ca.crt"),
                "cert": str(tls_dir / "operator.crt"),
                "key": str(tls_dir / "operator.key"),
            },
            "mode": mode,
            "addresses": {n: s.address for n, s in services.services.items()},
            "pids": services.pids(),
            "concurrency": concurrency,
            "duration": args.duration_seconds,
            "failure_rate": failure_rate,
            "warmup": warmup,
            "max_sagas": args.max_sagas,
        }
        if postgres is not None:
            spec["trees"] = {"postgres": postgres.pid}
            spec["postgres"] = {"url": postgres.url(), "database": store.rsplit("/", 1)[1]}
        sampler: list[subprocess.Popen[bytes]] = []
        raw_profile = args.output.parent / f"profile-{name}.raw.txt"

        def start_profile() -> None:
            if args.profile and mode == "orchestrated":
                sampler.append(
                    profile.start(
                        services.services["orchestrator"].pid,
                        args.duration_seconds,
                        raw_profile,
                        native=args.profile_native,
                    )
                )

        bound = args.duration_seconds + 30 * 3 + 300 + LOADGEN_SLACK
        raw = run_loadgen(spec, bound, folder / "loadgen.log", start_profile)
        services.check_alive()
        shown = shown or (f"{mode}+mTLS" if tls_dir is not None else mode)
        summary = report.summarize_run(shown, concurrency, failure_rate, raw)
        summary["startup_seconds"] = {
            report.startup_name(service, mode, postgres is not None): seconds
            for service, seconds in services.startup_seconds().items()
        }
        summary["orchestrator_settings"] = "defaults (synchronous=FULL)" if mode != "direct" else ""
        if postgres is not None:
            summary["store"] = "postgresql"
            summary["replicas"] = replicas
            summary["postgres"] = raw["postgres"]
            plural = "s" if replicas > 1 else ""
            summary["orchestrator_settings"] = (
                f"defaults, --store postgresql ({replicas} replica{plural})"
            )
        for process in sampler:
            try:
                _, stderr = process.communicate(timeout=args.duration_seconds + 30)
            except subprocess.TimeoutExpired:
                process.kill()
                _, stderr = process.communicate()
            if raw_profile.exists():
                summary["profile"] = {
                    "raw": str(raw_profile),
                    **profile.summarize(raw_profile),
                }
            else:
                summary["profile"] = {"error": stderr.decode(errors="replace")[-2000:]}
        return summary


def run_postgres(
    args: argparse.Namespace,
    workdir: Path,
    postgres: PostgresCluster,
    concurrency: int,
    failure_rate: float,
    tag: str = "",
) -> list[dict[str, Any]]:
    """The orchestrated case on PostgreSQL: one replica, then two sharing the log."""
    return [
        run_configuration(
            args,
            workdir,
            "orchestrated",
            concurrency,
            failure_rate,
            tag=f"-pg{replicas}{tag}",
            shown=f"orchestrated+pg{replicas}",
            postgres=postgres,
            replicas=replicas,
        )
        for replicas in (1, 2)
    ]


def start_postgres() -> PostgresCluster:
    """The throwaway PostgreSQL of a --store postgresql run: durable (fsync and
    synchronous_commit on, like SQLite's synchronous=FULL), counting statements."""
    postgres = start_cluster(
        durable=True,
        settings=["shared_preload_libraries=pg_stat_statements", "pg_stat_statements.max=1000"],
    )
    try:
        asyncio.run(_create_statements_view(postgres))
    except BaseException as error:
        postgres.stop()
        if isinstance(error, Exception):  # asyncpg's: the extension is not installed, say
            raise PostgresUnavailable(f"pg_stat_statements: {error}") from error
        raise
    return postgres


async def _create_statements_view(postgres: PostgresCluster) -> None:
    import asyncpg  # the `postgres` extra's, which make bench has

    conn = await asyncpg.connect(postgres.url())
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    finally:
        await conn.close()


def run_tls(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """The orchestrated case at --tls-concurrency on plaintext, then on mTLS with the
    certificates of `minisaga certs init`: the cost of mTLS as ratios of the two."""
    from service_kit import certs  # cryptography: the server extra, which make bench has

    tls_dir = workdir / "certs"
    if not (tls_dir / "ca.crt").exists():
        certs.init(tls_dir)
    concurrency = args.tls_concurrency
    plaintext = run_configuration(args, workdir, "orchestrated", concurrency, 0.0, tag="-ref")
    mtls = run_configuration(
        args, workdir, "orchestrated", concurrency, 0.0, tls_dir=tls_dir, tag="-mtls"
    )
    return report.tls_comparison(plaintext, mtls)


def run_observability(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """The orchestrated case at --observability-concurrency four times on fresh
    services: plain; with --metrics-listen on all four (nobody scrapes: the cost
    is in observing); with tracing, 100% sampled, exported over OTLP/gRPC to a
    receiver in this process; and with tracing sampled at 10% (SAMPLED). That
    round is run --observability-rounds times; each cost is the median over the
    rounds of its ratio to the same round's plain run, so a busy spell on the
    machine tilts one round, not the figure."""
    from bench.otlp import Receiver  # opentelemetry-proto: the server extra, which make bench has

    def run(tag: str, **how: Any) -> dict[str, Any]:
        return run_configuration(
            args, workdir, "orchestrated", args.observability_concurrency, 0.0, tag=tag, **how
        )

    def traced(tag: str, shown: str, sampler: dict[str, str]) -> dict[str, Any]:
        with Receiver() as receiver:
            result = run(tag, env={**receiver.env(), **sampler}, shown=shown)
            # Every service has stopped (flushing its spans on SIGTERM) when the cluster ends.
            result["spans_received"] = receiver.counter.spans
        return result

    rounds = []
    for number in range(1, args.observability_rounds + 1):
        tag = f"-o{number}" if args.observability_rounds > 1 else ""
        rounds.append(
            {
                "plain": run(f"-plain{tag}"),
                "metrics": run(
                    f"-metrics{tag}",
                    extra_args=("--metrics-listen", "127.0.0.1:0"),
                    shown="orchestrated+metrics",
                ),
                "tracing": traced(f"-tracing{tag}", "orchestrated+tracing", {}),
                # What production would run: one saga in ten traced.
                "tracing_sampled": traced(
                    f"-tracing-sampled{tag}", "orchestrated+tracing 10%", SAMPLED
                ),
            }
        )
    return report.observability_comparison(rounds)


def run_in_flight(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    latency_ms = args.in_flight_latency_ms
    folder = workdir / "in-flight"
    with cluster(
        folder,
        orchestrator=True,
        shipping_args=[
            "--fault-latency-ms",
            str(latency_ms),
            "--fault-methods",
            "CreateShipment",
            # Every saga's CreateShipment is in flight at once: the limits make room.
            "--max-concurrent-rpcs",
            str(args.in_flight_sagas + 1000),
        ],
        # The one slow call must not time out (and be retried) while we measure.
        orchestrator_args=[
            "--attempt-timeout-ms",
            str(latency_ms + 60_000),
            "--saga-deadline-seconds",
            str(latency_ms // 1000 + 300),
            "--max-sagas-in-flight",
            str(args.in_flight_sagas),
            "--max-calls-per-participant",
            str(args.in_flight_sagas),
            "--max-db-queue",
            str(2 * args.in_flight_sagas),
        ],
    ) as services:
        bound = latency_ms / 1000 - 5  # measure before the first shipments come back
        spec = {
            "mode": "in_flight",
            "addresses": {n: s.address for n, s in services.services.items()},
            "pids": services.pids(),
            "in_flight_count": args.in_flight_sagas,
            "in_flight_deadline": 1.0,
            "in_flight_concurrency": 500,
            "in_flight_bound": bound,
        }
        result = run_loadgen(spec, bound + LOADGEN_SLACK, folder / "loadgen.log")
        services.check_alive()
        result.pop("event", None)
        saga_ids: list[str] = result.pop("saga_ids", [])
        result["startup_seconds"] = services.startup_seconds()
        result["shipping_latency_ms"] = latency_ms
        result["orchestrator_settings"] = (
            f"defaults, but --attempt-timeout-ms {latency_ms + 60_000} and "
            f"--saga-deadline-seconds {latency_ms // 1000 + 300} (longer than Shipping's delay), "
            f"--max-sagas-in-flight and --max-calls-per-participant {args.in_flight_sagas}, "
            f"--max-db-queue {2 * args.in_flight_sagas}"
        )
        if args.skip_recovery or not result.get("passed"):
            return result
        print(f"running recovery of {len(saga_ids)} sagas in flight …", file=sys.stderr,
              flush=True)  # fmt: skip

        def check(addresses: dict[str, str], ids: list[str]) -> dict[str, Any]:
            spec = {"mode": "check", "addresses": addresses, "pids": {}, "check_saga_ids": ids}
            checked = run_loadgen(spec, 300 + LOADGEN_SLACK, folder / "loadgen.log")
            return dict(checked["check"])

        result["recovery"] = recovery.run(services, saga_ids, folder, check)
        return result


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    host = machine()
    results: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": host,
        "settings": {
            "duration_seconds": args.duration_seconds,
            "concurrency": args.concurrency,
            "failure_rates": args.failure_rates,
            "modes": args.modes,
            "repeat": args.repeat,
            "quick": args.quick,
            "profile": args.profile,
            "store": args.store,
            "processes": "fresh services for every configuration; peak RSS is VmHWM",
        },
        "runs": [],
    }
    problems: list[str] = []
    print(f"# minisaga benchmark\n\nmachine: {report.machine_line(host)}\n", flush=True)
    temp = tempfile.mkdtemp(prefix="minisaga-bench-")
    workdir = Path(temp)
    postgres: PostgresCluster | None = None
    try:
        if args.store == "postgresql":
            print("starting a throwaway PostgreSQL …", file=sys.stderr, flush=True)
            postgres = start_postgres()
            results["postgres_server"] = postgres.version()
        for rate in args.failure_rates:
            for concurrency in args.concurrency:
                for repeat, mode in itertools.product(range(args.repeat), args.modes):
                    label = f"{mode} c={concurrency} fail={100 * rate:.0f}%"
                    if args.repeat > 1:
                        label += f" run {repeat + 1}/{args.repeat}"
                    print(f"running {label} …", file=sys.stderr, flush=True)
                    tag = f"-r{repeat + 1}" if args.repeat > 1 else ""
                    runs = [run_configuration(args, workdir, mode, concurrency, rate, tag=tag)]
                    if postgres is not None and mode == "orchestrated":
                        print(f"running {label} on PostgreSQL, 1 then 2 replicas …",
                              file=sys.stderr, flush=True)  # fmt: skip
                        runs += run_postgres(args, workdir, postgres, concurrency, rate, tag)
                    results["runs"] += runs
                    for run in runs:
                        problems += _failed(run, label)
        results["comparisons"] = report.compare(results["runs"])
        if postgres is not None:
            results["postgres"] = report.postgres_comparison(results["runs"])
        if args.tls_concurrency:
            print(f"running orchestrated c={args.tls_concurrency}, plaintext then mTLS …",
                  file=sys.stderr, flush=True)  # fmt: skip
            results["tls"] = run_tls(args, workdir)
            for run in (results["tls"]["plaintext"], results["tls"]["mtls"]):
                problems += _failed(run)
        if args.observability_concurrency:
            print(f"running orchestrated c={args.observability_concurrency}: plain, metrics, "
                  "tracing …", file=sys.stderr, flush=True)  # fmt: skip
            results["observability"] = run_observability(args, workdir)
            for seen in results["observability"]["rounds"]:
                for run in seen.values():
                    problems += _failed(run)
        if not args.skip_in_flight:
            print(f"running {args.in_flight_sagas} sagas in flight …", file=sys.stderr, flush=True)
            results["in_flight"] = run_in_flight(args, workdir)
            if not results["in_flight"].get("passed"):
                problems.append(f"in-flight case: {results['in_flight']}")
            elif "recovery" in results["in_flight"]:
                recovered = results["in_flight"]["recovery"]
                problems += [f"recovery case: {problem}" for problem in recovered["problems"]]
    except PostgresUnavailable as error:
        problems.append(f"PostgreSQL unavailable: {error}")
    except (ServiceError, RuntimeError, TimeoutError) as error:
        problems.append(f"benchmark stopped: {error}")
    finally:
        results["startup"] = report.startup_rows(results)
        if postgres is not None:
            postgres.stop()
        results["problems"] = problems
        results["passed"] = not problems
        if args.keep_files:
            print(f"services' files and logs kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
        args.output.write_text(json.dumps(_finite(results), indent=2, allow_nan=False) + "\n")
    print(render(results))
    print(f"\nJSON: {args.output}")
    if problems:
        print("\nFAILED:\n" + "\n".join(f"- {p}" for p in problems), file=sys.stderr)
        return 1
    return 0


def _failed(run: dict[str, Any], label: str = "") -> list[str]:
    """What a run that did not pass adds to the FAILED list (nothing if it passed)."""
    if run["passed"]:
        return []
    where = label or f"c={run['concurrency']}"
    return [
        f"{run['mode']} {where}: {run['errors']} errors, {run['unexpected_outcomes']} "
        f"unexpected outcomes, check {run['check']}; samples {run['error_samples']}"
    ]


def _finite(value: Any) -> Any:
    """NaN (a figure with no samples) becomes null: JSON has no NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def _listed(ratios: Sequence[float]) -> str:
    return ", ".join(f"{r:.2f}" for r in ratios)


def render(results: dict[str, Any]) -> str:
    parts = []
    if results["runs"]:
        parts += [
            "## Runs",
            "",
            "Orchestrated rows run the orchestrator's defaults (saga log in SQLite, WAL, "
            "synchronous=FULL); inmemory rows run bench.inmemory, a plain grpc.aio "
            "orchestrator that keeps nothing and retries nothing; direct rows call the "
            "participants in sequence with no orchestrator and no log. CPU is per saga of "
            "the measured window; peak RSS is VmHWM of that run's fresh process. errors "
            "counts failed calls and sagas that ended other than their order asked; check "
            "is every saga against the participants.",
            "",
            report.runs_table(results["runs"]),
            "",
        ]
    if results.get("comparisons"):
        parts += [
            "## Orchestrated / its baselines",
            "",
            "Medians of the runs of each configuration. The targets hold at "
            f"concurrency {report.TARGET_CONCURRENCY}.",
            "",
            report.comparison_table(results["comparisons"]),
        ]
        parts.append("")
    if results.get("postgres"):
        parts += [
            "## PostgreSQL saga log / SQLite",
            "",
            f"Each orchestrated case again with its saga log on PostgreSQL "
            f"({results.get('postgres_server', '?')}, started for this run with its durable "
            "defaults: fsync and synchronous_commit on), a fresh database per run: PG1 is one "
            "orchestrator replica, PG2 two sharing the database (the load generator sends "
            "PlaceOrders to each in turn). Round trips per saga are PostgreSQL's statements "
            "over the measured window (pg_stat_statements), lease renewals and recovery scans "
            "included; PostgreSQL CPU is its server processes' (procfs); orchestrator CPU is "
            "every replica's. Medians of the runs of each configuration.",
            "",
            report.postgres_table(results["postgres"]),
            "",
        ]
        shown = [r for r in results["runs"] if r.get("store") == "postgresql"]
        busiest = max(shown, key=lambda r: (r["concurrency"], -r["failure_rate"], -r["replicas"]))
        parts += [
            f"Statements per saga, {busiest['mode']} c={busiest['concurrency']} "
            f"fail={100 * busiest['failure_rate']:.0f}%:",
            "",
            report.statements_table(busiest),
            "",
        ]
    if "tls" in results:
        tls = results["tls"]
        parts += [
            "## mTLS on every hop",
            "",
            "The orchestrated case twice, on fresh services: plaintext, then every service "
            "serving mTLS with its certificate from `minisaga certs init`, the orchestrator "
            "dialing the participants with its own and the load generator as the operator.",
            "",
            report.runs_table([tls["plaintext"], tls["mtls"]]),
            "",
            f"mTLS / plaintext: throughput {tls['throughput_ratio']:.2f}, "
            f"p99 latency {tls['p99_ratio']:.2f}, orchestrator CPU per saga "
            f"{tls['orchestrator_cpu_ratio']:.2f}.",
            "",
        ]
    if "observability" in results:
        seen = results["observability"]
        rounds = seen["rounds"]
        runs = [run for kept in rounds for run in kept.values()]
        received = [kept["tracing"].get("spans_received", 0) for kept in rounds]
        parts += [
            "## Metrics and tracing",
            "",
            "The orchestrated case four times, on fresh services: plain; with "
            "`--metrics-listen` on all four services; with tracing on all four, every saga "
            "sampled and its spans exported over OTLP/gRPC to a receiver in the benchmark's "
            f"process ({', '.join(map(str, received))} spans received); and with "
            "tracing sampling one saga in ten (`parentbased_traceidratio`, 0.1). "
            f"{len(rounds)} round(s) of the four, in turn; each ratio is the median over the "
            "rounds of that round's run against its plain run.",
            "",
            report.runs_table(runs),
            "",
            f"metrics / plain: throughput {seen['metrics_throughput_ratio']:.2f}, orchestrator "
            f"CPU per saga {seen['metrics_cpu_ratio']:.2f}; tracing / plain: throughput "
            f"{seen['tracing_throughput_ratio']:.2f}, orchestrator CPU per saga "
            f"{seen['tracing_cpu_ratio']:.2f}, p99 latency {seen['tracing_p99_ratio']:.2f}; "
            "tracing 10% sampled / plain: throughput "
            f"{seen['sampled_throughput_ratio']:.2f}, orchestrator CPU per saga "
            f"{seen['sampled_cpu_ratio']:.2f} ({seen['tracing_sampled'].get('spans_received', 0)} "
            "spans received). Throughput ratios round by round: metrics "
            f"{_listed(seen['rounds_ratios']['metrics_throughput_ratio'])}, tracing "
            f"{_listed(seen['rounds_ratios']['tracing_throughput_ratio'])}, tracing 10% "
            f"{_listed(seen['rounds_ratios']['sampled_throughput_ratio'])}.",
            "",
        ]
    if "in_flight" in results:
        result = results["in_flight"]
        parts += [
            "## Sagas in flight at once",
            "",
            f"Shipping delays CreateShipment by {result.get('shipping_latency_ms', '?')} ms; "
            "PlaceOrders are sent with a 1 s deadline and return RUNNING (one shed with "
            "RESOURCE_EXHAUSTED or out of time is resent with the same request_id after a "
            "pause: 'resent'). The orchestrator "
            f"runs {result.get('orchestrator_settings', '?')}.",
            "",
            report.in_flight_table(result),
            "",
        ]
    if "recovery" in results.get("in_flight", {}):
        parts += [
            "## Recovery after a crash",
            "",
            "With the sagas above in flight, the orchestrator is SIGKILLed; Shipping restarts "
            "without its delay; the orchestrator restarts on the same saga log with its "
            "defaults. Times are from the new process's start; calls are those of its log "
            "(every attempt is recorded before its RPC). Every saga is then checked against "
            "the participants.",
            "",
            report.recovery_table(results["in_flight"]["recovery"]),
            "",
        ]
    startup = report.startup_rows(results)
    if startup:
        parts += [
            "## Startup",
            "",
            "Time from process start to the first SERVING answer of grpc.health.v1.Health "
            "(polled every 20 ms), over every fresh service the benchmark started.",
            "",
            report.startup_table(startup),
            "",
        ]
    for run in results["runs"]:
        if "profile" in run and "samples" in run["profile"]:
            parts += [
                f"## Profile of the orchestrator, c={run['concurrency']} "
                f"fail={100 * run['failure_rate']:.0f}% (py-spy)",
                "",
                profile.markdown(run["profile"]),
            ]
    return "\n".join(parts).rstrip() + "\n"
