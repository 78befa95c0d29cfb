"""Each participant lists its records by saga_id, a page at a time (what
`minisaga audit` reads): every record once, tombstones included, and page
tokens that are opaque and strictly checked."""

from __future__ import annotations

import base64
import uuid

import grpc

from tests.participants.drivers import Driver
from tests.rich_errors import assert_invalid, rpc_error


async def test_pages_list_every_record_once_in_saga_id_order(participant: Driver) -> None:
    acted = [str(uuid.uuid4()) for _ in range(5)]
    for saga_id in acted:
        await participant.act(saga_id)
    tombstone = str(uuid.uuid4())
    await participant.compensate(tombstone)  # compensated before any action

    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        sagas, token = await participant.list_page(page_size=2, page_token=token)
        seen += sagas
        pages += 1
        if not token:
            break
    assert seen == sorted([*acted, tombstone])
    assert pages == 3
    first, _ = await participant.list_page()
    assert first == seen  # the default page holds them all


async def test_a_record_written_between_pages_is_not_repeated(participant: Driver) -> None:
    first, second, third = (f"{n}0000000-0000-4000-8000-000000000000" for n in (1, 2, 3))
    await participant.act(first)
    await participant.act(third)
    page, token = await participant.list_page(page_size=1)
    await participant.act(second)  # written meanwhile, after the cursor
    rest, last = await participant.list_page(page_size=10, page_token=token)
    assert (page, rest, last) == ([first], [second, third], "")


async def test_bad_page_requests_are_invalid_and_never_echo_the_token(
    participant: Driver,
) -> None:
    await assert_invalid(participant.list_page(page_size=-1), "page_size")
    forged = base64.urlsafe_b64encode(b"'; DROP TABLE x; --").decode()
    for token in (forged, "%%%", "x" * 10_000, base64.urlsafe_b64encode(b"not-a-uuid").decode()):
        error = await rpc_error(participant.list_page(page_token=token))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert token not in (error.details() or "")
