"""Both clients stay fully typed though each RPC is written once: mypy --strict sees every
method of `AsyncClient` with the parameters of `Client`'s and its result awaitable."""

from __future__ import annotations

import re
from pathlib import Path

from mypy import api as mypy_api

from minisaga_client import AsyncClient, Client

ROOT = Path(__file__).resolve().parents[2]

METHODS = sorted(name for name in dir(Client) if not name.startswith("_") and name != "close")

# Calls mypy must refuse, each with the error code it must give.
WRONG = {
    'client.get_saga(sagaid="x")': "call-arg",
    'client.place_order("apple", 2, 1200)': "call-arg",
    'client.set_stock("kiwi", "3")': "arg-type",
    'stock: int = client.get_stock("kiwi")': "assignment",
    'saga: pb.Saga = aio.get_saga("x")': "assignment",
    'aio.charge(saga_id="s", order_id="o", amount=1, timeout="soon")': "arg-type",
    'client.watch_saga("x").__aiter__()': "attr-defined",
}


def run_mypy(tmp_path: Path) -> tuple[dict[int, str], str, int]:
    """Type-checks a module that reveals every method of both clients and makes the WRONG calls.

    Returns the source lines by number, mypy's output, and its exit status.
    """
    lines = [
        "from minisaga.orchestrator.v1 import orchestrator_pb2 as pb",
        "from minisaga_client import AsyncClient, Client",
        "",
        "",
        "async def check(client: Client, aio: AsyncClient) -> None:",
    ]
    for name in METHODS:
        lines += [f"    reveal_type(client.{name})", f"    reveal_type(aio.{name})"]
    lines += [f"    {call}" for call in WRONG]
    source = tmp_path / "uses_the_clients.py"
    source.write_text("\n".join(lines) + "\n")
    stdout, stderr, status = mypy_api.run(
        ["--strict", "--no-incremental", "--config-file", str(ROOT / "pyproject.toml"), str(source)]
    )
    return dict(enumerate(lines, 1)), stdout + stderr, status


def signature(revealed: str) -> tuple[str, str]:
    """("parameters", "result") of a revealed callable type."""
    match = re.fullmatch(r"def \((.*)\) -> (.*)", revealed)
    assert match, revealed
    return match.group(1), match.group(2)


def test_each_async_method_has_the_sync_one_s_parameters_and_awaits_its_result(
    tmp_path: Path,
) -> None:
    assert len(METHODS) == 25, METHODS  # the 24 RPCs of the four services, and iter_sagas
    lines, output, _ = run_mypy(tmp_path)
    revealed: dict[str, str] = {}
    for number, text in re.findall(r':(\d+): note: Revealed type is "(.*)"', output):
        call = lines[int(number)].strip().removeprefix("reveal_type(").removesuffix(")")
        revealed[call] = text
    assert len(revealed) == 2 * len(METHODS), output

    for name in METHODS:
        sync_parameters, result = signature(revealed[f"client.{name}"])
        async_parameters, awaited = signature(revealed[f"aio.{name}"])
        assert async_parameters == sync_parameters, name
        assert "Any" not in result, f"{name} returns {result}"
        if result.startswith("typing.Iterator["):
            assert awaited == result.replace("typing.Iterator[", "typing.AsyncIterator[", 1)
        else:
            assert awaited == f"typing.Coroutine[Any, Any, {result}]", name

    assert revealed["client.get_saga"] == (
        "def (saga_id: str, *, timeout: float | None =) -> "
        "minisaga.orchestrator.v1.orchestrator_pb2.Saga"
    )
    assert signature(revealed["client.place_order"])[0] == (
        "*, product_id: str, quantity: int, amount: int, currency: str =, address: str =, "
        "request_id: str | None =, fail_payment: bool =, fail_inventory: bool =, "
        "fail_shipping: bool =, timeout: float | None ="
    )


def test_a_wrong_call_of_either_client_is_a_mypy_error(tmp_path: Path) -> None:
    lines, output, status = run_mypy(tmp_path)
    assert status == 1, output
    errors = re.findall(r":(\d+): error: .*\[([a-z-]+)\]", output)
    found = {lines[int(number)].strip(): code for number, code in errors}
    assert found == WRONG, output


def test_the_clients_answer_to_the_same_method_names() -> None:
    assert {n for n in dir(AsyncClient) if not n.startswith("_")} == {
        n for n in dir(Client) if not n.startswith("_")
    }
