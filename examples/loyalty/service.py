"""LoyaltyService: awards points for a shipped order and takes them back on compensation.

The participant rules of docs/design.md §3, as Payment keeps them for Charge
and Refund: idempotent by saga_id, an undo of nothing leaves a tombstone that
refuses a late AwardPoints, and a rejection commits nothing.
"""

from __future__ import annotations

import sqlite3
import uuid

from minisaga.loyalty.v1 import loyalty_pb2 as pb
from minisaga.loyalty.v1 import loyalty_pb2_grpc

from service_kit import errors, paging, validation
from service_kit.clock import now_ms, timestamp
from service_kit.database import Database
from service_kit.errors import Context
from service_kit.faults import FaultConfig

DOMAIN = "minisaga.loyalty.v1"

SCHEMA = """
-- One row per saga: its award, its revocation, or a tombstone (VOIDED).
CREATE TABLE IF NOT EXISTS awards (
    saga_id             TEXT PRIMARY KEY,
    order_id            TEXT NOT NULL,
    award_id            TEXT NOT NULL,
    points              INTEGER NOT NULL,
    shipment_id         TEXT NOT NULL,
    status              INTEGER NOT NULL,  -- minisaga.loyalty.v1.AwardStatus
    revoke_reason       TEXT NOT NULL DEFAULT '',
    created_at_epoch_ms INTEGER NOT NULL,
    updated_at_epoch_ms INTEGER NOT NULL
);
"""


class LoyaltyService(loyalty_pb2_grpc.LoyaltyServiceServicer):
    def __init__(self, db: Database, *, faults: FaultConfig) -> None:
        self.db = db
        self.faults = faults

    @errors.rpc_errors(DOMAIN)
    async def AwardPoints(
        self, request: pb.AwardPointsRequest, context: Context
    ) -> pb.AwardPointsResponse:
        await self.faults.before("AwardPoints", request.saga_id)
        validation.require_valid(
            validation.check_saga_id("saga_id", request.saga_id),
            validation.check_id("order_id", request.order_id),
            validation.check_quantity("points", request.points),
            validation.check_id("shipment_id", request.shipment_id),
        )
        self.faults.check_switches(fail=request.fail)

        def award(conn: sqlite3.Connection) -> pb.AwardPointsResponse:
            row = _select(conn, request.saga_id)
            if row is not None:
                if row["status"] != pb.AWARD_STATUS_AWARDED:  # §3.3: no hanging action
                    raise errors.failed_precondition(
                        errors.ALREADY_COMPENSATED,
                        f"saga {request.saga_id} was already compensated; award refused",
                        saga_id=request.saga_id,
                    )
                if (row["order_id"], row["points"], row["shipment_id"]) != (
                    request.order_id,
                    request.points,
                    request.shipment_id,
                ):
                    raise errors.already_exists(
                        errors.IDEMPOTENCY_KEY_REUSED,
                        f"saga {request.saga_id} was awarded with other parameters",
                        saga_id=request.saga_id,
                    )
                return pb.AwardPointsResponse(award=_award(row), replayed=True)
            if request.fail:
                raise errors.failed_precondition(
                    errors.INJECTED_FAILURE, "award failed on purpose (fail=true)"
                )
            now = now_ms()
            conn.execute(
                "INSERT INTO awards (saga_id, order_id, award_id, points, shipment_id, status,"
                " created_at_epoch_ms, updated_at_epoch_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    request.saga_id,
                    request.order_id,
                    f"pts_{uuid.uuid4().hex}",
                    request.points,
                    request.shipment_id,
                    pb.AWARD_STATUS_AWARDED,
                    now,
                    now,
                ),
            )
            return pb.AwardPointsResponse(award=_award(_select(conn, request.saga_id)))

        response = await self.db.run(award)
        self.faults.after_commit("AwardPoints")
        return response

    @errors.rpc_errors(DOMAIN)
    async def RevokePoints(
        self, request: pb.RevokePointsRequest, context: Context
    ) -> pb.RevokePointsResponse:
        await self.faults.before("RevokePoints", request.saga_id)
        validation.require_valid(
            validation.check_saga_id("saga_id", request.saga_id),
            validation.check_text("reason", request.reason, required=False),
        )

        def revoke(conn: sqlite3.Connection) -> pb.RevokePointsResponse:
            row = _select(conn, request.saga_id)
            now = now_ms()
            if row is None:  # §3.2 and §3.3: succeed, and refuse a late award
                conn.execute(
                    "INSERT INTO awards (saga_id, order_id, award_id, points, shipment_id,"
                    " status, revoke_reason, created_at_epoch_ms, updated_at_epoch_ms)"
                    " VALUES (?, '', '', 0, '', ?, ?, ?, ?)",
                    (request.saga_id, pb.AWARD_STATUS_VOIDED, request.reason, now, now),
                )
                outcome = pb.REVOKE_OUTCOME_NOTHING_TO_REVOKE
            elif row["status"] == pb.AWARD_STATUS_AWARDED:
                conn.execute(
                    "UPDATE awards SET status = ?, revoke_reason = ?, updated_at_epoch_ms = ?"
                    " WHERE saga_id = ?",
                    (pb.AWARD_STATUS_REVOKED, request.reason, now, request.saga_id),
                )
                outcome = pb.REVOKE_OUTCOME_REVOKED
            elif row["status"] == pb.AWARD_STATUS_REVOKED:
                outcome = pb.REVOKE_OUTCOME_ALREADY_REVOKED
            else:
                outcome = pb.REVOKE_OUTCOME_NOTHING_TO_REVOKE
            return pb.RevokePointsResponse(
                outcome=outcome, award=_award(_select(conn, request.saga_id))
            )

        response = await self.db.run(revoke)
        self.faults.after_commit("RevokePoints")
        return response

    @errors.rpc_errors(DOMAIN)
    async def GetAward(self, request: pb.GetAwardRequest, context: Context) -> pb.GetAwardResponse:
        validation.require_valid(validation.check_saga_id("saga_id", request.saga_id))
        row = await self.db.run(lambda conn: _select(conn, request.saga_id))
        if row is None:
            raise errors.not_found(f"no award for saga {request.saga_id}")
        return pb.GetAwardResponse(award=_award(row))

    @errors.rpc_errors(DOMAIN)
    async def ListAwards(
        self, request: pb.ListAwardsRequest, context: Context
    ) -> pb.ListAwardsResponse:
        wanted = paging.page(request.page_size, request.page_token)
        rows, token = await self.db.run(lambda conn: paging.select(conn, "awards", wanted))
        return pb.ListAwardsResponse(awards=[_award(row) for row in rows], next_page_token=token)


def _select(conn: sqlite3.Connection, saga_id: str) -> sqlite3.Row | None:
    row: sqlite3.Row | None = conn.execute(
        "SELECT * FROM awards WHERE saga_id = ?", (saga_id,)
    ).fetchone()
    return row


def _award(row: sqlite3.Row | None) -> pb.Award:
    assert row is not None
    return pb.Award(
        saga_id=row["saga_id"],
        order_id=row["order_id"],
        award_id=row["award_id"],
        points=row["points"],
        shipment_id=row["shipment_id"],
        status=row["status"],
        revoke_reason=row["revoke_reason"],
        created_at=timestamp(row["created_at_epoch_ms"]),
        updated_at=timestamp(row["updated_at_epoch_ms"]),
    )
