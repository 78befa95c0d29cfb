"""The installed `minisaga` command against four real service processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from minisaga_client.cli import ADDRESS_ENV
from service_kit.health import wait_until_serving
from tests.harness import ROOT, Subprocess

pytestmark = pytest.mark.slow

MINISAGA = Path(sys.executable).parent / "minisaga"
SERVICES = {
    "payment": ("payment_server", "minisaga.payment.v1.PaymentService"),
    "inventory": ("inventory_server", "minisaga.inventory.v1.InventoryService"),
    "shipping": ("shipping_server", "minisaga.shipping.v1.ShippingService"),
}


def _start(module: str, service: str, folder: Path, *args: str) -> Subprocess:
    name = module.removesuffix("_server")
    process = Subprocess(
        module,
        ["--listen", "127.0.0.1:0", "--db", str(folder / f"{name}.db"), *args],
        folder / f"{name}.log",
    ).start()
    with grpc.insecure_channel(process.address) as channel:
        wait_until_serving(channel, service, timeout=20)
    return process


@pytest.fixture(scope="module")
def addresses(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The address of each service, each a `python -m ...` process on a free port."""
    folder = tmp_path_factory.mktemp("minisaga-cli")
    started: list[Subprocess] = []
    try:
        with ThreadPoolExecutor() as pool:  # the participants start side by side
            starting = [pool.submit(_start, m, s, folder) for m, s in SERVICES.values()]
        started += [f.result() for f in starting if f.exception() is None]  # stopped at the end
        for future in starting:
            future.result()  # raises the first failure to start, if any
        found = {name: process.address for name, process in zip(SERVICES, started, strict=True)}
        orchestrator = _start(
            "orchestrator_server",
            "minisaga.orchestrator.v1.OrchestratorService",
            folder,
            *(arg for name, address in found.items() for arg in (f"--{name}", address)),
        )
        started.append(orchestrator)
        yield {"orchestrator": orchestrator.address, **found}
    finally:
        codes = [process.terminate() for process in started]
        assert codes == [0] * len(started), "\n".join(p.log() for p in started)


def minisaga(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    assert MINISAGA.exists(), f"{MINISAGA} missing: `pip install -e .` installs it"
    environment = {k: v for k, v in os.environ.items() if k not in ADDRESS_ENV.values()}
    return subprocess.run(
        [str(MINISAGA), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**environment, **(env or {})},
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def test_the_demo_from_the_installed_command(addresses: dict[str, str]) -> None:
    by_env = {ADDRESS_ENV[name]: address for name, address in addresses.items()}

    demo = minisaga("demo", env=by_env)

    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert demo.stdout.count("✓ as in the tutorial") == 4
    assert "\x1b[" not in demo.stdout  # a pipe, not a terminal: no colour
    listed = minisaga("saga", "list", "--status", "compensated", "--json", env=by_env)
    sagas = json.loads(listed.stdout)["sagas"]
    assert len(sagas) == 3
    flags = minisaga(
        "saga", "get", sagas[0]["saga_id"], "--orchestrator", addresses["orchestrator"]
    )
    assert flags.returncode == 0
    assert "COMPENSATED — ship failed" in flags.stdout


def test_an_unreachable_orchestrator_is_one_line_and_exit_6() -> None:
    down = minisaga("--orchestrator", "127.0.0.1:1", "saga", "get", str(uuid.uuid4()))

    assert down.returncode == 6
    assert down.stdout == ""
    assert down.stderr == (
        "minisaga: cannot reach the orchestrator at 127.0.0.1:1 — is `make run` going?\n"
    )
