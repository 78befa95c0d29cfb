"""Versions across replicas: a replica that lacks a saga's version leaves it
alone (and gives its lease back at once); the replica that has it drives it."""

from __future__ import annotations

from pathlib import Path

from orchestrator_server.saga import PostgresSagaStore, SagaStatus, open_engine
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
