"""PaymentService: takes money for an order and gives it back on compensation.

The rules of docs/design.md §3: idempotent by saga_id, empty compensations leave a
tombstone that refuses a late Charge, and a rejection commits nothing.
"""

from __future__ import annotations

import sqlite3
import uuid

from minisaga.payment.v1 import payment_pb2 as pb
from minisaga.payment.v1 import payment_pb2_grpc

from service_kit import errors, paging, validation
from service_kit.clock import now_ms, timestamp
from service_kit.database import Database
from service_kit.errors import Context
from service_kit.faults import FaultConfig

DOMAIN = "minisaga.payment.v1"
DEFAULT_LIMIT = 1_000_000

SCHEMA = """
-- One row per saga: its charge, its refund, or a tombstone (VOIDED).
CREATE TABLE IF NOT EXISTS payments (
    saga_id             TEXT PRIMARY KEY,
    order_id            TEXT NOT NULL,
    amount              INTEGER NOT NULL,
    currency            TEXT NOT NULL,
    status              INTEGER NOT NULL,  -- minisaga.payment.v1.PaymentStatus
    receipt_id          TEXT NOT NULL,
    refund_reason       TEXT NOT NULL DEFAULT '',
    created_at_epoch_ms INTEGER NOT NULL,
    updated_at_epoch_ms INTEGER NOT NULL
);
"""


