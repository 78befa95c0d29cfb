"""What /proc says about a process (Linux): CPU seconds and memory; the machine."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Any

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str]:
    """/proc/<pid>/stat from its field 3 (state) on: fields[n] is proc(5)'s field n + 3."""
    text = Path(f"/proc/{pid}/stat").read_text()
    # The command name, field 2, is in parentheses and may hold spaces.
    return text[text.rindex(")") + 2 :].split()


def cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of `pid`, in seconds."""
    fields = _stat(pid)
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / CLOCK_TICKS


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of `pid` and of its children, living and ended: a server that
    forks a process per connection (PostgreSQL's postmaster and its backends).

    `pid`'s own time, plus cutime + cstime (its children it has waited for), plus
    each living child's time. The difference of two readings counts a child that
    ended in between: its time moved from the living sum into cutime."""
    fields = _stat(pid)
    total = sum(int(fields[n]) for n in (11, 12, 13, 14))  # utime stime cutime cstime
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            child = _stat(int(entry.name))
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue  # ended while we looked
        if int(child[1]) == pid:  # field 4, ppid
            total += sum(int(child[n]) for n in (11, 12, 13, 14))
    return total / CLOCK_TICKS


def memory_bytes(pid: int) -> dict[str, int]:
    """VmRSS (now) and VmHWM (peak resident set since the process started), in bytes."""
    found: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            number, unit = value.split()
            assert unit == "kB", line
            found[key] = int(number) * 1024
    return {"rss": found["VmRSS"], "peak_rss": found["VmHWM"]}


def machine() -> dict[str, Any]:
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "cpu model"):
                model = value.strip()
                break
    memory_total = 0
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_total = int(line.split()[1]) * 1024
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cpu_model": model or platform.processor() or "unknown",
        "memory_total_bytes": memory_total,
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "kernel": platform.release(),
        "platform": platform.platform(),
    }
