"""Input no handler can be crashed or fooled by: ids matched whole, no control
or bidirectional formatting characters in free text, timestamps in range, page
tokens parsed strictly and never repeated, and a CLI that prints no control
character a server sent."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import timestamp_pb2
from minisaga.orchestrator.v1 import orchestrator_pb2 as pb
from minisaga.payment.v1 import payment_pb2
from minisaga.shipping.v1 import shipping_pb2

from minisaga_client.render import Style, escape_controls
from orchestrator_server.saga.store import BadPageToken, decode_page_token, encode_page_token
from service_kit import validation
from tests.orchestrator.conftest import System, start_system
from tests.rich_errors import assert_invalid, rpc_error

SAGA = "0b5e7c1a-3f2d-4e8b-9a6c-1d2e3f4a5b6c"
UNSAFE = [
    "\x00",
    "\x07",
    "\n",
    "\r",
    "\x1b",
    "\x7f",
    "\x85",
    "\u061c",
    "\u200f",
    "\u2028",
    "\u202e",
]
UNSAFE += ["\u2066", "\u2069"]


@pytest.mark.parametrize("value", ["abc\n", "a b", "\uff41\uff42", "١٢٣", "-abc", "a" * 65, "é"])
def test_an_id_is_matched_whole(value: str) -> None:
    assert validation.check_id("order_id", value) is not None


@pytest.mark.parametrize("character", UNSAFE)
def test_free_text_refuses_control_and_bidi_characters(character: str) -> None:
    violation = validation.check_text("address", f"1-2-3 Shibuya{character}, Tokyo")
    assert violation is not None
    assert character not in violation.description


def test_free_text_takes_any_printable_script() -> None:
    assert (
        validation.check_text(
            "address", "東京都渋谷区 1-2-3, Ελλάδα \u0391\u03b8\u03ae\u03bd\u03b1"
        )
        is None
    )


@pytest.mark.parametrize(
    "value",
    [SAGA.upper(), "{" + SAGA + "}", "urn:uuid:" + SAGA, SAGA.replace("-", ""), SAGA + "\n"],
)
def test_a_saga_id_has_one_spelling(value: str) -> None:
    assert validation.check_saga_id("saga_id", value) is not None
    assert validation.check_saga_id("saga_id", SAGA) is None


def test_a_refusal_never_carries_the_bad_characters() -> None:
    violation = validation.check_id("order_id", "x\x1b[2J\u202e")
    assert violation is not None
    assert "\x1b" not in violation.description and "\u202e" not in violation.description


@pytest.mark.parametrize(
    ("seconds", "nanos", "ok"),
    [
        (0, 0, True),
        (253_402_300_799, 999_999_999, True),
        (2**63 - 1, 0, False),
        (-(2**63), 0, False),
        (0, -1, False),
        (0, 1_000_000_000, False),
    ],
)
def test_timestamps_stay_in_their_range(seconds: int, nanos: int, ok: bool) -> None:
    assert (validation.check_timestamp("created_from", seconds, nanos) is None) is ok


def _token(payload: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode()


@pytest.mark.parametrize(
    "token",
    [
        "garbage!",
        "x" * 200,
        _token([1, 2]),
        _token({"a": 1, "b": 2}),
        _token([-1, SAGA]),
        _token([2**63, SAGA]),
        _token([1.5, SAGA]),
        _token([True, SAGA]),
        _token([1, "not-a-uuid"]),
        _token([1, SAGA]).rstrip("="),  # another spelling of a real token
        _token([1, SAGA])[:-4],
        base64.urlsafe_b64encode(b"\xff\xfe\x00").decode(),
        "\u202e" + _token([1, SAGA]),
    ],
)
def test_a_page_token_is_parsed_strictly_and_never_repeated(token: str) -> None:
    with pytest.raises(BadPageToken) as refused:
        decode_page_token(token)
    assert token not in str(refused.value)


def test_a_page_token_round_trips() -> None:
    token = encode_page_token(1_700_000_000_000, SAGA)
    assert decode_page_token(token) == (1_700_000_000_000, SAGA)


@pytest.fixture
async def system(tmp_path: Path) -> AsyncIterator[System]:
    started = await start_system(tmp_path)
    yield started
    await started.close()


async def test_the_services_refuse_unsafe_text_before_writing(system: System) -> None:
    await assert_invalid(system.place(address="1-2-3\x1b[2J Shibuya"), "address")
    await assert_invalid(
        system.shipments.CreateShipment(
            shipping_pb2.CreateShipmentRequest(
                saga_id=str(uuid.uuid4()), order_id="o1", address="evil\u202etxt.exe"
            )
        ),
        "address",
    )
    await assert_invalid(
        system.payments.Refund(
            payment_pb2.RefundRequest(saga_id=str(uuid.uuid4()), reason="line\nbreak")
        ),
        "reason",
    )
    far = timestamp_pb2.Timestamp(seconds=2**62)
    await assert_invalid(
        system.api.ListSagas(pb.ListSagasRequest(created_from=far)), "created_from"
    )
    await assert_invalid(
        system.api.CountSagas(pb.CountSagasRequest(created_before=far)), "created_before"
    )
    assert list((await system.api.ListSagas(pb.ListSagasRequest())).sagas) == []


async def test_a_bad_page_token_is_refused_without_being_repeated(system: System) -> None:
    token = _token([1, SAGA]).rstrip("=") + "\x1b]0;pwned\x07"
    error = await rpc_error(system.api.ListSagas(pb.ListSagasRequest(page_token=token)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "pwned" not in (error.details() or "")


def test_the_cli_escapes_control_characters_but_keeps_its_colours() -> None:
    hostile = "shipped\x1b]0;pwned\x07 \x1b[2J\u202eexe.txt\r"
    assert (
        escape_controls(hostile) == "shipped\\u001b]0;pwned\\u0007 \\u001b[2J\\u202eexe.txt\\u000d"
    )
    painted = Style(color=True).red("FAILED") + " " + hostile
    shown = escape_controls(painted, keep_colours=True)
    assert shown.startswith("\x1b[1;31mFAILED\x1b[0m ")
    assert shown.count("\x1b") == 2
    assert escape_controls("two\nlines\tand a tab") == "two\nlines\tand a tab"
    assert json.loads(escape_controls(json.dumps({"a": "x\u202ey\x85"}, ensure_ascii=False))) == {
        "a": "x\u202ey\x85"
    }
