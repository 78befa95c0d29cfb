"""The recovery case's call rate, read from a saga log."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from bench.recovery import calls_while_recovering

SHIP = "/minisaga.shipping.v1.ShippingService/CreateShipment"
CHARGE = "/minisaga.payment.v1.PaymentService/Charge"


def test_calls_per_second_by_participant_and_most_at_once(tmp_path: Path) -> None:
    db = tmp_path / "orchestrator.db"
    with sqlite3.connect(db) as conn:
        conn.execute(
            "CREATE TABLE attempts (method TEXT, started_at_epoch_ms INTEGER, "
            "finished_at_epoch_ms INTEGER)"
        )
        conn.executemany(
            "INSERT INTO attempts VALUES (?, ?, ?)",
            [
                (SHIP, 500, 9000),  # before the restart: not counted
                (SHIP, 1000, 1400),
                (SHIP, 1100, 1200),
                (SHIP, 1200, 1300),  # starts as the second ends: two at once, not three
                (CHARGE, 3500, None),  # still in flight
            ],
        )
    conn.close()

    calls = calls_while_recovering(db, since_ms=1000)

    assert calls["calls"] == 4
    assert calls["by_participant"] == {"ShippingService": 3, "PaymentService": 1}
    assert calls["per_second"] == [3, 0, 1]
    assert calls["peak_per_second"] == 3
    assert calls["mean_per_busy_second"] == 2.0
    assert calls["most_in_flight"] == 2
