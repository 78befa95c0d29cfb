"""`minisaga saga list` with ListSagas's filters: by type, order, request id and creation
time, across pages (the `more:` hint keeps the filters)."""

from __future__ import annotations

import json
import re
from typing import Any

from tests.client.conftest import Cli

ORDER = ["place-order", "--product-id", "apple", "--quantity", "2", "--amount", "1200"]


async def listed(cli: Cli, *args: str) -> list[str]:
    run = await cli("saga", "list", "--all", "--json", *args)
    assert run.code == 0, run.err
    sagas: list[dict[str, Any]] = json.loads(run.out).get("sagas", [])
    return [s["saga_id"] for s in sagas]


async def test_list_by_type_order_request_and_time(cli: Cli) -> None:
    placed = [
        json.loads((await cli(*ORDER, "--request-id", f"req-{i}", "--json")).out) for i in range(4)
    ]
    newest_first = [p["saga_id"] for p in reversed(placed)]
    second = placed[1]

    assert await listed(cli, "--saga-type", "place_order") == newest_first
    assert await listed(cli, "--saga-type", "none_such") == []
    assert await listed(cli, "--order-id", second["order_id"]) == [second["saga_id"]]
    assert await listed(cli, "--request-id", "req-2") == [placed[2]["saga_id"]]
    since = second["saga"]["created_at"]
    assert second["saga_id"] in await listed(cli, "--created-from", since)
    assert second["saga_id"] not in await listed(cli, "--created-before", since)
    assert await listed(cli, "--created-before", placed[0]["saga"]["created_at"]) == []

    # Page by page: the hint for the next page repeats the filters.
    first = await cli("saga", "list", "--saga-type", "place_order", "--page-size", "3")
    hint = re.search(r"^more: minisaga (saga list .*) --page-token (\S+)", first.out, re.M)
    assert hint, first.out
    assert "--saga-type place_order --page-size 3" in hint.group(1)
    rest = await cli(*hint.group(1).split(), "--page-token", hint.group(2))
    assert [row.split()[0] for row in rest.out.splitlines()[1:]] == newest_first[3:]

    bad = await cli("saga", "list", "--created-from", "yesterday")
    assert bad.code == 2 and "ISO 8601" in bad.err
    refused = await cli("saga", "list", "--order-id", "not an id")
    assert refused.code == 3 and "order_id" in refused.err
