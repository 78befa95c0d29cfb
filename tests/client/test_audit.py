"""`minisaga audit` against a real system: silent when the saga log and the
participants agree, and each planted disagreement found and named."""

from __future__ import annotations

import json
import sqlite3
import uuid
from datetime import UTC, datetime, timedelta

import grpc
from minisaga.payment.v1 import payment_pb2

from minisaga_client.cli import EXIT_DISAGREE, EXIT_OK
from tests.client.conftest import Cli
from tests.client.test_cli_system import ORDER, saga_id_of
from tests.harness import InProcess
from tests.orchestrator.conftest import System


async def _set_status(participant: InProcess, table: str, saga_id: str, status: int) -> None:
    """Changes a participant's record behind the saga's back, as a bug or a lost write would."""

    def write(conn: sqlite3.Connection) -> None:
        conn.execute(f"UPDATE {table} SET status = ? WHERE saga_id = ?", (status, saga_id))

    await participant.db.run(write)


async def test_a_clean_run_has_nothing_to_report(cli: Cli) -> None:
    # A success leaves 3 records, a refused charge none, a refused reservation 1, shipping 2.
    for switch in ([], ["--fail-payment"], ["--fail-inventory"], ["--fail-shipping"]):
        assert (await cli(*ORDER, *switch)).code == EXIT_OK

    audited = await cli("audit")

    assert audited.code == EXIT_OK, audited.out
    assert audited.out.splitlines() == [
        "audited 4 ended sagas (0 in flight, not judged) against 6 participant records",
        "✓ the saga log and the participants agree",
    ]


async def test_each_planted_disagreement_is_found(system: System, cli: Cli) -> None:
    clean = saga_id_of((await cli(*ORDER)).out)
    refund_lost = saga_id_of((await cli(*ORDER, "--fail-inventory")).out)
    stock_held = saga_id_of((await cli(*ORDER, "--fail-shipping")).out)
    await _set_status(system.payment, "payments", refund_lost, payment_pb2.PAYMENT_STATUS_CHARGED)
    await _set_status(system.inventory, "reservations", stock_held, 1)  # RESERVED
    orphan = str(uuid.uuid4())  # charged by someone, never by a saga
    await system.payments.Charge(
        payment_pb2.ChargeRequest(saga_id=orphan, order_id="ord_x", amount=100)
    )

    audited = await cli("audit", "--json")

    assert audited.code == EXIT_DISAGREE
    report = json.loads(audited.out)
    found = {(f["saga_id"], f["saga_status"], f["problem"]) for f in report["findings"]}
    assert found == {
        (refund_lost, "COMPENSATED", "its charge is still live (CHARGED)"),
        (stock_held, "COMPENSATED", "its reservation is still live (RESERVED)"),
        (orphan, "NOT_IN_LOG", "records with no saga in the log: payment CHARGED"),
    }
    assert clean not in {f["saga_id"] for f in report["findings"]}
    text = await cli("audit")
    assert text.code == EXIT_DISAGREE
    assert text.out.splitlines()[-1] == "3 disagreement(s)"


async def test_a_failed_saga_is_listed_with_what_is_still_live(system: System, cli: Cli) -> None:
    system.payment.faults.error_rate = 1.0
    system.payment.faults.error_code = grpc.StatusCode.INTERNAL
    system.payment.faults.methods = frozenset({"Refund"})
    failed = saga_id_of((await cli(*ORDER, "--fail-inventory")).out)

    audited = await cli("audit", "--json")

    assert audited.code == EXIT_DISAGREE
    [finding] = json.loads(audited.out)["findings"]
    assert finding == {
        "saga_id": failed,
        "saga_status": "FAILED",
        "problem": "needs an operator; still live: charge CHARGED",
    }


async def test_a_time_window_leaves_other_sagas_out(cli: Cli) -> None:
    assert (await cli(*ORDER, "--fail-shipping")).code == EXIT_OK
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()

    audited = await cli("audit", "--since", later, "--json")
    report = json.loads(audited.out)
    assert (audited.code, report["sagas_checked"], report["findings"]) == (EXIT_OK, 0, [])
    bad = await cli("audit", "--since", "yesterday")
    assert bad.code == 2 and "is not a time" in bad.err
