"""The console over plain HTTP: the form token, a filter's errors, read-only by default
off loopback, and the `minisaga console` command's own errors (roles on a TLS system:
tests/security/test_console_roles.py)."""

from __future__ import annotations

import aiohttp
import pytest

from minisaga_client.cli import EXIT_USAGE, main
from minisaga_client.console import is_loopback
from tests.console.conftest import Console


async def fetch(url: str, *, data: dict[str, str] | None = None) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session:
        method = session.post if data is not None else session.get
        async with method(url, data=data, allow_redirects=False) as response:
            return response.status, await response.text()


async def test_a_post_without_the_form_token_is_refused(console: Console) -> None:
    placed = await console.system.place()
    status, page = await fetch(f"{console.url}/sagas/{placed.saga_id}/cancel", data={})
    assert status == 403 and "stale" in page
    assert (await console.system.saga(placed.saga_id)).status == placed.status


async def test_the_list_says_what_is_wrong_with_a_filter(console: Console) -> None:
    status, page = await fetch(f"{console.url}/?order_id=has%20spaces")
    assert status == 400 and "order_id" in page
    status, page = await fetch(f"{console.url}/?created_from=yesterday")
    assert status == 400 and "Invalid isoformat" in page
    status, page = await fetch(f"{console.url}/sagas/not-a-saga")
    assert status == 400 and "saga_id" in page


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("::1", True), ("localhost", True), ("0.0.0.0", False)],
)
def test_read_only_by_default_off_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_a_bad_listen_address_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["console", "--listen", "7080"]) == EXIT_USAGE
    assert "HOST:PORT" in capsys.readouterr().err
