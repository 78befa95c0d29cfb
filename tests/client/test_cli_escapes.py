"""The `minisaga` command prints no control character a server sent: a hostile
or broken server cannot move the cursor, retitle the terminal, or turn text
around with bidirectional formatting characters."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from google.protobuf import json_format
from minisaga.orchestrator.v1 import orchestrator_pb2 as pb

from minisaga_client.cli import ADDRESS_ENV
from tests.client.test_cli_scripted import ORCHESTRATOR, SAGA_ID, Scripted, failed_saga, info, rich

HOSTILE = "\x1b]0;pwned\x07\r\x1b[2J\u202eexe.txt"


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Scripted]:
    for env in ADDRESS_ENV.values():
        monkeypatch.delenv(env, raising=False)
    yield Scripted(capsys)


def _unsafe(text: str) -> list[str]:
    return [c for c in text if (ord(c) < 0x20 and c not in "\n\t") or c in "\x7f\u202e"]


def test_a_saga_s_text_is_printed_escaped(cli: Scripted) -> None:
    saga = failed_saga()
    saga.order_id = f"ord_1{HOSTILE}"
    saga.steps[1].attempts[0].message = f"only 1 left{HOSTILE}"
    cli.start("saga", "get", SAGA_ID)
    _, rpc = cli.unary(ORCHESTRATOR, "GetSaga")
    rpc.terminate(pb.GetSagaResponse(saga=saga), (), grpc.StatusCode.OK, "")

    code, out, _ = cli.finish()

    assert code == 0
    assert _unsafe(out) == []
    assert "only 1 left\\u001b]0;pwned\\u0007\\u000d\\u001b[2J\\u202eexe.txt" in out


def test_json_output_stays_json_and_escaped(cli: Scripted) -> None:
    saga = failed_saga()
    saga.steps[1].attempts[0].message = HOSTILE
    cli.start("saga", "get", SAGA_ID, "--json")
    _, rpc = cli.unary(ORCHESTRATOR, "GetSaga")
    rpc.terminate(pb.GetSagaResponse(saga=saga), (), grpc.StatusCode.OK, "")

    code, out, _ = cli.finish()

    assert code == 0
    assert _unsafe(out) == []
    parsed = json_format.Parse(out, pb.Saga())
    assert parsed.steps[1].attempts[0].message == HOSTILE


def test_an_error_message_is_printed_escaped(cli: Scripted) -> None:
    message = f"saga is COMPLETED{HOSTILE}"
    cli.start("saga", "cancel", SAGA_ID)
    _, rpc = cli.unary(ORCHESTRATOR, "CancelSaga")
    trailers = rich(grpc.StatusCode.FAILED_PRECONDITION, message, info("SAGA_NOT_CANCELLABLE"))
    rpc.terminate(pb.CancelSagaResponse(), trailers, grpc.StatusCode.FAILED_PRECONDITION, message)

    code, _, err = cli.finish()

    assert code == 5
    assert _unsafe(err) == []
    assert "\\u001b]0;pwned" in err
