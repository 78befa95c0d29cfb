"""The web console on a TLS system: it reads as any role, and offers Resume and Cancel
only when the role of its own certificate may make them (the orchestrator says so)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from minisaga_client import Tls, connect_async
from minisaga_client.console import RunningConsole, Settings, start
from service_kit import authz
from service_kit.tls import Security
from tests.console.test_http import fetch
from tests.orchestrator.conftest import start_system
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


async def test_a_console_with_a_token_has_the_role_of_its_token(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    client_token = authz.add_token(tokens, "client")
    operator_token = authz.add_token(tokens, "operator")
    system = await start_system(tmp_path, security=Security(token_file=tokens))
    started = []
    try:
        for token in (client_token, operator_token):
            settings = Settings(system.orchestrator.address, read_only=False, token=token)
            started.append(await start(settings))
        client, operator = (running.url for running in started)
        assert (await fetch(client))[0] == 200  # both read
        assert (await fetch(operator))[0] == 200
        missing = uuid.uuid4()  # may it cancel? 403 refused; 404 allowed, no such saga
        assert (await fetch(f"{client}sagas/{missing}/cancel"))[0] == 403
        assert (await fetch(f"{operator}sagas/{missing}/cancel"))[0] == 404
    finally:
        for running in started:
            await running.stop()
        await system.close()
