"""Free loopback ports for a process that must be told its port in advance
(make run's services in the tests, a throwaway PostgreSQL)."""

from __future__ import annotations

import random
import socket
from contextlib import ExitStack
from pathlib import Path


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_ports(count: int) -> list[int]:
    """Free loopback ports, all different.

    They are picked below the kernel's ephemeral range: the OS never gives
    those to an outgoing connection, which on a busy machine could otherwise
    take a port between our pick and the service's bind. Each is checked free
    by binding it; only another listener could take it after that.
    """
    picker = random.Random()  # not the tests' seeded random: two runs must not agree
    spare = range(20000, max(20001, min(_ephemeral_low(), 32768)))
    with ExitStack() as stack:
        ports: list[int] = []
        while len(ports) < count:
            port = picker.choice(spare)
            if port in ports:
                continue
            sock = stack.enter_context(socket.socket())
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            ports.append(port)
        return ports
