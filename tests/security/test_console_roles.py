"""The web console on a TLS system: it reads as any role, and offers Resume and Cancel
only when the role of its own certificate may make them (the orchestrator says so)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from minisaga_client import Tls, connect_async
from minisaga_client.console import RunningConsole, Settings, start
from tests.console.test_http import fetch
from tests.security.conftest import Pki, SecureSystem


def tls(pki: Pki, identity: str) -> Tls:
    files = pki.files(identity)
    return Tls(ca=files.ca, cert=files.cert, key=files.key)


@pytest.fixture
async def saga_id(secure_system: SecureSystem, pki: Pki) -> str:
    address = secure_system.address("orchestrator")
    async with connect_async(address, tls=tls(pki, "client")) as client:
        return (await client.place_order(product_id="apple", quantity=1, amount=100)).saga_id


@pytest.fixture
async def consoles(secure_system: SecureSystem, pki: Pki) -> AsyncIterator[dict[str, str]]:
    """A console as each role: the client's certificate, and the operator's."""
    started: dict[str, RunningConsole] = {}
    for identity in ("client", "operator"):
        settings = Settings(
            secure_system.address("orchestrator"), read_only=False, tls=tls(pki, identity)
        )
        started[identity] = await start(settings)
    yield {identity: running.url.rstrip("/") for identity, running in started.items()}
    for running in started.values():
        await running.stop()


async def test_actions_follow_the_role_of_the_consoles_certificate(
    consoles: dict[str, str], saga_id: str
) -> None:
    for identity in ("client", "operator"):  # both read: the list and the saga
        status, page = await fetch(f"{consoles[identity]}/sagas/{saga_id}")
        assert (status, "COMPLETED" in page) == (200, True), identity
        status, page = await fetch(consoles[identity] + "/")
        assert status == 200 and saga_id in page

    # The client's role may not resume or cancel: no confirmation, and a POST is refused.
    assert (await fetch(f"{consoles['client']}/sagas/{saga_id}/cancel"))[0] == 403
    assert (await fetch(f"{consoles['client']}/sagas/{saga_id}/cancel", data={}))[0] == 403
    # The operator's may: the confirmation comes, and the orchestrator's answer is shown.
    status, page = await fetch(f"{consoles['operator']}/sagas/{saga_id}/cancel")
    assert status == 200 and "Yes, cancel this saga" in page
