"""Sampling the orchestrator with py-spy during a measured window, and reading the result.

py-spy is not a dependency of minisaga: `.venv/bin/pip install py-spy` for
`python -m bench --profile`. It writes collapsed stacks ("raw" format: one line
per distinct stack, frames joined by ';', then the sample count), which
`summarize` turns into the functions that take the most samples, both by self
time (the function is the innermost frame) and inclusive (anywhere on the
stack). Any flame-graph tool reads the raw file too.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

_LINE = re.compile(r":\d+\)$")
# Frames of these packages are ours: the "project" table keeps only them.
PROJECT_PACKAGES = (
    "orchestrator_server",
    "service_kit",
    "payment_server",
    "inventory_server",
    "shipping_server",
)


def py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    if beside.exists():
        return str(beside)
    return shutil.which("py-spy")


def start(
    pid: int, seconds: float, output: Path, *, rate: int = 200, native: bool = False
) -> subprocess.Popen[bytes]:
    """py-spy record on `pid` for `seconds`. Without `native` it samples without
    pausing the process (--nonblocking); with it, it also unwinds C and Cython
    frames (grpc's core, sqlite3), which needs the process paused per sample."""
    executable = py_spy()
    if executable is None:
        raise RuntimeError("py-spy not found: .venv/bin/pip install py-spy")
    return subprocess.Popen(
        [
            executable,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(max(1, round(seconds))),
            "--rate",
            str(rate),
            "--format",
            "raw",
            "--threads",
            "--native" if native else "--nonblocking",
            "--output",
            str(output),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _function(frame: str) -> str:
    """'run (/x/engine.py:123)' -> 'run (engine.py)': one entry per function."""
    name, _, where = frame.partition(" (")
    if not where:
        return frame
    path = _LINE.sub(")", "(" + where)
    return f"{name} ({Path(path[1:-1]).name})"


def _ours(frame: str) -> bool:
    _, _, where = frame.partition(" (")
    return where.startswith(PROJECT_PACKAGES) and "__main__.py" not in where


def summarize(raw: Path, top: int = 15) -> dict[str, Any]:
    """Top functions by self samples (innermost frame), by line, inclusive (anywhere
    on the stack), inclusive among our own packages only, and samples per thread."""
    total = 0
    own: Counter[str] = Counter()
    lines: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    project: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread = frames[0] if frames[0].startswith(("thread", "process")) else ""
        if thread:
            frames = frames[1:]
            while frames and frames[0].startswith(("thread", "process")):
                thread, frames = frames[0], frames[1:]
        total += count
        threads[thread or "?"] += count
        functions = [_function(frame) for frame in frames]
        if functions:
            own[functions[-1]] += count
            lines[frames[-1]] += count
        for function in set(functions):
            inclusive[function] += count
        for function in {_function(frame) for frame in frames if _ours(frame)}:
            project[function] += count

    def table(counter: Counter[str]) -> list[dict[str, Any]]:
        return [
            {"function": name, "samples": n, "percent": 100.0 * n / total if total else 0.0}
            for name, n in counter.most_common(top)
        ]

    return {
        "samples": total,
        "threads": table(threads),
        "self": table(own),
        "self_by_line": table(lines),
        "inclusive": table(inclusive),
        "project_inclusive": table(project),
    }


def markdown(summary: dict[str, Any]) -> str:
    lines = [f"{summary['samples']} samples (active threads only)", ""]
    tables = (
        ("self", "self"),
        ("self, by line", "self_by_line"),
        ("inclusive, minisaga code only", "project_inclusive"),
        ("thread", "threads"),
    )
    for title, key in tables:
        lines += [f"| {title} % | function |", "| ---: | --- |"]
        lines += [f"| {row['percent']:.1f} | `{row['function']}` |" for row in summary[key]]
        lines.append("")
    return "\n".join(lines)
