"""Versions across replicas: a replica that lacks a saga's version leaves it
alone (and gives its lease back at once); the replica that has it drives it."""

from __future__ import annotations

from pathlib import Path

import asyncpg

from orchestrator_server.saga import PostgresSagaStore, SagaStatus, open_engine
from orchestrator_server.saga.postgres_store import MIGRATIONS
from tests.orchestrator.test_public_api import V1, V2, Participants, order
from tests.orchestrator.test_public_api import participants as participants  # the fixture


async def test_a_replica_without_the_version_hands_the_saga_to_one_with_it(
    postgres_url: str, participants: Participants, tmp_path: Path
) -> None:
    park = participants.payment.faults.park("Charge")
    async with open_engine(PostgresSagaStore(postgres_url), participants.channels, [V1]) as old:
        started, _ = await old.start(V1, order())
        await park.reached()
    park.release()  # the old replica stopped: its lease was given up

    async with open_engine(PostgresSagaStore(postgres_url), participants.channels, [V2]) as lacking:
        held = await lacking.store.load(started.saga_id)
        assert held is not None
        assert "version 1 is not registered" in lacking.not_driven_reason(held)
        await lacking.drive(started.saga_id)  # claimed, found not its own, released
        assert started.saga_id in lacking.not_driven
        assert await lacking.recover() == []  # and left alone from then on

        # The replica that has version 1 takes it at its start, not a lease TTL later.
        async with open_engine(
            PostgresSagaStore(postgres_url), participants.channels, [V1, V2]
        ) as having:
            assert having.not_driven_reason(held) == ""
            ended = await having.wait(started.saga_id)

    assert ended is not None and ended.status is SagaStatus.COMPLETED
    assert ended.saga_version == 1
    assert [a.step for a in ended.attempts] == ["charge", "charge"]


async def test_a_log_of_the_previous_schema_is_upgraded_in_place(postgres_url: str) -> None:
    """A database migrated to version 2 (before outputs and versions), with a saga
    in it, opens: migration 3 and later run, and the old saga reads as version 1."""
    conn = await asyncpg.connect(postgres_url)
    try:
        await conn.execute(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY,"
            " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        for version, script in enumerate(MIGRATIONS[:2], start=1):
            await conn.execute(script)
            await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
        await conn.execute(
            "INSERT INTO sagas (saga_id, saga_type, business_key, input, status,"
            " created_at_epoch_ms, updated_at_epoch_ms, deadline_epoch_ms)"
            " VALUES ('old', 'place_order', 'ord_1', '', 'COMPLETED', 1, 2, 3)"
        )
        await conn.execute(
            "INSERT INTO attempts (saga_id, step, phase, number, method, started_at_epoch_ms,"
            " finished_at_epoch_ms, code) VALUES ('old', 'charge', 'action', 1, '/m', 1, 2, 'OK')"
        )
    finally:
        await conn.close()

    store = await PostgresSagaStore(postgres_url).open()
    try:
        record = await store.load("old")
    finally:
        await store.close()
    assert record is not None and record.saga_version == 1
    assert [(a.code, a.output) for a in record.attempts] == [("OK", None)]