class PaymentService(payment_pb2_grpc.PaymentServiceServicer):
    def __init__(self, db: Database, *, limit: int = DEFAULT_LIMIT, faults: FaultConfig) -> None:
        self.db = db
        self.limit = limit
        self.faults = faults

    @errors.rpc_errors(DOMAIN)
    async def Charge(self, request: pb.ChargeRequest, context: Context) -> pb.ChargeResponse:
        await self.faults.before("Charge", request.saga_id)
        currency = request.currency or validation.DEFAULT_CURRENCY
        validation.require_valid(
            validation.check_saga_id("saga_id", request.saga_id),
            validation.check_id("order_id", request.order_id),
            validation.check_amount("amount", request.amount),
            validation.check_currency("currency", request.currency),
        )
        self.faults.check_switches(fail=request.fail)

        def charge(conn: sqlite3.Connection) -> pb.ChargeResponse:
            row = _select(conn, request.saga_id)
            if row is not None:
                if row["status"] != pb.PAYMENT_STATUS_CHARGED:
                    raise errors.failed_precondition(
                        errors.ALREADY_COMPENSATED,
                        f"saga {request.saga_id} was already compensated; charge refused",
                        saga_id=request.saga_id,
                    )
                if (row["order_id"], row["amount"], row["currency"]) != (
                    request.order_id,
                    request.amount,
                    currency,
                ):
                    raise errors.already_exists(
                        errors.IDEMPOTENCY_KEY_REUSED,
                        f"saga {request.saga_id} was charged with other parameters",
                        saga_id=request.saga_id,
                    )
                return pb.ChargeResponse(payment=_payment(row), replayed=True)
            if request.fail:
                raise errors.failed_precondition(
                    errors.INJECTED_FAILURE, "payment failed on purpose (fail=true)"
                )
            if request.amount > self.limit:
                raise errors.failed_precondition(
                    errors.PAYMENT_DECLINED,
                    f"amount {request.amount} is over the payment limit {self.limit}",
                    limit=str(self.limit),
                )
            now = now_ms()
            conn.execute(
                "INSERT INTO payments (saga_id, order_id, amount, currency, status, receipt_id,"
                " created_at_epoch_ms, updated_at_epoch_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    request.saga_id,
                    request.order_id,
                    request.amount,
                    currency,
                    pb.PAYMENT_STATUS_CHARGED,
                    f"rcpt_{uuid.uuid4().hex}",
                    now,
                    now,
                ),
            )
            return pb.ChargeResponse(payment=_payment(_select(conn, request.saga_id)))

        response = await self.db.run(charge)
        self.faults.after_commit("Charge")
        return response

    @errors.rpc_errors(DOMAIN)
    async def Refund(self, request: pb.RefundRequest, context: Context) -> pb.RefundResponse:
        await self.faults.before("Refund", request.saga_id)
        validation.require_valid(
            validation.check_saga_id("saga_id", request.saga_id),
            validation.check_text("reason", request.reason, required=False),
            validation.check_id("receipt_id", request.receipt_id, required=False),
        )

        def refund(conn: sqlite3.Connection) -> pb.RefundResponse:
            row = _select(conn, request.saga_id)
            now = now_ms()
            if (
                request.receipt_id
                and row is not None
                and row["receipt_id"] not in ("", request.receipt_id)
            ):
                raise errors.failed_precondition(
                    errors.RECEIPT_MISMATCH,
                    f"saga {request.saga_id}'s charge has another receipt; nothing refunded",
                    saga_id=request.saga_id,
                )
            if row is None:
                conn.execute(
                    "INSERT INTO payments (saga_id, order_id, amount, currency, status,"
                    " receipt_id, refund_reason, created_at_epoch_ms, updated_at_epoch_ms)"
                    " VALUES (?, '', 0, '', ?, '', ?, ?, ?)",
                    (request.saga_id, pb.PAYMENT_STATUS_VOIDED, request.reason, now, now),
                )
                outcome = pb.REFUND_OUTCOME_NOTHING_TO_REFUND
            elif row["status"] == pb.PAYMENT_STATUS_CHARGED:
                conn.execute(
                    "UPDATE payments SET status = ?, refund_reason = ?, updated_at_epoch_ms = ?"
                    " WHERE saga_id = ?",
                    (pb.PAYMENT_STATUS_REFUNDED, request.reason, now, request.saga_id),
                )
                outcome = pb.REFUND_OUTCOME_REFUNDED
            elif row["status"] == pb.PAYMENT_STATUS_REFUNDED:
                outcome = pb.REFUND_OUTCOME_ALREADY_REFUNDED
            else:
                outcome = pb.REFUND_OUTCOME_NOTHING_TO_REFUND
            return pb.RefundResponse(
                outcome=outcome, payment=_payment(_select(conn, request.saga_id))
            )

        response = await self.db.run(refund)
        self.faults.after_commit("Refund")
        return response

    @errors.rpc_errors(DOMAIN)
    async def ListPayments(
        self, request: pb.ListPaymentsRequest, context: Context
    ) -> pb.ListPaymentsResponse:
        wanted = paging.page(request.page_size, request.page_token)
        rows, token = await self.db.run(lambda conn: paging.select(conn, "payments", wanted))
        return pb.ListPaymentsResponse(
            payments=[_payment(row) for row in rows], next_page_token=token
        )

    @errors.rpc_errors(DOMAIN)
    async def GetPayment(
        self, request: pb.GetPaymentRequest, context: Context
    ) -> pb.GetPaymentResponse:
        validation.require_valid(validation.check_saga_id("saga_id", request.saga_id))
        row = await self.db.run(lambda conn: _select(conn, request.saga_id))
        if row is None:
            raise errors.not_found(f"no payment for saga {request.saga_id}")
        return pb.GetPaymentResponse(payment=_payment(row))


def _select(conn: sqlite3.Connection, saga_id: str) -> sqlite3.Row | None:
    row: sqlite3.Row | None = conn.execute(
        "SELECT * FROM payments WHERE saga_id = ?", (saga_id,)
    ).fetchone()
    return row


def _payment(row: sqlite3.Row | None) -> pb.Payment:
    assert row is not None
    return pb.Payment(
        saga_id=row["saga_id"],
        order_id=row["order_id"],
        amount=row["amount"],
        currency=row["currency"],
        status=row["status"],
        receipt_id=row["receipt_id"],
        refund_reason=row["refund_reason"],
        created_at=timestamp(row["created_at_epoch_ms"]),
        updated_at=timestamp(row["updated_at_epoch_ms"]),
    )
