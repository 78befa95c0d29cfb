"""`make test-stress`: the whole suite, several times, on a machine kept busy.

A CPU burner per core runs beside each run, as other work does on a shared CI
machine, so a test that leans on timing (a latency raced against a deadline, a
lease renewed just in time) shows up here rather than as a red CI run later.
Every run must pass; the burners stop with the suite, and each run is bounded by
pytest-timeout and by --run-timeout.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager


def _burn(stop: multiprocessing.synchronize.Event) -> None:
    while not stop.is_set():
        sum(i * i for i in range(10_000))


@contextmanager
def burners(count: int) -> Iterator[None]:
    """`count` processes that keep a core busy each until the block ends."""
    stop = multiprocessing.Event()
    processes = [multiprocessing.Process(target=_burn, args=(stop,)) for _ in range(count)]
    for process in processes:
        process.start()
    try:
        yield
    finally:
        stop.set()
        for process in processes:
            process.join(5)
            if process.is_alive():
                process.kill()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.stress", description=__doc__)
    parser.add_argument("--runs", type=int, default=5, help="how many runs (default 5)")
    parser.add_argument(
        "--burners", type=int, default=os.cpu_count() or 1, help="CPU burners (default: one a core)"
    )
    parser.add_argument(
        "--run-timeout", type=float, default=1800, help="seconds one run may take (default 1800)"
    )
    parser.add_argument("pytest_args", nargs="*", help="passed to pytest (default: the suite)")
    args = parser.parse_args(argv)

    results: list[tuple[int, float]] = []
    for run in range(1, args.runs + 1):
        print(f"--- stress run {run}/{args.runs}, {args.burners} CPU burner(s)", flush=True)
        started = time.monotonic()
        with burners(args.burners):
            try:
                code = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "pytest",
                        "-q",
                        "-p",
                        "no:cacheprovider",
                        *args.pytest_args,
                    ],
                    timeout=args.run_timeout,
                    check=False,
                ).returncode
            except subprocess.TimeoutExpired:
                code = -1
        results.append((code, time.monotonic() - started))
        print(f"--- run {run}: exit {code} in {results[-1][1]:.0f} s", flush=True)

    passed = sum(1 for code, _ in results if code == 0)
    times = ", ".join(f"{seconds:.0f} s" for _, seconds in results)
    print(f"stress: {passed} of {args.runs} runs passed beside {args.burners} burner(s) ({times})")
    return 0 if passed == args.runs else 1


if __name__ == "__main__":
    sys.exit(main())
