"""`make run TLS=1`: run_all on mTLS, driven by the real grpcurl and the installed `minisaga`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from minisaga_client.cli import ADDRESS_ENV, TLS_ENV
from tests.e2e.grpcurl import EXIT_STATUS_BASE, find_grpcurl
from tests.e2e.test_run_all import RunAll
from tests.harness import ROOT, free_ports

pytestmark = pytest.mark.slow

MINISAGA = Path(sys.executable).parent / "minisaga"
ORCHESTRATOR = "minisaga.orchestrator.v1.OrchestratorService"
PERMISSION_DENIED = 7


@pytest.fixture(scope="module")
def tls_system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunAll]:
    """run_all --tls-dir on free ports; the certificates made by run_all itself."""
    tmp = tmp_path_factory.mktemp("tls-system")
    *ports, console_port = free_ports(5)
    out, err = tmp / "run_all.out", tmp / "run_all.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "service_kit.run_all",
                "--data-dir", str(tmp / "data"),
                "--tls-dir", str(tmp / "data" / "certs"),
                "--ports", ",".join(map(str, ports)),
                "--console-port", str(console_port),
            ],
            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
        )  # fmt: skip
    running = RunAll(process, out, err, ports, console_port)
    try:
        running.wait_for_output("hint:")
        yield running
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, running.stderr()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def certs_of(system: RunAll) -> Path:
    line = next(x for x in system.stdout().splitlines() if x.startswith("wrote a development CA"))
    return Path(line.rsplit(" to ", 1)[1])


def grpcurl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [find_grpcurl(), "-connect-timeout", "30", *args],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def test_run_all_makes_its_certificates_and_hints_grpcurls_tls_form(tls_system: RunAll) -> None:
    certs = certs_of(tls_system)
    assert (certs / "ca.crt").exists() and (certs / "client.key").exists()
    hint = next(x for x in tls_system.stdout().splitlines() if x.startswith("hint:"))
    assert "-cacert" in hint and "client.crt" in hint and "-plaintext" not in hint


def test_grpcurl_with_the_client_certificate_places_an_order_and_may_not_cancel(
    tls_system: RunAll,
) -> None:
    certs = certs_of(tls_system)
    address = f"127.0.0.1:{tls_system.ports[0]}"
    client = ["-cacert", f"{certs}/ca.crt", "-cert", f"{certs}/client.crt",
              "-key", f"{certs}/client.key"]  # fmt: skip

    listed = grpcurl(*client, address, "list")
    assert listed.returncode == 0, listed.stderr
    assert ORCHESTRATOR in listed.stdout.split()

    order = {"product_id": "apple", "quantity": 2, "amount": 1200}
    placed = grpcurl(*client, "-d", json.dumps(order), address, f"{ORCHESTRATOR}/PlaceOrder")
    assert placed.returncode == 0, placed.stderr
    saga = json.loads(placed.stdout)
    assert saga["status"] == "SAGA_STATUS_COMPLETED"

    cancel = grpcurl(*client, "-d", json.dumps({"saga_id": saga["saga_id"]}), address,
                     f"{ORCHESTRATOR}/CancelSaga")  # fmt: skip
    assert cancel.returncode == EXIT_STATUS_BASE + PERMISSION_DENIED, cancel.stderr
    assert "PermissionDenied" in cancel.stderr and "ROLE_NOT_ALLOWED" in cancel.stderr

    plaintext = grpcurl("-plaintext", address, "list")
    assert plaintext.returncode != 0


def test_the_tutorial_demo_passes_on_the_tls_system(tls_system: RunAll) -> None:
    certs = certs_of(tls_system)
    orchestrator, payment, inventory, shipping = tls_system.ports
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINISAGA_")}
    env |= {
        ADDRESS_ENV["orchestrator"]: f"127.0.0.1:{orchestrator}",
        ADDRESS_ENV["payment"]: f"127.0.0.1:{payment}",
        ADDRESS_ENV["inventory"]: f"127.0.0.1:{inventory}",
        ADDRESS_ENV["shipping"]: f"127.0.0.1:{shipping}",
        TLS_ENV["ca"]: str(certs / "ca.crt"),
        TLS_ENV["cert"]: str(certs / "operator.crt"),
        TLS_ENV["key"]: str(certs / "operator.key"),
    }
    demo = subprocess.run(
        [str(MINISAGA), "demo"], capture_output=True, text=True, cwd=ROOT, env=env,
        timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert demo.stdout.count("✓ as in the tutorial") == 4

    without = subprocess.run(
        [str(MINISAGA), "--timeout", "30", "saga", "list"], capture_output=True, text=True,
        cwd=ROOT, timeout=120, stdin=subprocess.DEVNULL,
        env={k: v for k, v in env.items() if k not in TLS_ENV.values()},
    )  # fmt: skip
    assert without.returncode != 0


def test_the_console_reads_the_tls_system_as_the_operator(tls_system: RunAll) -> None:
    url = f"http://127.0.0.1:{tls_system.console_port}/"
    assert f"console       {url}" in tls_system.stdout()
    with urllib.request.urlopen(url, timeout=30) as page:  # the list, over mTLS
        assert "<h1>Sagas</h1>" in page.read().decode()
    # The operator's role may cancel: the console asks which saga (404: no such one),
    # where a role that may not would be refused (403) before that.
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"{url}sagas/{uuid.uuid4()}/cancel", timeout=30)
    assert missing.value.code == 404
