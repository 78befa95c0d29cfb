"""A child started through `dying_with_parent` is the real command under the same
pid, and dies when its parent is SIGKILLed (Linux)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from service_kit.spawn import dying_with_parent

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")

SLEEPER = [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(120)"]


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return True
    return state == "Z"


def _wait(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)  # polling /proc for a state, bounded by the deadline


def test_the_child_is_the_command_itself_under_the_same_pid() -> None:
    child = subprocess.Popen(dying_with_parent(SLEEPER), stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "up\n"
        cmdline = Path(f"/proc/{child.pid}/cmdline").read_bytes().split(b"\0")
        assert cmdline[1:3] == [b"-c", SLEEPER[2].encode()]
    finally:
        child.kill()
        child.wait()


def test_the_child_dies_when_its_parent_is_killed() -> None:
    parent_code = (
        "import subprocess, sys\n"
        "from service_kit.spawn import dying_with_parent\n"
        f"command = dying_with_parent({SLEEPER!r})\n"
        "child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)\n"
        "child.stdout.readline()\n"
        "print(child.pid, flush=True)\n"
        "child.wait()\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    parent = subprocess.Popen(
        [sys.executable, "-c", parent_code], stdout=subprocess.PIPE, text=True, env=env
    )
    assert parent.stdout is not None
    grandchild = int(parent.stdout.readline())
    assert not _gone(grandchild)

    parent.kill()  # SIGKILL: no clean-up code of the parent runs
    parent.wait()

    _wait(lambda: _gone(grandchild))
