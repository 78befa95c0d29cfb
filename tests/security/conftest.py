"""Certificates made once per session, and a whole system served over mTLS in-process.

`pki` is a development CA from `minisaga certs init` (service_kit/certs.py),
plus what must be refused: a client certificate from another CA, an expired
one of the right CA, and one of the right CA naming an identity nobody knows.
"""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from minisaga.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from minisaga.payment.v1 import payment_pb2, payment_pb2_grpc
from minisaga.shipping.v1 import shipping_pb2, shipping_pb2_grpc

from inventory_server.service import SCHEMA as INVENTORY_SCHEMA
from inventory_server.service import InventoryService, seed_stock
from orchestrator_server.app import Orchestrator, OrchestratorConfig, start
from payment_server.service import SCHEMA as PAYMENT_SCHEMA
from payment_server.service import PaymentService
from service_kit import authz, certs
from service_kit.database import Database
from service_kit.faults import FaultConfig
from service_kit.server import RunningServer, start_server
from service_kit.tls import Security, TlsFiles
from shipping_server.service import SCHEMA as SHIPPING_SCHEMA
from shipping_server.service import ShippingService


@dataclass(frozen=True)
class Pki:
    folder: Path
    """What `minisaga certs init` wrote: ca.crt, and <identity>.crt/.key for each identity."""
    foreign: TlsFiles
    """A client certificate of another CA (its ca is ours: the server's is what matters)."""
    expired: TlsFiles
    """A client certificate of our CA whose validity ended yesterday."""
    stranger: TlsFiles
    """A client certificate of our CA for spiffe://minisaga/stranger: no identity of the table."""

    def files(self, identity: str) -> TlsFiles:
        return TlsFiles(*certs.files(self.folder, identity))

    def credentials(self, identity: str) -> grpc.ChannelCredentials:
        return self.files(identity).channel_credentials()

    @property
    def ca(self) -> Path:
        return self.folder / "ca.crt"


def _leaf(folder: Path, name: str, pem: tuple[bytes, bytes], ca: Path) -> TlsFiles:
    cert, key = folder / f"{name}.crt", folder / f"{name}.key"
    cert.write_bytes(pem[0])
    key.write_bytes(pem[1])
    return TlsFiles(cert, key, ca)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    certs.init(folder)
    ours = certs.Authority.load(folder)
    odd = tmp_path_factory.mktemp("pki-odd")
    now = datetime.datetime.now(datetime.UTC)
    return Pki(
        folder,
        foreign=_leaf(odd, "foreign", certs.Authority.create("another CA").issue("client"),
                      folder / "ca.crt"),
        expired=_leaf(
            odd,
            "expired",
            ours.issue(
                "client",
                not_before=now - datetime.timedelta(days=30),
                not_after=now - datetime.timedelta(days=1),
            ),
            folder / "ca.crt",
        ),
        stranger=_leaf(odd, "stranger", ours.issue("stranger"), folder / "ca.crt"),
    )  # fmt: skip


@dataclass
class SecureSystem:
    """Payment, Inventory, Shipping and the orchestrator, each on mTLS with reflection."""

    servers: dict[str, RunningServer]
    orchestrator: Orchestrator
    databases: list[Database]

    def address(self, service: str) -> str:
        return self.servers[service].address

    async def close(self) -> None:
        await self.orchestrator.stop()
        for name, running in self.servers.items():
            if name != "orchestrator":
                await running.stop(0)
        for db in self.databases:
            await db.close()


async def start_secure_system(tmp: Path, pki: Pki) -> SecureSystem:
    def security(identity: str) -> Security:
        return Security(tls=pki.files(identity), reflection=True)

    faults = FaultConfig(allow_failure_switches=True)
    servers: dict[str, RunningServer] = {}
    databases: list[Database] = []
    for name, schema, build, add, service in (
        (
            "payment",
            PAYMENT_SCHEMA,
            lambda db: PaymentService(db, limit=100_000, faults=faults),
            payment_pb2_grpc.add_PaymentServiceServicer_to_server,
            payment_pb2.DESCRIPTOR.services_by_name["PaymentService"].full_name,
        ),
        (
            "inventory",
            INVENTORY_SCHEMA,
            lambda db: InventoryService(db, faults=faults),
            inventory_pb2_grpc.add_InventoryServiceServicer_to_server,
            inventory_pb2.DESCRIPTOR.services_by_name["InventoryService"].full_name,
        ),
        (
            "shipping",
            SHIPPING_SCHEMA,
            lambda db: ShippingService(db, faults=faults),
            shipping_pb2_grpc.add_ShippingServiceServicer_to_server,
            shipping_pb2.DESCRIPTOR.services_by_name["ShippingService"].full_name,
        ),
    ):
        db = await Database(tmp / f"{name}.db", schema=schema).open()
        databases.append(db)
        servicer = build(db)
        servers[name] = await start_server(
            lambda server, servicer=servicer, add=add: add(servicer, server),  # type: ignore[misc]
            [service],
            "127.0.0.1:0",
            security=security(name),
        )
    await seed_stock(databases[1], {"apple": 100})
    orchestrator = await start(
        OrchestratorConfig(
            db=tmp / "orchestrator.db",
            participants={
                name: servers[name].address for name in ("payment", "inventory", "shipping")
            },
            security=security("orchestrator"),
            participant_tls=pki.files("orchestrator"),
            allow_failure_switches=True,
        )
    )
    servers["orchestrator"] = orchestrator.server
    return SecureSystem(servers, orchestrator, databases)


@pytest.fixture
async def secure_system(tmp_path: Path, pki: Pki) -> AsyncIterator[SecureSystem]:
    system = await start_secure_system(tmp_path, pki)
    try:
        yield system
    finally:
        await system.close()


@pytest.fixture
async def token_payment(tmp_path: Path) -> Any:
    """Payment on plaintext loopback with a token file: tokens for orchestrator and client."""
    tokens = tmp_path / "tokens"
    issued = {
        identity: authz.add_token(tokens, identity, f"test {identity}")
        for identity in ("orchestrator", "client")
    }
    db = await Database(tmp_path / "payment.db", schema=PAYMENT_SCHEMA).open()
    servicer = PaymentService(db, limit=100_000, faults=FaultConfig())
    running = await start_server(
        lambda server: payment_pb2_grpc.add_PaymentServiceServicer_to_server(servicer, server),
        [payment_pb2.DESCRIPTOR.services_by_name["PaymentService"].full_name],
        "127.0.0.1:0",
        security=Security(token_file=tokens),
    )
    try:
        yield running.address, tokens, issued
    finally:
        await running.stop(0)
        await db.close()
