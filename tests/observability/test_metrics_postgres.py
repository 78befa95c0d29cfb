"""The saga log's commit metrics on PostgreSQL: the same series as on SQLite
(minisaga_db_commit_duration_seconds, minisaga_db_commit_batch_size), one
observation per write of the log, scraped over HTTP and parsed."""

from __future__ import annotations

from pathlib import Path

import pytest
from minisaga.orchestrator.v1 import orchestrator_pb2 as pb

from tests.observability.system import Services

pytestmark = pytest.mark.slow

COMMITS = ("minisaga_db_commit_duration_seconds_count", ())
SECONDS = ("minisaga_db_commit_duration_seconds_sum", ())
BATCHES = ("minisaga_db_commit_batch_size_count", ())
WRITES = ("minisaga_db_commit_batch_size_sum", ())
SINGLE_BATCH = ("minisaga_db_commit_batch_size_bucket", (("le", "1.0"),))


async def test_each_write_of_a_postgresql_saga_log_is_one_commit(
    tmp_path: Path, postgres_url: str
) -> None:
    services = Services(tmp_path, orchestrator_flags=("--store", postgres_url)).start()
    try:
        before = await services.scrape("orchestrator")
        assert (await services.place()).status == pb.SAGA_STATUS_COMPLETED
        after = await services.scrape("orchestrator")
    finally:
        await services.terminate()

    def delta(key: tuple[str, tuple[tuple[str, str], ...]]) -> float:
        return after[key] - before.get(key, 0.0)

    # Charge, reserve, ship: the creation with the first attempt, two writes that
    # each record an outcome with the next attempt, and the last outcome with the end.
    assert delta(COMMITS) == 4
    assert delta(SECONDS) > 0
    # Each write is its own transaction: batches of one.
    assert delta(BATCHES) == delta(WRITES) == delta(SINGLE_BATCH) == 4
