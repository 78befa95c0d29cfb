"""Starting a child process that dies with its parent (Linux).

The death signal (PR_SET_PDEATHSIG) used to be set in a subprocess
`preexec_fn`. A preexec_fn makes subprocess fork() instead of vfork(), so the
child runs the parent's pthread_atfork handlers before exec: gRPC's among
them, in a parent with gRPC channels open. On a busy machine such a child
could abort before it ever ran the service ("pthread_create failed",
"epoll_wait error: Bad file descriptor"). So the child is a small trampoline
instead: a fresh Python, which has nothing of the parent in it, sets the
death signal and execs the real command (the pid, and so the process, stay
the same).
"""

from __future__ import annotations

import os
import signal
import sys

_TRAMPOLINE = (
    "import ctypes, os, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, int(sys.argv[1]))  # PR_SET_PDEATHSIG\n"
    "if os.getppid() != int(sys.argv[2]):\n"
    "    sys.exit(1)  # the parent died before the signal was set\n"
    "os.execv(sys.argv[3], sys.argv[3:])\n"
)


def dying_with_parent(
    command: list[str], death_signal: signal.Signals = signal.SIGKILL
) -> list[str]:
    """`command` (its first item a path), run so that on Linux it gets
    `death_signal` when this process dies; elsewhere `command` as it is."""
    if sys.platform != "linux":
        return command
    return [
        sys.executable,
        "-c",
        _TRAMPOLINE,
        str(int(death_signal)),
        str(os.getpid()),
        *command,
    ]
