"""`python -m service_kit.run_all` (what `make run` runs), as a real process tree."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.conftest import PARTICIPANTS, require_main
from tests.e2e.grpcurl import Grpcurl
from tests.harness import ROOT, free_ports

pytestmark = pytest.mark.slow


@dataclass
class RunAll:
    process: subprocess.Popen[bytes]
    out: Path
    err: Path
    ports: list[int]
    console_port: int

    def stdout(self) -> str:
        return self.out.read_text(errors="replace")

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def wait_for_output(self, text: str, timeout: float = 60.0) -> str:
        """Polls run_all's output until `text` appears; fails if it exits first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.stdout()
            if text in out:
                return out
            if self.process.poll() is not None:
                pytest.fail(f"run_all exited {self.process.returncode}:\n{out}\n{self.stderr()}")
            time.sleep(0.05)  # polling a file for a condition, not waiting blindly
        pytest.fail(f"no {text!r} from run_all in {timeout}s:\n{self.stdout()}\n{self.stderr()}")

    def children(self) -> dict[str, int]:
        """The service processes run_all started, by service name (Linux /proc)."""
        pid = self.process.pid
        pids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        found: dict[str, int] = {}
        for child in map(int, pids):
            argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            module = argv[argv.index(b"-m") + 1].decode()
            name = "console" if module == "minisaga_client.cli" else module.removesuffix("_server")
            found[name] = child
        return found


@pytest.fixture
def run_all(tmp_path: Path) -> Iterator[RunAll]:
    for participant in PARTICIPANTS.values():
        require_main(participant.module)
    *ports, console_port = free_ports(5)
    out, err = tmp_path / "run_all.out", tmp_path / "run_all.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "service_kit.run_all",
                "--data-dir", str(tmp_path / "data"),
                "--ports", ",".join(map(str, ports)),
                "--console-port", str(console_port),
            ],
            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
        )  # fmt: skip
    running = RunAll(process, out, err, ports, console_port)
    try:
        yield running
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def expected_names() -> list[str]:
    return [*PARTICIPANTS, "orchestrator", "console"]


def test_run_all_serves_everything_and_stops_on_sigterm(
    run_all: RunAll, grpcurl: Grpcurl, tmp_path: Path
) -> None:
    out = run_all.wait_for_output("hint:")
    orchestrator_port, payment_port, inventory_port, shipping_port = run_all.ports
    lines = {line.split()[0]: line.split()[1:] for line in out.splitlines() if "SERVING" in line}
    assert sorted(lines) == sorted(expected_names())
    assert lines["payment"] == [f"127.0.0.1:{payment_port}", "SERVING"]
    assert lines["inventory"] == [f"127.0.0.1:{inventory_port}", "SERVING"]
    assert lines["shipping"] == [f"127.0.0.1:{shipping_port}", "SERVING"]
    if "orchestrator" in lines:
        assert lines["orchestrator"] == [f"127.0.0.1:{orchestrator_port}", "SERVING"]
        url = f"http://127.0.0.1:{run_all.console_port}/"
        assert lines["console"] == [url, "SERVING"]
        with urllib.request.urlopen(url, timeout=30) as page:  # the list, from the orchestrator
            assert "<h1>Sagas</h1>" in page.read().decode()

    health = grpcurl("-d", "{}", f"127.0.0.1:{payment_port}", "grpc.health.v1.Health/Check")
    assert health.json() == {"status": "SERVING"}
    assert {p.name for p in (tmp_path / "data").iterdir()} >= {
        "payment.db", "inventory.db", "shipping.db",
    }  # fmt: skip

    children = run_all.children()
    assert sorted(children) == sorted(expected_names())
    run_all.process.send_signal(signal.SIGTERM)
    assert run_all.process.wait(timeout=60) == 0, run_all.stderr()
    assert "all services stopped" in run_all.stdout()
    assert all(gone(pid) for pid in children.values()), children


def test_run_all_stops_everything_when_a_child_dies(run_all: RunAll) -> None:
    run_all.wait_for_output("hint:")
    children = run_all.children()
    os.kill(children["inventory"], signal.SIGKILL)
    assert run_all.process.wait(timeout=60) == 1
    assert "inventory exited" in run_all.stderr()
    assert all(gone(pid) for pid in children.values()), children


def test_a_port_in_use_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    """make run, and a server on its own, say which address is taken (issue 15)."""
    *ports, console_port = free_ports(5)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", ports[1]))
        holder.listen()
        run_all = subprocess.run(
            [
                sys.executable, "-m", "service_kit.run_all",
                "--data-dir", str(tmp_path / "data"),
                "--ports", ",".join(map(str, ports)),
                "--console-port", str(console_port),
            ],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert run_all.returncode == 1
        assert run_all.stderr.splitlines() == [
            f"run_all: 127.0.0.1:{ports[1]} already in use (another `make run`?): stop it, "
            "or pick other ports (make run BASE_PORT=8001, or --base-port / --ports)"
        ]
        server = subprocess.run(
            [
                sys.executable, "-m", "payment_server",
                "--listen", f"127.0.0.1:{ports[1]}", "--db", str(tmp_path / "payment.db"),
            ],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert server.returncode == 1
    assert "Traceback" not in server.stderr
    assert server.stderr.splitlines()[-1].endswith(
        f"cannot listen on 127.0.0.1:{ports[1]}: the port is in use (another `make run`?) "
        "or the address is not this machine's"
    )
