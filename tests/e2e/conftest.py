"""Fixtures: the three participants as real subprocesses, and the grpcurl binary."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest

from service_kit.health import wait_until_serving
from tests.e2e.grpcurl import Grpcurl, find_grpcurl
from tests.harness import Subprocess


@dataclass(frozen=True)
class Participant:
    name: str
    module: str
    service: str


PARTICIPANTS = {
    p.name: p
    for p in [
        Participant("payment", "payment_server", "minisaga.payment.v1.PaymentService"),
        Participant("inventory", "inventory_server", "minisaga.inventory.v1.InventoryService"),
        Participant("shipping", "shipping_server", "minisaga.shipping.v1.ShippingService"),
    ]
}


def require_main(module: str) -> None:
    """Fails (not skips) when a service's `python -m` entry point does not exist."""
    try:
        spec = importlib.util.find_spec(f"{module}.__main__")
    except ModuleNotFoundError:
        spec = None
    if spec is None:
        pytest.fail(f"{module}.__main__ not found: `python -m {module}` cannot start")


@pytest.fixture(scope="session")
def grpcurl() -> Grpcurl:
    return Grpcurl(find_grpcurl())


def _serve(name: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    participant = PARTICIPANTS[name]
    require_main(participant.module)
    folder = tmp_path_factory.mktemp(name)
    process = Subprocess(
        participant.module,
        ["--listen", "127.0.0.1:0", "--db", str(folder / f"{name}.db"), "--reflection"],
        folder / f"{name}.log",
    ).start()
    try:
        with grpc.insecure_channel(process.address) as channel:
            wait_until_serving(channel, participant.service, timeout=20)
        yield process.address
    finally:
        code = process.terminate()
    assert code == 0, f"{name} did not stop cleanly ({code}):\n{process.log()}"


@pytest.fixture(scope="module")
def payment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The address of a `python -m payment_server` on a free loopback port."""
    yield from _serve("payment", tmp_path_factory)


@pytest.fixture(scope="module")
def inventory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from _serve("inventory", tmp_path_factory)


@pytest.fixture(scope="module")
def shipping(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from _serve("shipping", tmp_path_factory)
