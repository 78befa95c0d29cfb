"""Starting real servers for tests: in-process on port 0, or as subprocesses.

In-process servers share the test's event loop, so a test can change a
participant's `FaultConfig` while it runs. Subprocess servers are real
`python -m ...` processes, for SIGKILL and end-to-end tests.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from bench.ports import free_ports as free_ports  # where the tests have always taken it
from service_kit.database import Database
from service_kit.faults import FaultConfig
from service_kit.limits import MAX_DB_QUEUE
from service_kit.server import RunningServer, start_server

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class InProcess:
    """A participant served in this process on a free loopback port."""

    running: RunningServer
    db: Database
    service: Any
    faults: FaultConfig
    channel: grpc.aio.Channel = field(init=False)

    def __post_init__(self) -> None:
        self.channel = grpc.aio.insecure_channel(self.address)

    @property
    def address(self) -> str:
        return self.running.address

    async def stop(self) -> None:
        await self.channel.close(None)
        await self.running.stop(0)
        await self.db.close()


async def serve_in_process(
    db_path: Path,
    schema: str | Sequence[str],
    build: Callable[[Database, FaultConfig], Any],
    add_to_server: Callable[[Any, grpc.aio.Server], None],
    service_name: str,
    faults: FaultConfig | None = None,
    *,
    max_db_queue: int = MAX_DB_QUEUE,
    maximum_concurrent_rpcs: int | None = None,
) -> InProcess:
    # Test servers are development servers: the requests' failure switches work.
    faults = faults or FaultConfig(allow_failure_switches=True)
    db = await Database(db_path, schema=schema, max_queue=max_db_queue).open()
    service = build(db, faults)
    running = await start_server(
        lambda server: add_to_server(service, server),
        [service_name],
        "127.0.0.1:0",
        maximum_concurrent_rpcs=maximum_concurrent_rpcs,
    )
    return InProcess(running, db, service, faults)


# As make run does, subprocess servers honour the requests' failure switches;
# a test of the default sets the variable to "false" in `env`.
DEVELOPMENT_ENV = {
    f"MINISAGA_{name}_ALLOW_FAILURE_SWITCHES": "true"
    for name in ("ORCHESTRATOR", "PAYMENT", "INVENTORY", "SHIPPING")
}

_SERVING = re.compile(r"serving .* on (\S+:\d+)")


@dataclass
class Subprocess:
    """A service started as `python -m module`, its address read from its log."""

    module: str
    args: list[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    address: str = ""

    def start(self, timeout: float = 30.0) -> Subprocess:
        env = {**DEVELOPMENT_ENV, **os.environ, **self.env}
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "generated")])
        with self.log_path.open("ab") as log:  # the child keeps its own copy of the fd
            offset = log.tell()
            self.process = subprocess.Popen(
                [sys.executable, "-m", self.module, *self.args],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.address = self._wait_for_address(offset, timeout)
        return self

    def _wait_for_address(self, offset: int, timeout: float) -> str:
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            text = self.log_path.read_bytes()[offset:].decode(errors="replace")
            match = _SERVING.search(text)
            if match:
                return match.group(1)
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.module} exited early:\n{text}")
            time.sleep(0.02)  # polling a log file for a condition, not waiting blindly
        raise TimeoutError(f"{self.module} did not start in {timeout}s")

    def kill(self) -> None:
        """SIGKILL: no goodbye, no flush, no drain."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def terminate(self, timeout: float = 15.0) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.terminate()
        code = self.process.wait(timeout)
        return code

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


async def wait_until(
    condition: Callable[[], Any], timeout: float = 20.0, interval: float = 0.02
) -> Any:
    """Awaits until condition() (sync or async) is truthy; returns its value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(interval)
